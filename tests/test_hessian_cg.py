"""Hessian solves by conjugate gradients (the backward pass for smooth priors) against factorisations."""

import numpy as np
import pytest
import torch

import diffsc
import diffsc.hessian_cg as hessian_cg
import diffsc.solvers.newton_cg_compiled as compiled
from diffsc.hessian import hessian_solve
from helpers import problem_data


#: Gaussian rows on the CPU: the fused loop (a few rows), compiled_cg; elsewhere the torch cg.
LOOPS = ["fused", "compiled", "torch"]


def _take(monkeypatch, loop):
    monkeypatch.setattr(hessian_cg, "COMPILED", loop != "torch")
    monkeypatch.setattr(hessian_cg, "FUSED_CG_ROWS", 10**9 if loop == "fused" else 0)


def _state(family, prior, d, k, seed=0):
    x, basis = problem_data(family, n=40, d=d, k=k, seed=seed)
    problem = diffsc.Problem.of(family, prior)
    lam, p = torch.tensor(0.1, dtype=torch.float64), torch.tensor(0.05, dtype=torch.float64)
    x = problem.family.prepare(x)
    w = diffsc.solvers.solve(problem, x, basis, lam, p, tol=1e-12).codes
    rhs = torch.randn(w.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return problem, basis, lam, p, w, problem.reconstruction(basis, w), rhs


@pytest.mark.parametrize(("family", "prior", "d", "k"), [
    ("gaussian", "kl", 12, 30),       # two products with B
    ("gaussian", "signed_kl", 30, 20),  # one with G = B^T B
    ("gaussian", "l2", 12, 30),
    ("softmax", "kl", 12, 20),
    ("poisson", "signed_kl", 12, 20),
])
@pytest.mark.parametrize("loop", LOOPS)
def test_same_solution_as_the_factorisation(family, prior, d, k, loop, monkeypatch):
    _take(monkeypatch, loop)
    problem, basis, lam, p, w, r, rhs = _state(family, prior, d, k)
    by_cg, ok = hessian_cg.cg_solve(problem, basis, lam, p, w, r, rhs)
    direct, ok_direct = hessian_solve(problem, basis, lam, p, w, r, rhs, direct=True)
    assert bool(ok.all()) and bool(ok_direct.all())
    torch.testing.assert_close(by_cg, direct, rtol=1e-9, atol=1e-11)
    assert torch.equal(hessian_solve(problem, basis, lam, p, w, r, rhs)[0], by_cg)  # the default path


@pytest.mark.parametrize(("d", "k"), [(12, 30), (30, 20)])  # products through B, through G
@pytest.mark.parametrize("loop", LOOPS)
def test_gaussian_solves_need_no_reconstruction(d, k, loop, monkeypatch):
    # the backward passes r = None for the gaussian family (S = I), on the
    # torch loop (CUDA's) as on the compiled ones, and to the factored solve
    _take(monkeypatch, loop)
    problem, basis, lam, p, w, r, rhs = _state("gaussian", "kl", d, k)
    by_cg, ok = hessian_cg.cg_solve(problem, basis, lam, p, w, None, rhs)
    direct, ok_direct = hessian_solve(problem, basis, lam, p, w, None, rhs, direct=True)
    assert bool(ok.all()) and bool(ok_direct.all())
    torch.testing.assert_close(by_cg, direct, rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(direct, hessian_solve(problem, basis, lam, p, w, r, rhs, direct=True)[0])


@pytest.mark.parametrize("loop", LOOPS)
def test_rows_cg_does_not_finish_are_factored(monkeypatch, loop):
    _take(monkeypatch, loop)
    problem, basis, lam, p, w, r, rhs = _state("gaussian", "kl", 12, 30)
    monkeypatch.setattr(hessian_cg, "CG_MAX", 2)
    partial, ok = hessian_cg.cg_solve(problem, basis, lam, p, w, r, rhs)
    assert not bool(ok.any())
    solution, ok = hessian_solve(problem, basis, lam, p, w, r, rhs)
    direct, _ = hessian_solve(problem, basis, lam, p, w, r, rhs, direct=True)
    assert bool(ok.all())
    torch.testing.assert_close(solution, direct, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("rounds", [4, 1])  # 1: the rows a round leaves short finish in float64
@pytest.mark.parametrize(("prior", "d", "k"), [("kl", 12, 30), ("signed_kl", 30, 20)])
def test_float32_rounds_reach_float64s_accuracy(prior, d, k, rounds, monkeypatch):
    problem, basis, lam, p, w, r, rhs = _state("gaussian", prior, d, k)
    monkeypatch.setattr(hessian_cg, "REFINE_ROWS", 40)  # (the 40 rows of _state)
    dtypes = []
    solve = hessian_cg.compiled_cg
    monkeypatch.setattr(hessian_cg, "compiled_cg", lambda *a: dtypes.append(a[2].dtype) or solve(*a))
    monkeypatch.setattr(hessian_cg, "REFINE_ROUNDS", rounds)
    refined, ok = hessian_cg.cg_solve(problem, basis, lam, p, w, r, rhs)
    assert bool(ok.all())
    assert dtypes[0] == np.float32 and (np.float64 in dtypes) == (rounds == 1)
    direct, _ = hessian_solve(problem, basis, lam, p, w, r, rhs, direct=True)
    torch.testing.assert_close(refined, direct, rtol=1e-9, atol=1e-11)


def test_few_rows_stay_float64(monkeypatch):
    monkeypatch.setattr(hessian_cg, "REFINE_ROWS", 21)
    problem, basis, lam, p, w, r, rhs = _state("gaussian", "kl", 12, 30)
    rows = slice(0, 20)
    dtypes = []
    solve = hessian_cg.compiled_cg
    monkeypatch.setattr(hessian_cg, "compiled_cg", lambda *a: dtypes.append(a[2].dtype) or solve(*a))
    few, ok = hessian_cg.cg_solve(problem, basis, lam, p, w[rows], r[rows], rhs[rows])
    assert bool(ok.all()) and dtypes == [np.float64]
    direct, _ = hessian_solve(problem, basis, lam, p, w[rows], r[rows], rhs[rows], direct=True)
    torch.testing.assert_close(few, direct, rtol=1e-9, atol=1e-11)


def test_decouple_solves_the_own_rows_of_codes_near_zero():
    # Gaussian KL codes: H_L = G = B^T B, the prior's scaled part is lam.
    # Coordinates with S^2 G_ii <= DECOUPLED lam take their own row of
    # (S G S + lam) z = -S g given the others; the rest are left as they are.
    g_ = torch.Generator().manual_seed(0)
    basis = torch.randn(7, 6, generator=g_, dtype=torch.float64)
    gram, lam = basis.T @ basis, torch.full((6,), 0.1, dtype=torch.float64)
    scale = torch.rand(4, 6, generator=g_, dtype=torch.float64) + 0.5
    scale[:, :2] = 1e-6  # S^2 G_ii ~ 1e-11: decoupled
    free = torch.ones(4, 6, dtype=torch.bool)
    free[0, 0] = False
    g, z = (torch.randn(4, 6, generator=g_, dtype=torch.float64) for _ in range(2))
    diag = lam + scale.square() * gram.diag()
    product = (scale * free * z) @ gram
    z_new, product_new = hessian_cg.decouple(g, scale, diag - diag + lam, diag, free, z, product)

    own = free & (scale < 1e-3)
    assert not bool(own[0, 0]) and z_new[0, 0] == z[0, 0]
    assert torch.equal(z_new[~own], z[~own]) and torch.equal(product_new[~own], product[~own])
    # the scaled residual of their rows, down from ~lam z to the coupling of
    # two decoupled codes in one row (S_i S_j G_ij ~ 1e-12)
    row = scale * ((scale * free * z_new) @ gram + g) + lam * z_new
    assert float(row[own].abs().max()) < 1e-11 and float((scale * (product + g) + lam * z)[own].abs().min()) > 1e-3
    # H d follows each own coordinate's change, not its neighbours': off by
    # at most |G| |change of d| (d moves by ~1e-6 here, H d's entries ~1)
    moved = (scale * free * (z_new - z)).abs()
    assert float(moved.max()) > 1e-7
    assert bool(((product_new - (scale * free * z_new) @ gram).abs() <= 1.001 * moved @ gram.abs() + 1e-15).all())

    # the compiled loop's kernel: the same (to the rounding of g + others), in
    # place on z, d = S z and H d
    sol, step = z.numpy().copy(), (scale * free * z).numpy().copy()
    prod = product.numpy().copy()
    compiled._decouple(sol, scale.numpy(), (~free).numpy(), g.numpy(), prod, gram.diag().numpy().copy(),
                       lam.numpy(), hessian_cg.DECOUPLED, step)
    np.testing.assert_allclose(sol, z_new.numpy(), rtol=1e-9, atol=0)
    np.testing.assert_allclose(prod, product_new.numpy(), rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(step, (scale * free * z_new).numpy(), rtol=1e-9, atol=0)
