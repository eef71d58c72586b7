"""Newton-CG for smooth priors: Newton's steps with Hessian products only.

The Newton solver (:mod:`.newton`) factors a ``D x D`` or ``K x K`` system per
code and step (``D^2 K`` or ``K^3`` operations). Here the step solves
``H d = -grad F`` by preconditioned conjugate gradients instead, where

    H v = B^T S(r) B v + lam R''(w) v

is two matrix products over the whole batch (one with the shared
``G = B^T B`` for the gaussian family when ``K <= 2D``), and the Jacobi
preconditioner ``diag(H)`` makes the system well conditioned: in the prior's
scaling ``H`` is ``lam I`` plus a term of rank ``<= D`` (SPEC §2). The step is
solved only as accurately as the code's residual asks (inexact Newton: its
relative accuracy ``min(0.1, sqrt(residual))``, enough for quadratic
convergence, and not beyond what ``tol`` needs). A row whose whole step
(``t = 1``, the model trusted) did not halve its residual asks 10x more of
its next direction, and again for each such step in a row
(:attr:`.result.Stall.missed`): under a weak prior ``H`` is ``lam I`` on
``B``'s null space, where an inexact direction can miss the step's part,
and such rows crawled (a gaussian 8x12 KL code at ``lam = p = 1e-4``,
float32: 484 steps, now 21; ``benchmarks/weak_kl.py``: float32 batches
short 15 -> 5 of 400). The benchmarks' codes take the same steps or fewer
(64x256 signed KL: 5.33 -> 5.04 a code) in the same time.

float64 codes are solved in two phases. The first steps run entirely in
float32 (half the memory traffic and matmul time): to ``tol`` itself where
float32 reaches it (``tol >= FLOAT32_REACH``, 1e-6), float64 then only
checking the codes and finishing the rows it finds short; else to
``PHASE_TOL`` (1e-4), so that float64's first step is a whole quadratic one.
(Stopping float32 at 1e-6 on the way to 1e-10 asks float64's first step
for a direction accurate to 1e-3, beyond float32 on ill-conditioned rows:
some of ``benchmarks/robustness.py``'s then crawled for hundreds of steps.)
In float64 the conjugate gradients still run in float32: a Newton
direction needs a few digits, not sixteen. A float32 direction is judged in
float64 by the gradient its quadratic model leaves, in the residual's
infinity norm: CG's recursive residual can drift below what float32
attains, and its scaled norm hides KL codes near 0, whose gradient the
residual still counts. Rows whose direction leaves more than a quarter of
the gradient (or than the step's accuracy, if looser), whose CG is not done
after ``_CG_STEP_MAX`` iterations (an ill-conditioned ``H``), or whose KL
codes lie below float32's range take the factored step of :mod:`.newton`
instead. Gradients, objectives and the line search of the second phase are
float64, so the codes reach the asked residual in their own dtype. Measured
on the benchmarks' KL problems (``benchmarks/codes.py``): the first phase
took a fifth to a third off the time; taking it to ``tol`` (1e-6) rather
than 1e-4 took another 2-15% off (20-30% at ``tol`` 1e-4); chunks of 512
rows beat 128 to 10,000.
``benchmarks/robustness.py`` compares it with the factored solver on hard
settings.

Gaussian KL, signed-KL and L2 codes that would start at the prior's
minimiser start from the ridge codes instead (:class:`_RidgeStart`, one
product), KL codes of weak priors from the nonnegative lasso's
(:meth:`_RidgeStart._lasso`: ``benchmarks/weak_kl.py``'s steps 5.4x fewer in
float32, 2.6x in float64). A warm start is kept, but for its rows whose
objective exceeds the minimiser's: they start where they would without one
(:class:`_Fallback`).
Each step then follows the prior's mirror curve with the backtracking of
:mod:`.newton` (same ``_far`` jumps, same limits), and the batch is processed
in chunks of rows, on the CPU 512 rows that stay in cache, on a GPU as many
as its memory holds (at 512 rows the GPU spends its time launching the
loop's small operations: the whole batch of 10,000 rows was 11-17x faster
on an H200, ``benchmarks/results/cuda``); rows that converge leave the
chunk's work. Signed-KL rows whose residual stops halving (a weak
prior's steps along ``B``'s near-null space, which inexact directions
miss) leave it too, and finish with :mod:`.newton`'s factored steps
(:class:`.result.Stall`); float32 KL and L2 rows that have not halved their
residual in 50 steps stop short, to be finished in float64
(:func:`diffsc.solvers._finished_in_float64`: ``benchmarks/weak_kl.py``'s
last two float32 batches short, where the line search took steps that
float32's ``F`` no longer resolves). KL steps whose curve fails at ``t = 1``
and ``1/2`` also try :mod:`.newton`'s bent line, as its factored steps do.
A point is judged by ``F``'s change from the row's point
(:meth:`_Model.change`): on the Gram route formed without ``F``'s terms,
which cancel to rounding noise near a fit, and nowhere is a point whose
``F`` did not move taken for Armijo's decrease.

Gaussian codes on the CPU (KL, signed KL, L2) run the same loop compiled,
its elementwise passes fused (:mod:`.newton_cg_compiled`, 1.5-2x faster on
the benchmarks' problems), and batches of at most ``FUSED_ROWS`` rows,
cold started, run it whole as one compiled function, in their own dtype
(:mod:`.newton_cg_fused`: one input 2.1-3.9x faster); CUDA and the other
families run the torch loop below.
"""

