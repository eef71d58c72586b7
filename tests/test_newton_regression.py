"""Newton never accepts a step that raises the objective beyond rounding.

Found on real text: with the softmax family the gradient is bounded, so a
jump to a KL code of 1e13 could halve it while the objective grew from 2.8 to
5e11, and the step was taken for its gradient alone.
"""

import numpy as np
import pytest
import torch

import diffsc
from diffsc.learning import initial_basis
from diffsc.problem import Problem


@pytest.fixture(scope="module")
def review_counts():
    from sklearn.feature_extraction.text import CountVectorizer

    from diffsc.datasets import load_review_polarity

    try:
        data = load_review_polarity()
    except FileNotFoundError as err:
        pytest.skip(str(err))
    train = [t for t, fold in zip(data.texts, data.folds) if fold not in (5, 6)]
    counts = CountVectorizer(stop_words="english", max_features=1000).fit_transform(train).toarray()
    return torch.from_numpy(counts[counts.sum(1) > 0].astype(np.float64))


def test_softmax_kl_codes_never_end_above_their_start(review_counts):
    problem = Problem.of("softmax", "kl")
    x = problem.family.prepare(review_counts)
    basis = initial_basis(x, 20, problem.family, torch.Generator().manual_seed(0))
    lam, p = torch.tensor(3e-4, dtype=torch.float64), torch.tensor(0.03, dtype=torch.float64)
    start = problem.objective(x, basis, lam, p, problem.prior.initial(p, (x.shape[0], 20), x))
    result = diffsc.solve(problem, x, basis, lam, p, tol=1e-8)
    final = problem.objective(x, basis, lam, p, result.codes)
    assert bool((final <= start).all()), float((final - start).max())
    assert float(final.max()) < 10  # KL(x_bar || r) + prior: a few nats, never 1e11
