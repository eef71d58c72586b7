"""Cholesky factors of ``G_SS = B_S^T B_S`` grown and shrunk a row at a time, compiled.

The pieces the compiled gaussian L1 solver (:mod:`diffsc.solvers.gram`) and
the backward pass (:mod:`diffsc.hessian`) share: ``G = B^T B`` is formed once
for a batch, and each code's support ``S`` gets its own factor of
``rank(G) = min(D, K)`` rows at most (a larger support is singular). Kernels
run one example at a time, examples spread over torch's number of threads.
"""

from __future__ import annotations

import numba
import numpy as np
import torch

from . import gram_memo

BLOCK = 32  # examples per parallel task: enough to amortise its scratch arrays


def use_torch_threads() -> None:
    """Run numba's parallel loops on as many threads as torch uses (and leave torch's as they were)."""
    threads = torch.get_num_threads()
    numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
    # Launching numba's OpenMP layer (its first parallel call) sets OpenMP's
    # thread count, which torch's is: a user's torch.set_num_threads(1) became 2.
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def support_solve(basis, support, rhs):
    """``(B_S^T B_S)^{-1} rhs_S`` on each row's support, 0 off it: the gaussian
    L1 Hessian solve of the backward pass.

    Returns ``(solution, ok)``; ``ok`` is False (solution 0) where ``B_S``
    has dependent columns.
    """
    with torch.no_grad():
        gram = gram_memo.gram(basis).contiguous()
        rhs = rhs.detach().contiguous()
        out = torch.zeros_like(rhs)
        ok = np.zeros(rhs.shape[0], dtype=np.bool_)
    use_torch_threads()
    _support_solve_all(gram.numpy(), support.contiguous().numpy(), rhs.numpy(), out.numpy(), ok, min(basis.shape))
    return out, torch.from_numpy(ok)


@numba.njit(parallel=True, cache=True, fastmath=True)
def _support_solve_all(gram, support_mask, rhs, out, ok, rank):
    n, k = rhs.shape
    blocks = (n + BLOCK - 1) // BLOCK
    for b in numba.prange(blocks):
        chol = np.empty((rank, rank), dtype=rhs.dtype)
        scratch = np.empty((3, k), dtype=rhs.dtype)
        support = np.empty(k, dtype=np.int64)
        eps = np.finfo(rhs.dtype).eps
        for i in range(b * BLOCK, min(n, (b + 1) * BLOCK)):
            s = 0
            good = True
            for j in range(k):
                if support_mask[i, j]:
                    if not extend(gram, chol, support, s, j, scratch[0], eps):
                        good = False
                        break
                    support[s] = j
                    s += 1
            ok[i] = good
            if good and s > 0:
                for a in range(s):
                    scratch[1, a] = rhs[i, support[a]]
                chol_solve(chol, s, scratch[1], scratch[2], scratch[0])
                for a in range(s):
                    out[i, support[a]] = scratch[2, a]



@numba.njit(cache=True, fastmath=True)
def extend(gram, chol, support, s, j, y, eps):
    """Add atom ``j`` as row ``s`` of the Cholesky factor of ``G_SS``; False if singular.

    ``chol`` holds ``rank(G) = min(D, K)`` rows: a larger support is singular.
    Only its lower triangle up to row ``s`` is ever read.
    """
    if s >= chol.shape[0]:
        return False
    row = gram[j]  # G is symmetric: read along row j
    for a in range(s):
        acc = row[support[a]]
        for b in range(a):
            acc -= chol[a, b] * y[b]
        y[a] = acc / chol[a, a]
    d = gram[j, j]
    for a in range(s):
        d -= y[a] * y[a]
    # A pivot this small means the atom is in the span of the support's
    # (to rounding): its coefficient would be undetermined.
    if not d > 1e3 * eps * gram[j, j]:
        return False
    for a in range(s):
        chol[s, a] = y[a]
    chol[s, s] = np.sqrt(d)
    return True


@numba.njit(cache=True, fastmath=True)
def refactor(gram, chol, support, s, start, y, eps):
    """Refactor ``G_SS`` from row ``start`` on, after coefficients left there."""
    for a in range(start, s):
        extend(gram, chol, support, a, support[a], y, eps)


@numba.njit(cache=True, fastmath=True)
def remove_row(chol, s, q):
    """The Cholesky factor of ``G_SS`` without its ``q``-th atom, in ``O(s^2)``.

    Deleting row ``q`` of ``L`` leaves rows below it with one entry above the
    diagonal; Givens rotations of columns ``(j, j+1)``, ``j = q..s-2``, zero
    those entries (``L Q Q^T L^T`` is unchanged), then the rows move up.
    """
    for j in range(q, s - 1):
        a, b = chol[j + 1, j], chol[j + 1, j + 1]
        r = np.sqrt(a * a + b * b)
        cos, sin = a / r, b / r
        for i in range(j + 1, s):
            x, y = chol[i, j], chol[i, j + 1]
            chol[i, j] = cos * x + sin * y
            chol[i, j + 1] = cos * y - sin * x
    for i in range(q, s - 1):
        for j in range(i + 1):
            chol[i, j] = chol[i + 1, j]


@numba.njit(cache=True, fastmath=True)
def chol_solve(chol, s, rhs, out, y):
    """``out = (L L^T)^{-1} rhs`` on the leading ``s x s`` block."""
    for a in range(s):
        acc = rhs[a]
        for b in range(a):
            acc -= chol[a, b] * y[b]
        y[a] = acc / chol[a, a]
    # Back substitution by columns: row a of L is contiguous.
    for a in range(s - 1, -1, -1):
        out[a] = y[a] / chol[a, a]
        for b in range(a):
            y[b] -= chol[a, b] * out[a]
