"""The scikit-learn estimators: sklearn's own checks, pipelines, the documented maths, state."""

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import diffsc
from diffsc.estimators import SparseCoding, SparseCodingClassifier


def fast_instances():
    """Small settings so that sklearn's ~150 checks run in seconds."""
    return [
        SparseCoding(n_components=4, max_iter=5, random_state=0),
        SparseCoding(n_components=3, family="softmax", max_iter=3, random_state=0),
        # K > D (the checks' data has 2-5 features): positive KL codes of a
        # few atoms cannot separate blobs that lie around the origin.
        SparseCodingClassifier(n_components=8, max_iter=5, epochs=3, random_state=0),
    ]


def expected_failed_checks(estimator):
    """Checks that cannot apply, by name, with the reason (marked xfail, strict)."""
    if getattr(estimator, "family", None) == "softmax":
        reason = (
            "its data has rows of zeros (integer-rounded or shifted to be non-negative), and a "
            "document without words has no distribution for the softmax family to code"
        )
        return {"check_estimators_dtypes": reason, "check_fit2d_1feature": reason}
    return {}


@parametrize_with_checks(fast_instances(), expected_failed_checks=expected_failed_checks, xfail_strict=True)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def digits():
    """500 digits scaled to [0, 1], first 400 for training, the rest for testing."""
    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(y))[:500]
    return x[order] / 16.0, y[order]


@pytest.fixture(scope="module")
def gaussian_data():
    rng = np.random.default_rng(3)
    basis = rng.normal(size=(8, 5))
    codes = rng.exponential(0.5, size=(120, 8)) * (rng.random((120, 8)) < 0.3)
    return codes @ basis + 0.05 * rng.normal(size=(120, 5))


# -- the transformer -------------------------------------------------------


def test_transform_is_sparse_code_of_the_components(gaussian_data):
    coder = SparseCoding(n_components=8, alpha=0.2, prior_mean=0.05, max_iter=10, random_state=0)
    codes = coder.fit_transform(gaussian_data)
    assert codes.shape == (120, 8) and codes.dtype == np.float64
    assert coder.components_.shape == (8, 5) and coder.n_features_in_ == 5
    assert np.all(np.linalg.norm(coder.components_, axis=1) <= 1 + 1e-12)
    expected = diffsc.sparse_code(
        torch.from_numpy(gaussian_data), torch.from_numpy(coder.components_.T.copy()),
        prior="kl", strength=0.2, prior_mean=0.05,
    )
    np.testing.assert_array_equal(codes, expected.numpy())
    np.testing.assert_array_equal(coder.transform(gaussian_data), codes)  # fit_transform == fit + transform


def test_documented_objective_and_alpha(gaussian_data):
    """The docstring's objective: 1/2 ||x - B w||^2 + alpha * sum_k KL(w_k || p), alpha unscaled.

    Its gradient, B^T (B w - x) + alpha log(w / p), vanishes at the codes.
    """
    alpha, p = 0.3, 0.02
    coder = SparseCoding(n_components=6, alpha=alpha, prior_mean=p, max_iter=5, random_state=1).fit(gaussian_data)
    w = coder.transform(gaussian_data)
    b = coder.components_.T
    gradient = (w @ b.T - gaussian_data) @ b + alpha * np.log(w / p)
    assert np.abs(gradient).max() < 1e-8
    # The objective history is the mean of that objective over the examples.
    value = 0.5 * ((gaussian_data - w @ b.T) ** 2).sum(1) + alpha * (w * np.log(w / p) - w + p).sum(1)
    assert coder.objective_[-1] == pytest.approx(value.mean(), rel=1e-4)
    assert np.all(np.diff(coder.objective_) <= 1e-12)  # batch learning never increases it


def test_inverse_transform_reconstructs(gaussian_data):
    coder = SparseCoding(n_components=10, alpha=0.01, prior="signed_kl", max_iter=20, random_state=0)
    codes = coder.fit_transform(gaussian_data)
    reconstruction = coder.inverse_transform(codes)
    np.testing.assert_allclose(reconstruction, codes @ coder.components_, rtol=1e-12)  # gaussian: f = identity
    relative = np.linalg.norm(reconstruction - gaussian_data) / np.linalg.norm(gaussian_data)
    assert relative < 0.05


