"""The compiled Gram solver (the CPU default for gaussian L1) against the torch solvers."""

import subprocess
import sys

import pytest
import torch

import diffsc
from diffsc.solvers import default_solver
from diffsc.solvers.active_set import active_set
from helpers import L1_PRIORS, problem_data, random_basis


def _planted(n, d, k, seed, dtype=torch.float64):
    """Sparse combinations of 5% of unit-norm atoms plus 20 dB noise (the benchmarks' problem)."""
    g = torch.Generator().manual_seed(seed)
    basis = random_basis(d, k, g, dtype)
    codes = torch.randn(n, k, generator=g, dtype=dtype) * (torch.rand(n, k, generator=g, dtype=dtype) < 0.05)
    clean = codes @ basis.T
    noise = torch.randn(n, d, generator=g, dtype=dtype)
    return clean + noise * 0.1 * clean.norm(dim=1, keepdim=True) / noise.norm(dim=1, keepdim=True), basis


def _residual(prior, x, basis, lam, w):
    problem = diffsc.Problem.of("gaussian", prior)
    lam = torch.as_tensor(lam, dtype=x.dtype)
    return problem.residual(x, basis, lam, torch.tensor(1.0, dtype=x.dtype), w)


def test_default_for_gaussian_l1_on_cpu_only():
    gaussian_l1 = diffsc.Problem.of("gaussian", "l1")
    assert default_solver(gaussian_l1) == "gram"
    on_gpu = torch.empty(2, 3, device="meta")  # any device but the CPU
    assert default_solver(gaussian_l1, on_gpu) == "fista"  # few launches, few host reads
    assert default_solver(gaussian_l1, on_gpu, differentiable=True) == "active_set"
    assert default_solver(gaussian_l1, differentiable=True) == "active_set"  # unrolled autograd
    assert default_solver(diffsc.Problem.of("softmax", "l1")) == "prox_newton"
    assert default_solver(diffsc.Problem.of("softmax", "l1"), on_gpu) == "active_set"
    assert default_solver(diffsc.Problem.of("poisson", "nonneg_l1"), differentiable=True) == "active_set"
    assert default_solver(diffsc.Problem.of("gaussian", "kl")) == "newton_cg"


@pytest.mark.parametrize("prior", L1_PRIORS)
@pytest.mark.parametrize("shape", [(16, 40), (64, 256), (100, 50)])
def test_same_codes_as_the_torch_active_set(prior, shape):
    d, k = shape
    x, basis = _planted(60, d, k, seed=d + k)
    lam = torch.linspace(0.05, 0.3, k, dtype=torch.float64)  # one strength per atom
    ours, info = diffsc.sparse_code_with_info(x, basis, prior=prior, strength=lam, tol=1e-12)
    reference = diffsc.sparse_code(x, basis, prior=prior, strength=lam, tol=1e-12, solver="active_set")
    assert info.solver == "gram" and info.all_converged
    torch.testing.assert_close(ours, reference, rtol=1e-8, atol=1e-10)
    assert 0 < float((ours != 0).double().mean()) < 0.9, "the test should exercise sparsity"
    # The kernel's residual, from G = B^T B and c = B^T x, is Problem.residual's.
    torch.testing.assert_close(info.residual, _residual(prior, x, basis, lam, ours), rtol=0, atol=1e-13)


@pytest.mark.parametrize("nonneg", [False, True])
def test_scan_lists_the_worst_violators_off_the_support(nonneg):
    """The kernel's optimality scan: the residual from every coefficient, and
    as candidates exactly the zero coefficients whose violation is within
    ``_ENTER_SHARE`` of the worst; a support atom whose step ended at 0 is off it."""
    import numpy as np

    from diffsc.solvers import gram as gram_module
    g = torch.Generator().manual_seed(11)
    k = 200
    grad = torch.randn(k, generator=g, dtype=torch.float64).numpy()
    lam = torch.rand(k, generator=g, dtype=torch.float64).numpy() + 0.5
    w = np.zeros(k)
    support = np.array([3, 50, 77, 120, 199])
    w[support[:4]] = [0.7, -1.2, 0.3, -0.1]  # 199 stays on the list at 0
    cand, violation = np.empty(k, np.int64), np.empty(k)
    res, n_cand, worst = gram_module._scan(grad, 0.25, lam, w, nonneg, support, support.size, cand, violation)
    off = w == 0
    v = (-grad if nonneg else np.abs(grad)) - lam
    expected_worst = max(v[off].max(), 0.0)
    on = np.abs(grad + lam * np.sign(w))[~off].max()
    scale = max(np.abs(grad).max(), lam[~off].max(), 0.25)
    assert worst == pytest.approx(expected_worst, rel=1e-12) and expected_worst > 0
    assert res == pytest.approx(max(on, expected_worst) / scale, rel=1e-12)
    listed = np.flatnonzero(off & (v >= gram_module._ENTER_SHARE * expected_worst))
    assert n_cand == listed.size and (cand[:n_cand] == listed).all()
    np.testing.assert_allclose(violation[:n_cand], v[listed], rtol=1e-12)


