"""Gaussian L1 codes from the Gram matrix, compiled: the CPU default for that pair.

For the gaussian family the L1 problem sees ``x`` only through ``c = B^T x``:

    F(w) = 1/2 w^T G w - c^T w + 1/2 ||x||^2 + sum_i lam_i |w_i|,     G = B^T B,

so after one matrix product for the whole batch (``X B``) each code is a
``K``-dimensional problem with the shared ``K x K`` matrix ``G``. Each code
is found by the active-set method of the torch solver
(:mod:`.active_set`), specialised and compiled with numba, one example at a
time, examples spread over the CPU threads:

* on the support ``S`` with signs ``s``, the sign-fixed problem's minimiser is
  ``z = G_SS^{-1} (c_S - lam_S s_S)``; move from ``w_S`` towards it and stop
  where a coefficient reaches zero (it leaves ``S``): each move lowers ``F``,
  because ``F`` is that convex quadratic along the whole segment;
* once ``w_S = z``, the coefficient with the largest violation
  ``|g_j| - lam_j`` (``g = G w - c``) enters ``S`` with the sign ``-sign(g_j)``;
  ``G_SS``'s Cholesky factor grows by one row (``O(|S|^2)``) and the
  gradient is updated by the atoms that moved (``O(K |S|)``).

* where every violator's atom lies in the span of the support's (weak
  priors on an overcomplete basis, whose codes use ``D`` atoms; or twin
  atoms), the worst violator takes the place of a support atom instead,
  along the direction that keeps ``B w`` (:func:`_pivot`).

The work per code is about ``K |S|^2`` instead of a pass over ``D`` per
iteration, and nothing is spent on examples that are already done, which is
what batched tensor code cannot avoid. Codes that the compiled loop cannot
finish (a sign lost to rounding, a pivot that finds no atom to leave) are
handed to the torch active-set solver, warm-started where it stopped.
"""

from __future__ import annotations

import numba
import numpy as np
import torch

from .. import gram_memo
from ..gram_cholesky import BLOCK, chol_solve, extend, refactor, remove_row, use_torch_threads
from .active_set import active_set
from .result import SolveResult

_MAX_ENTER = 32  # coefficients that may enter the support at once
_ENTER_SHARE = 0.5  # ... each violating optimality at least this share of the worst


def gram_active_set(problem, x, basis, lam, p, w0, tol, max_iter):
    if x.device.type != "cpu":
        raise ValueError("solver: 'gram' runs on the CPU; use 'active_set' for CUDA tensors")
    n, k = w0.shape
    # numpy around the compiled loop: on one input each torch operation
    # (4-5 us) weighed as much as the solve itself (7 us at 64x256).
    with torch.no_grad():
        gram = np.ascontiguousarray(gram_memo.gram(basis).numpy())
        c = (x @ basis).numpy()  # (torch's product: numpy's BLAS threads would fight torch's)
        lam_k = np.full(k, lam.item(), dtype=c.dtype) if lam.dim() == 0 else np.ascontiguousarray(lam.detach().numpy())
        w = np.ascontiguousarray(w0.detach().numpy())  # the solver's own start: solved in place
    iterations, residual = compiled_codes(gram, c, lam_k, w, problem.prior.nonnegative, tol, max_iter,
                                          min(basis.shape))
    # Codes the compiled loop gave up on before max_iter (rare: a singular
    # support, a sign lost to rounding) are finished by the general solver.
    converged = residual <= tol
    left = None if converged.all() else np.flatnonzero(~converged & (iterations < max_iter))
    w, iterations, residual = torch.from_numpy(w), torch.from_numpy(iterations), torch.from_numpy(residual)
    if left is None or not left.size:
        return SolveResult(w, iterations, residual, torch.from_numpy(converged), "gram", tol)
    idx = torch.from_numpy(left)
    budget = max_iter - int(iterations[idx].max())
    if budget > 0:
        rest = active_set(problem, x[idx], basis, lam, p, w[idx], tol, budget)
        w[idx] = rest.codes
        iterations[idx] += rest.iterations
        residual[idx] = rest.residual
    return SolveResult(w, iterations, residual, residual <= tol, "gram", tol)


