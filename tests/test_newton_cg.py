"""Newton-CG (the default for smooth priors) against the factored Newton solver."""

import sys
import warnings

import numpy as np
import pytest
import torch

import diffsc
import diffsc.solvers  # noqa: F401  (the module below, not the function it exports)
from helpers import planted, problem_data

import diffsc.hessian_cg as hessian_cg
from diffsc.hessian_cg import rows_at_once, rows_in_memory
import diffsc.solvers.newton_cg_compiled as compiled

newton_cg_module = sys.modules["diffsc.solvers.newton_cg"]


def _take(monkeypatch, loop):
    monkeypatch.setattr(newton_cg_module, "COMPILED", loop != "torch")
    monkeypatch.setattr(newton_cg_module, "FUSED", loop == "fused")
    if loop == "fused":  # every cold start, however many rows
        monkeypatch.setattr(newton_cg_module, "FUSED_ROWS", 10**9)
    return loop


@pytest.fixture(params=["fused", "compiled", "torch"])
def loop(request, monkeypatch):
    """Gaussian codes on the CPU take the fused loop (a few rows, cold
    started) or the compiled chunk loop; CUDA (and any other family) the
    torch loop, checked here on the CPU."""
    return _take(monkeypatch, request.param)


@pytest.fixture(params=["compiled", "torch"])
def chunk_loop(request, monkeypatch):
    """The chunk loops alone: what they do that the fused loop hands back to them."""
    return _take(monkeypatch, request.param)


def _codes(x, basis, solver, **kw):
    return diffsc.sparse_code_with_info(x, basis, solver=solver, **kw)