def test_float32_reaches_its_default_tolerance():
    x, basis = _planted(500, 64, 256, seed=1)
    codes, info = diffsc.sparse_code_with_info(x.float(), basis.float(), prior="l1", strength=0.2)
    exact = diffsc.sparse_code(x, basis, prior="l1", strength=0.2, tol=1e-12)
    assert codes.dtype == torch.float32 and info.all_converged and info.tol == 1e-4
    problem = diffsc.Problem.of("gaussian", "l1")
    lam, one = torch.tensor(0.2, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64)
    f_codes = problem.objective(x, basis, lam, one, codes.double()).sum()
    gap = f_codes / problem.objective(x, basis, lam, one, exact).sum() - 1
    assert 0 <= float(gap) < 1e-6


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("prior", L1_PRIORS)
@pytest.mark.parametrize("shape", [(30, 60), (20, 100), (8, 12)])
def test_weak_priors_whose_supports_hold_d_atoms(prior, shape, dtype, monkeypatch):
    # At lam = 1e-3 |B^T x| the codes of an overcomplete basis use D atoms,
    # and every violator's atom lies in their span: the loop could not add
    # it and handed the code to the torch active set (before the pivot: all
    # 100 codes at 30 x 60, of which 19 converged in float32 within 2,000
    # iterations, 9 s; now the loop itself finishes nearly all).
    gram_module = sys.modules["diffsc.solvers.gram"]
    handed = []
    monkeypatch.setattr(gram_module, "active_set", lambda *a: handed.append(a[1].shape[0]) or active_set(*a))
    d, k = shape
    x, basis = problem_data("gaussian", n=100, d=d, k=k, seed=3, dtype=dtype)
    lam = 1e-3 * float((x @ basis).abs().max())
    codes, info = diffsc.sparse_code_with_info(x, basis, prior=prior, strength=lam)
    assert info.solver == "gram" and info.all_converged, int((~info.converged).sum())
    assert sum(handed) <= 2, handed
    assert float((codes != 0).sum(1).double().mean()) > 0.7 * d  # the regime meant: supports of about D
    # the residual the solver reports is the codes' own, as float64 finds it
    # (float32: to its rounding of G and B^T x)
    found = _residual(prior, x.double(), basis.double(), lam, codes.double())
    torch.testing.assert_close(info.residual.double(), found, rtol=0, atol=1e-5 if dtype == torch.float32 else 1e-13)
    if dtype == torch.float64:  # the lasso's optimum, as the torch active set finds it
        exact = diffsc.sparse_code(x, basis, prior=prior, strength=lam, tol=1e-12, solver="active_set")
        problem = diffsc.Problem.of("gaussian", prior)
        args = (x, basis, torch.tensor(lam, dtype=dtype), torch.tensor(1.0, dtype=dtype))
        assert float((problem.objective(*args, codes) / problem.objective(*args, exact) - 1).max()) < 1e-12


@pytest.mark.parametrize("prior", L1_PRIORS)
def test_warm_starts_of_any_sign_and_support(prior):
    x, basis = _planted(40, 20, 60, seed=3)
    exact = diffsc.sparse_code(x, basis, prior=prior, strength=0.1, tol=1e-12, solver="active_set")
    g = torch.Generator().manual_seed(0)
    for init in (exact, torch.randn(exact.shape, generator=g, dtype=torch.float64), -exact):
        codes, info = diffsc.sparse_code_with_info(x, basis, prior=prior, strength=0.1, tol=1e-12, init=init)
        assert info.all_converged
        torch.testing.assert_close(codes, exact, rtol=1e-8, atol=1e-10)
    _, info = diffsc.sparse_code_with_info(x, basis, prior=prior, strength=0.1, tol=1e-12, init=exact)
    assert int(info.iterations.max()) <= 1  # already optimal: nothing to do


def test_singular_supports_are_finished_by_the_general_solver():
    """Twin atoms and supports of more atoms than dimensions: the Cholesky
    factor cannot grow, so those codes go to the torch active set."""
    x, basis = problem_data("gaussian", n=8, d=4, k=12, seed=2)
    basis = torch.cat([basis, basis[:, :3]], dim=1)  # three twin atoms
    codes, info = diffsc.sparse_code_with_info(x, basis, prior="l1", strength=0.01, tol=1e-10)
    reference = diffsc.sparse_code(x, basis, prior="l1", strength=0.01, tol=1e-10, solver="active_set")
    assert info.all_converged
    lam, one = torch.tensor(0.01, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64)
    problem = diffsc.Problem.of("gaussian", "l1")
    torch.testing.assert_close(problem.objective(x, basis, lam, one, codes),
                               problem.objective(x, basis, lam, one, reference), rtol=1e-10, atol=0)


