"""Batches, dtypes, warm starts, diagnostics and non-convergence."""

import numpy as np
import pytest
import torch

import diffsc
from helpers import FAMILY_NAMES, problem_data

ALL_PRIORS = ["uniform", "l2", "kl", "signed_kl", "l1", "nonneg_l1"]


WELL_POSED = [
    (family, prior)
    for family in FAMILY_NAMES
    for prior in ALL_PRIORS
    # Maximum likelihood (uniform prior) of counts with zeros has no finite
    # code: a zero count wants a zero rate, so the solve may stall.
    if not (prior == "uniform" and family in ("softmax", "poisson"))
]


@pytest.mark.parametrize(("family", "prior"), WELL_POSED)
def test_batched_equals_row_by_row(family, prior):
    x, basis = problem_data(family, n=7, d=9, k=6, seed=2)
    kw = dict(family=family, prior=prior, strength=0.2, prior_mean=0.05)
    batch = diffsc.sparse_code(x, basis, **kw)
    rows = torch.stack([diffsc.sparse_code(row, basis, **kw) for row in x])
    torch.testing.assert_close(batch, rows, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("family", FAMILY_NAMES)
@pytest.mark.parametrize("prior", ["kl", "signed_kl", "l1"])
def test_float32_matches_float64(family, prior):
    x, basis = problem_data(family, n=20, d=16, k=10, seed=4)
    kw = dict(family=family, prior=prior, strength=0.2, prior_mean=0.05)
    w64 = diffsc.sparse_code(x, basis, **kw)
    w32, info = diffsc.sparse_code_with_info(x.float(), basis.float(), **kw)
    assert w32.dtype == torch.float32 and info.all_converged
    problem = diffsc.Problem.of(family, prior)
    target = problem.family.prepare(x)
    lam, p = torch.tensor(0.2).double(), torch.tensor(0.05).double()
    # float32 stops at a relative residual of 1e-4 (default_tol), which is
    # that of its codes in float64 too, up to float32's rounding of them...
    assert float(problem.residual(target, basis, lam, p, w32.double()).max()) < 2e-4
    # ...and pins the codes to a few 1e-3 here (a poisson L1 code stopped at
    # a residual of 9.5e-5, where its support's Hessian has eigenvalue 0.13,
    # is 3.7e-3 from its optimum)
    torch.testing.assert_close(w32.double(), w64, rtol=1e-3, atol=5e-3)
    f32 = problem.objective(target, basis, lam, p, w32.double())
    f64 = problem.objective(target, basis, lam, p, w64)
    assert bool((f64 <= f32 + 1e-12).all())
    torch.testing.assert_close(f32, f64, rtol=1e-5, atol=0)


def test_float32_gradients_flow():
    x, basis = problem_data("gaussian", n=5, d=8, k=4, dtype=torch.float32)
    basis.requires_grad_()
    w = diffsc.sparse_code(x, basis, prior="kl")
    w.square().sum().backward()
    assert basis.grad.dtype == torch.float32 and bool(torch.isfinite(basis.grad).all())


def test_single_example_and_numpy_inputs():
    x, basis = problem_data("gaussian", n=3, d=8, k=5)
    w, info = diffsc.sparse_code_with_info(x[0], basis)
    assert w.shape == (5,) and info.residual.shape == () and bool(info.converged)
    from_numpy = diffsc.sparse_code(x.numpy(), basis.numpy())
    assert isinstance(from_numpy, torch.Tensor) and from_numpy.dtype == torch.float64
    torch.testing.assert_close(from_numpy[0], w)
    counts = np.array([[3, 0, 1, 2, 0, 0, 1, 5]])  # integer word counts
    codes = diffsc.sparse_code(counts, basis, family="softmax")
    assert codes.shape == (1, 5) and codes.dtype == torch.float64


@pytest.mark.parametrize("prior", ["kl", "l1"])
def test_warm_start_saves_iterations(prior):
    x, basis = problem_data("gaussian", n=30, d=20, k=40, seed=5)
    kw = dict(prior=prior, strength=0.1, prior_mean=0.01)
    cold, cold_info = diffsc.sparse_code_with_info(x, basis, **kw)
    warm, warm_info = diffsc.sparse_code_with_info(x + 1e-3, basis, init=cold, **kw)
    again, _ = diffsc.sparse_code_with_info(x + 1e-3, basis, **kw)
    torch.testing.assert_close(warm, again, rtol=1e-7, atol=1e-9)
    assert warm_info.iterations.sum() < cold_info.iterations.sum()


def test_softmax_counts_and_types_give_the_same_codes():
    """Counts are normalised inside: scaling a document leaves its code unchanged."""
    x, basis = problem_data("softmax", n=4, d=8, k=5)
    torch.testing.assert_close(
        diffsc.sparse_code(x, basis, family="softmax"),
        diffsc.sparse_code(7 * x, basis, family="softmax"),
    )


def test_eg_baseline_agrees_with_newton():
    x, basis = problem_data("gaussian", n=5, d=10, k=8)
    kw = dict(prior="kl", strength=0.2, prior_mean=0.05)
    newton = diffsc.sparse_code(x, basis, **kw)
    eg, info = diffsc.sparse_code_with_info(x, basis, solver="eg", tol=1e-7, **kw)
    assert info.solver == "eg" and info.all_converged
    torch.testing.assert_close(eg, newton, rtol=1e-5, atol=1e-7)


def test_diagnostics():
    x, basis = problem_data("gaussian", n=6, d=10, k=8)
    w, info = diffsc.sparse_code_with_info(x, basis, prior="kl", tol=1e-9)
    assert info.solver == "newton_cg" and info.tol == 1e-9
    assert info.iterations.shape == (6,) and bool((info.iterations >= 1).all())
    assert bool((info.residual <= 1e-9).all()) and info.all_converged
    problem = diffsc.Problem.of("gaussian", "kl")
    residual = problem.residual(x, basis, torch.tensor(0.1).double(), torch.tensor(0.01).double(), w)
    torch.testing.assert_close(residual, info.residual)


@pytest.mark.parametrize("prior", ["kl", "l1"])
def test_a_call_that_records_nothing_gives_what_the_layer_gives(prior):
    # without a gradient to record the codes come from the solver directly,
    # not through the autograd function: the same codes and diagnostics
    x, basis = problem_data("gaussian", n=6, d=10, k=8)
    w, info = diffsc.sparse_code_with_info(x, basis, prior=prior, tol=1e-9)
    recorded = basis.clone().requires_grad_()
    w_layer, info_layer = diffsc.sparse_code_with_info(x, recorded, prior=prior, tol=1e-9)
    assert w.grad_fn is None and w_layer.grad_fn is not None
    torch.testing.assert_close(w, w_layer.detach(), rtol=0, atol=0)
    assert (info.solver, info.tol) == (info_layer.solver, info_layer.tol)
    for name in ("iterations", "residual", "converged"):
        torch.testing.assert_close(getattr(info, name), getattr(info_layer, name), rtol=0, atol=0)
    with torch.no_grad():  # grad mode off: nothing is recorded either
        w_off, _ = diffsc.sparse_code_with_info(x, recorded, prior=prior, tol=1e-9)
    assert w_off.grad_fn is None
    torch.testing.assert_close(w_off, w, rtol=0, atol=0)


def test_non_convergence_warns_and_strict_raises():
    x, basis = problem_data("gaussian", n=6, d=10, k=8)
    with pytest.warns(diffsc.ConvergenceWarning, match=r"[1-6] of 6 codes did not converge \(solver 'gram'"):
        _, info = diffsc.sparse_code_with_info(x, basis, prior="l1", max_iter=1, tol=1e-14)
    assert not info.all_converged
    with pytest.raises(diffsc.ConvergenceError, match=r"raise max_iter, loosen tol"):
        diffsc.sparse_code(x, basis, prior="kl", max_iter=1, tol=1e-14, strict=True)



def test_residual_formula():
    """The docstring's residual, evaluated by hand for the KL prior."""
    x, basis = problem_data("gaussian", n=3, d=6, k=4)
    lam, p = torch.tensor(0.3).double(), torch.tensor(0.1).double()
    w = torch.rand(3, 4, dtype=torch.float64) + 0.05
    grad_loss = (w @ basis.T - x) @ basis
    grad_prior = lam * torch.log(w / p)
    scale = torch.stack([grad_loss.abs().amax(1), grad_prior.abs().amax(1),
                         (x @ basis).abs().amax(1), (lam * w / w).abs().amax(1)]).amax(0)
    expected = (grad_loss + grad_prior).abs().amax(1) / scale
    torch.testing.assert_close(diffsc.Problem.of("gaussian", "kl").residual(x, basis, lam, p, w), expected)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_l1_solvers_agree(family):
    """The active-set, FISTA and proximal Newton solvers reach the same L1 codes."""
    x, basis = problem_data(family, n=12, d=10, k=16, seed=8)
    kw = dict(family=family, prior="l1", strength=0.05, tol=1e-10)
    active, a_info = diffsc.sparse_code_with_info(x, basis, solver="active_set", **kw)
    for solver in ("fista", "prox_newton"):
        other, info = diffsc.sparse_code_with_info(x, basis, solver=solver, **kw)
        assert a_info.all_converged and info.all_converged
        torch.testing.assert_close(active, other, rtol=1e-6, atol=1e-8)