@pytest.mark.parametrize(("family", "prior"), [
    ("gaussian", "kl"), ("gaussian", "signed_kl"), ("gaussian", "l2"),
    ("softmax", "kl"), ("poisson", "kl"), ("bernoulli", "signed_kl"), ("softmax", "l2"),
])
def test_same_codes_as_newton(family, prior):
    x, basis = problem_data(family, n=30, d=12, k=20, seed=3)
    kw = dict(family=family, prior=prior, strength=0.1, prior_mean=0.05, tol=1e-10)
    w_cg, info = _codes(x, basis, "newton_cg", **kw)
    w_newton, _ = _codes(x, basis, "newton", **kw)
    assert info.solver == "newton_cg" and bool(info.converged.all())
    # Both meet tol 1e-10; the codes then agree to about cond(H) times that.
    torch.testing.assert_close(w_cg, w_newton, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize(("d", "k"), [(16, 64), (64, 40)])  # two products with B; one with G = B^T B
@pytest.mark.parametrize("prior", ["kl", "signed_kl"])
def test_planted_problems_both_product_routes(d, k, prior, loop):
    x, basis = planted(80, d, k, seed=d)
    kw = dict(prior=prior, strength=0.05, prior_mean=0.01, tol=1e-10)
    w_cg, info = _codes(x, basis, "newton_cg", **kw)
    assert bool(info.converged.all())
    torch.testing.assert_close(w_cg, _codes(x, basis, "newton", **kw)[0], rtol=1e-6, atol=1e-10)


def test_chunks_give_the_same_codes(monkeypatch, loop):
    x, basis = planted(50, 16, 32, seed=1)
    kw = dict(prior="kl", strength=0.05, prior_mean=0.01, tol=1e-10)
    whole, _ = _codes(x, basis, "newton_cg", **kw)
    monkeypatch.setattr(newton_cg_module, "CHUNK", 7)
    chunked, info = _codes(x, basis, "newton_cg", **kw)
    assert bool(info.converged.all())
    torch.testing.assert_close(chunked, whole, rtol=1e-8, atol=1e-12)


def test_rows_at_once_cache_sized_on_cpu_memory_sized_on_gpu():
    assert rows_at_once(torch.device("cpu"), 256) == hessian_cg.ROWS
    # a GPU with 16 GB free: 4 GB for rows of 32 float64 vectors of 256
    assert rows_in_memory(16e9, 256) == int(4e9) // (32 * 8 * 256) > 10_000
    assert rows_in_memory(16e9, 10**9, at_least=64) == 64  # never fewer than the CPU's


def test_rows_cg_cannot_solve_take_the_factored_step(monkeypatch, chunk_loop):
    # CG iterations that report failure (one row in three) or stop after two
    # (short of the true residual asked): those rows take the factored
    # Newton step, and the codes are those of the factored solver.
    x, basis = planted(40, 16, 32, seed=2)
    kw = dict(prior="signed_kl", strength=0.05, prior_mean=0.01, tol=1e-10)
    factored = []
    module = compiled if chunk_loop == "compiled" else newton_cg_module
    hessian_solve = module.hessian_solve
    if chunk_loop == "compiled":
        cg = compiled.compiled_cg

        def short_cg(*args):
            sol, done = cg(*args[:-1], 2)
            return sol, done & (np.arange(len(done)) % 3 != 0)

        monkeypatch.setattr(compiled, "compiled_cg", short_cg)
    else:
        cg = hessian_cg.cg

        def short_cg(products, g, *args, max_iter=None):
            z, ok = cg(products, g, *args, max_iter=2)
            return z, ok & (torch.arange(len(ok)) % 3 != 0)

        monkeypatch.setattr(newton_cg_module, "cg", short_cg)

    def spy(*args, **kwargs):
        factored.append(args[4].shape[0])
        assert kwargs["direct"]
        return hessian_solve(*args, **kwargs)

    monkeypatch.setattr(module, "hessian_solve", spy)
    w, info = _codes(x, basis, "newton_cg", **kw)
    assert factored and bool(info.converged.all())
    torch.testing.assert_close(w, _codes(x, basis, "newton", **kw)[0], rtol=1e-6, atol=1e-10)


def test_ill_conditioned_codes_converge_as_the_factored_solver_does(monkeypatch, chunk_loop):
    # lam = p = 1e-4, K > D: H's scaled form has condition numbers far beyond
    # what 50 CG iterations solve; those steps are factored.
    x, basis = problem_data("gaussian", n=16, d=8, k=30, seed=7)
    kw = dict(prior="kl", strength=1e-4, prior_mean=1e-4, max_iter=300)
    module = compiled if chunk_loop == "compiled" else newton_cg_module
    factored, hessian_solve = [], module.hessian_solve
    monkeypatch.setattr(module, "hessian_solve", lambda *a, **k: factored.append(1) or hessian_solve(*a, **k))
    w, info = _codes(x, basis, "newton_cg", **kw)
    assert factored and bool(info.converged.all())
    torch.testing.assert_close(w, _codes(x, basis, "newton", **kw)[0], rtol=1e-5, atol=1e-8)


def test_float32_codes_reach_their_tolerance(loop):
    x, basis = planted(60, 16, 48, seed=4)
    kw = dict(prior="kl", strength=0.05, prior_mean=0.01)
    w32, info = _codes(x.float(), basis.float(), "newton_cg", **kw)
    assert w32.dtype == torch.float32 and bool(info.converged.all()) and info.tol == 1e-4
    w64, _ = _codes(x, basis, "newton_cg", **kw)
    torch.testing.assert_close(w32.double(), w64, rtol=3e-3, atol=3e-4)  # residual 1e-4


def test_kl_codes_far_below_their_prior_mean(loop):
    # Optima down to e^-116 below p: the steps jump there (newton's _far).
    x, basis = planted(20, 16, 32, seed=5)
    kw = dict(prior="kl", strength=1e-2, prior_mean=1.0, tol=1e-10)
    w, info = _codes(x * 10, basis, "newton_cg", **kw)
    assert bool(info.converged.all()) and bool((w > 0).all()) and float(w.min()) < 1e-50
    torch.testing.assert_close(w, _codes(x * 10, basis, "newton", **kw)[0], rtol=1e-6, atol=0)


def test_refuses_to_be_unrolled():
    x, basis = problem_data("gaussian", n=4, d=6, k=5)
    basis.requires_grad_(True)
    with pytest.raises(ValueError, match="^solver: 'newton_cg' updates its codes in place"):
        diffsc.sparse_code(x, basis, prior="kl", solver="newton_cg", backward="unrolled")


def spy_on_chunks(monkeypatch):
    """``(dtype, tol, most Newton steps)`` of each chunk solve from now on."""
    calls, chunk = [], newton_cg_module._solve_chunk

    def spy(model, w, tol, max_iter, *rest, **options):
        out = chunk(model, w, tol, max_iter, *rest, **options)
        calls.append((w.dtype, tol, int(out[1].max())))
        return out

    monkeypatch.setattr(newton_cg_module, "_solve_chunk", spy)
    return calls


def test_float32_phase_then_float64_within_max_iter(monkeypatch, chunk_loop):
    x, basis = planted(30, 16, 32, seed=6)
    kw = dict(prior="kl", strength=0.05, prior_mean=0.01, tol=1e-10)
    calls = spy_on_chunks(monkeypatch)
    w, info = _codes(x, basis, "newton_cg", **kw)
    assert [c[:2] for c in calls] == [(torch.float32, newton_cg_module.PHASE_TOL), (torch.float64, 1e-10)]
    assert bool(info.converged.all())
    with pytest.warns(diffsc.ConvergenceWarning):
        _, capped = _codes(x, basis, "newton_cg", max_iter=3, **kw)
    assert int(capped.iterations.max()) <= 3
    # A tolerance float32 reaches itself: float32 aims at it, float64 checks (and finishes)
    for tol in (1e-6, 1e-3):
        calls.clear()
        w, info = _codes(x, basis, "newton_cg", **{**kw, "tol": tol})
        assert [c[:2] for c in calls] == [(torch.float32, tol), (torch.float64, tol)]
        assert bool(info.converged.all()) and float(info.residual.max()) <= tol


def test_kl_codes_near_zero_move_despite_float32(loop):
    # benchmarks/robustness.py, seed 0, gaussian, KL with lam 0.01, p 0.001:
    # codes under 1e-76 have a float32 scale of 0, and steps CG judged good in
    # its scaled norm left their gradient whole; Newton-CG stalled near 1e-6
    # for 300 iterations where the factored solver converged in 11.
    from helpers import random_basis, random_inputs

    g = torch.Generator().manual_seed(0)
    d = int(torch.randint(3, 40, (1,), generator=g))
    k = int(torch.randint(2, 80, (1,), generator=g))
    for prior in ["l2", "kl"]:
        for lam, p in [(1e-4, 1e-4), (1e-2, 1e-3), (0.5, 0.1), (5.0, 2.0), (1e-3, 10.0)]:
            x, basis = random_inputs("gaussian", 16, d, g), random_basis(d, k, g)
            if (prior, lam, p) == ("kl", 1e-2, 1e-3):
                w, info = _codes(x, basis, "newton_cg", prior="kl", strength=lam, prior_mean=p, max_iter=300)
                assert bool(info.converged.all()) and int(info.iterations.max()) < 60
                return


@pytest.mark.parametrize("prior", ["kl", "signed_kl"])
def test_ridge_start_same_codes_fewer_steps(monkeypatch, prior, loop):
    x, basis = planted(200, 48, 64, seed=5)  # K > D: the ridge from x itself
    kw = dict(prior=prior, strength=0.05, prior_mean=0.01, tol=1e-10)
    ridge, info = _codes(x, basis, "newton_cg", **kw)
    gram_x, gram_basis = planted(200, 96, 64, seed=5)  # K <= D: from B^T x
    _, gram_info = _codes(gram_x, gram_basis, "newton_cg", **kw)
    monkeypatch.setattr(newton_cg_module, "RIDGE_START", False)
    plain, plain_info = _codes(x, basis, "newton_cg", **kw)
    _, gram_plain = _codes(gram_x, gram_basis, "newton_cg", **kw)
    assert bool(info.converged.all()) and bool(gram_info.converged.all())
    torch.testing.assert_close(ridge, plain, rtol=1e-6, atol=1e-10)
    assert info.iterations.float().mean() < plain_info.iterations.float().mean()
    assert gram_info.iterations.float().mean() < gram_plain.iterations.float().mean()


def test_ridge_start_for_gaussian_kl_signed_kl_and_l2_without_a_warm_start():
    problem = diffsc.Problem.of("gaussian", "kl")
    basis, lam, p = torch.randn(5, 8, dtype=torch.float64), torch.tensor(0.1, dtype=torch.float64), \
        torch.tensor(0.01, dtype=torch.float64)
    start = newton_cg_module._RidgeStart.of
    for prior in ("kl", "signed_kl", "l2"):
        assert start(diffsc.Problem.of("gaussian", prior), basis, lam, p, torch.float32, 3) is not None
    assert start(diffsc.Problem.of("poisson", "kl"), basis, lam, p, torch.float32, 3) is None
    # a user's start is warm, the prior's minimiser is not: per-atom means,
    # and signed KL's minimiser 0, compared without a second start
    warm = newton_cg_module._warm
    default = problem.prior.initial(p, (3, 8), basis)
    assert not warm(problem.prior, p, default) and warm(problem.prior, p, default + 1)
    p_atoms = torch.linspace(0.01, 0.1, 8, dtype=torch.float64)
    assert not warm(problem.prior, p_atoms, problem.prior.initial(p_atoms, (3, 8), basis))
    assert warm(problem.prior, p_atoms, default)
    signed = diffsc.Problem.of("gaussian", "signed_kl").prior
    assert not warm(signed, p, signed.initial(p, (3, 8), basis)) and warm(signed, p, default)


@pytest.mark.parametrize("d, k, rows, gram", [(6, 10, 4, False), (10, 6, 4, False), (10, 6, 4, True),
                                               (10, 6, 8, True)])
def test_ridge_codes_in_each_form(d, k, rows, gram):
    # K > D: a D x D system (push-through); K <= D: the factor of G + L for
    # fewer rows than K, else its inverse; G the solver's where it has one
    g = torch.Generator().manual_seed(3)
    basis = torch.randn(d, k, generator=g, dtype=torch.float64)
    x = torch.randn(rows, d, generator=g, dtype=torch.float64)
    lam, p = torch.linspace(0.05, 0.5, k, dtype=torch.float64), torch.tensor(0.01, dtype=torch.float64)
    problem = diffsc.Problem.of("gaussian", "signed_kl")
    shared = basis.T @ basis if gram else None
    ridge = newton_cg_module._RidgeStart.of(problem, basis, lam, p, torch.float64, rows, shared)
    model = newton_cg_module._Model(problem, basis, lam, p, torch.float64).of(x)
    expected = torch.linalg.solve(basis.T @ basis + torch.diag(lam), (x @ basis).T).T
    torch.testing.assert_close(ridge.codes(model), expected, rtol=1e-10, atol=1e-12)
    assert ridge.map[1] == (k <= d and rows < k)


@pytest.mark.parametrize("d, k, n", [(60, 30, 5), (60, 30, 100), (20, 40, 5)])  # factor, inverse, D x D
@pytest.mark.parametrize("prior", ["kl", "signed_kl", "l2"])
def test_ridge_start_with_twin_atoms_in_float32(d, k, n, prior):
    # G + lam I is G in float32 when atoms repeat and lam is tiny: the ridge
    # start's system raised its diagonal instead of failing (before: the
    # inverse raised "singular" or the factor "not positive-definite")
    g = torch.Generator().manual_seed(0)
    basis = torch.randn(d, k, generator=g)
    basis[:, 1] = basis[:, 0]
    basis[:, 2] = basis[:, 0]
    x = torch.randn(n, d, generator=g)
    for lam in (1e-10, 1e-6):
        codes, info = diffsc.sparse_code_with_info(x, basis, prior=prior, strength=lam, prior_mean=0.01)
        assert bool(torch.isfinite(codes).all()) and bool(info.converged.all()), (lam, info.converged.sum())


@pytest.mark.parametrize("dtype, lam", [(torch.float32, 1e-38), (torch.float32, 1e-44), (torch.float64, 1e-300)])
@pytest.mark.parametrize("d, k", [(8, 12), (12, 8)])
def test_ridge_start_at_strengths_near_the_dtypes_floor(dtype, lam, d, k):
    # K > D: 1 / lam overflowed, and the factor raised its diagonal forever
    g = torch.Generator().manual_seed(0)
    basis, x = torch.randn(d, k, generator=g, dtype=dtype), torch.randn(3, d, generator=g, dtype=dtype)
    for prior in ("kl", "signed_kl", "l2"):
        codes, info = diffsc.sparse_code_with_info(x, basis, prior=prior, strength=lam, prior_mean=0.01)
        assert bool(torch.isfinite(codes).all()) and bool(info.converged.all()), prior


def test_a_ridge_system_not_finite_is_an_error_not_a_loop():
    system = torch.tensor([[1.0, float("inf")], [float("inf"), 1.0]])
    with pytest.raises(RuntimeError, match="positive definite"):
        newton_cg_module._factor(system)


def test_l2_codes_are_the_ridge_codes(loop):
    x, basis = planted(100, 48, 64, seed=2)
    kw = dict(prior="l2", strength=0.05, tol=1e-10)
    w, info = _codes(x, basis, "newton_cg", **kw)
    assert bool(info.converged.all()) and int(info.iterations.max()) <= 1  # float64 checks float32's
    torch.testing.assert_close(w, _codes(x, basis, "newton", **kw)[0], rtol=1e-6, atol=1e-10)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("prior", ["kl", "signed_kl", "l2"])
@pytest.mark.parametrize("solver", ["newton_cg", "newton_cg_torch_loop", "newton"])
def test_warm_starts_far_from_the_codes(prior, dtype, solver, monkeypatch):
    # Before: from 1e29 KL codes shrank by e a step (float64: not converged
    # in 100 steps), float32's F overflowed and no step was accepted; signed
    # KL in float32 from 1e18 said "converged" at 0 steps (its mirror
    # coordinate overflowed to NaN, which the residual's max dropped); L2
    # from 1e3 moved 30 a step; KL from 1e-30 found no step Armijo accepts.
    monkeypatch.setattr(newton_cg_module, "COMPILED", solver == "newton_cg")
    solver = solver.removesuffix("_torch_loop")
    x, basis = planted(60, 24, 40, seed=4)
    x, basis = x.to(dtype), basis.to(dtype)
    kw = dict(prior=prior, strength=0.05, prior_mean=0.01)
    cold, cold_info = _codes(x, basis, solver, **kw)
    assert bool(cold_info.converged.all())
    for far in (1e29, 1e18, 1e3, 1e-30):
        w, info = _codes(x, basis, solver, init=torch.full_like(cold, far), **kw)
        assert bool(info.converged.all()), (far, info.residual.max())
        # (L2's cold codes are the ridge start's, 0-1 steps; from near 0 a few)
        assert int(info.iterations.max()) <= int(cold_info.iterations.max()) + 6, far
        # both meet tol (float32: 1e-4), the codes then agree to about cond(H) times it
        tol = dict(rtol=1e-2, atol=1e-3) if dtype == torch.float32 else dict(rtol=1e-6, atol=1e-10)
        torch.testing.assert_close(w, cold, **tol)
    # a good warm start is kept: the codes themselves need no step
    _, again = _codes(x, basis, solver, init=cold, **kw)
    assert int(again.iterations.max()) == 0


def _lasso_and_ridge_starts(monkeypatch, seeds, dtype):
    """Newton-CG's codes of gaussian 30 x 60 problems at lam = 1e-6 (p = 0.01),
    with the lasso start and without it."""
    kw = dict(prior="kl", strength=1e-6, prior_mean=0.01)
    out = []
    for lasso in (True, False):
        monkeypatch.setattr(newton_cg_module, "LASSO_START", lasso)
        for seed in seeds:
            x, basis = problem_data("gaussian", n=100, d=30, k=60, seed=seed, dtype=dtype)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", diffsc.ConvergenceWarning)
                out.append((x, basis, kw, *_codes(x, basis, "newton_cg", **kw)))
    return out[:len(seeds)], out[len(seeds):]


def test_weak_kl_codes_start_from_the_nonnegative_lasso(loop, monkeypatch):
    # lam = 1e-6: the optimum is nearly the nonnegative least-squares fit,
    # 30 codes of unit size and 30 of e^-60 to e^-700. From the ridge codes
    # float64 took 88 steps a code (66 of 100 converged within max_iter = 100).
    [(x, basis, kw, w, info)], [(_, _, _, _, ridge)] = _lasso_and_ridge_starts(monkeypatch, [1], torch.float64)
    assert bool(info.converged.all()) and not bool(ridge.converged.all())
    assert float(info.iterations.float().mean()) < 0.3 * float(ridge.iterations.float().mean())
    # the optimum itself: its codes of unit size (the tiny ones are set by their logs)
    exact, _ = _codes(x, basis, "newton_cg", tol=1e-12, max_iter=1000, **kw)
    big = exact > 1e-3
    torch.testing.assert_close(w[big], exact[big], rtol=1e-4, atol=0)


def test_the_lasso_start_off_the_cpu_takes_fista(monkeypatch):
    # On a GPU the lasso start's codes come from FISTA (the gram solver is
    # the CPU's); run here by handing FISTA the gram solver's place.
    solvers = []
    fista = newton_cg_module.fista
    monkeypatch.setattr(newton_cg_module, "gram_active_set", lambda *a: solvers.append("fista") or fista(*a))
    monkeypatch.setattr(newton_cg_module, "COMPILED", False)  # CUDA's torch loop
    x, basis = problem_data("gaussian", n=100, d=30, k=60, seed=1)
    w, info = _codes(x, basis, "newton_cg", prior="kl", strength=1e-6, prior_mean=0.01)
    assert solvers and bool(info.converged.all()) and float(info.iterations.float().mean()) < 40


def test_weak_float32_kl_codes_start_from_the_nonnegative_lasso(monkeypatch):
    # float32 (tol 1e-4) over four problems: 387 of 400 codes converged from
    # the ridge codes within 100 steps, in 40 steps a code on average
    lasso, ridge = _lasso_and_ridge_starts(monkeypatch, [1, 2, 3, 4], torch.float32)
    converged = [sum(int(r[-1].converged.sum()) for r in runs) for runs in (lasso, ridge)]
    steps = [sum(int(r[-1].iterations.sum()) for r in runs) for runs in (lasso, ridge)]
    assert converged[0] >= converged[1] and steps[0] < 0.5 * steps[1], (converged, steps)


def test_kl_priors_that_are_not_weak_keep_the_ridge_start(monkeypatch):
    # The benchmarks' strengths (lam = 0.19, |B^T x|_inf about 3) and large
    # prior means (p = 10: KL pulls codes up to p) never take the lasso.
    calls = []
    monkeypatch.setattr(newton_cg_module._RidgeStart, "_lasso", lambda self, x: calls.append(x) or pytest.fail())
    x, basis = planted(200, 64, 256, seed=0)
    assert _codes(x, basis, "newton_cg", prior="kl", strength=0.19, prior_mean=0.01)[1].all_converged
    x, basis = problem_data("gaussian", n=50, d=30, k=60, seed=1)
    assert _codes(x, basis, "newton_cg", prior="kl", strength=1e-6, prior_mean=10.0, max_iter=300)[1].all_converged
    assert not calls


def test_a_float64_kl_warm_start_below_float32s_range_is_kept(loop):
    # Weak KL priors leave codes of e^-700 (float64's floor). float64 codes
    # take their first steps in float32, where those rounded to 0: F was NaN,
    # so the whole warm start was judged worse than none and thrown away, and
    # this code took 106 steps again from its own optimum.
    x, basis = problem_data("gaussian", n=100, d=30, k=60, seed=1)
    kw = dict(prior="kl", strength=1e-6, prior_mean=0.01, tol=1e-10, max_iter=1000)
    optimum, info = _codes(x[22:23], basis, "newton_cg", **kw)
    assert bool(info.converged.all()) and float(optimum.min()) < 1e-38
    w, again = _codes(x[22:23], basis, "newton_cg", init=optimum, **kw)
    assert bool(again.converged.all()) and int(again.iterations.max()) <= 2, int(again.iterations.max())
    torch.testing.assert_close(w, optimum, rtol=1e-6, atol=1e-10)


@pytest.mark.parametrize("solver", ["newton_cg", "newton_cg_torch_loop", "newton"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_kl_codes_rising_far_past_their_jumps(solver, dtype, monkeypatch):
    # From codes e^60 below their optimum every code jumps at once and the
    # full step overshoots; along the mirror curve the half step is still
    # e^30 below (next to no decrease), so no step was accepted: 72 of 512
    # rows stuck at the start. Rising jumps now take the straight line. The
    # warm start is kept (no fallback) to meet them.
    keep = lambda self, model, f: torch.zeros_like(f, dtype=torch.bool)  # noqa: E731
    monkeypatch.setattr(newton_cg_module._Fallback, "worse", keep)
    monkeypatch.setattr(diffsc.solvers, "_no_worse_than_cold", lambda *args: args[-1])
    monkeypatch.setattr(newton_cg_module, "COMPILED", solver == "newton_cg")
    solver = solver.removesuffix("_torch_loop")
    torch.manual_seed(0)
    basis = torch.randn(64, 256, dtype=dtype)
    basis /= basis.norm(dim=0)
    x = 0.3 * torch.randn(512, 64, dtype=dtype)
    kw = dict(prior="kl", strength=0.1, prior_mean=0.01, solver=solver)
    w, info = diffsc.sparse_code_with_info(x, basis, init=torch.full((512, 256), 1e-30, dtype=dtype), **kw)
    assert bool(info.converged.all()), int((~info.converged).sum())
    tol = dict(rtol=1e-3, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-6, atol=1e-10)
    torch.testing.assert_close(w, diffsc.sparse_code(x, basis, **kw), **tol)


def test_codes_float32_left_at_its_floor_finish_in_one_float64_step(monkeypatch, chunk_loop):
    # Gaussian KL codes, the benchmarks' lam and p: codes float32 leaves at
    # its floor (1e-38) that float64 puts lower converged only linearly in
    # float64 (CG scales their steps by its alpha) until they took their own
    # rows of the Newton system (hessian_cg.decouple).
    x, basis = planted(200, 100, 64, seed=0)
    kw = dict(prior="kl", strength=0.03026, prior_mean=0.01, tol=1e-6)
    calls = spy_on_chunks(monkeypatch)
    w, info = _codes(x, basis, "newton_cg", **kw)
    assert bool(info.converged.all()) and [c[2] for c in calls if c[0] == torch.float64] == [1]
    monkeypatch.setattr(hessian_cg, "DECOUPLED", -1.0)  # none decoupled
    monkeypatch.setattr(compiled, "DECOUPLED", -1.0)
    calls.clear()
    coupled, info = _codes(x, basis, "newton_cg", **kw)
    assert bool(info.converged.all()) and [c[2] for c in calls if c[0] == torch.float64][0] >= 3
    torch.testing.assert_close(w, coupled, rtol=1e-5, atol=1e-8)


def test_weak_signed_kl_prior_rows_that_stall_finish_factored(loop):
    # lam = 1e-6 over a 30 x 60 basis: the inexact CG directions missed the
    # near-null space the steps lay in, and all 100 codes took max_iter
    # steps, the residual cycling between 1e-4 and 3e-6. Rows that stop
    # halving their residual now finish with the factored steps.
    x, basis = problem_data("gaussian", n=100, d=30, k=60, seed=1)
    for lam in (1e-6, 1e-4):
        _, info = _codes(x, basis, "newton_cg", prior="signed_kl", strength=lam, prior_mean=0.01)
        assert bool(info.converged.all()), (lam, int(info.converged.sum()))
        assert int(info.iterations.max()) < 60


def test_rows_stall_when_their_residual_stops_halving():
    from diffsc.solvers.result import Stall

    stall = Stall(torch.tensor([1.0, 1.0]), steps=3)
    idx = torch.tensor([0, 1])
    missed = []
    for residual, whole in zip(([0.4, 0.9], [0.3, 0.2], [0.25, 0.15], [0.21, 0.09]),
                               ([True, True], [True, True], [True, True], [True, False])):
        stall.update(idx, torch.tensor(residual), torch.tensor(whole))
        missed.append(stall.missed.tolist())
    # row 0 halved once (0.4) then not for 3 steps; row 1 last halved at 0.09
    assert stall.stalled.tolist() == [True, False]
    # whole steps in a row that did not halve the previous step's residual;
    # a step the line search cut (row 1's last) starts the count again
    assert missed == [[0, 1], [1, 0], [2, 1], [3, 0]]


def test_the_compiled_loops_stall_rule_is_stalls():
    import numpy as np

    from diffsc.solvers.newton_cg_compiled import _stall_update
    from diffsc.solvers.result import Stall

    g = torch.Generator().manual_seed(0)
    m = 50
    start = torch.rand(m, generator=g, dtype=torch.float64)
    stall = Stall(start, steps=3)
    mark, last = start.numpy().copy(), start.numpy().copy()
    since, missed, stalled = np.zeros(m, np.int64), np.zeros(m, np.int64), np.zeros(m, np.bool_)
    residual = start.numpy().copy()
    for step in range(12):
        idx = torch.randperm(m, generator=g)[: m // 2].sort().values
        # halving, not, or NaN, at random
        factor = torch.tensor([0.3, 0.9, 1.2, float("nan")], dtype=torch.float64)[
            torch.randint(4, (idx.numel(),), generator=g)]
        residual[idx.numpy()] = residual[idx.numpy()] * factor.numpy()
        residual[np.isnan(residual)] = 1.0 if step % 2 else np.nan
        whole = torch.rand(idx.numel(), generator=g) < 0.7
        stall.update(idx, torch.from_numpy(residual[idx.numpy()]), whole)
        _stall_update(idx.numpy(), residual, whole.numpy(), 3, mark, since, stalled, missed, last)
        assert stall.stalled.tolist() == stalled.tolist()
        assert stall.missed.tolist() == missed.tolist()
        assert stall.since.tolist() == since.tolist()
