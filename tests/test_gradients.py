"""Derivatives of the codes (SPEC §2): gradcheck, finite differences, unrolling."""

import warnings

import pytest
import torch

import diffsc
from helpers import FAMILY_NAMES, SMOOTH_PRIORS, problem_data

TIGHT = 1e-12  # inner solves tight enough for finite differences at eps = 1e-6
# L1 codes to 1e-14: a solver that stops just under tol (proximal Newton
# does) left a poisson code 2e-12 off at 1e-12, 1e-6 in a difference
# quotient at eps = 1e-6.
TIGHT_L1 = 1e-14


def _tight(prior):
    return TIGHT_L1 if prior in ("l1", "nonneg_l1") else TIGHT


def _inputs(family, prior, seed=0, per_atom=False, n=3, d=6, k=4):
    x, basis = problem_data(family, n=n, d=d, k=k, seed=seed)
    if family in ("softmax", "poisson"):
        x = x + 0.5  # keep every count positive under finite-difference perturbations
    if family == "bernoulli":
        x = 0.1 + 0.8 * x
    lam = torch.tensor([0.3, 0.2, 0.5, 0.25][:k] if per_atom else 0.3, dtype=torch.float64)
    p = torch.tensor([0.1, 0.05, 0.2, 0.3][:k] if per_atom else 0.1, dtype=torch.float64)
    return [t.clone().requires_grad_() for t in (x, basis, lam, p)]


def _coder(family, prior, **kw):
    def code(x, basis, lam, p):
        return diffsc.sparse_code(x, basis, family=family, prior=prior, strength=lam,
                                  prior_mean=p, tol=_tight(prior), **kw)
    return code


