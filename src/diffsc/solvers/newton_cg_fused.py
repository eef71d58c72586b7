"""Newton-CG for a few rows: the whole loop compiled, no Python between kernels.

On a batch of one to a few dozen inputs the chunk loop of
:mod:`.newton_cg_compiled` spends its time between its kernels, not in
them: each Newton step makes about ten kernel calls, a CG loop, products
through torch and two dozen small numpy arrays, about 300 us a step on
one 64x256 signed-KL input (1.4-1.6 ms a call, where its L1 code takes
0.06 ms). Here the same iteration runs as one numba function
(:func:`_solve`), each row on a thread of its own (:func:`_solve_rows`),
around the chunk loop's kernels compiled again without their threads
(:func:`diffsc.hessian_cg.serial_twin`) and products written out
(:func:`diffsc.hessian_cg.times`), in the codes' own dtype: at this size
float32's first phase saves nothing. The first call in a dtype compiles
it, once (numba caches it): in an empty cache a first small float64
signed-KL call took 39 s, against 23 s at ``6ce5ea1`` for the chunk
loop's kernels, which a larger batch then still compiles (ad hoc).

It takes the common case: a cold start (the ridge codes, or the prior's
minimiser) whose every CG solve reaches its accuracy and whose every step
is taken. A CG that falls short (an ill-conditioned ``H``, which the chunk
loop takes by Newton's factored step) or a row no step lowers (weak KL
priors near their tolerance: 4 of ``benchmarks/weak_kl.py``'s 400 float64
batches, which the chunk loop's checked steps finish) hands the whole call
back to the chunk loop, which starts over (:func:`fused_rows` returns
None); so do warm starts, whose rows the chunk loop compares with a cold
start (:class:`.newton_cg._Fallback`). Nearly decoupled coordinates take
their own rows of each step, as the chunk loop's float64 steps do
(:func:`_any_decoupled`).
"""

from __future__ import annotations

import numba
import numpy as np
import torch

from ..gram_cholesky import use_torch_threads
from ..hessian_cg import DECOUPLED, FASTMATH, fused_cg, gaussian_product, serial_twin, times, times_transposed
from . import newton_cg_compiled as chunk_loop
from .newton import _MAX_BACKTRACK
from .newton_cg_compiled import KL, PRIOR_CODES, SIGNED_KL, _rise, _stall_update


_prepare, _scaled_step, _decouple, _limit, _curve_points, _line_points, _lower_of_line, _accept = (
    serial_twin(getattr(chunk_loop, name)) for name in
    ("_prepare", "_scaled_step", "_decouple", "_limit", "_curve_points", "_line_points", "_lower_of_line", "_accept"))
_hold_at_floor = serial_twin(chunk_loop._hold_at_floor, fastmath=False)

#: Batches of at most this many rows take the fused loop (gaussian codes on the
#: CPU): against the chunk loop 2.1-3.9x faster for one row, 1.3-2.2x for 16,
#: 0.80-1.75x for 32, 0.53-1.27x for 64 (``benchmarks/fused_rows.py``, three runs).
FUSED_ROWS = 16


def fused_rows(model, w, tol, max_iter, forcing, tighten, cg_max, stall_steps):
    """``(w, iterations, residual, stalled)`` as :func:`.newton_cg_compiled.compiled_chunk`
    returns them, for a cold start ``w``; None where a CG solve fell short or a row's step was refused."""
    basis = model.basis
    k = basis.shape[1]
    dtype = basis.dtype
    np_dtype = basis.numpy().dtype
    # (numpy's: torch's broadcast, cast and copy took 4 operations, 4-5 us each, a parameter)
    as_k = lambda v: np.full(k, v.item(), np_dtype) if v.dim() == 0 else v.to(dtype).contiguous().numpy()  # noqa: E731
    lam, p = as_k(model.lam), as_k(model.p)
    gram_route = model.gram is not None
    gram = model.gram.contiguous().numpy() if gram_route else np.empty((0, 0), np_dtype)
    xb = model.xb.contiguous().numpy()
    tiny, eps = float(torch.finfo(dtype).tiny), float(torch.finfo(dtype).eps)
    prior = PRIOR_CODES[model.problem.prior.name]
    floor_s = np.log(tiny / p) if prior == KL else np.zeros_like(p)
    w = w.contiguous().clone().numpy()
    use_torch_threads()
    out = _solve_rows(prior, gram_route, gram, basis.contiguous().numpy(), model.x.contiguous().numpy(), xb,
                      np.abs(xb).max(1), model.half_xx.contiguous().numpy(), lam, p, model.column_norms().numpy(),
                      tiny, eps, floor_s, w, tol, max_iter, forcing, tighten, cg_max, stall_steps)
    iterations, residual, stalled, ok = out
    if not ok.all():
        return None
    return (torch.from_numpy(w), torch.from_numpy(iterations), torch.from_numpy(residual),
            torch.from_numpy(stalled & (residual > tol)))


