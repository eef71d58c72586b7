"""Scoring features the way the paper does: a maxent classifier, and code sparsity."""

from __future__ import annotations

import numpy as np


def maxent_predictions(train, y_train, test, l2=1e-3):
    """Labels predicted for ``test`` by a maxent classifier trained on standardised features.

    scikit-learn's ``LogisticRegression`` minimises ``C sum_n CE_n + 1/2 ||V||^2``;
    with ``C = 1 / (l2 N)`` that is ``mean CE + l2/2 ||V||^2``, the objective
    of the head of :mod:`diffsc.supervised`, so every feature set is scored by
    the same classifier as the fine-tuned codes.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train)
    clf = LogisticRegression(C=1.0 / (l2 * len(train)), max_iter=5000, tol=1e-8)
    return clf.fit(scaler.transform(train), y_train).predict(scaler.transform(test))


def maxent_accuracy(train, y_train, test, y_test, l2=1e-3) -> float:
    """Test accuracy of :func:`maxent_predictions`.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.array([[0.0], [0.1], [1.0], [1.1]]); y = np.array([0, 0, 1, 1])
    >>> maxent_accuracy(x, y, x, y)
    1.0
    """
    return float(np.mean(maxent_predictions(train, y_train, test, l2) == np.asarray(y_test)))


def top_mass(codes, share=0.1) -> float:
    """Mean share of each code's l1 mass held by its largest ``share`` of coefficients.

    1 for codes with at most ``share * K`` non-zeros; ``share`` for flat codes.

    Examples
    --------
    >>> import numpy as np
    >>> top_mass(np.array([[5.0, 0, 0, 0, 0, 0, 0, 0, 0, 0], [1.0] * 10]))
    0.55
    """
    mags = np.sort(np.abs(np.asarray(codes)), axis=1)[:, ::-1]
    top = max(1, int(round(share * mags.shape[1])))
    return float(np.mean(mags[:, :top].sum(1) / np.maximum(mags.sum(1), 1e-300)))
