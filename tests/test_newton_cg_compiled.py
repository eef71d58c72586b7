"""The compiled Newton-CG loop (gaussian codes on the CPU) against the torch loop it fuses."""

import sys

import pytest
import torch

import diffsc
import diffsc.solvers  # noqa: F401  (the module below, not the function it exports)
import diffsc.solvers.newton_cg_compiled as compiled
from diffsc.problem import Problem
from helpers import planted, problem_data

newton_cg_module = sys.modules["diffsc.solvers.newton_cg"]


@pytest.fixture(params=["chunk", "fused"])
def compiled_loop(request, monkeypatch):
    """The compiled loop taken: the chunk loop, or the fused loop
    (:mod:`diffsc.solvers.newton_cg_fused`) for every cold start."""
    monkeypatch.setattr(newton_cg_module, "FUSED", request.param == "fused")
    monkeypatch.setattr(newton_cg_module, "FUSED_ROWS", 10**9)
    return request.param


def _both(monkeypatch, x, basis, **kw):
    """The compiled loop's codes and the torch loop's."""
    out = {}
    for loop in (True, False):
        monkeypatch.setattr(newton_cg_module, "COMPILED", loop)
        out[loop] = diffsc.sparse_code_with_info(x, basis, solver="newton_cg", **kw)
    return out[True], out[False]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(("d", "k"), [(12, 40), (40, 24)])  # two products with B; one with G = B^T B
@pytest.mark.parametrize("prior", ["kl", "signed_kl", "l2"])
def test_same_codes_and_steps_as_the_torch_loop(monkeypatch, compiled_loop, prior, d, k, dtype):
    x, basis = (v.to(dtype) for v in planted(70, d, k, seed=d + k, density=0.1))
    kw = dict(prior=prior, strength=0.05, prior_mean=0.01)
    (w, info), (w_torch, info_torch) = _both(monkeypatch, x, basis, **kw)
    assert bool(info.converged.all()) and bool(info_torch.converged.all())
    # The same iteration up to rounding: the same steps, codes as close as the tolerance allows.
    # (The fused loop takes float64 codes there in float64 alone, not float32 first: a step more, at most two.)
    assert (info.iterations - info_torch.iterations).abs().max() <= (1 if compiled_loop == "chunk" else 2)
    rtol, atol = (1e-7, 1e-9) if dtype == torch.float64 else (2e-3, 2e-4)
    torch.testing.assert_close(w, w_torch, rtol=rtol, atol=atol)
    # The residual reported is the problem's own.
    problem = Problem.of("gaussian", prior)
    lam, p = torch.tensor(0.05, dtype=dtype), torch.tensor(0.01, dtype=dtype)
    if dtype == torch.float64:
        torch.testing.assert_close(info.residual, problem.residual(x, basis, lam, p, w), rtol=1e-3, atol=1e-12)
    else:  # float32 rounding alone moves a residual of 1e-5 by a tenth
        assert float(problem.residual(x, basis, lam, p, w).max()) <= 2 * info.tol


def test_kl_jumps_and_the_floor(monkeypatch, compiled_loop):
    # With B = I each code solves w - x + lam log(w / p) = 0: x = -1 puts it
    # near e^-100 (a jump of newton's _far), x = -10 near e^-1000, below
    # float64's range (held at its smallest normal number: optimal there).
    g = torch.Generator().manual_seed(0)
    x = torch.tensor([-10.0, -1.0, 0.5, 2.0], dtype=torch.float64)[torch.randint(0, 4, (40, 8), generator=g)]
    kw = dict(prior="kl", strength=0.01, prior_mean=1.0, tol=1e-10)
    (w, info), (w_torch, _) = _both(monkeypatch, x, torch.eye(8, dtype=torch.float64), **kw)
    assert bool(info.converged.all())
    torch.testing.assert_close(w, w_torch, rtol=1e-8, atol=0)
    tiny = torch.finfo(torch.float64).tiny
    assert bool((w[x == -10] == tiny).all())
    far = w[x == -1]
    assert bool(((far > 1e-50) & (far < 1e-40)).all())


def test_per_atom_strengths_and_means(monkeypatch, compiled_loop):
    x, basis = planted(40, 16, 24, seed=8, density=0.1)
    g = torch.Generator().manual_seed(0)
    lam = 0.01 + 0.1 * torch.rand(24, generator=g, dtype=torch.float64)
    p = 0.001 + 0.1 * torch.rand(24, generator=g, dtype=torch.float64)
    for prior in ["kl", "signed_kl"]:
        (w, info), (w_torch, _) = _both(monkeypatch, x, basis, prior=prior, strength=lam, prior_mean=p, tol=1e-10)
        assert bool(info.converged.all())
        torch.testing.assert_close(w, w_torch, rtol=1e-7, atol=1e-10)


def test_warm_start(monkeypatch):
    x, basis = planted(20, 16, 24, seed=9, density=0.1)
    kw = dict(prior="signed_kl", strength=0.05, prior_mean=0.01, tol=1e-10)
    w0, _ = diffsc.sparse_code_with_info(x, basis, solver="newton_cg", **kw)
    (w, info), (_, info_torch) = _both(monkeypatch, x, basis, init=w0 * 1.01, **kw)
    # a start 1% off: a few steps (both phases), as the torch loop takes
    assert bool(info.converged.all()) and int(info.iterations.max()) <= int(info_torch.iterations.max()) <= 5
    torch.testing.assert_close(w, w0, rtol=1e-6, atol=1e-10)  # both at tol 1e-10