from __future__ import annotations

import functools

import torch

from .. import gram_memo
from ..hessian import hessian_solve
from ..hessian_cg import Products, cg, decouple, gradient_change, rows_at_once, scaled_system
from ..priors import SmoothPrior
from ..problem import Problem
from .fista import fista
from .newton import _ARMIJO, _MAX_BACKTRACK, _far, _limit, _line, _rise, newton
from .newton_cg_compiled import compiled_chunk, handles
from .newton_cg_fused import FUSED_ROWS, fused_rows
from .gram import gram_active_set
from .result import SolveResult, Stall, default_tol, flat

#: Rows solved together on the CPU: their (rows, K) vectors stay in cache
#: between products. On a GPU, as many as its memory holds (:func:`rows_at_once`).
CHUNK = 512
_FORCING = 0.1  # the step's relative accuracy is min(_FORCING, sqrt(residual))...
_TIGHTEN = 0.1  # ...times this for each whole step in a row that did not halve it (result.Stall.missed)
PHASE_TOL = 1e-4  # float64 codes: float32 steps down to this residual first...
FLOAT32_REACH = 1e-6  # ...or to tol itself, if tol is at least this
# CG iterations a step may take before its rows are factored instead: the
# benchmarks' steps take 1-9; an ill-conditioned H would take hundreds.
_CG_STEP_MAX = 50
_TINY_SCALE = 1e-37  # about float32's smallest normal number
_ENOUGH = 0.25  # share of the gradient a float32 step may leave, by its model
_STALL_STEPS = 5  # steps a row may take without halving its residual (result.Stall)
#: ... float32 KL and L2 codes, before they stop short to be finished in float64
_WIDENED_STALL_STEPS = 50
#: Priors whose stalled rows finish factored. Not KL's: on a gaussian 30 x 60
#: problem (p = 0.01, max_iter 100) 58 of 100 codes converged at lam = 1e-6,
#: 34 handed over (at 1e-4: 93 and 98; before the bent line, 77 and 49).
HANDED_OVER = ("signed_kl",)
#: Gaussian codes on the CPU take the compiled loop (:mod:`.newton_cg_compiled`).
COMPILED = True
#: ... and batches of at most ``FUSED_ROWS`` rows, cold started, the whole loop compiled (:mod:`.newton_cg_fused`).
FUSED = True
#: Gaussian KL, signed-KL and L2 codes left at the prior's minimiser start from the ridge codes.
RIDGE_START = True
#: ... except KL rows whose strength is below this share of ``|B^T x|_inf``: the
#: nonnegative lasso's codes at ``_LASSO_STRENGTH`` times it (:meth:`_RidgeStart._lasso`).
LASSO_START = True
LASSO_START_BELOW = 1e-3
_LASSO_STRENGTH = 3.0