def test_inverse_transform_applies_the_transfer():
    counts = np.random.default_rng(0).poisson(2.0, size=(30, 6)) + np.eye(6)[np.arange(30) % 6]
    coder = SparseCoding(n_components=4, family="softmax", max_iter=3, random_state=0).fit(counts)
    codes = coder.transform(counts)
    eta = codes @ coder.components_
    expected = np.exp(eta) / np.exp(eta).sum(1, keepdims=True)
    np.testing.assert_allclose(coder.inverse_transform(codes), expected, rtol=1e-12)


@pytest.mark.parametrize("method", ["batch", "online"])
def test_fit_methods_and_feature_names(gaussian_data, method):
    coder = SparseCoding(n_components=6, method=method, batch_size=32, max_iter=4, random_state=0).fit(gaussian_data)
    assert coder.n_iter_ >= 1 and len(coder.objective_) >= 1
    assert list(coder.get_feature_names_out()) == [f"sparsecoding{i}" for i in range(6)]


def test_partial_fit_lowers_the_objective(gaussian_data):
    coder = SparseCoding(n_components=8, alpha=0.1, random_state=0)
    problem = diffsc.Problem.of("gaussian", "kl")
    x = torch.from_numpy(gaussian_data)
    lam, p = torch.tensor(0.1, dtype=torch.float64), torch.tensor(0.01, dtype=torch.float64)

    def objective():
        basis = torch.from_numpy(coder.components_.T.copy())
        return float(problem.objective(x, basis, lam, p, torch.from_numpy(coder.transform(gaussian_data))).mean())

    values = []
    for step in range(12):
        coder.partial_fit(gaussian_data[(step % 4) * 30 : (step % 4 + 1) * 30])
        values.append(objective())
    assert coder.n_iter_ == 12 and len(coder.objective_) == 12
    assert values[-1] < 0.95 * values[0]
    assert all(b <= a for a, b in zip(values[::4], values[4::4]))  # each pass over the data helps
    batch = SparseCoding(n_components=8, alpha=0.1, random_state=0).fit(gaussian_data)
    assert values[-1] < 1.02 * batch.objective_[-1]  # close to what batch learning reaches
    assert np.all(np.linalg.norm(coder.components_, axis=1) <= 1 + 1e-12)


def test_partial_fit_continues_after_fit(gaussian_data):
    coder = SparseCoding(n_components=6, max_iter=3, random_state=0).fit(gaussian_data)
    before = coder.components_.copy()
    coder.partial_fit(gaussian_data[:40])
    assert coder.components_.shape == before.shape and not np.array_equal(coder.components_, before)


# -- the classifier --------------------------------------------------------


def test_classifier_on_digits(digits):
    x, y = digits
    clf = SparseCodingClassifier(n_components=48, alpha=0.05, max_iter=10, epochs=4, random_state=0)
    clf.fit(x[:400], y[:400])
    assert clf.score(x[400:], y[400:]) > 0.85
    assert list(clf.classes_) == list(range(10)) and clf.components_.shape == (48, 64)
    proba = clf.predict_proba(x[400:])
    np.testing.assert_allclose(proba.sum(1), 1, rtol=1e-12)
    np.testing.assert_array_equal(clf.classes_[proba.argmax(1)], clf.predict(x[400:]))
    assert clf.decision_function(x[400:]).shape == (100, 10)
    assert 0 <= clf.best_epoch_ <= 4 and clf.history_[0]["epoch"] == 0


def test_head_matches_logistic_regression_with_C(digits):
    """The docstring's head loss: mean CE + ||V||^2 / (2 C n), LogisticRegression's minimiser."""
    x, y = digits[0][:200], digits[1][:200] % 3  # three classes
    clf = SparseCodingClassifier(n_components=12, C=0.5, max_iter=5, fine_tune=False, random_state=0).fit(x, y)
    codes = diffsc.sparse_code(torch.from_numpy(x), torch.from_numpy(clf.components_.T.copy())).numpy()
    z = (codes - codes.mean(0)) / codes.std(0, ddof=1)
    reference = LogisticRegression(C=0.5, tol=1e-12, max_iter=10_000).fit(z, y)
    np.testing.assert_allclose(clf.predict_proba(x), reference.predict_proba(z), atol=1e-6)


