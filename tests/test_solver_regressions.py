"""Solvers never accept a step that raises the objective beyond rounding.

Both found on real text, where the softmax family's gradient is bounded:
Newton took a jump to a KL code of 1e13 because it halved the gradient while
the objective grew from 2.8 to 5e11; the active set took a step because it
lowered the residual while the objective rose, and cycled.
"""

import sys
import warnings

import numpy as np
import pytest
import torch

import diffsc
from diffsc.learning import initial_basis
from diffsc.problem import Problem
from diffsc.solvers.newton import newton
from helpers import problem_data


@pytest.fixture(scope="module")
def review_counts():
    from sklearn.feature_extraction.text import CountVectorizer

    from diffsc.datasets import load_review_polarity

    try:
        data = load_review_polarity()
    except FileNotFoundError as err:
        pytest.skip(str(err))
    train = [t for t, fold in zip(data.texts, data.folds) if fold not in (5, 6)]
    counts = CountVectorizer(stop_words="english", max_features=1000).fit_transform(train).toarray()
    return torch.from_numpy(counts[counts.sum(1) > 0].astype(np.float64))


def test_softmax_kl_codes_never_end_above_their_start(review_counts):
    problem = Problem.of("softmax", "kl")
    x = problem.family.prepare(review_counts)
    basis = initial_basis(x, 20, problem.family, torch.Generator().manual_seed(0))
    lam, p = torch.tensor(3e-4, dtype=torch.float64), torch.tensor(0.03, dtype=torch.float64)
    start = problem.objective(x, basis, lam, p, problem.prior.initial(p, (x.shape[0], 20), x))
    result = diffsc.solve(problem, x, basis, lam, p, tol=1e-8)
    final = problem.objective(x, basis, lam, p, result.codes)
    assert bool((final <= start).all()), float((final - start).max())
    assert float(final.max()) < 10  # KL(x_bar || r) + prior: a few nats, never 1e11


@pytest.mark.parametrize("solver", ["active_set", "prox_newton"])
def test_l1_solvers_do_not_cycle_on_review_codes(solver):
    # Found by the text experiment: from w = 0 the first support step raised F
    # (1.93 -> 2.11) but lowered the residual, was taken, and the next step
    # went back to 0: 2,000 iterations between two points.
    import importlib.util
    from pathlib import Path

    from diffsc.datasets import load_review_polarity

    try:
        data = load_review_polarity()
    except FileNotFoundError as err:
        pytest.skip(str(err))
    script = Path(__file__).resolve().parents[1] / "experiments" / "text_sentiment.py"
    spec = importlib.util.spec_from_file_location("text_sentiment", script)
    text = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(text)
    train, test = text.split(data, 1, False)
    x, _, _ = text.word_counts([data.texts[i] for i in train], [data.texts[i] for i in test], 300)
    x = torch.from_numpy(x[x.sum(1) > 0])
    basis = diffsc.learn_basis(x, 8, family="softmax", prior="kl", strength=1e-3, prior_mean=0.1,
                               max_iter=3, seed=0).basis
    _, info = diffsc.sparse_code_with_info(x, basis, family="softmax", prior="l1", strength=1e-3, tol=1e-8,
                                           solver=solver)
    assert info.solver == solver and info.all_converged


def test_unrolled_fista_gradient_has_no_nan_from_failed_factorizations():
    """Early FISTA iterates can have supports larger than D: their Newton
    polish fails to factor, and that failure's NaN once reached autograd."""
    g = torch.Generator().manual_seed(0)
    basis = torch.randn(16, 32, generator=g, dtype=torch.float64)
    basis = (basis / basis.norm(dim=0)).requires_grad_(True)
    x = torch.randn(300, 16, generator=g, dtype=torch.float64)
    with pytest.warns(diffsc.ConvergenceWarning):
        codes = diffsc.sparse_code(x, basis, prior="l1", strength=0.09, solver="fista", max_iter=10,
                                   tol=1e-14, backward="unrolled")
    weights = torch.randn(300, 32, generator=g, dtype=torch.float64)
    grad, = torch.autograd.grad((codes * weights).sum(), basis)
    assert bool(torch.isfinite(grad).all())