class _Model:
    """Objective, gradient and Hessian products of one chunk of rows."""

    def __init__(self, problem, basis, lam, p, low, gram=None):
        self.problem, self.basis, self.lam, self.p, self.low = problem, basis, lam, p, low
        self.products = Products(problem.family, basis, low, gram)
        self.gram = self.products.gram
        self._shared = {}  # what the models of its rows share (_rows copies the reference)

    def _rows(self, x, xb, half_xx):
        rows = object.__new__(_Model)
        rows.__dict__.update(self.__dict__)
        rows.x, rows.xb, rows.half_xx = x, xb, half_xx
        return rows

    def of(self, x):
        """The model of the rows ``x`` (the matrices shared)."""
        return self._rows(x, x @ self.basis, 0.5 * x.square().sum(-1))

    def column_norms(self):
        """``|b_k|^2`` (``G_kk``), formed once for the model and the models of its rows."""
        norms = self._shared.get("column_norms")
        if norms is None:
            basis = self.basis
            square_sum = lambda: basis.square().sum(0)  # noqa: E731
            # kept with the Gram matrix of the call's basis coded again unchanged (a pass over B a
            # call: 6% of one 64x256 KL input's time); not for another basis (its float32 cast),
            # which gram_memo would take for a new one outside a call's scope
            norms = gram_memo.derived(basis, "column norms", (), square_sum) if gram_memo.scoped(basis) \
                else square_sum()
            self._shared["column_norms"] = norms
        return norms

    def cast(self, rows):
        """Another model's rows in this model's dtype (``B^T x`` cast, not formed anew)."""
        dtype = self.basis.dtype
        return self._rows(rows.x.to(dtype), rows.xb.to(dtype), rows.half_xx.to(dtype))

    def take(self, idx):
        """The model of a subset of these rows."""
        return self._rows(self.x[idx], self.xb[idx], self.half_xx[idx])

    def evaluate(self, w, s):
        """``F(w)``, ``grad D_L`` and the reconstruction ``r`` (None with ``G``);
        ``s`` is ``w``'s mirror coordinate."""
        problem, lam, p = self.problem, self.lam, self.p
        prior_value = (lam * problem.prior.value_at(w, s, p)).sum(-1)
        if self.gram is not None:
            grad_loss = w @ self.gram - self.xb
            # D_L = 1/2 w^T G w - w^T B^T x + 1/2 |x|^2, with G w = grad + B^T x
            loss = 0.5 * (w * (grad_loss - self.xb)).sum(-1) + self.half_xx
            return loss + prior_value, grad_loss, None
        eta = w @ self.basis.T
        r = problem.family.transfer(eta)
        return problem.family.loss(self.x, eta) + prior_value, (r - self.x) @ self.basis, r

    def change(self, w, s, grad_loss, f, cand, s_c, grad_c, f_c):
        """``F(cand) - F(w)``, given both points' ``F`` and ``grad D_L``.

        On the Gram route ``F``'s terms (``1/2 |x|^2``, ``w^T B^T x``,
        ``1/2 w^T G w``) cancel near a fit, to rounding of ``eps sum |w| |G w|``:
        27,000 ulps of ``F`` on a 30 x 60 KL problem (lam 1e-4), where real
        decreases lay below it and steps were taken or refused by noise. The
        loss is quadratic, so its change is ``1/2 (c - w)^T (grad(c) + grad(w))``
        exactly, with rounding of the change's own size."""
        if self.gram is None:
            return f_c - f
        prior, lam, p = self.problem.prior, self.lam, self.p
        loss = 0.5 * ((cand - w) * (grad_c + grad_loss)).sum(-1)
        return loss + (lam * (prior.value_at(cand, s_c, p) - prior.value_at(w, s, p))).sum(-1)

    def prior_grad(self, w, s):
        """``grad R(w)``: the mirror coordinate itself where they agree (not for uniform)."""
        prior = self.problem.prior
        return s if type(prior).mirror is SmoothPrior.mirror else prior.grad(w, self.p)

    def residual(self, w, s, grad_loss):
        return self.problem.residual(self.x, self.basis, self.lam, self.p, w, grad_loss, xb=self.xb,
                                     grad_prior=self.prior_grad(w, s))