# ---------------------------------------------------------------- products and the curve


@numba.njit(cache=True)
def _loss_gradient(cand, x, gram_route, gram, basis, half_xx):
    """What :func:`.newton_cg_compiled._accept` needs of ``D_L`` at ``cand``
    (:meth:`.newton_cg_compiled._Chunk.loss_gradient`)."""
    if gram_route:
        return times(cand, gram), half_xx
    diff = times_transposed(cand, basis) - x
    loss = np.empty(diff.shape[0], diff.dtype)
    for i in range(diff.shape[0]):
        loss[i] = 0.5 * (diff[i] * diff[i]).sum()
    return times(diff, basis), loss


@numba.njit(cache=True, fastmath=FASTMATH)
def _mirror_points(prior, s, out, p):
    """``(grad R)^{-1}(s)`` into ``out`` (:meth:`.newton_cg_compiled._Chunk.points`, before the floor)."""
    for i in range(s.shape[0]):
        for j in range(s.shape[1]):
            if prior == SIGNED_KL:
                out[i, j] = 2 * p[j] * np.sinh(s[i, j])
            elif prior == KL:
                out[i, j] = p[j] * np.exp(s[i, j])
            else:
                out[i, j] = s[i, j]


@numba.njit(cache=True)
def _points(prior, s, out, p, tiny, floor_s):
    _mirror_points(prior, s, out, p)
    if prior == KL:
        _hold_at_floor(out, s, tiny, floor_s)


@numba.njit(cache=True)
def _mirror(prior, w, p):
    """``s = grad R(w)`` (:meth:`.newton_cg_compiled._Chunk.mirror`)."""
    s = np.zeros_like(w)
    at_minimiser = True
    for i in range(w.shape[0]):
        for j in range(w.shape[1]):
            at_minimiser = at_minimiser and w[i, j] == (p[j] if prior == KL else 0)
    if at_minimiser:
        return s
    for i in range(w.shape[0]):
        for j in range(w.shape[1]):
            if prior == KL:
                s[i, j] = np.log(w[i, j] / p[j])
            elif prior == SIGNED_KL:
                s[i, j] = np.arcsinh(w[i, j] / (2 * p[j]))
            else:
                s[i, j] = w[i, j]
    return s


# ---------------------------------------------------------------- CG and the Newton step


@numba.njit(cache=True)
def _any_decoupled(scale, far, gii, lam):
    """Whether any free coordinate is nearly decoupled (a KL code near 0):
    :func:`diffsc.hessian_cg.decouple` then solves its own row of the step,
    which CG's scaled norm does not see. Without it rows crept: 3 of
    ``robustness.py``'s 1,200 batches (gaussian KL, float64) fell short."""
    for i in range(scale.shape[0]):
        for j in range(scale.shape[1]):
            if not far[i, j] and scale[i, j] * scale[i, j] * gii[j] <= DECOUPLED * lam[j]:
                return True
    return False


