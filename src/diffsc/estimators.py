r"""scikit-learn compatible estimators: a sparse-coding transformer and classifier.

Both take numpy arrays (or anything :func:`numpy.asarray` reads), compute in
float64 torch on the CPU, and follow scikit-learn's conventions: sklearn's
words for the parameters (``n_components``, ``alpha``, ``components_`` of
shape ``(K, D)``), validation in ``fit`` (never in ``__init__``), fitted
attributes ending in ``_``. The two methods ``_fitted_state`` and
``_set_fitted_state`` turn what ``fit`` learned into plain tensors and Python
values and back, for saving without pickle.

The objective (SPEC §1, §3). With ``B = components_.T`` of shape ``(D, K)``,
the code of one example ``x`` is

.. math::

    \hat w = \arg\min_w D_L(x \| f(B w)) + \alpha \sum_k R(w_k; p_k),

the family's loss **summed** over the ``D`` features (gaussian:
``1/2 ||x - B w||^2``, the ``1/2`` included; softmax: ``KL(x/sum(x) || softmax(B w))``,
not weighted by the document length). ``alpha`` is exactly the ``strength``
``lam`` of :func:`diffsc.sparse_code`: it is neither divided by ``D`` nor by
the number of examples. Basis learning minimises the **mean** of this
objective over the examples with every atom ``||B_{:,k}||_2 <= 1``.
"""

from __future__ import annotations

import numbers

import numpy as np
import torch
from sklearn.base import (
    BaseEstimator,
    ClassifierMixin,
    ClassNamePrefixFeaturesOutMixin,
    TransformerMixin,
)
from sklearn.model_selection import train_test_split
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import (
    check_array,
    check_is_fitted,
    check_non_negative,
    check_random_state,
    validate_data,
)

from .coding import sparse_code
from .families import get_family
from .learning import METHODS, BasisLearner, initial_basis, learn_basis
from .module import SparseCodingLayer
from .priors import get_prior
from .problem import Problem
from .supervised import CodePredictor, encode, train_predictor
from .validation import check_parameter

_DTYPE = torch.float64
# Families whose inputs must be non-negative (counts): sklearn's
# ``positive_only`` input tag, so that its checks feed them valid data.
_NON_NEGATIVE = ("softmax", "poisson")


# -- shared helpers ---------------------------------------------------------


def _to_tensor(array) -> torch.Tensor:
    # torch.tensor copies: a read-only (memmapped) array would make
    # torch.as_tensor warn, and the estimator must never write to its input.
    return torch.tensor(np.asarray(array, dtype=np.float64), dtype=_DTYPE)


def _non_negative(family) -> bool:
    return getattr(family, "name", family) in _NON_NEGATIVE  # a name or a Family instance


def _check_data(estimator, X, method, **kwargs):
    """sklearn's ``validate_data`` to float64, plus the non-negativity of count families.

    ``positive_only`` estimators must say "Negative values in data" (sklearn's
    wording, which its checks expect) before the family's own check runs.
    Returns ``X``, or ``(X, y)`` when ``y=`` is passed (``None`` included:
    ``validate_data`` then says that a classifier needs ``y``).
    """
    checked = validate_data(estimator, X, dtype=np.float64, **kwargs)
    X = checked[0] if "y" in kwargs else checked
    if _non_negative(estimator.family):
        check_non_negative(X, f"{type(estimator).__name__}.{method}")
    return checked


def _seed(random_state) -> int:
    """A torch seed drawn from sklearn's ``random_state`` (int, RandomState or None)."""
    return int(check_random_state(random_state).randint(np.iinfo(np.int32).max))


def _check_positive_int(value, name, allow_none=False):
    if value is None and allow_none:
        return
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name}: must be a positive integer, got {value!r}")