def _direction(model, w, g, r, far, residual, tol, missed):
    """The inexact Newton direction: float32 CG, factored where that falls short.
    ``missed``: each row's whole steps in a row that did not halve its residual
    (:attr:`.result.Stall.missed`)."""
    problem, basis, lam, p = model.problem, model.basis, model.lam, model.p
    scale, shift, diag = scaled_system(problem, basis, lam, p, w, r)
    free = torch.ones_like(w, dtype=torch.bool) if far is None else ~far
    # Relative accuracy: min(0.1, sqrt(res)) gives quadratic convergence; a
    # step need not be more accurate than reaching tol asks (with margin).
    rel = torch.minimum(torch.full_like(residual, _FORCING), residual.sqrt()) * _TIGHTEN ** missed.to(residual.dtype)
    rel = torch.maximum(rel, 0.1 * tol / residual.clamp_min(tol))
    products = model.products
    z, ok = cg(products, g, scale, shift, diag, r, free, rel, model.low, max_iter=_CG_STEP_MAX)
    z = z.to(w.dtype)
    if model.low != w.dtype:
        # The float32 iteration's own residual is recursive and can drift below
        # what float32 attains: judge its solution by the true one instead.
        # A step that leaves a quarter of the gradient still converges (at
        # least linearly); one that leaves it all (the CG's scaled norm can
        # hide coordinates) is taken factored.
        # Nearly decoupled coordinates first take their own rows (decouple).
        z, product = decouple(g, scale, shift, diag, free, z, products(scale * free * z, r))
        left = gradient_change(products, g, scale, shift, r, free, z, product)
        ok = ok & (left <= rel.clamp_min(_ENOUGH) * (g * free).abs().amax(-1))
        # A scale below float32's normal range (a KL code under ~1e-76) is 0
        # there, so its coordinate never moves, while its mirror step
        # d / w is O(1): such rows need the codes' own dtype.
        ok = ok & ~((scale < _TINY_SCALE) & free).any(-1)
    step = scale * free * z
    if not bool(ok.all()):
        # Ill-conditioned rows (or float32 short of the accuracy): Newton's
        # factored step, as the `newton` solver takes it.
        redo = (~ok).nonzero().squeeze(1)
        r_redo = problem.reconstruction(basis, w[redo]) if r is None else r[redo]
        exact, exact_ok = hessian_solve(problem, basis, lam, p, w[redo], r_redo, -g[redo],
                                        fixed=None if far is None else far[redo], direct=True)
        step = step.index_copy(0, redo, torch.where(exact_ok[:, None], exact, step[redo]))
    return step


def _where(rows, new, old):
    """Points ``(w, s, F, grad D_L, r, ...)`` (``r`` None on the Gram route): ``new``'s on ``rows``, else ``old``'s."""
    return tuple(None if a is None else torch.where(rows if a.dim() == 1 else rows[:, None], a, b)
                 for a, b in zip(new, old))


