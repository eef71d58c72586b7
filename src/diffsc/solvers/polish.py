"""Proximal Newton's exact solve of each model on its code's support, compiled (the CPU's).

The same step as :func:`.prox_newton._polish` (see there): towards
``z_S = H_SS^{-1} (c_S - lam_S sign(z_S))`` as far as the signs hold, kept
where it lowers the model. In torch it gathered every row's support block
into an ``(n, m, m)`` tensor, padded to the largest support, and factored
them in a batch: 44% of a poisson L1 solve (64x256, 2,000 rows). Here each
row grows its own factor of ``H_SS`` a row at a time (:func:`.gram_cholesky.extend`;
a row whose ``H_SS`` is not positive definite keeps its ``z``), rows spread
over the threads. The factor, the solve and the model's comparison are in
float64 whatever the dtype, and without fastmath: on nearly singular
float32 supports the steps of two factorisations differed by up to 34 and
sent rows different ways (proximal Newton stops such rows when they stall,
:data:`.prox_newton._STALL_STEPS`).
"""

from __future__ import annotations

import numba
import numpy as np
import torch

from ..gram_cholesky import BLOCK, chol_solve, extend, use_torch_threads


def polish(h, rows, c, lam, z):
    """``(z polished, moved)`` for the rows ``rows`` of ``h`` (``(n, s, s)``)
    and ``c``, ``lam``, ``z`` (``(len(rows), s)``), as :func:`.prox_newton._polish`."""
    out = z.clone(memory_format=torch.contiguous_format)
    moved = np.zeros(out.shape[0], dtype=np.bool_)
    use_torch_threads()
    _polish_rows(h.contiguous().numpy(), rows.contiguous().numpy(), c.contiguous().numpy(),
                 lam.contiguous().numpy(), out.numpy(), moved)
    return out, torch.from_numpy(moved)


@numba.njit(parallel=True, cache=True, fastmath=True)
def _polish_rows(h, rows, c, lam, z, moved):
    n, s = z.shape
    blocks = (n + BLOCK - 1) // BLOCK
    for b in numba.prange(blocks):
        chol = np.empty((s, s), dtype=np.float64)
        scratch = np.empty((5, s), dtype=np.float64)
        support = np.empty(s, dtype=np.int64)
        for i in range(b * BLOCK, min(n, (b + 1) * BLOCK)):
            moved[i] = _polish_one(h[rows[i]], c[i], lam[i], z[i], chol, scratch, support)


@numba.njit(cache=True)
def _polish_one(h, c, lam, z, chol, scratch, support):
    """One row, in place in ``z``; whether a coefficient left the support."""
    y, rhs, exact, polished, ratio = scratch[0], scratch[1], scratch[2], scratch[3], scratch[4]
    m = 0
    for j in range(z.shape[0]):
        if z[j] != 0.0:
            # (eps 0: refused only at a pivot <= 0, as LAPACK's factor; at 1e3 eps, float32
            # supports of about D atoms went unpolished and a bernoulli batch stopped short)
            if not extend(h, chol, support, m, j, y, 0.0):
                return False  # H_SS not positive definite: no step
            support[m] = j
            m += 1
    if m == 0:
        return False
    for a in range(m):
        j = support[a]
        rhs[a] = c[j] - lam[j] * np.sign(z[j])
    chol_solve(chol, m, rhs, exact, y)
    # the ratio test: the largest t <= 1 that keeps every sign; where a
    # coefficient's sign would change, the step's share that takes it to 0
    t = 1.0
    for a in range(m):
        w = z[support[a]]
        ratio[a] = w / (w - exact[a]) if exact[a] * np.sign(w) <= 0.0 else 2.0  # (in (0, 1], else past 1)
        t = min(t, ratio[a])
    leaving = False
    for a in range(m):
        w = z[support[a]]
        if ratio[a] == t:  # it reaches 0 first, and leaves
            polished[a] = 0.0
            leaving = True
        else:
            polished[a] = w + t * (exact[a] - w)
    # kept where the model 1/2 v^T H_SS v - c_S^T v + lam_S |v|_1 fell
    if _model(h, c, lam, support, m, polished) > _model(h, c, lam, support, m, z[support[:m]]):
        return False
    for a in range(m):
        z[support[a]] = polished[a]
    return leaving


@numba.njit(cache=True)
def _model(h, c, lam, support, m, v):
    total = 0.0
    for a in range(m):
        row = h[support[a]]
        hv = 0.0
        for b in range(m):
            hv += row[support[b]] * v[b]
        total += v[a] * (0.5 * hv - c[support[a]]) + lam[support[a]] * abs(v[a])
    return total