def test_iteration_cap_is_reported():
    x, basis = _planted(20, 64, 256, seed=4)
    with pytest.warns(diffsc.ConvergenceWarning, match="solver 'gram'"):
        _, info = diffsc.sparse_code_with_info(x, basis, prior="l1", strength=0.1, max_iter=2)
    assert not info.all_converged and int(info.iterations.max()) <= 2


def test_unrolled_backward_uses_torch_and_gram_refuses_it():
    x, basis = problem_data("gaussian", n=3, d=8, k=6)
    basis.requires_grad_(True)
    codes, info = diffsc.sparse_code_with_info(x, basis, prior="l1", strength=0.1, backward="unrolled")
    assert info.solver == "active_set" and codes.requires_grad
    with pytest.raises(ValueError, match="'gram' is compiled code that autograd cannot unroll"):
        diffsc.sparse_code(x, basis, prior="l1", strength=0.1, backward="unrolled", solver="gram")
    with pytest.raises(ValueError, match="'gram' solves the gaussian family only"):
        diffsc.sparse_code(x.abs().round() + 1, basis.detach(), family="softmax", prior="l1", solver="gram")


def test_implicit_gradient_through_gram_codes():
    """The backward pass does not care which solver found the codes."""
    x, basis = _planted(30, 16, 40, seed=5)
    basis.requires_grad_(True)
    weights = torch.randn(30, 40, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    grads = []
    for solver in ("gram", "active_set"):
        codes = diffsc.sparse_code(x, basis, prior="l1", strength=0.1, tol=1e-12, solver=solver)
        grads.append(torch.autograd.grad((codes * weights).sum(), basis)[0])
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-7, atol=1e-9)


def test_compiled_support_solve_equals_torch():
    """The backward's compiled (B_S^T B_S)^{-1} g equals the torch one, and
    reports the same singular rows (more atoms in S than dimensions)."""
    from diffsc.hessian import support_solve
    from diffsc.gram_cholesky import support_solve as gram_support_solve

    g = torch.Generator().manual_seed(6)
    basis = random_basis(10, 30, g)
    support = torch.rand(50, 30, generator=g) < 0.2
    support[:3] = torch.rand(3, 30, generator=g) < 0.6  # likely more than 10 atoms: singular
    rhs = torch.randn(50, 30, generator=g, dtype=torch.float64)
    ours, ok = gram_support_solve(basis, support, rhs)
    family = diffsc.Problem.of("gaussian", "l1").family
    reference, ok_ref = support_solve(family, basis, None, support, rhs)  # (no r for the gaussian family)
    assert bool((ok == ok_ref).all()) and not bool(ok[:3].any()) and bool(ok[3:].all())
    torch.testing.assert_close(ours[ok], reference[ok], rtol=1e-9, atol=1e-10)
    assert bool((ours[~support] == 0).all())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fista_the_gpu_default_gives_the_cpu_codes_and_gradients(dtype):
    """FISTA (gaussian L1 off the CPU) against the CPU's Gram solver, at
    ``tests/test_cuda.py``'s tolerances, so a GPU's codes match the CPU's."""
    x, basis = problem_data("gaussian", n=64, d=20, k=16, dtype=dtype)
    out = []
    for solver in ("gram", "fista"):
        b = basis.detach().clone().requires_grad_()
        codes = diffsc.sparse_code(x, b, prior="l1", strength=0.2, solver=solver)
        codes.square().sum().backward()
        out.append((codes.detach(), b.grad))
    tol = dict(rtol=1e-3, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(out[1][0], out[0][0], **tol)
    torch.testing.assert_close(out[1][1], out[0][1], **tol)


def test_compiled_solvers_leave_torchs_thread_count_alone():
    # Launching numba's OpenMP layer (in a fresh process, the first compiled
    # solve) reset OpenMP's thread count, torch's with it: 1 became 2.
    script = ("import torch, diffsc; torch.set_num_threads(1); "
              "x = torch.randn(20, 8, dtype=torch.float64); b = torch.randn(8, 5, dtype=torch.float64); "
              "diffsc.sparse_code(x, b, prior='l1', strength=0.1); "
              "diffsc.sparse_code(x.abs().round(), b, family='poisson', prior='l1', strength=0.1); "
              "print(torch.get_num_threads())")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.split()[-1] == "1"