def _chunk(model, w, tol, max_iter, stall_steps, fallback=None):
    problem, prior, lam, p = model.problem, model.problem.prior, model.lam, model.p
    n = w.shape[0]
    # The mirror coordinates s = grad R(w) are carried along: the curve's
    # points are known by them, so R and grad R need no asinh/log anew.
    s = prior.mirror(w, p)
    f, grad_loss, r = model.evaluate(w, s)
    if fallback is not None:
        redo = fallback.worse(model, f).nonzero().squeeze(1)
        if redo.numel():
            sub = model.take(redo)
            w[redo] = fallback.codes(sub).to(w.dtype)
            s[redo] = prior.mirror(w[redo], p)
            f[redo], grad_loss[redo], r_redo = sub.evaluate(w[redo], s[redo])
            if r is not None:
                r[redo] = r_redo
    residual = model.residual(w, s, grad_loss)
    iterations = torch.zeros(n, dtype=torch.int64, device=w.device)
    stuck = torch.zeros(n, dtype=torch.bool, device=w.device)
    stall = Stall(residual, stall_steps)
    for _ in range(max_iter):
        active = (residual > tol) & ~stuck & ~stall.stalled
        if not bool(active.any()):
            break
        idx = active.nonzero().squeeze(1)
        sub = model if idx.numel() == n else model.take(idx)
        wa, sa, fa, gla = w[idx], s[idx], f[idx], grad_loss[idx]
        ra = None if r is None else r[idx]
        g = gla + lam * sub.prior_grad(wa, sa)

        far, far_step = _far(problem, model.basis, lam, p, wa, ra if ra is not None else wa, gla)
        step = _direction(sub, wa, g, ra, far, residual[idx], tol, stall.missed[idx])
        descends = (g * step).sum(-1) < 0
        if not bool(descends.all()):  # rounding: fall back to the scaled gradient
            descent = -prior.metric_scale(wa, p).square() * g
            if far is not None:
                descent = torch.where(far, 0.0, descent)
            step = torch.where(descends[:, None], step, descent)
        ds, slope, rises = _limit(prior, wa, p, g, step, far, far_step, fa, lam)

        # measured as the residual does: a KL code held at the floor, whose
        # gradient no step changes, must not hide the others' progress
        g_norm = prior.optimality_gradient(wa, g).abs().amax(-1)
        t = torch.ones_like(fa)
        accepted = torch.zeros_like(fa, dtype=torch.bool)
        w_new, s_new, f_new, gl_new, r_new = wa, sa, fa, gla, ra
        for trial in range(_MAX_BACKTRACK):
            s_c = sa + t[:, None] * ds
            cand = prior.project(prior.mirror_inverse(s_c, p))
            if prior.has_floor:  # a code held at the floor has its own mirror coordinate
                s_c = torch.where(prior.at_floor(cand), prior.mirror(cand, p), s_c)
            if rises is not None:
                cand = _rise(prior, wa, p, ds, t, rises, cand)
                s_c = torch.where(rises, prior.mirror(cand, p), s_c)
            f_c, gl_c, r_c = sub.evaluate(cand, s_c)
            df_c = sub.change(wa, sa, gla, fa, cand, s_c, gl_c, f_c)
            if prior.has_floor and trial > 1:  # the curve failed at t = 1 and 1/2: KL's bent line too
                line = _line(prior, wa, step, t, cand, far)
                s_l = prior.mirror(line, p)
                f_l, gl_l, r_l = sub.evaluate(line, s_l)
                df_l = sub.change(wa, sa, gla, fa, line, s_l, gl_l, f_l)
                better = ~flat(fa + df_c, fa + df_l)  # lower beyond rounding (float32 F's noise picked lines at random)
                cand, s_c, f_c, gl_c, r_c, df_c = _where(better, (line, s_l, f_l, gl_l, r_l, df_l),
                                                          (cand, s_c, f_c, gl_c, r_c, df_c))
            good = df_c <= _ARMIJO * t * slope
            if trial == 0:  # near the optimum F is flat to rounding; the gradient still tells
                g_c = prior.optimality_gradient(cand, gl_c + lam * sub.prior_grad(cand, s_c)).abs().amax(-1)
                good = good | ((g_c <= 0.5 * g_norm) & flat(fa + df_c, fa))
            good = good & ~accepted
            w_new, s_new, f_new, gl_new, r_new = _where(good, (cand, s_c, f_c, gl_c, r_c),
                                                         (w_new, s_new, f_new, gl_new, r_new))
            accepted = accepted | good
            if bool(accepted.all()):
                break
            t = torch.where(accepted, t, t / 2)

        stuck[idx] = ~accepted
        iterations[idx] += 1
        w[idx], s[idx], f[idx], grad_loss[idx] = w_new, s_new, f_new, gl_new
        if r is not None:
            r[idx] = r_new
        residual[idx] = sub.residual(w_new, s_new, gl_new)
        stall.update(idx, residual[idx], accepted & (t == 1))
    return w, iterations, residual, stall.stalled & (residual > tol)