def _check_positive(value, name):
    """``alpha``/``prior_mean``/...: a positive number, or an array of them."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        if not (np.isfinite(value) and value > 0):
            raise ValueError(f"{name}: must be > 0, got {value!r}")
        return
    array = np.asarray(value, dtype=np.float64) if not isinstance(value, (str, bool)) else None
    if array is None or array.ndim != 1:
        raise ValueError(f"{name}: must be a positive number or a 1-D array of them, got {value!r}")
    if not (np.isfinite(array).all() and (array > 0).all()):
        raise ValueError(f"{name}: must be > 0, got {float(array.min())!r}")


def _parameter_tensor(value, name, basis) -> torch.Tensor:
    """A scalar or per-atom ``(K,)`` tensor named in sklearn's words in errors."""
    if not isinstance(value, numbers.Real):
        value = torch.as_tensor(np.asarray(value, dtype=np.float64))
    try:
        return check_parameter(value, name, basis)
    except (TypeError, ValueError) as err:
        raise ValueError(str(err)) from None


class _SparseCodingParams:
    """Parameter checks shared by both estimators (run in ``fit``, not ``__init__``)."""

    def _check_coding_params(self):
        _check_positive_int(self.n_components, "n_components", allow_none=True)
        _check_positive(self.alpha, "alpha")
        _check_positive(self.prior_mean, "prior_mean")
        get_family(self.family)  # unknown names raise with the valid ones listed
        get_prior(self.prior)
        if self.method not in METHODS:
            raise ValueError(f"method: must be one of {METHODS}, got {self.method!r}")
        _check_positive_int(self.max_iter, "max_iter")
        _check_positive_int(self.batch_size, "batch_size")
        if not (isinstance(self.tol, numbers.Real) and self.tol >= 0):
            raise ValueError(f"tol: must be a number >= 0, got {self.tol!r}")
        if self.code_tol is not None and not (isinstance(self.code_tol, numbers.Real) and 0 < self.code_tol < 1):
            raise ValueError(f"code_tol: must be None or a number in (0, 1), got {self.code_tol!r}")

    def _n_atoms(self, n_features: int) -> int:
        return n_features if self.n_components is None else int(self.n_components)

    def _learn(self, x: torch.Tensor, seed: int):
        """:func:`diffsc.learn_basis` with this estimator's parameters."""
        k = self._n_atoms(x.shape[1])
        basis = torch.empty(x.shape[1], k, dtype=_DTYPE)  # only for the parameters' shape checks
        return learn_basis(
            x,
            k,
            family=self.family,
            prior=self.prior,
            strength=_parameter_tensor(self.alpha, "alpha", basis),
            prior_mean=_parameter_tensor(self.prior_mean, "prior_mean", basis),
            method=self.method,
            max_iter=self.max_iter,
            tol=self.tol,
            batch_size=self.batch_size,
            seed=seed,
            code_tol=self.code_tol,
            progress=bool(self.verbose),
        )

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.positive_only = _non_negative(self.family)
        return tags


def _feature_names_state(estimator):
    names = getattr(estimator, "feature_names_in_", None)
    return None if names is None else [str(name) for name in names]


def _restore_feature_names(estimator, names):
    if names is not None:
        estimator.feature_names_in_ = np.asarray(names, dtype=object)
    elif hasattr(estimator, "feature_names_in_"):
        del estimator.feature_names_in_


# -- the transformer --------------------------------------------------------


