"""Newton-CG's chunk loop, fused and compiled: gaussian codes on the CPU.

The iteration of :func:`.newton_cg._chunk` (read that first), with every
elementwise pass over a chunk's ``(rows, K)`` vectors fused into a few
numba kernels, while the matrix products stay torch's. Profiled on the
benchmarks' problems the torch loop spent two thirds of its time in about a
hundred small tensor operations per Newton step (each a pass over the
chunk, a ``torch.where`` over one costs as much as a matrix product);
here a step is about ten kernels: one that forms the gradient, the far KL
jumps and the scaled CG system, one per CG iteration, one or two that judge
the direction, one for its mirror step and slope, and two per line-search
trial (the candidates, then their objective, acceptance and residual).

The gaussian family's products are ``v G`` with ``G = B^T B`` where
``K <= 2D``, else ``(v B^T) B``; everything else is elementwise in the
prior (KL, signed KL or L2), so the kernels know these three priors by a
code. Rows whose CG falls short take the factored step, as in the torch loop.
``tests/test_newton_cg_compiled.py`` checks that both loops take the same
steps to the same codes.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import torch

from ..gram_cholesky import use_torch_threads
from ..hessian import hessian_solve
from ..hessian_cg import DECOUPLED, FASTMATH, compiled_cg
from .newton import _ARMIJO, _MAX_BACKTRACK, _MAX_MIRROR_STEP
from .result import FLAT_ULPS

KL, SIGNED_KL, L2 = 0, 1, 2
PRIOR_CODES = {"kl": KL, "signed_kl": SIGNED_KL, "l2": L2}


def handles(problem, x) -> bool:
    """Whether the compiled loop solves this problem (else the torch loop does)."""
    return problem.family.name == "gaussian" and problem.prior.name in PRIOR_CODES and x.device.type == "cpu"


# ---------------------------------------------------------------- the prior, one entry


@numba.njit(cache=True, inline="always")
def _root(w, p):
    """``sqrt(w^2 + 4 p^2)``, in float64."""
    v = np.float64(w)
    return math.sqrt(v * v + 4 * p * p)


@numba.njit(cache=True, inline="always")
def _inverse_curvature(prior, w, p):
    """``1 / R''(w)``: the metric scale squared. (Signed KL's root in
    float64: a float32 ``w^2`` overflows beyond ``|w| ~ 1.8e19``, a far warm
    start, and numba's ``math.hypot`` is 20x slower.)"""
    if prior == KL:
        return w
    if prior == SIGNED_KL:
        return _root(w, p)
    return 1.0


@numba.njit(cache=True, inline="always")
def _value(prior, w, s, p):
    """``R(w)`` given ``s = grad R(w)``."""
    if prior == KL:
        return w * s - w + p
    if prior == SIGNED_KL:
        return w * s - _root(w, p) + 2 * p
    return 0.5 * w * w


@numba.njit(cache=True, inline="always")
def _optimality(prior, w, g, tiny):
    """``|g|`` as :meth:`diffsc.priors.Prior.optimality_gradient` counts it:
    0 for a KL code held at the floor that wants to shrink."""
    if prior == KL and w <= tiny and g > 0:
        return 0.0
    return abs(g)


@numba.njit(cache=True, inline="always")
def _log_step(w, p, lam, grad_loss, curvature, tiny):
    """``log(v / w)`` for the one-coordinate model's minimiser ``v``
    (:meth:`diffsc.priors.KL.coordinate_log_step`, Wright's omega in logs)."""
    c = max(curvature, tiny)
    z = math.log(c * p / lam) + (c * w - grad_loss) / lam
    y = z if z < 1 else math.log(z) + 1e-3
    for _ in range(12):
        ey = math.exp(y)
        y = y - (ey + y - z) / (ey + 1)
    return math.log(lam / c) + y - math.log(w)


# ---------------------------------------------------------------- kernels over rows


@numba.njit(parallel=True, cache=True, fastmath=FASTMATH)
def _prepare(prior, w, s, grad_loss, lam, p, gii, residual, missed, tol, forcing, tighten, tiny,
             g, scale, far, far_step, far_rows, rel, scale_low, inv_diag, res):
    """The gradient, the far KL jumps (:func:`.newton._far`), and the scaled
    system ``(S G S + lam I) z = -S g`` (its right-hand side ``res``) with
    its Jacobi preconditioner (:func:`diffsc.hessian_cg.scaled_system`)."""
    k = w.shape[1]
    for i in numba.prange(w.shape[0]):
        # inexact Newton: relative accuracy min(0.1, sqrt(res)), 10x finer for each
        # whole step in a row that did not halve res (Stall.missed), not finer than tol asks
        rl = max(min(forcing, math.sqrt(residual[i])) * tighten ** missed[i], 0.1 * tol / max(residual[i], tol))
        rel[i] = rl
        maybe = 0
        for j in range(k):
            g[i, j] = grad_loss[i, j] + lam[j] * s[i, j]
            far[i, j] = False
            if prior == KL:  # the first Newton step in log(w) of the one-coordinate model
                far_step[i, j] = -g[i, j] / (w[i, j] * gii[j] + lam[j])
                maybe += abs(far_step[i, j]) > _MAX_MIRROR_STEP / 2
        far_rows[i] = False
        if maybe:  # the few candidates get the exact jump
            for j in range(k):
                if abs(far_step[i, j]) > _MAX_MIRROR_STEP / 2:
                    far_step[i, j] = _log_step(w[i, j], p[j], lam[j], grad_loss[i, j], gii[j], tiny)
                    far[i, j] = abs(far_step[i, j]) > _MAX_MIRROR_STEP
                    far_rows[i] = far_rows[i] or far[i, j]
        for j in range(k):
            sc = math.sqrt(_inverse_curvature(prior, w[i, j], p[j]))
            scale[i, j] = sc
            scale_low[i, j] = 0.0 if far[i, j] else sc
            inv_diag[i, j] = 1 / (sc * sc * gii[j] + lam[j])
            res[i, j] = -scale_low[i, j] * g[i, j]


@numba.njit(parallel=True, cache=True, fastmath=FASTMATH)
def _scaled_step(sol, scale, far, step):
    """``d = S z`` on the free coordinates, in the codes' dtype."""
    for i in numba.prange(sol.shape[0]):
        for j in range(sol.shape[1]):
            step[i, j] = 0.0 if far[i, j] else scale[i, j] * sol[i, j]


@numba.njit(parallel=True, cache=True, fastmath=FASTMATH)
def _decouple(sol, scale, far, g, product, gii, lam, decoupled, step):
    """:func:`diffsc.hessian_cg.decouple`: free coordinates with
    ``S^2 G_ii <= decoupled lam`` take their own row of the Newton system,
    given the others' step (``product = d G``, updated), in place."""
    for i in numba.prange(sol.shape[0]):
        for j in range(sol.shape[1]):
            sc = scale[i, j]
            if far[i, j] or not sc * sc * gii[j] <= decoupled * lam[j]:
                continue
            others = product[i, j] - gii[j] * step[i, j]
            z = -sc * (g[i, j] + others) / (lam[j] + sc * sc * gii[j])
            product[i, j] = others + gii[j] * sc * z
            sol[i, j] = z
            step[i, j] = sc * z


@numba.njit(parallel=True, cache=True, fastmath=FASTMATH)
def _check(sol, scale, far, g, product, lam, rel, enough, tiny_scale, ok):
    """A float32 direction is kept where the gradient its model leaves,
    ``|g + H d|_inf`` (``product = d G``), is under ``max(rel, enough)``
    of ``|g|_inf`` and no free scale lies below float32's range
    (:func:`diffsc.hessian_cg.gradient_change`)."""
    for i in numba.prange(sol.shape[0]):
        left, g_max, tiny_row = 0.0, 0.0, False
        for j in range(sol.shape[1]):
            if far[i, j]:
                continue
            shift = lam[j] * sol[i, j] / scale[i, j] if scale[i, j] > 0 else 0.0
            left = max(left, abs(g[i, j] + product[i, j] + shift))
            g_max = max(g_max, abs(g[i, j]))
            tiny_row = tiny_row or scale[i, j] < tiny_scale
        ok[i] = ok[i] and left <= max(rel[i], enough) * g_max and not tiny_row


@numba.njit(parallel=True, cache=True, fastmath=FASTMATH)
def _limit(prior, w, s, g, step, far, far_step, far_rows, p, tiny, ds, slope, rises, g_norm):
    """The step in mirror coordinates, each entry limited to ``_MAX_MIRROR_STEP`` (not L2's)
    or the whole step scaled down, whichever descends faster, the slope of the
    curve taken, and whether a row's jumps rise (:func:`_rise`), as
    :func:`.newton._limit`; a direction that does not descend (rounding)
    becomes the scaled gradient.

    (Loops are split so that each vectorises: one reduction each, the rare
    cases in loops of their own.)"""
    k = w.shape[1]
    for i in numba.prange(w.shape[0]):
        descent = 0.0
        for j in range(k):
            descent += g[i, j] * step[i, j]
        if not descent < 0:
            for j in range(k):
                step[i, j] = 0.0 if far[i, j] else -_inverse_curvature(prior, w[i, j], p[j]) * g[i, j]
        gn = 0.0
        for j in range(k):
            gn = max(gn, _optimality(prior, w[i, j], g[i, j], tiny))
        g_norm[i] = gn
        sl, newton_sl, limited = 0.0, 0.0, 0  # the limited step's slope, the whole step's
        for j in range(k):
            inv_deriv = _inverse_curvature(prior, w[i, j], p[j])  # 1 / s'(w)
            ds[i, j] = step[i, j] / inv_deriv
            if prior != L2:  # exp and sinh overflow; L2's mirror is w itself
                limited += abs(ds[i, j]) > _MAX_MIRROR_STEP
                ds[i, j] = min(max(ds[i, j], -_MAX_MIRROR_STEP), _MAX_MIRROR_STEP)
            sl += g[i, j] * ds[i, j] * inv_deriv
            newton_sl += g[i, j] * step[i, j]
        if limited or not sl < 0:  # unless scaling the whole step down descends faster
            kept = 1.0
            for j in range(k):
                if step[i, j] != 0:  # (0 where a code jumps)
                    kept = min(kept, ds[i, j] * _inverse_curvature(prior, w[i, j], p[j]) / step[i, j])
            if not sl < 0 or kept * newton_sl < sl:
                for j in range(k):
                    ds[i, j] = kept * step[i, j] / _inverse_curvature(prior, w[i, j], p[j])
                sl = kept * newton_sl
        rises[i] = False
        if far_rows[i]:
            for j in range(k):
                if far[i, j]:  # jumps: their slope counts the chord
                    ds[i, j] = far_step[i, j]
                    sl += g[i, j] * (max(p[j] * math.exp(s[i, j] + ds[i, j]), tiny) - w[i, j])
                    rises[i] = rises[i] or ds[i, j] > 0
        slope[i] = sl


@numba.njit(parallel=True, cache=True, fastmath=FASTMATH)
def _curve_points(rows, s, ds, t, s_cand):
    """The mirror coordinates ``s + t ds`` of the curve's points for ``rows`` (compact)."""
    for a in numba.prange(rows.shape[0]):
        i = rows[a]
        for j in range(s.shape[1]):
            s_cand[a, j] = s[i, j] + t[i] * ds[i, j]


@numba.njit(parallel=True, cache=True)
def _hold_at_floor(w, s, tiny, floor_s):
    """KL codes at or below ``tiny`` (the dtype's smallest normal number) are
    held there, with ``s = log(tiny / p)``, in place."""
    for i in numba.prange(w.shape[0]):
        for j in range(w.shape[1]):
            if w[i, j] <= tiny:
                w[i, j] = tiny
                s[i, j] = floor_s[j]


@numba.njit(cache=True)
def _rise(rows, w, s, ds, t, far, rises, p, tiny, cand, s_cand):
    """Rising KL jumps of ``rows`` on the straight line to their target
    (:func:`.newton._rise`), in place of the curve's points."""
    for a in range(rows.shape[0]):
        i = rows[a]
        if not rises[i]:
            continue
        for j in range(w.shape[1]):
            if far[i, j] and ds[i, j] > 0:
                target = max(p[j] * math.exp(s[i, j] + ds[i, j]), tiny)
                cand[a, j] = w[i, j] + t[i] * (target - w[i, j])
                s_cand[a, j] = math.log(cand[a, j] / p[j])


@numba.njit(parallel=True, cache=True, fastmath=FASTMATH)
def _line_points(rows, w, step, far, t, tiny, cand, s_cand, p, line, s_line):
    """KL's bent line ``max(w + t d, w e^(-30 t))`` of the Newton step ``d``
    for ``rows`` (compact), the curve's points where a code jumps
    (:func:`.newton._line`)."""
    for a in numba.prange(rows.shape[0]):
        i = rows[a]
        for j in range(w.shape[1]):
            if far[i, j]:
                line[a, j], s_line[a, j] = cand[a, j], s_cand[a, j]
                continue
            line[a, j] = max(w[i, j] + t[i] * step[i, j], w[i, j] * math.exp(-_MAX_MIRROR_STEP * t[i]), tiny)
            s_line[a, j] = math.log(line[a, j] / p[j])  # (of the code in its dtype)


@numba.njit(cache=True, fastmath=FASTMATH, inline="always")
def _objective(prior, a, i, cand, s_cand, grad, loss, gram_route, xb, half_xx, lam, p):
    """``F`` at candidate ``a`` (row ``i``), given ``grad`` and ``loss`` as :func:`_accept` takes them."""
    value = 0.0
    if gram_route:  # D_L = 1/2 w^T G w - w^T B^T x + 1/2 |x|^2, with w G in grad
        for j in range(cand.shape[1]):
            value += 0.5 * cand[a, j] * ((grad[a, j] - xb[i, j]) - xb[i, j])
        value += half_xx[i]
    else:
        value += loss[a]
    for j in range(cand.shape[1]):
        value += lam[j] * _value(prior, cand[a, j], s_cand[a, j], p[j])
    return value


@numba.njit(cache=True, fastmath=FASTMATH, inline="always")
def _change(prior, a, i, cand, s_cand, grad, value, gram_route, xb, lam, p, w, s, grad_loss, f):
    """``F`` at candidate ``a`` less ``F`` at row ``i``'s point: on the Gram
    route ``1/2 (c - w)^T (grad(c) + grad(w))`` plus the prior's change, free
    of ``F``'s cancelling terms (:meth:`.newton_cg._Model.change`); ``grad``
    is ``cand G`` there, else ``value`` is the candidate's ``F``."""
    if not gram_route:
        return value - f[i]
    change = 0.0
    for j in range(cand.shape[1]):
        change += 0.5 * (cand[a, j] - w[i, j]) * ((grad[a, j] - xb[i, j]) + grad_loss[i, j])
        change += lam[j] * (_value(prior, cand[a, j], s_cand[a, j], p[j]) - _value(prior, w[i, j], s[i, j], p[j]))
    return change


@numba.njit(parallel=True, cache=True, fastmath=FASTMATH)
def _lower_of_line(prior, rows, cand, s_cand, grad, loss, line, s_line, grad_line, loss_line, gram_route,
                   xb, half_xx, lam, p, eps, w, s, grad_loss, f):
    """The line's points replace the curve's (with their ``grad`` and ``loss``)
    where their ``F`` is lower beyond rounding."""
    for a in numba.prange(rows.shape[0]):
        i = rows[a]
        value = _objective(prior, a, i, cand, s_cand, grad, loss, gram_route, xb, half_xx, lam, p)
        f_curve = f[i] + _change(prior, a, i, cand, s_cand, grad, value, gram_route, xb, lam, p, w, s, grad_loss, f)
        value = _objective(prior, a, i, line, s_line, grad_line, loss_line, gram_route, xb, half_xx, lam, p)
        f_line = f[i] + _change(prior, a, i, line, s_line, grad_line, value, gram_route, xb, lam, p, w, s, grad_loss,
                                f)
        if f_curve <= f_line + FLAT_ULPS * eps * max(abs(f_line), 1.0):
            continue
        if not gram_route:
            loss[a] = loss_line[a]
        for j in range(cand.shape[1]):
            cand[a, j], s_cand[a, j], grad[a, j] = line[a, j], s_line[a, j], grad_line[a, j]


@numba.njit(parallel=True, cache=True, fastmath=FASTMATH)
def _accept(prior, rows, cand, s_cand, grad, loss, gram_route, xb, xb_max, half_xx, lam, p, tiny, eps,
            slope, g_norm, first, force, t, accepted, w, s, f, grad_loss, residual):
    """Judge the candidates of ``rows``: Armijo's condition (or, on the full
    step, a halved gradient with ``F`` flat to rounding); accepted rows take
    the candidate, its objective, gradient and residual, the others halve ``t``.

    ``grad`` is ``cand G`` on the Gram route (made ``grad D_L`` here, and
    ``D_L`` with it), else ``grad D_L`` with ``loss`` already. ``force``
    accepts every row (a first evaluation).
    """
    k = cand.shape[1]
    for a in numba.prange(rows.shape[0]):
        i = rows[a]
        value = _objective(prior, a, i, cand, s_cand, grad, loss, gram_route, xb, half_xx, lam, p)
        change = 0.0 if force else _change(prior, a, i, cand, s_cand, grad, value, gram_route, xb, lam, p, w, s,
                                           grad_loss, f)
        if gram_route:
            for j in range(k):
                grad[a, j] -= xb[i, j]
        good = force or change <= _ARMIJO * t[i] * slope[i]
        if first and not good:  # near the optimum F is flat to rounding; the gradient still tells
            g_max = 0.0
            for j in range(k):
                g_max = max(g_max, _optimality(prior, cand[a, j], grad[a, j] + lam[j] * s_cand[a, j], tiny))
            good = g_max <= 0.5 * g_norm[i] and f[i] + change <= f[i] + FLAT_ULPS * eps * max(abs(f[i]), 1.0)
        if not good:
            t[i] *= 0.5
            continue
        accepted[i] = True
        f[i] = value
        for j in range(k):
            w[i, j], s[i, j], grad_loss[i, j] = cand[a, j], s_cand[a, j], grad[a, j]
        residual[i] = _residual(prior, w, s, grad_loss, i, lam, p, xb_max[i], tiny)


@numba.njit(cache=True, fastmath=FASTMATH, inline="always")
def _residual(prior, w, s, grad_loss, i, lam, p, xb_max, tiny):
    """The relative residual of :meth:`diffsc.problem.Problem.residual` for row ``i``.
    (Rows are indexed in place: a row view passed to a function does not vectorise.)"""
    k = w.shape[1]
    terms = np.empty(k, w.dtype)  # |lam w R''(w)|, apart from the maxima so that it vectorises
    for j in range(k):
        terms[j] = abs(lam[j] * w[i, j] / _inverse_curvature(prior, w[i, j], p[j]))
    num, scale, finite = 0.0, xb_max, 0.0
    for j in range(k):
        g = grad_loss[i, j] + lam[j] * s[i, j]
        finite += g - g  # NaN where g is not finite, which max() would drop
        num = max(num, _optimality(prior, w[i, j], g, tiny))
        scale = max(scale, abs(grad_loss[i, j]), abs(lam[j] * s[i, j]), terms[j])
    if not finite == 0:  # not converged, as the torch loop's NaN says
        return math.nan
    return num / scale if scale > 0 else num


# ---------------------------------------------------------------- the chunk loop


class _Chunk:
    """The numpy views and matrix products of one chunk of rows (a ``_Model``'s)."""

    def __init__(self, model):
        basis = model.basis
        k = basis.shape[1]
        self.model, self.prior = model, PRIOR_CODES[model.problem.prior.name]
        self.gram, self.basis = model.gram, basis
        self.gram_low = model.products.gram_low
        self.basis_low = model.products.basis_low
        self.dtype, self.low = basis.dtype, model.low
        as_k = lambda v, dtype: torch.broadcast_to(v, (k,)).to(dtype).contiguous().numpy()  # noqa: E731
        self.lam, self.p = as_k(model.lam, self.dtype), as_k(model.p, self.dtype)
        self.lam_low = as_k(model.lam, self.low)
        self.gii = model.column_norms().contiguous().numpy()  # (once a solve: 46 us at 784x256 float64)
        self.x, self.xb, self.half_xx = model.x, model.xb.contiguous().numpy(), model.half_xx.contiguous().numpy()
        self.xb_max = np.abs(self.xb).max(1)
        self.tiny = float(torch.finfo(self.dtype).tiny)
        self.eps = float(torch.finfo(self.dtype).eps)
        if self.prior == KL:  # s = log(tiny / p) of codes held at the floor (points)
            self.floor_s = torch.log(self.tiny / torch.from_numpy(self.p)).numpy()

    def mirror(self, w):
        """``s = grad R(w)``; transcendental functions vectorised: torch's ``log``,
        numpy's ``arcsinh`` (one thread: on a float64 512x256 chunk 0.31 ms,
        where torch's ``asinh`` took 1.6 ms and its ``log1p`` form 1.05 ms;
        ``w / 2p`` overflows to an infinite ``s``, as in torch)."""
        if (w == (self.p if self.prior == KL else 0)).all():  # the prior's own minimiser, the default start
            return np.zeros_like(w)
        if self.prior == KL:
            return torch.log(torch.from_numpy(w) / torch.from_numpy(self.p)).numpy()
        if self.prior == SIGNED_KL:
            with np.errstate(over="ignore"):
                return np.arcsinh(w / (2 * self.p))
        return w.copy()

    def points(self, s, out):
        """The codes ``(grad R)^{-1}(s)`` of the curve's points into ``out``; KL
        codes below the dtype's range are held at its floor, with its own ``s``."""
        if self.prior == L2:
            out[:] = s
            return
        s_t, out_t, p = torch.from_numpy(s), torch.from_numpy(out), torch.from_numpy(self.p)
        if self.prior == SIGNED_KL:
            torch.sinh(s_t, out=out_t).mul_(2 * p)
            return
        torch.exp(s_t, out=out_t).mul_(p)
        # one pass (a min, a mask, a fill and a where were five, 4% of a
        # 784x256 KL solve, whose codes often reach the floor)
        _hold_at_floor(out, s, self.tiny, self.floor_s)

    def product(self, v, high):
        """``v B^T B`` for the rows of ``v`` (numpy), in the codes' dtype or CG's."""
        v = torch.from_numpy(v)
        gram = self.gram if high else self.gram_low
        if gram is not None:
            return (v @ gram).numpy()
        basis = self.basis if high else self.basis_low
        return ((v @ basis.T) @ basis).numpy()

    def loss_gradient(self, cand, x):
        """What :func:`_accept` needs of ``D_L`` at ``cand``: ``cand G`` on the
        Gram route, else ``(grad D_L, D_L)``."""
        cand = torch.from_numpy(cand)
        if self.gram is not None:
            return (cand @ self.gram).numpy(), self.half_xx
        diff = cand @ self.basis.T - x
        return (diff @ self.basis).numpy(), (0.5 * diff.square().sum(-1)).numpy()


def compiled_chunk(model, w, tol, max_iter, forcing, tighten, cg_max, enough, tiny_scale, stall_steps,
                   fallback=None):
    """:func:`.newton_cg._chunk` for gaussian codes on the CPU: ``(w, iterations,
    residual, stalled)``."""
    use_torch_threads()
    ch = _Chunk(model)
    w = w.contiguous().clone().numpy()
    m, k = w.shape
    s = ch.mirror(w)
    f, grad_loss, residual = np.empty(m, w.dtype), np.empty_like(w), np.empty(m, w.dtype)
    # F, grad D_L and the residual at the start: a first evaluation, every row "accepted"
    _first_evaluation(ch, np.arange(m), w, s, ch.x, w, s, f, grad_loss, residual)
    if fallback is not None:  # rows whose warm start is worse than none (.newton_cg._Fallback)
        redo = np.flatnonzero(fallback.worse(model, torch.from_numpy(f)).numpy())
        if redo.size:
            rows = torch.from_numpy(redo)
            start = fallback.codes(model.take(rows)).to(model.basis.dtype).contiguous().numpy()
            _first_evaluation(ch, redo, start, ch.mirror(start), ch.x[rows], w, s, f, grad_loss, residual)
    iterations = np.zeros(m, np.int64)
    stuck = np.zeros(m, np.bool_)
    # rows that stop halving it leave (.result.Stall's state, here as numpy)
    mark, since, stalled, missed, last = residual.copy(), np.zeros(m, np.int64), stuck.copy(), \
        np.zeros(m, np.int64), residual.copy()
    for _ in range(max_iter):
        idx = np.flatnonzero((residual > tol) & ~stuck & ~stalled)
        if idx.size == 0:
            break
        whole = idx.size == m
        take = (lambda v: v) if whole else (lambda v: v[idx])  # noqa: E731
        rows = [take(v) for v in (w, s, f, grad_loss, residual)]
        accepted, whole_step = _newton_step(ch, idx, whole, *rows, take(missed), tol, forcing, tighten, cg_max,
                                            enough, tiny_scale)
        if not whole:
            for full, part in zip((w, s, f, grad_loss, residual), rows):
                full[idx] = part
        stuck[idx] = ~accepted
        iterations[idx] += 1
        _stall_update(idx, residual, whole_step, stall_steps, mark, since, stalled, missed, last)
    return (torch.from_numpy(w), torch.from_numpy(iterations), torch.from_numpy(residual),
            torch.from_numpy(stalled & (residual > tol)))


@numba.njit(cache=True)
def _stall_update(idx, residual, whole, steps, mark, since, stalled, missed, last):
    """:meth:`.result.Stall.update` for the rows ``idx`` (``whole``: which took
    the whole step), on its state as numpy arrays: as torch operations it
    took about 50 us a step, a third of one code's Newton step."""
    for a in range(idx.size):
        i = idx[a]
        r = residual[i]
        if r <= 0.5 * mark[i]:  # (a NaN residual has not halved it)
            mark[i], since[i] = r, 0
        else:
            since[i] += 1
        stalled[i] = since[i] >= steps
        missed[i] = missed[i] + 1 if whole[a] and not r <= 0.5 * last[i] else 0
        last[i] = r


def _first_evaluation(ch, rows, start, s_start, x, w, s, f, grad_loss, residual):
    """Rows ``rows`` of the chunk start at ``start`` (compact, mirror coordinates
    ``s_start``, inputs ``x``): their ``F``, gradient and residual, every row
    "accepted"."""
    grad, loss = ch.loss_gradient(start, x)
    unused = np.zeros(w.shape[0], w.dtype)  # no slope, gradient norm or step length to judge by
    _accept(ch.prior, rows, start, s_start, grad, loss, ch.gram is not None, ch.xb, ch.xb_max, ch.half_xx, ch.lam,
            ch.p, ch.tiny, ch.eps, unused, unused, False, True, unused, np.zeros(w.shape[0], np.bool_),
            w, s, f, grad_loss, residual)


def _newton_step(ch, idx, whole, w, s, f, grad_loss, residual, missed, tol, forcing, tighten, cg_max, enough,
                 tiny_scale):
    """One Newton step for the active rows, in place; returns which were
    accepted, and which of them took the whole step."""
    n, k = w.shape
    dtype = w.dtype
    low = np.dtype(np.float32) if ch.low == torch.float32 else dtype  # CG's dtype
    xb, xb_max, half_xx = (ch.xb, ch.xb_max, ch.half_xx) if whole else (ch.xb[idx], ch.xb_max[idx], ch.half_xx[idx])
    x = ch.x if whole else ch.x[torch.from_numpy(idx)]

    g, scale, far_step = np.empty_like(w), np.empty_like(w), np.empty_like(w)
    far, far_rows = np.empty((n, k), np.bool_), np.empty(n, np.bool_)
    rel = np.empty(n, dtype)
    scale_low, inv_diag, res = (np.empty((n, k), low) for _ in range(3))
    _prepare(ch.prior, w, s, grad_loss, ch.lam, ch.p, ch.gii, residual, missed, tol, forcing, tighten, ch.tiny,
             g, scale, far, far_step, far_rows, rel, scale_low, inv_diag, res)
    sol, done = compiled_cg(lambda v: ch.product(v, high=False), ch.lam_low, res, scale_low, inv_diag, rel, cg_max)

    step = np.empty_like(w)
    _scaled_step(sol, scale, far, step)
    ok = done
    if low != dtype:
        # float32 directions are judged by the gradient their model leaves,
        # in the codes' dtype; H d itself needs only float32's 7 digits there
        # (the test allows a quarter of the gradient, or rel >= 1e-7 of it).
        product = ch.product(step.astype(low), high=False)
        _decouple(sol, scale, far, g, product, ch.gii, ch.lam, DECOUPLED, step)
        _check(sol, scale, far, g, product, ch.lam, rel, enough, tiny_scale, ok)
    if not ok.all():
        _factored(ch, w, g, far, step, ~ok)

    ds, slope, g_norm, rises = np.empty_like(w), np.empty(n, dtype), np.empty(n, dtype), np.empty(n, np.bool_)
    _limit(ch.prior, w, s, g, step, far, far_step, far_rows, ch.p, ch.tiny, ds, slope, rises, g_norm)
    rising = rises.any()

    t = np.ones(n, dtype)
    accepted = np.zeros(n, np.bool_)
    cand, s_cand = np.empty_like(w), np.empty_like(w)
    rows = np.arange(n)
    for trial in range(_MAX_BACKTRACK):
        c, sc = cand[: rows.size], s_cand[: rows.size]
        _curve_points(rows, s, ds, t, sc)
        ch.points(sc, c)
        if rising:
            _rise(rows, w, s, ds, t, far, rises, ch.p, ch.tiny, c, sc)
        x_rows = x if rows.size == n else x[torch.from_numpy(rows)]
        grad, loss = ch.loss_gradient(c, x_rows)
        if ch.prior == KL and trial > 1:  # the curve failed at t = 1 and 1/2: KL's bent line too
            line, s_line = np.empty_like(c), np.empty_like(c)
            _line_points(rows, w, step, far, t, ch.tiny, c, sc, ch.p, line, s_line)
            grad_line, loss_line = ch.loss_gradient(line, x_rows)
            _lower_of_line(ch.prior, rows, c, sc, grad, loss, line, s_line, grad_line, loss_line,
                           ch.gram is not None, xb, half_xx, ch.lam, ch.p, ch.eps, w, s, grad_loss, f)
        _accept(ch.prior, rows, c, sc, grad, loss, ch.gram is not None, xb, xb_max, half_xx, ch.lam, ch.p,
                ch.tiny, ch.eps, slope, g_norm, trial == 0, False, t, accepted, w, s, f, grad_loss, residual)
        rows = np.flatnonzero(~accepted)
        if rows.size == 0:
            break
    return accepted, accepted & (t == 1)


def _factored(ch, w, g, far, step, redo):
    """Newton's factored step (:func:`diffsc.hessian.hessian_solve`) for the rows ``redo``."""
    model = ch.model
    problem = model.problem
    redo = np.flatnonzero(redo)
    w_redo = torch.from_numpy(w[redo])
    fixed = torch.from_numpy(far[redo]) if ch.prior == KL else None
    exact, exact_ok = hessian_solve(problem, ch.basis, model.lam, model.p, w_redo,
                                    problem.reconstruction(ch.basis, w_redo), -torch.from_numpy(g[redo]),
                                    fixed=fixed, direct=True)
    step[redo] = np.where(exact_ok.numpy()[:, None], exact.numpy(), step[redo])