class _RidgeStart:
    """The ridge codes ``(G + lam I)^{-1} B^T x`` (KL's lifted to ``p``): where
    gaussian KL or signed-KL codes would start at the prior's minimiser, they
    start here, the minimiser of the quadratic model whose prior curvature
    ``lam / |w|`` is that of codes of unit size. On ``codes.py``'s KL problems
    the Newton steps fell from 5.8-6.9 to 3.9-5.3 a code, on average. For L2
    they are the codes themselves, formed in float64 with no float32 phase
    (from float32's rounding, float64 stalled on a nearly singular ``G``):
    the check takes 0-1 steps, where 4-6 took them from 0."""

    def __init__(self, problem, basis, lam, p, dtype, rows, gram=None):
        self.basis, self.lam, self.dtype, self.rows, self.gram = basis, lam, dtype, rows, gram
        self.floor = p.to(dtype) if problem.prior.name == "kl" else None

    @classmethod
    def of(cls, problem, basis, lam, p, dtype, rows, gram=None):
        """The ridge start where it applies to the problem, else None.
        ``rows``: how many codes it will start; ``gram``: ``B^T B``, if at hand."""
        if not RIDGE_START or problem.family.name != "gaussian" or problem.prior.name not in ("kl", "signed_kl", "l2"):
            return None
        return cls(problem, basis, lam, p, dtype, rows, gram)

    @functools.cached_property
    def map(self):
        """What takes the rows to their ridge codes, formed once, when first
        needed (a warm start may never need it), in the narrower form:

        - ``K > D``: from ``x``, ``B (G + L)^{-1} = (B L^{-1} B^T + I)^{-1} B L^{-1}``
          (``L = diag(lam)``; push-through), a ``D x D`` system, formed as
          ``(B L'^{-1} B^T + m I)^{-1} B L'^{-1}`` with ``L' = L / m``, ``m = min lam``;
        - ``K <= D``: from ``B^T x``, ``(G + L)^{-1}``; for fewer rows than
          ``K`` its Cholesky factor rather than the inverse, which costs three
          factors' time.

        Returns the matrix and whether it is that factor.

        For one 784x256 code the start took 2.1 ms (``G`` and its inverse),
        the factor with the solver's ``G`` 0.45 ms; at 64x256 the inverse
        took 1.1 ms, the ``D x D`` system 0.15 ms. It is kept with the Gram
        matrix of a basis coded again unchanged (:func:`diffsc.gram_memo.derived`)."""
        key = (self.dtype, self.rows < self.basis.shape[1], gram_memo.values_key(self.lam))
        return gram_memo.derived(self.basis, "ridge start", key, self._map)

    def _map(self):
        work = torch.promote_types(self.basis.dtype, self.dtype)  # (L2's in float64)
        basis, lam = self.basis.to(work), self.lam.to(work).expand(self.basis.shape[1])
        d, k = basis.shape
        if k > d:  # scaled by m = min lam: no 1 / lam to overflow (lam = 1e-38 in float32)
            m = lam.min()
            scaled = basis * (m / lam)
            system = scaled @ basis.T + m * torch.eye(d, dtype=work, device=basis.device)
            return torch.cholesky_solve(scaled, _factor(system)).to(self.dtype), False
        gram = basis.T @ basis if self.gram is None else self.gram.to(work)
        factor = _factor(gram + torch.diag(lam))
        if self.rows < k:
            return factor.to(self.dtype), True
        return torch.cholesky_inverse(factor).to(self.dtype), False

    def codes(self, model):
        d, k = self.basis.shape
        given = (model.xb if k <= d else model.x).to(self.dtype)
        matrix, factor = self.map
        w = torch.cholesky_solve(given.T, matrix).T if factor else given @ matrix
        if self.floor is None:
            return w
        raw, w = w, torch.maximum(w, self.floor)
        # weak: lam small against B^T x, p against the codes (else KL pulls them up to p);
        # first against the rows' largest |B^T x|, where most calls stop (12 small operations a
        # call took 6% of one 64x256 KL input's time)
        lam_max = float(self.lam.max())
        if not (LASSO_START and lam_max <= LASSO_START_BELOW * float(model.xb.abs().max())):
            return w
        weak = (lam_max <= LASSO_START_BELOW * model.xb.abs().amax(-1)) & (self.floor.max() <= 0.1 * raw.amax(-1))
        if bool(weak.any()):  # (in the codes' own dtype: float32's fit sets their e^-100s wrong)
            rows = weak.nonzero().squeeze(1)
            w = w.to(model.x.dtype)
            w[rows] = self._lasso(model.x[rows])
        return w

    def _lasso(self, x):
        """KL codes of weak priors start from the nonnegative lasso's, at 3 lam.

        Their optimum is nearly the nonnegative least-squares fit: about ``D``
        codes of unit size, the others e^-100 to e^-700 (float64's floor).
        From the ridge codes Newton took dozens of steps to sort the two;
        the lasso (``gram``, or ``fista`` off the CPU) sorts them first, and
        the codes it leaves at 0 start at their one-coordinate optimum
        ``p exp(-g / lam)`` given its fit (at most ``p``).
        """
        dtype = x.dtype
        basis, lam, p = self.basis.to(dtype), self.lam.to(dtype), self.floor.to(dtype)
        lasso = Problem.of("gaussian", "nonneg_l1")
        solver = gram_active_set if x.device.type == "cpu" else fista
        start = torch.zeros(x.shape[0], basis.shape[1], dtype=dtype, device=x.device)
        codes = solver(lasso, x, basis, _LASSO_STRENGTH * lam, p, start, default_tol(dtype), 2000).codes
        grad = (codes @ basis.T - x) @ basis
        rest = (p * torch.exp(torch.clamp(-grad / lam, max=0.0))).clamp_min(torch.finfo(dtype).tiny)
        return torch.where(codes > 0, codes, rest)