def compiled_codes(gram, c, lam, w, nonnegative, tol, max_iter, rank):
    """``(iterations, residual)`` of the compiled loop on numpy arrays (``w``
    solved in place; ``lam`` one per atom, ``rank = min(D, K)``)."""
    n = c.shape[0]
    iterations, residual = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=w.dtype)
    # (one block of rows: no thread team to launch, 10 of the 20 us one code took)
    solve = _solve_block if n <= BLOCK else _solve_all
    if n > BLOCK:
        use_torch_threads()
    solve(gram, c, lam, w, bool(nonnegative), float(tol), int(max_iter), iterations, residual, int(rank))
    return iterations, residual


@numba.njit(parallel=True, cache=True, fastmath=True)
def _solve_all(gram, c, lam, w, nonneg, tol, max_iter, iterations, residual, rank):
    blocks = (c.shape[0] + BLOCK - 1) // BLOCK
    for b in numba.prange(blocks):
        _solve_rows(gram, c, lam, w, nonneg, tol, max_iter, iterations, residual, rank, b * BLOCK)


@numba.njit(cache=True, fastmath=True)
def _solve_block(gram, c, lam, w, nonneg, tol, max_iter, iterations, residual, rank):
    """:func:`_solve_all` for at most ``BLOCK`` rows, on the calling thread."""
    _solve_rows(gram, c, lam, w, nonneg, tol, max_iter, iterations, residual, rank, 0)


@numba.njit(cache=True, fastmath=True)
def _solve_rows(gram, c, lam, w, nonneg, tol, max_iter, iterations, residual, rank, start):
    """The codes of rows ``start`` to ``start + BLOCK``, sharing scratch arrays."""
    n, k = c.shape
    chol = np.empty((rank, rank), dtype=c.dtype)
    g = np.empty(k, dtype=c.dtype)
    scratch = np.empty((5, k), dtype=c.dtype)
    support = np.empty(k, dtype=np.int64)
    cand = np.empty(k, dtype=np.int64)
    for i in range(start, min(n, start + BLOCK)):
        iterations[i], residual[i] = _solve_one(
            gram, c[i], lam, w[i], nonneg, tol, max_iter, chol, g, scratch, support, cand
        )