def test_newton_step_systems_solve_where_batched_lu_gave_invalid_pivots():
    # Newton's first step on a 784x256 gaussian KL problem: 64 systems
    # S G S + lam I with S = sqrt(p). torch 2.13's batched LU on two threads
    # returned pivots outside 1..256 (info 0) for every one, and lu_solve failed.
    from diffsc.hessian import solve_spd

    g = torch.Generator().manual_seed(0)
    basis = torch.randn(784, 256, generator=g, dtype=torch.float64)
    basis /= basis.norm(dim=0)
    scale = torch.full((64, 256), 0.01, dtype=torch.float64).sqrt()
    a = scale[:, :, None] * (basis.T @ basis) * scale[:, None, :] + 0.03 * torch.eye(256, dtype=torch.float64)
    b = torch.randn(64, 256, generator=g, dtype=torch.float64)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        z, ok = solve_spd(a, b)
    finally:
        torch.set_num_threads(threads)
    assert bool(ok.all())
    torch.testing.assert_close((a @ z.unsqueeze(-1)).squeeze(-1), b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("solver", ["newton_cg", "newton"])
def test_saturated_softmax_kl_jumps_stay_finite_in_float32(solver):
    # lam = 1e-3 with p = 10 (robustness.py's extreme setting): at w = p the
    # softmax saturates, G_ii vanishes, and the one-coordinate jump of a code
    # went up by e^86, beyond float32: the slope was -inf, no step was ever
    # accepted, and every row stopped at its start. Jumps now stay where
    # lam R(v) <= F.
    from helpers import problem_data

    x, basis = problem_data("softmax", n=16, d=17, k=72, seed=8, dtype=torch.float32)
    w, info = diffsc.sparse_code_with_info(x, basis, family="softmax", prior="kl", strength=1e-3,
                                           prior_mean=10.0, max_iter=300, solver=solver)
    assert bool(info.converged.all())
    assert bool((w != 10.0).any(-1).all())


def test_eg_stops_rows_whose_line_search_accepts_nothing():
    # A row where no step lowers F (flat to rounding, short of tol) cost EG
    # 60 objectives an iteration until max_iter: codes.py's softmax smoke run
    # spent 160 s there. Such a row now stops where it is, unconverged.
    from diffsc.families import Gaussian
    from diffsc.priors import KL
    from diffsc.solvers.eg import exponentiated_gradient
    from helpers import problem_data

    x, basis = problem_data("gaussian", n=6, d=8, k=5, seed=0)
    lam, p = torch.tensor(0.1, dtype=torch.float64), torch.tensor(0.05, dtype=torch.float64)
    w0 = torch.full((6, 5), 0.05, dtype=torch.float64)

    class FirstRowNeverImproves(Gaussian):
        # the first row's loss rises at every evaluation: no step is accepted
        evaluations = 0

        def loss(self, xa, eta):
            self.evaluations += 1
            return super().loss(xa, eta) + torch.where((xa == x[0]).all(-1), float(self.evaluations), 0.0)

    problem = Problem(FirstRowNeverImproves(), KL())
    result = exponentiated_gradient(problem, x, basis, lam, p, w0.clone(), 1e-10, 200)
    assert int(result.iterations[0]) == 1 and not bool(result.converged[0])
    torch.testing.assert_close(result.codes[0], w0[0])
    assert bool((result.iterations[1:] > 1).all())  # the others go on


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(("family", "prior", "solver"), [
    ("gaussian", "l1", "gram"), ("gaussian", "nonneg_l1", "active_set"), ("gaussian", "l1", "fista"),
    ("gaussian", "l1", "prox_newton"), ("softmax", "l1", "prox_newton"), ("softmax", "nonneg_l1", "active_set"),
    ("gaussian", "kl", "newton"), ("poisson", "kl", "newton"),
])
def test_a_warm_start_worse_than_none_is_not_kept(family, prior, solver, dtype):
    # Before: from codes of 1e29 FISTA ran its 20,000 iterations, the active
    # set and proximal Newton stopped after one step (an objective that
    # overflows accepts none); from 1e3 the float32 active set and proximal
    # Newton, and softmax proximal Newton, did not converge either.
    from helpers import problem_data

    x, basis = problem_data(family, n=40, d=12, k=20, seed=2)
    x, basis = x.to(dtype), basis.to(dtype)
    # (strength 0.3: supports well below D, which float32 L1 codes need to reach their tol)
    kw = dict(family=family, prior=prior, strength=0.3, prior_mean=0.05, solver=solver)
    cold, cold_info = diffsc.sparse_code_with_info(x, basis, **kw)
    assert bool(cold_info.converged.all())
    for far in (1e29, 1e3, -1e3):
        w, info = diffsc.sparse_code_with_info(x, basis, init=torch.full_like(cold, far), **kw)
        assert bool(info.converged.all()), far
        # (a KL start of -1e3 is projected to the dtype's floor, which can be better than none)
        torch.testing.assert_close(w, cold, **({} if dtype == torch.float64 else dict(rtol=1e-2, atol=1e-3)))
    # a start better than none is kept (fewer steps than cold)
    _, warm = diffsc.sparse_code_with_info(x, basis, init=cold, **kw)
    assert int(warm.iterations.sum()) < int(cold_info.iterations.sum())


@pytest.mark.parametrize("solver", ["gram", "active_set"])
def test_float32_codes_that_stop_short_are_finished_in_float64(solver):
    # Supports of about D atoms: float32's steps stopped at residuals of
    # 2-3e-4 (tol 1e-4) on 2-3 of these 200 codes; finished in float64 and
    # cast back, their float32 residuals are 5-9e-8.
    from helpers import problem_data

    x, basis = problem_data("gaussian", n=200, d=30, k=60, seed=1)
    kw = dict(prior="l1", strength=0.1, solver=solver)
    w, info = diffsc.sparse_code_with_info(x.float(), basis.float(), **kw)
    assert w.dtype == torch.float32 and bool(info.converged.all()), info.residual.max()
    # the residual reported is the float32 codes' own
    problem = Problem.of("gaussian", "l1")
    lam, p = torch.tensor(0.1), torch.tensor(0.01)
    torch.testing.assert_close(info.residual, problem.residual(x.float(), basis.float(), lam, p, w))
    # (such supports leave the codes ill-determined: the objective is what agrees)
    exact = diffsc.sparse_code(x, basis, **kw)
    f32 = problem.objective(x, basis, lam.double(), p.double(), w.double())
    f64 = problem.objective(x, basis, lam.double(), p.double(), exact)
    assert bool(((f32 - f64) / f64 <= 1e-5).all())


@pytest.mark.parametrize("family", ["gaussian", "bernoulli"])
def test_float32_active_set_codes_that_stop_halving_their_residual_are_finished_in_float64(family):
    # At lam = 1e-3 |B^T x| the supports of this overcomplete basis reach D
    # atoms: the float32 active set, its steps ridged, then crept (residual
    # 1.2e-3 to 1.0e-3 from iteration 100 to 1,000) and 85 of 100 codes
    # stopped at max_iter short of tol, too late to be finished in float64
    # (bernoulli: 7). Rows whose residual has not halved in max(50, 2 min(D, K))
    # iterations stop.
    x, basis = problem_data(family, n=100, d=30, k=60, seed=1, dtype=torch.float32)
    lam = 1e-3 * float((x @ basis).abs().max())
    kw = dict(family=family, prior="l1", strength=lam, solver="active_set")
    w, info = diffsc.sparse_code_with_info(x, basis, **kw)
    assert bool(info.converged.all()), int((~info.converged).sum())
    assert int(info.iterations.max()) < 1000
    problem = Problem.of(family, "l1")
    torch.testing.assert_close(info.residual, problem.residual(x, basis, torch.tensor(lam), torch.tensor(1.0), w))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_fista_hands_the_codes_it_cannot_finish_to_the_active_set(dtype):
    # Supports of about D atoms (lam = 1e-4 |B^T x|, 30 x 60): FISTA's rate
    # there is slow. Before the hand-over a float64 code stopped short of tol
    # after 20,000 iterations, and float32 codes took up to 750.
    x, basis = problem_data("gaussian", n=40, d=30, k=60, seed=2, dtype=dtype)
    lam = 1e-4 * float((x @ basis).abs().max())
    w, info = diffsc.sparse_code_with_info(x, basis, prior="l1", strength=lam, solver="fista")
    assert info.solver == "fista" and bool(info.converged.all()), int((~info.converged).sum())
    assert int(info.iterations.max()) < 600
    problem = Problem.of("gaussian", "l1")
    args = (x, basis, torch.tensor(lam, dtype=dtype), torch.tensor(1.0, dtype=dtype))
    torch.testing.assert_close(info.residual, problem.residual(*args, w))  # the codes' own, in their dtype
    if dtype == torch.float64:
        exact = diffsc.sparse_code(x, basis, prior="l1", strength=lam, tol=1e-12)
        assert float((problem.objective(*args, w) / problem.objective(*args, exact) - 1).max()) < 1e-9


def test_weak_signed_kl_codes_from_the_ridge_start_take_the_straight_line():
    # From the ridge codes (newton_cg's start) under lam = 1e-6, Newton's
    # steps lie along B's near-null space; the mirror curve, exponential in
    # asinh(w / 2p), leaves it, and backtracking cut each step to a
    # hundredth: none of 100 codes converged in 100 steps.
    x, basis = problem_data("gaussian", n=100, d=30, k=60, seed=1)
    problem = Problem.of("gaussian", "signed_kl")
    lam, p = torch.tensor(1e-6, dtype=x.dtype), torch.tensor(0.01, dtype=x.dtype)
    ridge = torch.linalg.solve(basis.T @ basis + lam * torch.eye(60, dtype=x.dtype), basis.T @ x.T).T
    result = newton(problem, x, basis, lam, p, ridge, 1e-10, 100)
    assert bool(result.converged.all()), int(result.converged.sum())
    assert float(result.iterations.float().mean()) < 30


@pytest.mark.parametrize("family", ["gaussian", "poisson"])
@pytest.mark.parametrize(("solver", "loop"), [("newton", None), ("newton_cg", True), ("newton_cg", False)])
def test_weak_kl_codes_take_the_bent_line(monkeypatch, family, solver, loop):
    # lam = p = 1e-4 with K > D is nearly nonnegative least squares: Newton's
    # steps lie along B's null space, where the mirror curve shrinks small
    # codes exponentially. Before the bent line max(w + t d, w e^(-30 t)),
    # 1-3 of the 64 gaussian codes took all 200 steps in each solver (now
    # none; 46-51 steps on average); the Poisson codes took 55-105 steps on
    # average (now 45-56).
    if loop is not None:
        monkeypatch.setattr(sys.modules["diffsc.solvers.newton_cg"], "COMPILED", loop)
    x, basis = problem_data(family, n=64, d=15, k=44, seed=3)
    x = x * 10 if family == "gaussian" else x
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", diffsc.ConvergenceWarning)
        _, info = diffsc.sparse_code_with_info(x, basis, family=family, prior="kl", strength=1e-4, prior_mean=1e-4,
                                               solver=solver, max_iter=200)
    assert bool(info.converged.all()), int(info.converged.sum())
    assert float(info.iterations.float().mean()) < 60


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("loop", [True, False])
def test_gram_route_steps_are_judged_by_their_change(monkeypatch, dtype, loop):
    # On the Gram route F = 1/2 |x|^2 - w^T B^T x + 1/2 w^T G w cancels near a
    # fit: on this problem (codes up to 66) its rounding reached 27,000 ulps
    # of F, and once the codes' real decreases lay below it, steps were taken
    # or refused by noise. 8 of these 100 float64 codes stood still for 900
    # steps; in float32 62 of 100 ended short at the default max_iter. Steps
    # are now judged by F's change, formed without the cancelling terms.
    monkeypatch.setattr(sys.modules["diffsc.solvers.newton_cg"], "COMPILED", loop)
    x, basis = problem_data("gaussian", n=100, d=30, k=60, seed=1, dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", diffsc.ConvergenceWarning)
        _, info = diffsc.sparse_code_with_info(x, basis, prior="kl", strength=1e-4, prior_mean=0.01,
                                               solver="newton_cg", max_iter=300)
    assert bool(info.converged.all()), int(info.converged.sum())


def test_gram_route_change_of_f_is_accurate():
    # F's change between two nearby points, against the direct formula in
    # extended precision: the difference of the Gram route's F values is off
    # by its rounding (3e-12 here, 7% of the change); the change is not.
    nc = sys.modules["diffsc.solvers.newton_cg"]
    x, basis = problem_data("gaussian", n=100, d=30, k=60, seed=1)
    lam, p = torch.tensor(1e-4, dtype=x.dtype), torch.tensor(0.01, dtype=x.dtype)
    problem = Problem.of("gaussian", "kl")
    w = diffsc.sparse_code(x, basis, prior="kl", strength=1e-4, prior_mean=0.01, max_iter=300)
    cand = w + 1e-6 * torch.randn(w.shape, generator=torch.Generator().manual_seed(0), dtype=w.dtype) * (w > 1e-3)
    model = nc._Model(problem, basis, lam, p, x.dtype).of(x)
    assert model.gram is not None  # K <= 2D: the Gram route
    s, s_c = problem.prior.mirror(w, p), problem.prior.mirror(cand, p)
    f, grad, _ = model.evaluate(w, s)
    f_c, grad_c, _ = model.evaluate(cand, s_c)
    change = model.change(w, s, grad, f, cand, s_c, grad_c, f_c)

    def exact(v):  # F in extended precision, the loss as 1/2 |x - B v|^2
        v, xs, b = (a.numpy().astype(np.longdouble) for a in (v, x, basis))
        return 0.5 * ((xs - v @ b.T) ** 2).sum(1) + 1e-4 * (v * np.log(v / 0.01) - v + 0.01).sum(1)

    reference = torch.from_numpy((exact(cand) - exact(w)).astype(np.float64))
    assert float((change - reference).abs().max()) <= 1e-3 * float(reference.abs().max())
    assert float(((f_c - f) - reference).abs().max()) > 1e-2 * float(reference.abs().max())  # what it replaces


@pytest.mark.parametrize(("seed", "d", "k"), [(3, 24, 17), (8, 13, 11), (12, 13, 11), (15, 16, 34)])
def test_factored_newton_codes_at_the_floor_do_not_hide_the_gradient_halving(seed, d, k):
    # Near the optimum F's decrease is below its rounding, and the full step
    # is taken for halving the gradient. KL codes held at the floor that
    # still want to shrink kept a gradient the halving was measured with, so
    # it never halved: 1-2 of these 16 codes ended at 1e-10 to 2e-5 (tol
    # 1e-10) after 300 steps. Optimality counts those entries as 0.
    x, basis = problem_data("gaussian", n=16, d=d, k=k, seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", diffsc.ConvergenceWarning)
        w, info = diffsc.sparse_code_with_info(x, basis, prior="kl", strength=1e-4, prior_mean=1e-4,
                                               solver="newton", max_iter=300)
    assert bool((w <= torch.finfo(w.dtype).tiny).any())  # codes at the floor
    assert bool(info.converged.all()), (int(info.converged.sum()), float(info.residual.max()))


@pytest.mark.parametrize(("seed", "d", "k"), [(0, 16, 34), (3, 24, 17)])
def test_factored_newton_damps_poisson_steps_the_loss_does_not_fit(seed, d, k):
    # From codes at p = 10 (lam = 1e-3) the Poisson loss exp(B w) is e^20 off
    # its quadratic model: the Newton step moved some of B w by 1e4, the line
    # search cut every step to a hundredth, and 16 and 13 of these 16 codes
    # ended 300 steps at residual 1. Marquardt's damping turns such steps
    # toward the scaled gradient until the loss fits its model again.
    x, basis = problem_data("poisson", n=16, d=d, k=k, seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", diffsc.ConvergenceWarning)
        _, info = diffsc.sparse_code_with_info(x, basis, family="poisson", prior="kl", strength=1e-3,
                                               prior_mean=10.0, solver="newton", max_iter=150)
    assert bool(info.converged.all()), (int(info.converged.sum()), float(info.residual.max()))
    assert float(info.iterations.float().mean()) < 70


def test_damping_grows_only_where_the_loss_strays_from_its_model():
    nw = sys.modules["diffsc.solvers.newton"]
    x, basis = problem_data("poisson", n=2, d=6, k=4, seed=0)
    problem = Problem.of("poisson", "kl")
    w = torch.full((2, 4), 0.1, dtype=torch.float64)
    grad_loss, r = problem.loss_gradient(x, basis, w)
    mu = torch.tensor([1e-2, 1e-2], dtype=torch.float64)
    taken = torch.tensor([False, False])
    step = torch.stack([torch.full((4,), 1e-4), torch.full((4,), 5.0)]).double()  # tiny, and e^O(10) off
    got = nw._damping(problem, x, basis, w, w + step, grad_loss, r, mu, taken)
    assert got.tolist() == pytest.approx([1e-3, 0.1])
    got = nw._damping(problem, x, basis, w, w + step, grad_loss, r, mu, torch.tensor([True, True]))
    assert got.tolist() == pytest.approx([1e-3, 1e-3])  # a taken step is not damped further
    assert nw._damping(problem, x, basis, w, w + step, grad_loss, r, torch.full((2,), 5e-6), taken)[0] == 0


@pytest.mark.parametrize(("seed", "d", "k"), [(7, 21, 66), (10, 16, 34), (21, 17, 72), (25, 21, 66)])
def test_factored_newton_refuses_points_whose_f_did_not_move(seed, d, k):
    # float32 KL codes of a weak prior near float32's resolution: Armijo's
    # f <= f0 + 1e-4 t slope rounded to f <= f0 once t was small, and took
    # points whose F had not moved (t = 7e-9) for hundreds of steps; 1-4 of
    # these 16 codes ended 300 steps at residual 1.2e-4 to 1.2e-3 (tol
    # 1e-4). The test is now on F's change, f - f0 <= 1e-4 t slope.
    x, basis = problem_data("poisson", n=16, d=d, k=k, seed=seed, dtype=torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", diffsc.ConvergenceWarning)
        _, info = diffsc.sparse_code_with_info(x, basis, family="poisson", prior="kl", strength=1e-4,
                                               prior_mean=1e-4, solver="newton", max_iter=300)
    assert bool(info.converged.all()), (int(info.converged.sum()), float(info.residual.max()))


@pytest.mark.parametrize(("seed", "d", "k"), [(1, 6, 12), (2, 8, 12), (9, 8, 12), (27, 8, 12)])
def test_newton_cg_asks_more_of_directions_whose_whole_step_missed(seed, d, k):
    # Under a weak KL prior H is lam I on B's null space (K > D), and a CG
    # direction accurate to min(0.1, sqrt(residual)) can miss the part of
    # the step that lies there: one code of each of these float32 batches
    # took whole steps that barely moved its residual, and ended 300 steps
    # at 9e-4 to 2e-3 (tol 1e-4; benchmarks/weak_kl.py). A whole step that does
    # not halve the residual now asks 10x more of the next direction's CG.
    x, basis = problem_data("gaussian", n=16, d=d, k=k, seed=seed, dtype=torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", diffsc.ConvergenceWarning)
        _, info = diffsc.sparse_code_with_info(10 * x, basis, prior="kl", strength=1e-4, prior_mean=1e-4,
                                               max_iter=300)
    assert bool(info.converged.all()), (int(info.converged.sum()), float(info.residual.max()))


@pytest.mark.parametrize(("seed", "d", "k", "scale"), [(16, 6, 12, 10.0), (25, 8, 12, 1.0)])
def test_float32_kl_rows_that_stall_are_finished_in_float64(seed, d, k, scale, monkeypatch):
    # The two float32 batches of benchmarks/weak_kl.py still short with the
    # lasso start: one code each crept (residual 1.6e-4 and 6.4e-3 after 300
    # steps, tol 1e-4), the line search taking steps F resolves no longer.
    # float32 KL rows that have not halved their residual in 50 steps stop,
    # and are finished in float64 (solvers._finished_in_float64).
    newton_cg_module = sys.modules["diffsc.solvers.newton_cg"]
    x, basis = problem_data("gaussian", n=16, d=d, k=k, seed=seed, dtype=torch.float32)
    kw = dict(prior="kl", strength=1e-4, prior_mean=1e-4, max_iter=300)
    for fused in (True, False):  # 16 rows: the fused loop; then the chunk loop, whose rows crept
        monkeypatch.setattr(newton_cg_module, "FUSED", fused)
        _, info = diffsc.sparse_code_with_info(scale * x, basis, **kw)
        assert bool(info.converged.all()), (int(info.converged.sum()), float(info.residual.max()))
    monkeypatch.setattr(newton_cg_module, "_WIDENED_STALL_STEPS", 10**6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", diffsc.ConvergenceWarning)
        _, crept = diffsc.sparse_code_with_info(scale * x, basis, **kw)
    assert not bool(crept.converged.all())