_RAISES = 12  # tries of _factor: 1e3 eps times up to 1e11 (float32: up to 1e1 of the largest diagonal entry)


def _factor(system):
    """The Cholesky factor of a ridge start's system, positive definite but
    for rounding: where that leaves it short (twin atoms and a weak prior in
    float32: ``G + 1e-8 I`` is ``G`` there), its diagonal is raised by
    ``1e3 eps`` of its largest entry, ten times more at each try. A start
    needs no more; Newton's steps take the codes from there."""
    factor, info = torch.linalg.cholesky_ex(system)
    raise_by = 1e3 * torch.finfo(system.dtype).eps * system.diagonal().abs().max()
    eye = torch.eye(len(system), dtype=system.dtype, device=system.device)
    for _ in range(_RAISES):
        if not bool(info != 0):
            return factor
        factor, info = torch.linalg.cholesky_ex(system + raise_by * eye)
        raise_by = 10 * raise_by
    if bool(info != 0):
        raise RuntimeError("ridge start: its system stayed short of positive definite with its diagonal "
                           f"raised {_RAISES} times (largest diagonal entry {float(system.diagonal().max()):g})")
    return factor


class _Fallback:
    """A warm start's rows whose ``F`` exceeds that of the prior's minimiser
    start where a solve without one would (the ridge codes, or the minimiser).

    Such a start is worse than none, and can be far: Newton's step at codes
    of 1e29 is ``-w``, a mirror step ``-1``, so KL codes shrank by ``e`` a
    step for 80 steps, and in float32 their ``F`` overflowed and no step was
    accepted. The minimiser's ``F`` costs no product for the gaussian family
    (``B^T x`` is the model's), one evaluation for the others."""

    def __init__(self, problem, ridge):
        self.prior, self.gaussian, self.ridge = problem.prior, problem.family.name == "gaussian", ridge

    def _minimiser(self, model, rows):
        k = model.basis.shape[1]
        return torch.broadcast_to(self.prior.minimiser(model.p, model.xb), (rows, k))

    def worse(self, model, f):
        """Rows whose ``F`` (``f``) is not below the minimiser's (NaN counts)."""
        m = self._minimiser(model, f.shape[0])
        if self.gaussian:  # 1/2 |x - B m|^2, with B^T x at hand
            bm = model.basis @ m[0]
            bound = model.half_xx - model.xb @ m[0] + 0.5 * bm.square().sum()
        else:
            bound = model.evaluate(m, self.prior.mirror(m, model.p))[0]
        return ~(f <= bound)

    def codes(self, model):
        if self.ridge is not None:
            return self.ridge.codes(model)
        return self._minimiser(model, model.x.shape[0]).clone()


def _warm(prior, p, w0) -> bool:
    """Whether ``w0`` is a warm start: other codes than the prior's minimiser.
    (Tested against the broadcast minimiser: a second (N, K) start would cost
    its page faults, ~10% of a 64x256 KL solve.)"""
    return not bool((w0 == prior.minimiser(p, w0)).all())


def _solve_chunk(model, w, tol, max_iter, fallback=None, widened=False):
    """``(w, iterations, residual, stalled)`` of a chunk, by the compiled loop or the torch loop.

    ``widened``: float32 codes whose stalled rows stop short, to be finished in
    float64 (:func:`diffsc.solvers._finished_in_float64`)."""
    stall_steps = _stall_steps(model.problem, max_iter, widened)
    if COMPILED and handles(model.problem, w):
        return compiled_chunk(model, w, tol, max_iter, _FORCING, _TIGHTEN, _CG_STEP_MAX, _ENOUGH, _TINY_SCALE,
                              stall_steps, fallback)
    return _chunk(model, w, tol, max_iter, stall_steps, fallback)


def _stall_steps(problem, max_iter, widened):
    """Steps a row may take without halving its residual (:class:`.result.Stall`)."""
    if problem.prior.name in HANDED_OVER:
        return _STALL_STEPS
    return _WIDENED_STALL_STEPS if widened else max_iter + 1