def test_classifier_string_labels_and_tiny_data():
    rng = np.random.default_rng(0)
    x = np.vstack([rng.normal(-1, 0.1, size=(3, 4)), rng.normal(1, 0.1, size=(3, 4))])
    y = np.array(["cat"] * 3 + ["dog"] * 3, dtype=object)
    # 5% of 6 examples rounds to no validation example: fine-tuning uses all data.
    clf = SparseCodingClassifier(n_components=6, max_iter=3, epochs=2, validation_fraction=0.05, random_state=0)
    clf.fit(x, y)
    assert list(clf.classes_) == ["cat", "dog"] and clf.best_epoch_ == 2
    assert list(clf.predict(x)) == list(y)
    assert clf.decision_function(x).shape == (6,)
    # Two examples: a split would leave no training example of one class, but still works.
    clf.set_params(validation_fraction=0.5).fit(x[[0, 5]], y[[0, 5]])
    assert set(clf.predict(x)) <= {"cat", "dog"}


def test_classifier_in_grid_search(digits):
    x, y = digits[0][:150], digits[1][:150]
    search = GridSearchCV(
        SparseCodingClassifier(n_components=16, max_iter=3, fine_tune=False, random_state=0),
        {"C": [0.1, 10.0]},
        cv=3,
    ).fit(x, y)
    assert search.best_params_["C"] in (0.1, 10.0) and search.best_score_ > 0.6


# -- pipelines -------------------------------------------------------------


def test_pipeline_and_grid_search_over_alpha(digits):
    x, y = digits
    pipeline = Pipeline(
        [
            ("code", SparseCoding(n_components=32, max_iter=5, random_state=0)),
            ("scale", StandardScaler()),
            ("clf", LogisticRegression(max_iter=2000)),
        ]
    )
    search = GridSearchCV(pipeline, {"code__alpha": [0.02, 0.5]}, cv=3).fit(x[:300], y[:300])
    assert search.best_params_["code__alpha"] in (0.02, 0.5)
    assert search.score(x[400:], y[400:]) > 0.8
    assert clone(search.best_estimator_).get_params()["code__alpha"] == search.best_params_["code__alpha"]


# -- bad input -------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"alpha": 0.0}, "alpha: must be > 0, got 0.0"),
        ({"alpha": -1}, "alpha: must be > 0, got -1"),
        ({"prior_mean": [0.1, -0.1, 0.1]}, r"prior_mean: must be > 0, got -0.1"),
        ({"alpha": [0.1, 0.2]}, r"alpha: expected a scalar or one value per atom \(shape \(3,\)\)"),
        ({"prior": "gamma"}, "prior: unknown prior 'gamma'; choose one of"),
        ({"family": "cauchy"}, "family: unknown family 'cauchy'; choose one of"),
        ({"method": "stochastic"}, r"method: must be one of \('batch', 'online'\), got 'stochastic'"),
        ({"n_components": 0}, "n_components: must be a positive integer, got 0"),
        ({"max_iter": 0}, "max_iter: must be a positive integer, got 0"),
        ({"tol": -1.0}, "tol: must be a number >= 0, got -1.0"),
        ({"code_tol": 2.0}, r"code_tol: must be None or a number in \(0, 1\), got 2.0"),
    ],
)
def test_bad_parameters(gaussian_data, params, message):
    params = {"n_components": 3, **params}
    for estimator in (SparseCoding(**params), SparseCodingClassifier(**params)):
        with pytest.raises(ValueError, match=message):
            if isinstance(estimator, SparseCoding):
                estimator.fit(gaussian_data)
            else:
                estimator.fit(gaussian_data, np.arange(120) % 2)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"C": 0}, "C: must be a number > 0, got 0"),
        ({"learning_rate": -1e-3}, "learning_rate: must be a number > 0, got -0.001"),
        ({"epochs": 0}, "epochs: must be a positive integer, got 0"),
        ({"n_iter_no_change": 0}, "n_iter_no_change: must be a positive integer, got 0"),
        ({"validation_fraction": 1.0}, r"validation_fraction: must be a number in \[0, 1\), got 1.0"),
    ],
)
def test_bad_classifier_parameters(gaussian_data, params, message):
    with pytest.raises(ValueError, match=message):
        SparseCodingClassifier(**params).fit(gaussian_data, np.arange(120) % 2)