@pytest.mark.parametrize("family", FAMILY_NAMES)
@pytest.mark.parametrize("prior", SMOOTH_PRIORS)
@pytest.mark.parametrize("per_atom", [False, True])
def test_gradcheck_smooth(family, prior, per_atom):
    inputs = _inputs(family, prior, per_atom=per_atom)
    assert torch.autograd.gradcheck(_coder(family, prior), inputs, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("prior", ["l2", "kl", "signed_kl"])  # (uniform: H singular for K > D)
def test_gradcheck_gaussian_with_many_atoms(prior):
    # K >= 3D: dl/dB by the four products with r = B w (fewer K x K work than x^T v - B (P + P^T))
    inputs = _inputs("gaussian", prior, n=3, d=3, k=10)
    assert torch.autograd.gradcheck(_coder("gaussian", prior), inputs, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("n, d, k", [(5, 6, 4), (5, 3, 10), (1, 6, 4)])  # K (D + N) < 3 N D in the first only
def test_gaussian_basis_gradient_both_forms(n, d, k):
    from diffsc.implicit import _basis_gradient

    g = torch.Generator().manual_seed(1)
    x, w, v = (torch.randn(n, m, generator=g, dtype=torch.float64) for m in (d, k, k))
    basis = torch.randn(d * k, generator=g, dtype=torch.float64)
    basis = basis.reshape(d, k)
    problem = diffsc.Problem.of("gaussian", "kl")
    r = w @ basis.T
    general = -(r - x).T @ v - (v @ basis.T).T @ w  # -(r - x)^T v - (S B v)^T w, S = I
    torch.testing.assert_close(_basis_gradient(problem, x, basis, w, v, None), general)
    torch.testing.assert_close(_basis_gradient(problem, x, basis, w, v, r), general)


def _l1_inputs_with_margin(family, prior):
    """A problem whose code is 0.01 away from every kink of the L1 path."""
    for seed in range(100):
        x, basis, lam, p = _inputs(family, prior, seed=seed, d=8, k=5)
        with torch.no_grad():
            w = _coder(family, prior)(x, basis, lam, p)
            problem = diffsc.Problem.of(family, prior)
            grad_loss, _ = problem.loss_gradient(problem.family.prepare(x), basis, w)
            on = w != 0
            margin_on = w.abs()[on].min() if on.any() else torch.tensor(1.0)
            # Off the support: distance of grad_loss from the end of the subdifferential.
            slack = grad_loss + lam if prior == "nonneg_l1" else lam - grad_loss.abs()
            margin_off = slack[~on].min() if (~on).any() else torch.tensor(1.0)
        if on.any() and (~on).any() and min(margin_on, margin_off) > 1e-2:
            return x, basis, lam, p
    raise AssertionError("no problem with a margin found")


@pytest.mark.parametrize("family", FAMILY_NAMES)
@pytest.mark.parametrize("prior", ["l1", "nonneg_l1"])
def test_gradcheck_l1_away_from_kinks(family, prior):
    inputs = _l1_inputs_with_margin(family, prior)
    code = _coder(family, prior)
    assert torch.autograd.gradcheck(code, inputs, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("family", FAMILY_NAMES)
@pytest.mark.parametrize("prior", ["kl", "signed_kl", "l1"])
def test_random_direction_finite_differences(family, prior, gen):
    """d/dh l(theta + h u) by central differences, warm-started from the code."""
    x, basis, lam, p = (
        _l1_inputs_with_margin(family, prior) if prior == "l1" else _inputs(family, prior, d=8, k=5)
    )
    code = _coder(family, prior)
    w0 = code(x, basis, lam, p)
    c = torch.randn(w0.shape, generator=gen, dtype=torch.float64)
    (w0 * c).sum().backward()
    h = 1e-6
    for theta in (x, basis, lam, p):
        u = torch.randn(theta.shape, generator=gen, dtype=torch.float64)
        with torch.no_grad():
            values = []
            for sign in (1, -1):
                args = [t + sign * h * u if t is theta else t for t in (x, basis, lam, p)]
                w = diffsc.sparse_code(args[0], args[1], family=family, prior=prior,
                                       strength=args[2], prior_mean=args[3], tol=_tight(prior),
                                       init=w0.detach())
                values.append((w * c).sum())
        fd = (values[0] - values[1]) / (2 * h)
        torch.testing.assert_close((theta.grad * u).sum(), fd, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("family", FAMILY_NAMES)
@pytest.mark.parametrize("prior", ["uniform", "l2", "kl", "signed_kl", "l1", "nonneg_l1"])
def test_implicit_equals_unrolled(family, prior, gen):
    """Autograd through every solver iteration converges to the implicit gradient."""
    if prior in ("l1", "nonneg_l1"):
        inputs = _l1_inputs_with_margin(family, prior)
    else:
        inputs = _inputs(family, prior, per_atom=True, d=8, k=4)
    c = torch.randn(3, inputs[1].shape[1], generator=gen, dtype=torch.float64)
    grads = {}
    for mode in ("implicit", "unrolled"):
        w = _coder(family, prior, backward=mode)(*inputs)
        grads[mode] = torch.autograd.grad((w * c).sum(), inputs, allow_unused=True, materialize_grads=True)
    for implicit, unrolled in zip(grads["implicit"], grads["unrolled"]):
        torch.testing.assert_close(implicit, unrolled, rtol=1e-7, atol=1e-9)


def _saved_bytes(mode, max_iter, tol):
    x, basis, lam, p = _inputs("gaussian", "kl", d=8, k=5)
    saved = []

    def pack(t):
        saved.append(t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        w, info = diffsc.sparse_code_with_info(
            x, basis, prior="kl", strength=lam, prior_mean=p, solver="newton",
            backward=mode, max_iter=max_iter, tol=tol,
        )
    assert bool((info.iterations == max_iter).all())  # every row takes every step
    return sum(saved)


@pytest.mark.filterwarnings("ignore::diffsc.ConvergenceWarning")
def test_backward_memory_does_not_grow_with_iterations():
    # tol 1e-30: Newton takes all 5 steps (it reaches rounding, 1e-16, by
    # step 6-8, and then stops where F can fall no further)
    short, long = (_saved_bytes("implicit", it, 1e-30) for it in (1, 5))
    assert short == long
    short_unrolled, long_unrolled = (_saved_bytes("unrolled", it, 1e-30) for it in (1, 5))
    assert long_unrolled > 3 * short_unrolled > 3 * short


def test_unrolled_reference_records_the_iterations():
    x, basis, lam, p = _inputs("gaussian", "kl")
    w = diffsc.sparse_code(x, basis, prior="kl", strength=lam, prior_mean=p, backward="unrolled")
    assert w.grad_fn is not None and "SparseCodeFunction" not in type(w.grad_fn).__name__


def test_singular_hessian_is_reported():
    """Uniform prior, more atoms than dimensions: the code is not differentiable."""
    x, basis = problem_data("gaussian", n=2, d=3, k=5)
    basis.requires_grad_()
    with warnings.catch_warnings():  # the forward solve may or may not stall:
        warnings.simplefilter("ignore", diffsc.ConvergenceWarning)  # the code is not unique
        w = diffsc.sparse_code(x, basis, prior="uniform", max_iter=3)
    with pytest.raises(RuntimeError, match=r"codes: the Hessian .* is singular at examples \[0, 1\]"):
        w.sum().backward()


def test_tiny_kl_codes_give_finite_exact_gradients(gen):
    """SPEC §2 numerics: codes ~1e-30 make 1/w ~1e30, yet the scaled solve is exact."""
    x, basis = problem_data("gaussian", n=4, d=8, k=5, seed=7)
    x = -3 * x.abs()  # pushes most KL codes far below p
    basis = basis.abs().requires_grad_()
    lam = torch.tensor(0.05, dtype=torch.float64)
    p = torch.tensor(1e-3, dtype=torch.float64)
    w = diffsc.sparse_code(x, basis, prior="kl", strength=lam, prior_mean=p, tol=TIGHT)
    assert float(w.detach().min()) < 1e-30
    c = torch.randn(w.shape, generator=gen, dtype=torch.float64)
    (grad,) = torch.autograd.grad((w * c).sum(), basis)
    assert bool(torch.isfinite(grad).all())
    u = torch.randn(basis.shape, generator=gen, dtype=torch.float64)
    h = 1e-6
    with torch.no_grad():
        plus, minus = (
            diffsc.sparse_code(x, basis + s * h * u, prior="kl", strength=lam, prior_mean=p, tol=TIGHT, init=w)
            for s in (1, -1)
        )
    torch.testing.assert_close((grad * u).sum(), ((plus - minus) * c).sum() / (2 * h), rtol=1e-5, atol=1e-9)