@numba.njit(cache=True)
def _newton_step(prior, gram_route, gram, basis, x, xb, xb_max, half_xx, lam, p, gii, tiny, eps, floor_s,
                 w, s, f, grad_loss, residual, missed, tol, forcing, tighten, cg_max):
    """:func:`.newton_cg_compiled._newton_step` for these rows, in place:
    ``(accepted, whole step, ok)``; not ``ok`` where a CG solve fell short."""
    n, k = w.shape
    g, scale, far_step = np.empty_like(w), np.empty_like(w), np.empty_like(w)
    far, far_rows = np.empty((n, k), np.bool_), np.empty(n, np.bool_)
    rel = np.empty(n, w.dtype)
    scale_cg, inv_diag, res = np.empty_like(w), np.empty_like(w), np.empty_like(w)
    _prepare(prior, w, s, grad_loss, lam, p, gii, residual, missed, tol, forcing, tighten, tiny,
             g, scale, far, far_step, far_rows, rel, scale_cg, inv_diag, res)
    sol, done = fused_cg(gram_route, gram, basis, lam, res, scale_cg, inv_diag, rel, cg_max)
    accepted = np.zeros(n, np.bool_)
    if not done.all():
        return accepted, accepted, False
    step = np.empty_like(w)
    _scaled_step(sol, scale, far, step)
    if _any_decoupled(scale, far, gii, lam):  # (the chunk loop's float64 steps do the same)
        _decouple(sol, scale, far, g, gaussian_product(step, gram_route, gram, basis), gii, lam, DECOUPLED, step)
    ds, slope, g_norm, rises = np.empty_like(w), np.empty(n, w.dtype), np.empty(n, w.dtype), np.empty(n, np.bool_)
    _limit(prior, w, s, g, step, far, far_step, far_rows, p, tiny, ds, slope, rises, g_norm)
    rising = rises.any()

    t = np.ones(n, w.dtype)
    cand, s_cand = np.empty_like(w), np.empty_like(w)
    rows = np.arange(n)
    for trial in range(_MAX_BACKTRACK):
        c, sc = cand[: rows.size], s_cand[: rows.size]
        _curve_points(rows, s, ds, t, sc)
        _points(prior, sc, c, p, tiny, floor_s)
        if rising:
            _rise(rows, w, s, ds, t, far, rises, p, tiny, c, sc)
        x_rows = x if rows.size == n else x[rows]
        grad, loss = _loss_gradient(c, x_rows, gram_route, gram, basis, half_xx)
        if prior == KL and trial > 1:  # the curve failed at t = 1 and 1/2: KL's bent line too
            line, s_line = np.empty_like(c), np.empty_like(c)
            _line_points(rows, w, step, far, t, tiny, c, sc, p, line, s_line)
            grad_line, loss_line = _loss_gradient(line, x_rows, gram_route, gram, basis, half_xx)
            _lower_of_line(prior, rows, c, sc, grad, loss, line, s_line, grad_line, loss_line, gram_route, xb,
                           half_xx, lam, p, eps, w, s, grad_loss, f)
        _accept(prior, rows, c, sc, grad, loss, gram_route, xb, xb_max, half_xx, lam, p, tiny, eps, slope, g_norm,
                trial == 0, False, t, accepted, w, s, f, grad_loss, residual)
        rows = np.flatnonzero(~accepted)
        if rows.size == 0:
            break
    return accepted, accepted & (t == 1), True


@numba.njit(cache=True)
def _solve(prior, gram_route, gram, basis, x, xb, xb_max, half_xx, lam, p, gii, tiny, eps, floor_s,
           w, tol, max_iter, forcing, tighten, cg_max, stall_steps):
    """:func:`.newton_cg_compiled.compiled_chunk`'s loop for one row (``w``
    of shape ``(1, K)``, in place): ``(iterations, residual, stalled, ok)``."""
    s = _mirror(prior, w, p)
    f, grad_loss, residual = np.empty(1, w.dtype), np.empty_like(w), np.empty(1, w.dtype)
    # F, grad D_L and the residual at the start: a first evaluation, "accepted"
    grad, loss = _loss_gradient(w, x, gram_route, gram, basis, half_xx)
    unused = np.zeros(1, w.dtype)
    row = np.zeros(1, np.int64)
    _accept(prior, row, w, s, grad, loss, gram_route, xb, xb_max, half_xx, lam, p, tiny, eps, unused, unused, False,
            True, unused, np.zeros(1, np.bool_), w, s, f, grad_loss, residual)
    iterations = np.zeros(1, np.int64)
    mark, since, stalled, missed, last = residual.copy(), np.zeros(1, np.int64), np.zeros(1, np.bool_), \
        np.zeros(1, np.int64), residual.copy()
    for _ in range(max_iter):
        if not residual[0] > tol or stalled[0]:
            break
        accepted, whole, ok = _newton_step(prior, gram_route, gram, basis, x, xb, xb_max, half_xx, lam, p, gii,
                                           tiny, eps, floor_s, w, s, f, grad_loss, residual, missed, tol, forcing,
                                           tighten, cg_max)
        if not (ok and accepted[0]):  # no step lowers it: the chunk loop's checked (or factored) steps may
            return iterations, residual, stalled, False
        iterations[0] += 1
        _stall_update(row, residual, whole, stall_steps, mark, since, stalled, missed, last)
    return iterations, residual, stalled, True


@numba.njit(parallel=True, cache=True)
def _solve_rows(prior, gram_route, gram, basis, x, xb, xb_max, half_xx, lam, p, gii, tiny, eps, floor_s,
                w, tol, max_iter, forcing, tighten, cg_max, stall_steps):
    """:func:`_solve` row by row, the rows spread over the threads."""
    m = w.shape[0]
    iterations, residual = np.zeros(m, np.int64), np.zeros(m, w.dtype)
    stalled, ok = np.zeros(m, np.bool_), np.zeros(m, np.bool_)
    for i in numba.prange(m):
        its, res, stall, fine = _solve(prior, gram_route, gram, basis, x[i:i + 1], xb[i:i + 1], xb_max[i:i + 1],
                                       half_xx[i:i + 1], lam, p, gii, tiny, eps, floor_s, w[i:i + 1], tol, max_iter,
                                       forcing, tighten, cg_max, stall_steps)
        iterations[i], residual[i], stalled[i], ok[i] = its[0], res[0], stall[0], fine
    return iterations, residual, stalled, ok