@numba.njit(cache=True, fastmath=True)
def _solve_one(gram, c, lam, w, nonneg, tol, max_iter, chol, g, scratch, support, cand):
    """One code, in place in ``w``; returns (iterations, relative residual)."""
    k = c.shape[0]
    target, z, tmp, violation, signs = scratch[0], scratch[1], scratch[2], scratch[3], scratch[4]
    eps = np.finfo(c.dtype).eps
    c_max = 0.0
    for j in range(k):
        c_max = max(c_max, abs(c[j]))
    # The support of the warm start; entries whose atom is (numerically) in
    # the span of the others' are dropped.
    s = 0
    for j in range(k):
        if w[j] != 0.0:
            if extend(gram, chol, support, s, j, tmp, eps):
                support[s] = j
                signs[s] = np.sign(w[j])
                s += 1
            else:
                w[j] = 0.0
    _gradient(gram, c, w, support, s, g, tmp)
    it = 0
    resolve = s > 0
    while True:
        if resolve:
            # z = G_SS^{-1} (c_S - lam_S s_S); a code it leaves short of
            # tol in float32 (an ill-conditioned support) goes to the
            # general solver below.
            for a in range(s):
                target[a] = c[support[a]] - lam[support[a]] * signs[a]
            chol_solve(chol, s, target, z, tmp)
            # Entering coefficients (still 0) whose target has the wrong sign
            # leave again at no cost, if others entered with them.
            entering, wrong, first = 0, 0, s
            for a in range(s):
                if w[support[a]] == 0.0:
                    entering += 1
                    if signs[a] * z[a] <= 0.0:
                        wrong += 1
                        first = min(first, a)
            if wrong > 0 and entering > wrong:
                kept = first
                for a in range(first, s):
                    if not (w[support[a]] == 0.0 and signs[a] * z[a] <= 0.0):
                        support[kept] = support[a]
                        signs[kept] = signs[a]
                        kept += 1
                s = kept
                refactor(gram, chol, support, s, first, tmp, eps)
                continue
            # Ratio test: stop where a coefficient would change sign.
            t = 1.0
            leave = -1
            for a in range(s):
                if signs[a] * z[a] <= 0.0:
                    wa = w[support[a]]
                    ratio = wa / (wa - z[a]) if wa != z[a] else 0.0
                    if ratio < t:
                        t, leave = ratio, a
            if t <= 0.0:
                # Only the entering coefficient can stop the step at once: its
                # sign was wrong to rounding. Left to the general solver.
                return it, _scan(g, c_max, lam, w, nonneg, support, s, cand, violation)[0]
            for a in range(s):
                j = support[a]
                tmp[a] = -w[j] if a == leave else t * (z[a] - w[j])
                w[j] += tmp[a]
            _move_gradient(gram, support, s, tmp, g)
            it += 1
            if leave >= 0:
                for a in range(leave, s - 1):
                    support[a] = support[a + 1]
                    signs[a] = signs[a + 1]
                s -= 1
                remove_row(chol, s + 1, leave)
                if it < max_iter:
                    continue  # re-solve on the smaller support
            resolve = False
        # Optimality: on the support g + lam s = 0; off it |g| <= lam (nonneg:
        # -g <= lam). The worst violators are the candidates to enter.
        res, n_cand, worst = _scan(g, c_max, lam, w, nonneg, support, s, cand, violation)
        if res <= tol:
            _gradient(gram, c, w, support, s, g, tmp)  # exact, not accumulated, before stopping
            res, n_cand, worst = _scan(g, c_max, lam, w, nonneg, support, s, cand, violation)
            if res <= tol:
                return it, res
        if it >= max_iter or n_cand == 0:
            return it, res  # n_cand == 0: optimal to rounding, yet res > tol
        # The worst violator enters, and others nearly as bad with it (fewer,
        # larger steps), each with the sign that lowers F.
        added, j_worst = 0, -1
        for pick in range(2):
            for a in range(n_cand):
                j = cand[a]
                first = violation[a] == worst
                if first:
                    j_worst = j
                near = violation[a] >= _ENTER_SHARE * worst and not first  # nearly as bad: the second pick
                if added < _MAX_ENTER and s < k and (first if pick == 0 else near):
                    if extend(gram, chol, support, s, j, tmp, eps):
                        support[s] = j
                        signs[s] = -np.sign(g[j])
                        s += 1
                        added += 1
        if added == 0:
            # The violators' atoms lie in the span of the support's (D atoms
            # already, or twins): the worst takes a support atom's place.
            if it >= max_iter or not _pivot(gram, chol, support, signs, s, j_worst, g, w, lam, target, z, tmp, eps):
                return it, res  # left to the general solver
            it += 1
        resolve = True


@numba.njit(cache=True, fastmath=True)
def _pivot(gram, chol, support, signs, s, j, g, w, lam, rhs, u, y, eps):
    """Atom ``j``, in the span of the support's (``b_j = B_S u``), enters as
    one of them leaves, as in the simplex method; False if none can.

    Along ``w_S - a sigma u``, ``w_j = a sigma`` (``sigma = -sign(g_j)``) the fit
    ``B w`` stays, and the L1 term falls at the rate ``lam_j - sigma sum_S
    lam s u`` (``lam_j - |g_j|`` at the sign-fixed optimum, < 0 for a
    violator) until a support coefficient reaches 0 and leaves. Without it,
    supports of D atoms (weak priors on overcomplete bases) could not change,
    and their codes went to the torch solver: in float32, 13 of 100 converged
    there within 2,000 iterations (gaussian 30 x 60, lam = 1e-3 |B^T x|).
    """
    sigma = -np.sign(g[j])
    for a in range(s):
        rhs[a] = gram[support[a], j]
    chol_solve(chol, s, rhs, u, y)
    rate = lam[j]
    for a in range(s):
        rate -= sigma * lam[support[a]] * signs[a] * u[a]
    if not rate < 0.0:
        return False
    step, leave = np.inf, -1
    for a in range(s):
        towards_zero = sigma * u[a]  # w_a falls by step * this
        wa = w[support[a]]
        if wa * towards_zero > 0.0 and wa / towards_zero < step:
            step, leave = wa / towards_zero, a
    if leave < 0:
        return False
    # The new support's factor: the leaving atom's row out, j's in (else back).
    out, out_sign = support[leave], signs[leave]
    remove_row(chol, s, leave)
    for a in range(leave, s - 1):
        support[a], signs[a] = support[a + 1], signs[a + 1]
        rhs[a], u[a] = rhs[a + 1], u[a + 1]
    if not extend(gram, chol, support, s - 1, j, y, eps):
        extend(gram, chol, support, s - 1, out, y, eps)
        support[s - 1], signs[s - 1] = out, out_sign
        return False
    for a in range(s - 1):
        rhs[a] = -step * sigma * u[a]
        w[support[a]] += rhs[a]
    support[s - 1], signs[s - 1], rhs[s - 1] = j, sigma, step * sigma
    _move_gradient(gram, support, s, rhs, g)  # (B w itself moved by rounding only)
    g_out = -w[out]
    w[out] = 0.0
    w[j] = step * sigma
    for m in range(g.shape[0]):
        g[m] += g_out * gram[out, m]
    return True


