"""The fused Newton-CG loop for a few rows: when it is taken, and what it hands back.

That it takes the chunk loop's steps to the same codes is checked with the
chunk loop's tests (``test_newton_cg_compiled.py``, ``test_newton_cg.py``:
their ``fused`` cases).
"""

import sys

import pytest
import torch

import diffsc
import diffsc.solvers  # noqa: F401  (the module below, not the function it exports)
from diffsc.solvers.newton_cg_fused import FUSED_ROWS
from helpers import planted

newton_cg_module = sys.modules["diffsc.solvers.newton_cg"]


@pytest.fixture
def fused_calls(monkeypatch):
    """What each call of the fused loop returned: True for codes, False for rows handed back."""
    calls, fused_rows = [], newton_cg_module.fused_rows

    def spy(*args, **kwargs):
        out = fused_rows(*args, **kwargs)
        calls.append(out is not None)
        return out

    monkeypatch.setattr(newton_cg_module, "fused_rows", spy)
    return calls


KW = dict(prior="signed_kl", strength=0.05, prior_mean=0.01)


def test_few_rows_cold_started_take_it(fused_calls):
    x, basis = planted(FUSED_ROWS + 1, 16, 40, seed=1)
    _, info = diffsc.sparse_code_with_info(x[:FUSED_ROWS], basis, **KW)
    assert fused_calls == [True] and bool(info.converged.all()) and info.solver == "newton_cg"
    diffsc.sparse_code_with_info(x, basis, **KW)  # more rows: the chunk loop
    diffsc.sparse_code_with_info(x[:2], basis, init=torch.ones(2, 40, dtype=x.dtype), **KW)  # a warm start
    diffsc.sparse_code_with_info(x[:2].abs(), basis, family="poisson", prior="kl")  # another family
    assert fused_calls == [True]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_one_input(fused_calls, dtype):
    x, basis = (v.to(dtype) for v in planted(1, 16, 40, seed=2))
    w, info = diffsc.sparse_code_with_info(x[0], basis, **KW)
    assert fused_calls == [True] and w.shape == (40,) and w.dtype == dtype and bool(info.converged)
    problem = diffsc.problem.Problem.of("gaussian", "signed_kl")
    lam, p = torch.tensor(0.05, dtype=dtype), torch.tensor(0.01, dtype=dtype)
    assert float(problem.residual(x, basis, lam, p, w[None])) <= 2 * info.tol


def test_a_cg_that_falls_short_hands_the_rows_back(monkeypatch, fused_calls):
    # Two CG iterations a step are short of the accuracy asked: the fused loop
    # hands the rows back, and the chunk loop takes its factored steps.
    x, basis = planted(8, 16, 32, seed=2)
    kw = dict(KW, tol=1e-10)
    monkeypatch.setattr(newton_cg_module, "_CG_STEP_MAX", 2)
    w, info = diffsc.sparse_code_with_info(x, basis, solver="newton_cg", **kw)
    assert fused_calls == [False] and bool(info.converged.all())
    exact, _ = diffsc.sparse_code_with_info(x, basis, solver="newton", **kw)
    torch.testing.assert_close(w, exact, rtol=1e-6, atol=1e-10)


def _robustness_batch(seed, prior, lam, p):
    """The gaussian batch of ``benchmarks/robustness.py`` for this seed and setting."""
    import itertools

    from helpers import random_basis, random_inputs

    families, priors, settings = ["gaussian", "softmax", "poisson", "bernoulli"], ["l2", "kl", "signed_kl"], \
        [(1e-4, 1e-4), (1e-2, 1e-3), (0.5, 0.1), (5.0, 2.0), (1e-3, 10.0)]
    g = torch.Generator().manual_seed(seed)
    d, k = int(torch.randint(3, 40, (1,), generator=g)), int(torch.randint(2, 80, (1,), generator=g))
    for family, name, setting in itertools.product(families, priors, settings):
        x = random_inputs(family, 16, d, g) * (10 if family == "gaussian" and seed % 2 else 1)
        basis = random_basis(d, k, g)
        if (family, name, setting) == ("gaussian", prior, (lam, p)):
            return x, basis


@pytest.mark.parametrize(("seed", "lam", "p"), [(3, 1e-4, 1e-4), (3, 1e-2, 1e-3), (9, 1e-2, 1e-3)])
def test_kl_codes_near_zero_take_their_own_rows(fused_calls, seed, lam, p):
    # Three of robustness.py's float64 KL batches, one row short each: CG's
    # scaled norm does not see a KL code near 0, and without the chunk
    # loop's decoupled rows (hessian_cg.decouple) one crept for 300 steps
    # (residual 2.6e-3) and two stopped at 6.3e-6 and 2.1e-6 (tol 1e-10).
    x, basis = _robustness_batch(seed, "kl", lam, p)
    _, info = diffsc.sparse_code_with_info(x, basis, prior="kl", strength=lam, prior_mean=p, max_iter=300)
    assert fused_calls == [True] and bool(info.converged.all()), float(info.residual.max())


@pytest.mark.parametrize(("seed", "d", "k", "scale"), [(24, 6, 12, 1.0), (4, 12, 30, 10.0)])
def test_a_row_no_step_lowers_hands_the_rows_back(fused_calls, seed, d, k, scale):
    # Two of weak_kl.py's float64 batches (lam = p = 1e-4): near the
    # tolerance one row's line search refused every point (residual 4.6e-10
    # and 1.4e-10, tol 1e-10); handed back, the chunk loop's checked steps
    # finish it.
    from helpers import problem_data

    x, basis = problem_data("gaussian", n=16, d=d, k=k, seed=seed)
    _, info = diffsc.sparse_code_with_info(scale * x, basis, prior="kl", strength=1e-4, prior_mean=1e-4,
                                           max_iter=300)
    assert fused_calls == [False] and bool(info.converged.all()), float(info.residual.max())