def test_bad_data(gaussian_data):
    x = gaussian_data.copy()
    x[3, 2] = np.nan
    with pytest.raises(ValueError, match="Input X contains NaN"):
        SparseCoding().fit(x)
    with pytest.raises(ValueError, match="Input X contains NaN"):
        SparseCodingClassifier().fit(x, np.arange(120) % 2)
    coder = SparseCoding(n_components=3, max_iter=2, random_state=0).fit(gaussian_data)
    with pytest.raises(ValueError, match="X has 4 features, but SparseCoding is expecting 5 features as input"):
        coder.transform(gaussian_data[:, :4])
    with pytest.raises(ValueError, match=r"X has 5 features, but SparseCoding.inverse_transform expects codes with 3"):
        coder.inverse_transform(gaussian_data)
    with pytest.raises(ValueError, match="X has 4 features, but SparseCoding is expecting 5 features as input"):
        coder.partial_fit(gaussian_data[:, :4])
    with pytest.raises(ValueError, match=r"Negative values in data passed to SparseCoding.fit"):
        SparseCoding(family="softmax").fit(gaussian_data)
    with pytest.raises(ValueError, match=r"y: needs examples of at least 2 classes .* got 1 class \('a'\)"):
        SparseCodingClassifier().fit(gaussian_data, ["a"] * 120)
    with pytest.raises(ValueError, match="Unknown label type: continuous"):
        SparseCodingClassifier().fit(gaussian_data, gaussian_data[:, 0])


# -- state for saving ------------------------------------------------------


def _plain(value) -> bool:
    """Only tensors, Python scalars/str/None and lists/dicts of those (the contract for saving)."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return isinstance(value, list) and all(_plain(v) for v in value)
    return value is None or isinstance(value, (torch.Tensor, bool, int, float, str))


def _round_trip(state, tmp_path):
    path = tmp_path / "state.pt"
    torch.save(state, path)
    return torch.load(path, weights_only=True)  # no pickle of arbitrary objects


def test_transformer_state_round_trip(gaussian_data, tmp_path):
    coder = SparseCoding(n_components=6, alpha=0.2, random_state=0)
    for start in (0, 40):
        coder.partial_fit(gaussian_data[start : start + 40])
    state = coder._fitted_state()
    assert _plain(state)
    restored = SparseCoding(**coder.get_params())
    restored._set_fitted_state(_round_trip(state, tmp_path))
    np.testing.assert_array_equal(restored.transform(gaussian_data), coder.transform(gaussian_data))
    np.testing.assert_array_equal(restored.objective_, coder.objective_)
    assert restored.n_iter_ == coder.n_iter_ == 2
    # The online statistics travel too: the next step is the same.
    coder.partial_fit(gaussian_data[80:])
    restored.partial_fit(gaussian_data[80:])
    np.testing.assert_array_equal(restored.components_, coder.components_)


def test_classifier_state_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    x = np.vstack([rng.normal(-1, 0.5, size=(30, 5)), rng.normal(1, 0.5, size=(30, 5))])
    y = np.array(["left"] * 30 + ["right"] * 30)
    clf = SparseCodingClassifier(n_components=7, max_iter=3, epochs=2, learn_strength=True, random_state=0).fit(x, y)
    state = clf._fitted_state()
    assert _plain(state)
    restored = SparseCodingClassifier(**clf.get_params())
    restored._set_fitted_state(_round_trip(state, tmp_path))
    for method in ("predict", "predict_proba", "decision_function"):
        np.testing.assert_array_equal(getattr(restored, method)(x), getattr(clf, method)(x))
    np.testing.assert_array_equal(restored.classes_, clf.classes_)
    np.testing.assert_array_equal(restored.components_, clf.components_)
    np.testing.assert_array_equal(restored.strength_, clf.strength_)
    assert restored.history_ == clf.history_ and restored.best_epoch_ == clf.best_epoch_
