"""Hessian solves by conjugate gradients (the backward pass for smooth priors) against factorisations."""

import pytest
import torch

import diffsc
import diffsc.hessian_cg as hessian_cg
from diffsc.hessian import hessian_solve
from helpers import problem_data


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
@pytest.mark.parametrize("compiled", [True, False])  # gaussian rows on the CPU: compiled_cg, else the torch cg
def test_same_solution_as_the_factorisation(family, prior, d, k, compiled, monkeypatch):
    monkeypatch.setattr(hessian_cg, "COMPILED", compiled)
    problem, basis, lam, p, w, r, rhs = _state(family, prior, d, k)
    by_cg, ok = hessian_cg.cg_solve(problem, basis, lam, p, w, r, rhs)
    direct, ok_direct = hessian_solve(problem, basis, lam, p, w, r, rhs, direct=True)
    assert bool(ok.all()) and bool(ok_direct.all())
    torch.testing.assert_close(by_cg, direct, rtol=1e-9, atol=1e-11)
    assert torch.equal(hessian_solve(problem, basis, lam, p, w, r, rhs)[0], by_cg)  # the default path


@pytest.mark.parametrize("compiled", [True, False])
def test_rows_cg_does_not_finish_are_factored(monkeypatch, compiled):
    monkeypatch.setattr(hessian_cg, "COMPILED", compiled)
    problem, basis, lam, p, w, r, rhs = _state("gaussian", "kl", 12, 30)
    monkeypatch.setattr(hessian_cg, "CG_MAX", 2)
    partial, ok = hessian_cg.cg_solve(problem, basis, lam, p, w, r, rhs)
    assert not bool(ok.any())
    solution, ok = hessian_solve(problem, basis, lam, p, w, r, rhs)
    direct, _ = hessian_solve(problem, basis, lam, p, w, r, rhs, direct=True)
    assert bool(ok.all())
    torch.testing.assert_close(solution, direct, rtol=1e-12, atol=1e-14)
