"""Solves with the code Hessian ``H = B^T S B + lam diag(R''(w))`` (SPEC §2).

Both the Newton solver and the backward pass need ``H^{-1} g`` for every
example. ``H`` is never inverted directly: with a diagonal scaling ``d`` the
solve is

    H^{-1} g = d * (diag(d) G diag(d) + diag(q))^{-1} (d * g),      G = B^T S B,

with ``d = R''^{-1/2}`` and ``q = lam d^2 R''`` (= lam) for a smooth prior,
which keeps the eigenvalues >= lam even when ``1/w`` is huge (the KL prior
near zero), and ``d`` = support mask, ``q = 1 - mask`` for L1, which solves on
the support and returns 0 off it. The systems are positive definite and are
solved by batched Cholesky, in chunks of examples to bound memory.
"""

from __future__ import annotations

import torch

# Entries of the (chunk, K, K) or (chunk, K, D) intermediates held at once.
_CHUNK_ENTRIES = 1 << 22


def _chunks(n: int, per_row: int):
    size = max(1, _CHUNK_ENTRIES // max(per_row, 1))
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def scaled_solve(family, basis, r, d, q, rhs):
    """``d * (diag(d) G diag(d) + diag(q))^{-1} (d * rhs)`` per row.

    Parameters
    ----------
    family : Family
    basis : (D, K) tensor
    r : (N, D) tensor, the reconstructions at which ``S`` is evaluated
    d, q, rhs : (N, K) tensors

    Returns
    -------
    solution : (N, K) tensor
    ok : (N,) bool tensor, False where the system was not positive definite
        (the solution there is 0).
    """
    n, k = rhs.shape
    d_dim = basis.shape[0]
    shared = family.gram(basis, r[:0]).unsqueeze(0) if family.shared_gram else None
    out, oks = [], []
    for rows in _chunks(n, k * k if family.shared_gram else k * max(k, d_dim)):
        g = shared if family.shared_gram else family.gram(basis, r[rows])
        dr = d[rows]
        a = dr.unsqueeze(-1) * g * dr.unsqueeze(-2) + torch.diag_embed(q[rows])
        chol, info = torch.linalg.cholesky_ex(a)
        ok = info == 0
        if not bool(ok.all()):
            # Put the identity where the factorisation failed so the batch
            # solve stays finite; those rows are reported and zeroed.
            eye = torch.eye(k, dtype=a.dtype, device=a.device)
            chol = torch.where(ok[:, None, None], chol, eye)
        z = torch.cholesky_solve((dr * rhs[rows]).unsqueeze(-1), chol).squeeze(-1)
        out.append(torch.where(ok[:, None], dr * z, torch.zeros_like(z)))
        oks.append(ok)
    return torch.cat(out), torch.cat(oks)


def hessian_solve(problem, basis, lam, p, w, r, rhs):
    """``H^{-1} rhs`` at the codes ``w`` (restricted to the support for L1)."""
    if problem.l1:
        mask = (w != 0).to(w.dtype)
        return scaled_solve(problem.family, basis, r, mask, 1 - mask, rhs)
    prior = problem.prior
    d = prior.metric_scale(w, p)
    q = (lam * prior.scaled_curvature(w, p)).expand_as(w)
    return scaled_solve(problem.family, basis, r, d, q, rhs)