@numba.njit(cache=True, fastmath=True)
def _scan(g, c_max, lam, w, nonneg, support, s, cand, violation):
    """``Problem.residual`` for the gaussian family from ``g = B^T (Bw - x)``,
    and the zero coefficients that violate optimality most: those within
    ``_ENTER_SHARE`` of the worst, the candidates to enter (their count, the worst).

    The pass over all ``K`` coefficients has no branch (it vectorises); the
    few candidates are listed in a second pass. With a branch per coefficient,
    mispredicted where violators lie at random, the scan took a fifth to a
    third of the loop (``benchmarks/l1_per_code.py``, HISTORY.md)."""
    g_max, worst = 0.0, 0.0
    for j in range(g.shape[0]):
        gj = g[j]
        g_max = max(g_max, abs(gj))
        v = (-gj if nonneg else abs(gj)) - lam[j]
        worst = max(worst, v if w[j] == 0.0 else 0.0)
    on_support, lam_max = 0.0, 0.0  # on the support g + lam s = 0
    for a in range(s):
        j = support[a]
        if w[j] != 0.0:  # (an atom whose step ended at 0 counts as off the support, above)
            on_support = max(on_support, abs(g[j] + lam[j] * np.sign(w[j])))
            lam_max = max(lam_max, lam[j])
    n_cand = 0
    if worst > 0.0:
        bar = _ENTER_SHARE * worst
        for j in range(g.shape[0]):
            v = (-g[j] if nonneg else abs(g[j])) - lam[j]
            if v >= bar and w[j] == 0.0:
                cand[n_cand] = j
                violation[n_cand] = v
                n_cand += 1
    scale = max(g_max, lam_max, c_max)
    res = max(on_support, worst)
    return (res / scale if scale > 0 else res), n_cand, worst


@numba.njit(cache=True, fastmath=True)
def _move_gradient(gram, support, s, steps, g):
    """``g += sum_a steps[a] G[support[a]]``, four atoms a pass over ``g``
    (a quarter of its loads and stores)."""
    k = g.shape[0]
    a = 0
    while a + 4 <= s:
        r0, r1, r2, r3 = gram[support[a]], gram[support[a + 1]], gram[support[a + 2]], gram[support[a + 3]]
        s0, s1, s2, s3 = steps[a], steps[a + 1], steps[a + 2], steps[a + 3]
        for m in range(k):
            g[m] += s0 * r0[m] + s1 * r1[m] + s2 * r2[m] + s3 * r3[m]
        a += 4
    while a < s:
        row, step = gram[support[a]], steps[a]
        for m in range(k):
            g[m] += step * row[m]
        a += 1


@numba.njit(cache=True, fastmath=True)
def _gradient(gram, c, w, support, s, g, scratch):
    """``g = G w - c`` from the support."""
    for m in range(c.shape[0]):
        g[m] = -c[m]
    for a in range(s):
        scratch[a] = w[support[a]]
    _move_gradient(gram, support, s, scratch, g)