def test_which_problems_it_takes():
    x = torch.zeros(2, 3)
    assert compiled.handles(Problem.of("gaussian", "kl"), x)
    assert compiled.handles(Problem.of("gaussian", "l2"), x)
    assert not compiled.handles(Problem.of("softmax", "kl"), x)  # the torch loop: a transfer to apply
    assert not compiled.handles(Problem.of("gaussian", "uniform"), x)
    assert not compiled.handles(Problem.of("gaussian", "kl"), x.to("meta"))  # CUDA: the torch loop


def test_other_families_keep_the_torch_loop(monkeypatch):
    x, basis = problem_data("poisson", n=10, d=8, k=12, seed=1)
    monkeypatch.setattr(newton_cg_module, "compiled_chunk", lambda *a: pytest.fail("compiled loop used"))
    w, info = diffsc.sparse_code_with_info(x, basis, family="poisson", prior="kl", strength=0.1, prior_mean=0.05)
    assert bool(info.converged.all())


def test_a_gradient_that_is_not_finite_is_not_converged():
    # Signed-KL codes of 1e38 in float32: their mirror coordinate overflows
    # to inf, the gradient with it. The residual's max() dropped the NaN and
    # said 0: converged at 0 steps. (solve() now falls back from such a start.)
    x, basis = planted(8, 12, 40, seed=1)
    x, basis = x.float(), basis.float()
    problem = Problem.of("gaussian", "signed_kl")
    lam, p = torch.tensor(0.05), torch.tensor(0.01)
    model = newton_cg_module._Model(problem, basis, lam, p, torch.float32).of(x)
    w, iterations, residual, _ = compiled.compiled_chunk(model, torch.full((8, 40), 1e38), 1e-4, 0, 0.1, 0.1, 50,
                                                         0.25, 1e-37, 5)
    assert bool(residual.isnan().all()) and not bool((residual <= 1e-4).any())


def test_a_limited_step_all_but_orthogonal_to_the_gradient_is_scaled_instead():
    # Newton's step (-100, 29.9) descends with slope -70.1; limited entry by
    # entry to (-30, 29.9) it keeps a slope of -0.1 only, along a curve that
    # can rise for every t F resolves (weak KL priors stopped 0.09 short).
    # Scaling the whole step by 0.3 keeps slope -21.03: that step is taken,
    # by both loops.
    import numpy as np

    from diffsc.priors import KL
    from diffsc.solvers.newton import _limit

    w = torch.ones(1, 2, dtype=torch.float64)
    g = torch.ones(1, 2, dtype=torch.float64)
    step = torch.tensor([[-100.0, 29.9]], dtype=torch.float64)
    p = torch.ones((), dtype=torch.float64)
    ds, slope, _ = _limit(KL(), w, p, g, step)
    torch.testing.assert_close(ds, 0.3 * step)
    torch.testing.assert_close(slope, torch.tensor([-21.03], dtype=torch.float64))
    out = np.empty((1, 2)), np.empty(1), np.empty(1, np.bool_), np.empty(1)
    far = np.zeros((1, 2), np.bool_)
    compiled._limit(compiled.KL, w.numpy(), np.zeros((1, 2)), g.numpy(), step.numpy().copy(), far, np.zeros((1, 2)),
                    np.zeros(1, np.bool_), np.ones(2), 1e-300, *out)
    np.testing.assert_allclose(out[0], 0.3 * step.numpy())
    np.testing.assert_allclose(out[1], [-21.03])
    # a limit that keeps most of the descent is kept: (-100, -29.9) -> (-30, -29.9)
    ds, slope, _ = _limit(KL(), w, p, -g, torch.tensor([[100.0, 29.9]], dtype=torch.float64))
    torch.testing.assert_close(ds, torch.tensor([[30.0, 29.9]], dtype=torch.float64))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_kl_bent_line_as_the_torch_loop(monkeypatch, dtype):
    # lam = 1e-3: some steps whose curve fails at t = 1 and 1/2 take the bent
    # line (newton's module docstring); both loops take it alike. (Without
    # the line in the torch loop, steps differed by 3 and float32 codes by 3e-4.)
    x, basis = (v.to(dtype) for v in planted(70, 40, 24, seed=64, density=0.1))
    taken = []
    lower_of_line = compiled._lower_of_line

    def counted(prior, rows, cand, *args):
        before = cand[: rows.size].copy()
        lower_of_line(prior, rows, cand, *args)
        taken.append(int((before != cand[: rows.size]).any(1).sum()))

    monkeypatch.setattr(compiled, "_lower_of_line", counted)
    (w, info), (w_torch, info_torch) = _both(monkeypatch, x, basis, prior="kl", strength=1e-3, prior_mean=0.01)
    assert sum(taken) > 10
    assert bool(info.converged.all()) and bool(info_torch.converged.all())
    assert (info.iterations - info_torch.iterations).abs().max() <= 1
    rtol, atol = (1e-7, 1e-9) if dtype == torch.float64 else (1e-5, 1e-5)
    torch.testing.assert_close(w, w_torch, rtol=rtol, atol=atol)