class SparseCoding(_SparseCodingParams, ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    r"""Learn a basis and transform examples into their MAP sparse codes.

    ``fit`` learns ``components_`` (``K`` unit-ball atoms, one per row) by
    :func:`diffsc.learn_basis`; ``transform`` returns the MAP codes
    :func:`diffsc.sparse_code` of each row for ``B = components_.T``:

    .. math::

        \hat w = \arg\min_w D_L(x \| f(B w)) + \alpha \sum_k R(w_k; p_k),

    the family loss summed over features (gaussian: ``1/2 ||x - B w||^2``)
    plus ``alpha`` times the prior, per example. ``alpha`` *is* the
    ``strength`` ``lam`` of :func:`diffsc.sparse_code`, unscaled. Fitting
    minimises the mean of this objective over the examples.

    Parameters
    ----------
    n_components : int or None, default=None
        ``K``, the number of atoms; None: ``n_features``.
    alpha : float or array of shape (n_components,), default=0.1
        Strength ``lam > 0`` of the prior (one per atom if an array).
    prior_mean : float or array of shape (n_components,), default=0.01
        ``p > 0`` of the KL and signed-KL priors (ignored by the others).
    family : {"gaussian", "softmax", "poisson", "bernoulli"}, default="gaussian"
        Matched loss/transfer pair; softmax and poisson take non-negative
        counts, bernoulli values in ``[0, 1]``.
    prior : {"kl", "signed_kl", "l1", "nonneg_l1", "l2", "uniform"}, default="kl"
    method : {"batch", "online"}, default="batch"
        ``fit``'s algorithm: all examples per iteration, or shuffled
        mini-batches of ``batch_size`` (``max_iter`` then counts passes).
    max_iter : int, default=30
        Iterations (batch) or passes over the data (online) of ``fit``.
    tol : float, default=1e-4
        ``fit`` stops when the objective's relative decrease is below ``tol``.
    batch_size : int, default=256
        Mini-batch size of the online method.
    code_tol : float or None, default=None
        Relative residual of the MAP solves; None: 1e-6 while fitting, 1e-10
        in ``transform`` (the defaults of :func:`diffsc.learn_basis` and
        :func:`diffsc.sparse_code`).
    random_state : int, RandomState or None, default=None
        Seeds the initial atoms and the mini-batch order.
    verbose : bool, default=False
        Show a progress bar while fitting.

    Attributes
    ----------
    components_ : ndarray of shape (n_components, n_features)
        The atoms, one per row, each of Euclidean norm ``<= 1``.
    n_components_ : int
    n_iter_ : int
        Iterations or passes of ``fit``; mini-batches after ``partial_fit``.
    objective_ : ndarray
        Mean objective after each iteration (batch), of each pass (online),
        or of each ``partial_fit`` mini-batch before its step.
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only when ``X`` had string column names.

    Examples
    --------
    >>> import numpy as np
    >>> from diffsc.estimators import SparseCoding
    >>> X = np.random.default_rng(0).normal(size=(100, 6))
    >>> coder = SparseCoding(n_components=10, alpha=0.1, max_iter=5, random_state=0)
    >>> codes = coder.fit_transform(X)
    >>> codes.shape, coder.components_.shape, bool((codes > 0).all())  # KL codes are positive
    ((100, 10), (10, 6), True)
    >>> coder.inverse_transform(codes).shape
    (100, 6)
    """

    def __init__(
        self,
        n_components=None,
        *,
        alpha=0.1,
        prior_mean=0.01,
        family="gaussian",
        prior="kl",
        method="batch",
        max_iter=30,
        tol=1e-4,
        batch_size=256,
        code_tol=None,
        random_state=None,
        verbose=False,
    ):
        self.n_components = n_components
        self.alpha = alpha
        self.prior_mean = prior_mean
        self.family = family
        self.prior = prior
        self.method = method
        self.max_iter = max_iter
        self.tol = tol
        self.batch_size = batch_size
        self.code_tol = code_tol
        self.random_state = random_state
        self.verbose = verbose

    def fit(self, X, y=None):
        """Learn ``components_`` from ``X`` of shape (n_samples, n_features); ``y`` is ignored."""
        self._learner = None  # a refit starts the online statistics afresh
        self._check_coding_params()
        X = _check_data(self, X, "fit")
        result = self._learn(_to_tensor(X), _seed(self.random_state))
        self._set_basis(result.basis)
        self.n_iter_ = int(result.n_iter)
        self.objective_ = np.asarray(result.objective, dtype=np.float64)
        return self

    def partial_fit(self, X, y=None):
        """One online step on the mini-batch ``X``; ``y`` is ignored.

        The first call (on an unfitted estimator) starts from atoms drawn from
        ``X``; later calls, and calls after ``fit``, continue from
        ``components_`` with the running statistics of earlier calls.
        """
        first = not hasattr(self, "components_")
        if first:
            self._check_coding_params()
        X = _check_data(self, X, "partial_fit", reset=first)
        x = _to_tensor(X)
        problem = Problem.of(self.family, self.prior)
        target = problem.family.prepare(x)
        if first:
            generator = torch.Generator().manual_seed(_seed(self.random_state))
            basis = initial_basis(target, self._n_atoms(x.shape[1]), problem.family, generator)
            self._set_basis(basis)
            self.n_iter_ = 0
            self.objective_ = np.empty(0)
        learner = self._get_learner()
        value = learner.online_step(target)
        self._set_basis(learner.basis)
        self.n_iter_ = int(learner.n_batches)
        self.objective_ = np.append(self.objective_, value)
        return self

    def transform(self, X):
        """Codes of shape (n_samples, n_components): :func:`diffsc.sparse_code` of ``X``."""
        check_is_fitted(self)
        X = _check_data(self, X, "transform", reset=False)
        codes = sparse_code(
            _to_tensor(X),
            self._basis,
            family=self.family,
            prior=self.prior,
            strength=_parameter_tensor(self.alpha, "alpha", self._basis),
            prior_mean=_parameter_tensor(self.prior_mean, "prior_mean", self._basis),
            tol=self.code_tol,
        )
        return codes.numpy()

    def inverse_transform(self, X):
        """The reconstruction ``f(codes @ components_)``, shape (n_samples, n_features).

        ``f`` is the family's transfer: the identity for gaussian, so just
        ``codes @ components_``; for softmax a distribution over features
        (the normalised counts ``x / sum(x)``, not the counts).
        """
        check_is_fitted(self)
        codes = check_array(X, dtype=np.float64)
        if codes.shape[1] != self.n_components_:
            raise ValueError(
                f"X has {codes.shape[1]} features, but {type(self).__name__}.inverse_transform "
                f"expects codes with {self.n_components_} components"
            )
        eta = _to_tensor(codes) @ self._basis.T
        return get_family(self.family).transfer(eta).numpy()

    # -- internals ---------------------------------------------------------

    @property
    def _n_features_out(self):
        # ClassNamePrefixFeaturesOutMixin names the outputs sparsecoding0, ...
        return self.components_.shape[0]

    def _set_basis(self, basis: torch.Tensor) -> None:
        self._basis = basis.detach().to(_DTYPE).contiguous()
        self.components_ = self._basis.T.numpy().copy()
        self.n_components_ = int(basis.shape[1])
        learner = getattr(self, "_learner", None)
        if learner is not None:
            learner.basis = self._basis

    def _get_learner(self) -> BasisLearner:
        """The online state: created on the first ``partial_fit`` (also after ``fit``)."""
        if getattr(self, "_learner", None) is None:
            self._learner = BasisLearner(
                Problem.of(self.family, self.prior),
                self._basis,
                _parameter_tensor(self.alpha, "alpha", self._basis),
                _parameter_tensor(self.prior_mean, "prior_mean", self._basis),
                code_tol=self.code_tol,
            )
        return self._learner

    def _fitted_state(self) -> dict:
        """Everything ``fit``/``partial_fit`` learned, as tensors and Python values."""
        check_is_fitted(self)
        learner = getattr(self, "_learner", None)
        online = None
        if learner is not None:
            online = {
                "n_batches": int(learner.n_batches),
                "step_size": float(learner.step_size),
                "stats": None if learner.stats is None else [t.clone() for t in learner.stats],
            }
        return {
            "components": self._basis.T.clone(),
            "n_features_in": int(self.n_features_in_),
            "feature_names_in": _feature_names_state(self),
            "n_iter": int(self.n_iter_),
            "objective": [float(v) for v in self.objective_],
            "online": online,
        }

    def _set_fitted_state(self, state: dict) -> None:
        """Restore what :meth:`_fitted_state` returned (same ``get_params()``)."""
        self._learner = None
        self._set_basis(torch.as_tensor(state["components"], dtype=_DTYPE).T)
        self.n_features_in_ = int(state["n_features_in"])
        _restore_feature_names(self, state.get("feature_names_in"))
        self.n_iter_ = int(state["n_iter"])
        self.objective_ = np.asarray(state["objective"], dtype=np.float64)
        online = state.get("online")
        if online is not None:
            learner = self._get_learner()
            learner.n_batches = int(online["n_batches"])
            learner.step_size = float(online["step_size"])
            stats = online["stats"]
            learner.stats = None if stats is None else tuple(torch.as_tensor(t, dtype=_DTYPE) for t in stats)


# -- the classifier ---------------------------------------------------------


class SparseCodingClassifier(_SparseCodingParams, ClassifierMixin, BaseEstimator):
    r"""Maxent classification of sparse codes, the basis fine-tuned by backprop.

    ``fit`` (SPEC §3) first learns a basis from ``X`` alone exactly as
    :class:`SparseCoding` does (labels unused), then trains a multinomial
    logistic-regression (maxent) head ``softmax(V (w - mu) / sigma + c)`` on
    the standardised codes ``w`` (L-BFGS, to optimality), then, with
    ``fine_tune=True``, trains the head and the basis (and ``alpha``,
    ``prior_mean`` if learnable) jointly by Adam, the gradient reaching the
    basis through the implicit derivative of the codes. Early stopping keeps
    the epoch with the lowest loss on a held-out ``validation_fraction``.

    The codes are those of :class:`SparseCoding` (per example: family loss
    summed over features, e.g. ``1/2 ||x - B w||^2``, plus ``alpha`` times the
    prior). The head minimises, over the ``n`` training examples (validation
    examples excluded),

    .. math::

        \frac1n \sum_i \mathrm{CE}(y_i, V z_i + c) + \frac{1}{2 C n} \|V\|_F^2,

    which is :class:`sklearn.linear_model.LogisticRegression`'s
    ``C sum_i CE + 1/2 ||V||^2`` divided by ``C n`` (same minimiser) for three
    or more classes. For two classes the head still has two outputs, both
    penalised, which matches ``LogisticRegression`` with ``2 C``.

    Parameters
    ----------
    n_components, alpha, prior_mean, family, prior, method, max_iter, tol, code_tol
        As in :class:`SparseCoding` (``max_iter``, ``tol``: basis learning).
    C : float, default=1.0
        Inverse strength of the head's L2 penalty (formula above).
    fine_tune : bool, default=True
        Train head and basis jointly after the head alone.
    epochs : int, default=20
        At most this many passes of fine-tuning.
    batch_size : int, default=128
        Mini-batch size of fine-tuning and of online basis learning.
    learning_rate : float, default=1e-3
        Adam's step size in fine-tuning.
    n_iter_no_change : int, default=5
        Stop fine-tuning after this many epochs without a lower validation loss.
    validation_fraction : float, default=0.1
        Share of the training data held out (stratified where every class
        has two examples) for early stopping. When no split leaves both
        parts non-empty, or it is 0, fine-tuning uses all data and keeps the
        last epoch.
    learn_strength, learn_prior_mean : bool, default=False
        Also fine-tune ``alpha`` / ``prior_mean`` (kept positive).
    random_state : int, RandomState or None, default=None
        Seeds the initial atoms, the validation split and the mini-batches.
    verbose : bool, default=False
        Show progress bars.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    components_ : ndarray of shape (n_components, n_features)
        The fine-tuned atoms, one per row.
    strength_, prior_mean_ : ndarray
        ``alpha`` and ``prior_mean`` after fine-tuning (changed only when learnable).
    n_iter_ : int
        Iterations (or passes) of basis learning.
    objective_ : ndarray
        The basis-learning objective history (see :class:`SparseCoding`).
    history_ : list of dict
        Per fine-tuning epoch: ``train_loss``, ``val_loss``, ``val_accuracy``
        (epoch 0 is the head on the unsupervised basis).
    best_epoch_ : int
        The epoch whose parameters the classifier holds.
    n_features_in_ : int
    feature_names_in_ : ndarray of str

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from diffsc.estimators import SparseCodingClassifier
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = SparseCodingClassifier(n_components=8, max_iter=5, epochs=3, random_state=0)
    >>> clf.fit(X, y).score(X, y) > 0.9
    True
    >>> clf.predict_proba(X[:2]).shape
    (2, 3)
    """

    def __init__(
        self,
        n_components=None,
        *,
        alpha=0.1,
        prior_mean=0.01,
        family="gaussian",
        prior="kl",
        method="batch",
        max_iter=30,
        tol=1e-4,
        code_tol=None,
        C=1.0,
        fine_tune=True,
        epochs=20,
        batch_size=128,
        learning_rate=1e-3,
        n_iter_no_change=5,
        validation_fraction=0.1,
        learn_strength=False,
        learn_prior_mean=False,
        random_state=None,
        verbose=False,
    ):
        self.n_components = n_components
        self.alpha = alpha
        self.prior_mean = prior_mean
        self.family = family
        self.prior = prior
        self.method = method
        self.max_iter = max_iter
        self.tol = tol
        self.code_tol = code_tol
        self.C = C
        self.fine_tune = fine_tune
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.n_iter_no_change = n_iter_no_change
        self.validation_fraction = validation_fraction
        self.learn_strength = learn_strength
        self.learn_prior_mean = learn_prior_mean
        self.random_state = random_state
        self.verbose = verbose

    def _check_params(self):
        self._check_coding_params()
        for name in ("C", "learning_rate"):
            value = getattr(self, name)
            if not (isinstance(value, numbers.Real) and not isinstance(value, bool) and np.isfinite(value) and value > 0):
                raise ValueError(f"{name}: must be a number > 0, got {value!r}")
        _check_positive_int(self.epochs, "epochs")
        _check_positive_int(self.n_iter_no_change, "n_iter_no_change")
        fraction = self.validation_fraction
        if not (isinstance(fraction, numbers.Real) and not isinstance(fraction, bool) and 0 <= fraction < 1):
            raise ValueError(f"validation_fraction: must be a number in [0, 1), got {fraction!r}")

    def fit(self, X, y):
        """Learn the basis from ``X``, then the head, then fine-tune both (class docs).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
            Class labels (any type :func:`numpy.unique` can sort, strings too).

        Returns
        -------
        self
        """
        self._check_params()
        X, y = _check_data(self, X, "fit", y=y)
        check_classification_targets(y)
        self.classes_, y_index = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(
                f"y: needs examples of at least 2 classes to train a classifier; got 1 class ({self.classes_.tolist()[0]!r})"
            )
        rng = check_random_state(self.random_state)
        x = _to_tensor(X)
        result = self._learn(x, _seed(rng))
        self.n_iter_ = int(result.n_iter)
        self.objective_ = np.asarray(result.objective, dtype=np.float64)
        model = self._build_model(result.basis)

        labels = torch.as_tensor(y_index, dtype=torch.int64)
        train, val = self._split(y_index, rng)
        x_val = y_val = None
        if val is not None:
            x_val, y_val = x[val], labels[val]
            x, labels = x[train], labels[train]
        training = train_predictor(
            model,
            x,
            labels,
            fine_tune=bool(self.fine_tune),
            x_val=x_val,
            y_val=y_val,
            validation_fraction=0.0,  # the split, if any, is ours (stratified) and given above
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.learning_rate,
            l2=1.0 / (self.C * x.shape[0]),
            patience=self.n_iter_no_change,
            seed=_seed(rng),
            progress=bool(self.verbose),
        )
        self.history_ = training.history
        self.best_epoch_ = int(training.best_epoch)
        self._set_model(model)
        return self

    def decision_function(self, X):
        """Logits of shape (n_samples, n_classes); for two classes the (n_samples,) margin of ``classes_[1]``."""
        logits = self._logits(X)
        if logits.shape[1] == 2:
            return logits[:, 1] - logits[:, 0]
        return logits

    def predict_proba(self, X):
        """Class probabilities of shape (n_samples, n_classes), columns in the order of ``classes_``."""
        logits = torch.as_tensor(self._logits(X))
        return torch.softmax(logits, dim=1).numpy()

    def predict(self, X):
        """The most probable class of each row of ``X``."""
        check_is_fitted(self)
        return self.classes_[self._logits(X).argmax(axis=1)]

    # -- internals ---------------------------------------------------------

    def _build_model(self, basis: torch.Tensor) -> CodePredictor:
        coder = SparseCodingLayer(
            basis,
            family=self.family,
            prior=self.prior,
            strength=_parameter_tensor(self.alpha, "alpha", basis),
            prior_mean=_parameter_tensor(self.prior_mean, "prior_mean", basis),
            learn_strength=bool(self.learn_strength),
            learn_prior_mean=bool(self.learn_prior_mean),
            tol=self.code_tol,
        )
        model = CodePredictor(coder, len(self.classes_), "classification")
        # A zero start instead of nn.Linear's random one: it leaves torch's
        # global generator alone and makes fit reproducible from random_state.
        with torch.no_grad():
            model.head.weight.zero_()
            model.head.bias.zero_()
        return model

    def _split(self, y_index, rng):
        """Stratified train/validation indices for early stopping, or ``(None, None)``."""
        n = len(y_index)
        n_val = int(round(self.validation_fraction * n))
        if not self.fine_tune or n_val < 1 or n - n_val < 1:
            return None, None
        counts = np.bincount(y_index)
        stratify = y_index if counts.min() >= 2 and n_val >= len(counts) and n - n_val >= len(counts) else None
        train, val = train_test_split(np.arange(n), test_size=n_val, random_state=rng, stratify=stratify)
        return torch.as_tensor(np.sort(train)), torch.as_tensor(np.sort(val))

    def _set_model(self, model: CodePredictor) -> None:
        self._model = model.eval()
        coder = model.coder
        self.components_ = coder.basis.detach().T.numpy().copy()
        self.strength_ = coder.strength.detach().numpy().copy()
        self.prior_mean_ = coder.prior_mean.detach().numpy().copy()

    def _logits(self, X) -> np.ndarray:
        check_is_fitted(self)
        X = _check_data(self, X, "predict", reset=False)
        with torch.no_grad():
            codes = encode(self._model.coder, _to_tensor(X))
            return self._model.predict_codes(codes).numpy()

    def _fitted_state(self) -> dict:
        """Everything ``fit`` learned, as tensors and Python values."""
        check_is_fitted(self)
        return {
            "classes": self.classes_.tolist(),
            "classes_dtype": self.classes_.dtype.str if self.classes_.dtype != object else "object",
            "n_features_in": int(self.n_features_in_),
            "feature_names_in": _feature_names_state(self),
            "n_iter": int(self.n_iter_),
            "objective": [float(v) for v in self.objective_],
            "history": [dict(entry) for entry in self.history_],
            "best_epoch": int(self.best_epoch_),
            "model": {name: t.detach().clone() for name, t in self._model.state_dict().items()},
        }

    def _set_fitted_state(self, state: dict) -> None:
        """Restore what :meth:`_fitted_state` returned (same ``get_params()``)."""
        self.classes_ = np.asarray(state["classes"], dtype=state["classes_dtype"])
        self.n_features_in_ = int(state["n_features_in"])
        _restore_feature_names(self, state.get("feature_names_in"))
        self.n_iter_ = int(state["n_iter"])
        self.objective_ = np.asarray(state["objective"], dtype=np.float64)
        self.history_ = [dict(entry) for entry in state["history"]]
        self.best_epoch_ = int(state["best_epoch"])
        weights = state["model"]
        model = self._build_model(torch.as_tensor(weights["coder.basis"], dtype=_DTYPE))
        model.load_state_dict({name: torch.as_tensor(t, dtype=_DTYPE) for name, t in weights.items()})
        self._set_model(model)