def _fused(problem, x, basis, lam, p, tol, max_iter, model, start):
    """A few rows' codes by the fused loop (:mod:`.newton_cg_fused`), in
    their own dtype, from the cold start ``start``: a ``SolveResult``, or
    None where the fused loop hands the rows back to the chunk loop."""
    out = fused_rows(model, start, tol, max_iter, _FORCING, _TIGHTEN, _CG_STEP_MAX,
                     _stall_steps(problem, max_iter, widened=x.dtype == torch.float32))
    if out is None:
        return None
    w, iterations, residual, stalled = out
    if problem.prior.name in HANDED_OVER:
        _finish_stalled(problem, x, basis, lam, p, tol, max_iter, w, iterations, residual,
                        stalled.nonzero().squeeze(1))
    return SolveResult(w, iterations, residual, residual <= tol, "newton_cg", tol)


def _finish_stalled(problem, x, basis, lam, p, tol, max_iter, w, iterations, residual, rows):
    """Rows that stalled (:class:`.result.Stall`) finish with :func:`.newton.newton`'s
    factored steps, from where they stopped, in what is left of ``max_iter``:
    on the case in :class:`.result.Stall`, 100 codes short became 0."""
    left = max_iter - int(iterations[rows].max()) if rows.numel() else 0
    if left <= 0:
        return
    result = newton(problem, x[rows], basis, lam, p, w[rows], tol, left)
    w[rows], residual[rows] = result.codes, result.residual
    iterations[rows] += result.iterations


def newton_cg(problem, x, basis, lam, p, w0, tol, max_iter):
    low = torch.float32 if x.dtype == torch.float64 else x.dtype
    w = w0
    n = x.shape[0]
    iterations = torch.zeros(n, dtype=torch.int64, device=x.device)
    residual = torch.empty(n, dtype=x.dtype, device=x.device)
    shared = _Model(problem, basis, lam, p, low)
    # float64 codes: the first steps entirely in float32 (half the memory
    # traffic), to tol if float32 reaches it; float64 checks and finishes.
    warm = _warm(problem.prior, p, w0)  # kept where it is better than none
    # L2's ridge codes are its codes: formed in their own dtype, they need
    # only its check (from float32's, float64 stalled on a nearly singular G)
    exact = problem.prior.name == "l2"
    ridge = _RidgeStart.of(problem, basis, lam, p, torch.float64 if exact else low, n, shared.gram)
    if FUSED and COMPILED and not warm and n <= FUSED_ROWS and handles(problem, x):
        fine = shared.of(x)
        start = w.clone() if ridge is None else ridge.codes(fine).to(w.dtype)
        result = _fused(problem, x, basis, lam, p, tol, max_iter, fine, start)
        if result is not None:
            return result
    rough = None
    if low != x.dtype and not (exact and ridge is not None and not warm):
        rough = _Model(problem, shared.products.basis_low, lam.to(low), p.to(low), low,
                       shared.products.gram_low)
    rough_tol = tol if tol >= FLOAT32_REACH else PHASE_TOL
    fallback = _Fallback(problem, ridge) if warm else None
    chunk = rows_at_once(x.device, max(basis.shape), CHUNK)
    for start in range(0, n, chunk):
        rows = slice(start, min(start + chunk, n))
        fine = shared.of(x[rows])
        start_w = w[rows].clone() if warm or ridge is None else ridge.codes(fine).to(w.dtype)
        first = torch.zeros_like(iterations[rows])
        if rough is not None:
            # (KL codes below float32's range would round to 0, whose F is NaN:
            # the fallback then threw the whole warm start away)
            given = problem.prior.project(start_w.to(low))
            # (rows that stall in float32 go on in float64)
            rough_w, first, _, _ = _solve_chunk(rough.cast(fine), given.clone(), rough_tol, min(max_iter, 30),
                                                fallback)
            # rows float32 left where they were keep their float64 digits
            kept = (first == 0) & (rough_w == given).all(-1)
            start_w = torch.where(kept[:, None], start_w, problem.prior.project(rough_w.to(x.dtype)))
        left = max_iter - int(first.max())
        # (after a float32 phase the fallback was that phase's)
        w[rows], its, residual[rows], stalled = _solve_chunk(fine, start_w, tol, left,
                                                             fallback if rough is None else None,
                                                             widened=x.dtype == torch.float32)
        iterations[rows] = first + its
        if problem.prior.name in HANDED_OVER:  # (the others' stalled rows are float32's, left short)
            _finish_stalled(problem, x, basis, lam, p, tol, max_iter, w, iterations, residual,
                            start + stalled.nonzero().squeeze(1))
    return SolveResult(w, iterations, residual, residual <= tol, "newton_cg", tol)
