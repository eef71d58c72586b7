"""Solves with the code Hessian ``H = B^T S B + lam diag(R''(w))`` (SPEC §2).

Both the Newton solver and the backward pass need ``H^{-1} g`` for every
example. ``H`` is never inverted directly: with a diagonal scaling ``d`` the
solve is

    H^{-1} g = d * (diag(d) G diag(d) + diag(q))^{-1} (d * g),      G = B^T S B,

with ``d = R''^{-1/2}`` and ``q = lam d^2 R''`` (= lam) for a smooth prior,
which keeps the eigenvalues >= lam even when ``1/w`` is huge (the KL prior
near zero). With ``S = I`` and fewer dimensions than atoms the ``K x K``
system is solved through a ``D x D`` one (Woodbury). For L1 the system is
solved on each code's support and the solution is 0 off it. The systems are
positive definite and are solved by batched Cholesky, in chunks of examples
to bound memory, or, for smooth priors outside Newton's factored steps, by
conjugate gradients on the same scaled system (:mod:`diffsc.hessian_cg`).
"""

from __future__ import annotations

import torch

from . import gram_cholesky, hessian_cg

# Entries of the (chunk, K, K) or (chunk, K, D) intermediates held at once.
_CHUNK_ENTRIES = 1 << 22
# Rows per support-restricted chunk: supports in a chunk share one padded size.
_ROWS = 128


def _chunks(n: int, per_row: int):
    size = max(1, _CHUNK_ENTRIES // max(per_row, 1))
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def _factor_or_identity(a, ok):
    """Cholesky factors with the rows that failed (``~ok``) replaced by the
    identity's, factored anew: a failed factorization's NaN would otherwise
    reach autograd (unrolled solvers) even where its rows are masked out."""
    eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
    return torch.linalg.cholesky_ex(torch.where(ok[:, None, None], a, eye))[0]


def solve_spd(a, b):
    """Solve ``a z = b`` for a batch of symmetric positive definite ``a``.

    Returns ``z`` ``(n, k)`` and ``ok`` ``(n,)``. Cholesky checks definiteness
    (a failed row gets ``z = 0``). Not LU, though torch's batched LU ran about
    twice as fast on the CPU: with two threads, torch 2.13's batched LU
    returned invalid pivots with ``info == 0`` for batches of well-conditioned
    systems (``tests/test_solver_regressions.py``), and ``lu_solve`` then
    failed. Triangular solves replace ``cholesky_solve``, which is 6x slower
    batched.
    """
    chol, info = torch.linalg.cholesky_ex(a)
    ok = info == 0
    if not bool(ok.all()):
        chol = _factor_or_identity(a, ok)
    y = torch.linalg.solve_triangular(chol, b.unsqueeze(-1), upper=False)
    z = torch.linalg.solve_triangular(chol.mT, y, upper=True).squeeze(-1)
    return torch.where(ok[:, None], z, torch.zeros_like(z)), ok


def scaled_solve(family, basis, r, d, q, rhs):
    """``d * (diag(d) G diag(d) + diag(q))^{-1} (d * rhs)`` per row.

    Parameters
    ----------
    family : Family
    basis : (D, K) tensor
    r : (N, D) tensor, the reconstructions at which ``S`` is evaluated (None
        where ``S`` is constant: gaussian)
    d, q, rhs : (N, K) tensors

    Returns
    -------
    solution : (N, K) tensor
    ok : (N,) bool tensor, False where the system was not positive definite
        (the solution there is 0).
    """
    n, k = rhs.shape
    d_dim = basis.shape[0]
    if family.shared_gram and d_dim < k and bool((q > 0).all()):
        return _woodbury_solve(basis, d, q, rhs)
    shared = family.gram(basis, None).unsqueeze(0) if family.shared_gram else None  # (S constant: no r)
    out, oks = [], []
    for rows in _chunks(n, k * k if family.shared_gram else k * max(k, d_dim)):
        g = shared if family.shared_gram else family.gram(basis, r[rows])
        dr = d[rows]
        a = dr.unsqueeze(-1) * g * dr.unsqueeze(-2)
        a.diagonal(dim1=-2, dim2=-1).add_(q[rows])
        z, ok = solve_spd(a, dr * rhs[rows])
        out.append(dr * z)
        oks.append(ok)
    return torch.cat(out), torch.cat(oks)


def _woodbury_solve(basis, d, q, rhs):
    """``scaled_solve`` for ``S = I`` and ``D < K``, through ``D x D`` systems.

    With ``M = B diag(d)`` the system is ``diag(q) + M^T M`` and, by the
    Woodbury identity, ``(diag(q) + M^T M)^{-1} b = u - M^T t / q`` with
    ``u = b / q`` and ``(I + B diag(d^2 / q) B^T) t = M u``: one ``D x D``
    factorisation per example instead of ``K x K``.
    """
    n, k = rhs.shape
    d_dim = basis.shape[0]
    eye = torch.eye(d_dim, dtype=rhs.dtype, device=rhs.device)
    out, oks = [], []
    for rows in _chunks(n, d_dim * max(d_dim, k)):
        dr, qr = d[rows], q[rows]
        u = dr * rhs[rows] / qr
        # B diag(d^2/q) B^T as one batched matmul (einsum here ran at 4 GFLOP/s).
        small = (basis * (dr.square() / qr).unsqueeze(1)) @ basis.T + eye
        t, ok = solve_spd(small, (dr * u) @ basis.T)
        z = u - (t @ basis) * dr / qr
        out.append(torch.where(ok[:, None], dr * z, torch.zeros_like(z)))
        oks.append(ok)
    return torch.cat(out), torch.cat(oks)


def support_solve(family, basis, r, support, rhs, ridge=False):
    """``(B_S^T S B_S)^{-1} rhs_S`` on each row's support ``S``, 0 off it.

    Rows are sorted by support size and solved in chunks of ``(n, s, s)``
    systems, ``s`` the largest support in the chunk, so the cost is about
    ``N s^3`` rather than ``N K^3``: L1 codes are sparse. Rows padded past
    their support solve an identity block. With ``ridge``, a singular system
    (a support of more than ``D`` atoms, or twin atoms) is solved with
    ``1e-8`` of its mean diagonal added: a descent direction for a solver,
    where the backward pass reports the singularity instead. ``r`` may be
    None where the family's Gram is shared (gaussian).
    """
    n, k = rhs.shape
    counts = support.sum(1)
    # Within a row: support indices first (ascending), then the rest.
    order = torch.argsort((~support).to(torch.int8), dim=1, stable=True)
    full_gram = family.gram(basis, None) if family.shared_gram else None  # needs no reconstruction
    out, oks = torch.zeros_like(rhs), torch.zeros(n, dtype=torch.bool, device=rhs.device)
    per_row = (lambda s: s * s) if family.shared_gram else (lambda s: s * max(s, basis.shape[0]))  # noqa: E731
    for rows, s in by_support_size(counts, per_row):
        idx = order[rows, :s]
        if family.shared_gram:  # gather the support's block of B^T B
            gram = full_gram[idx].gather(2, idx.unsqueeze(1).expand(-1, s, -1))
        else:
            gram = family.block_gram(basis.T[idx], r[rows])
        v = (torch.arange(s, device=rhs.device) < counts[rows, None]).to(rhs.dtype)
        a = v.unsqueeze(-1) * gram * v.unsqueeze(-2)
        a.diagonal(dim1=-2, dim2=-1).add_(1 - v)
        chol, info = torch.linalg.cholesky_ex(a)
        ok = info == 0
        if not bool(ok.all()):
            if ridge:
                mean_diag = a.diagonal(dim1=-2, dim2=-1).mean(-1)
                a = torch.where(ok[:, None, None], a, a + torch.diag_embed((1e-8 * mean_diag)[:, None] * v))
                ok = torch.linalg.cholesky_ex(a)[1] == 0
            chol = _factor_or_identity(a, ok)
        b = (v * rhs[rows].gather(1, idx)).unsqueeze(-1)
        y = torch.linalg.solve_triangular(chol, b, upper=False)
        z = v * torch.linalg.solve_triangular(chol.mT, y, upper=True).squeeze(-1)
        z = torch.where(ok[:, None], z, torch.zeros_like(z))
        out[rows] = torch.zeros_like(rhs[rows]).scatter(1, idx, z)
        oks[rows] = ok
    return out, oks


def by_support_size(counts, per_row):
    """Rows in chunks of similar support size, so that a chunk pads each row
    only to its own largest support: yields ``(rows, s)``, ``s`` the chunk's
    largest ``counts``, with at most ``_ROWS`` rows and ``_CHUNK_ENTRIES``
    entries (``per_row(s)`` a row) at once."""
    n = counts.numel()
    by_size = torch.argsort(counts)
    start = 0
    while start < n:
        s = max(int(counts[by_size[min(start + _ROWS, n) - 1]]), 1)
        size = max(1, min(_ROWS, _CHUNK_ENTRIES // per_row(s)))
        rows = by_size[start : start + size]
        start += size
        yield rows, max(int(counts[rows[-1]]), 1)


def recording(*tensors) -> bool:
    """Whether autograd is recording through these (then only torch ops will do)."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def hessian_solve(problem, basis, lam, p, w, r, rhs, fixed=None, direct=False, damping=None):
    """``H^{-1} rhs`` at the codes ``w`` (restricted to the support for L1).

    ``fixed`` (smooth priors) holds some coordinates out of the system: the
    solution is 0 there and the rest is solved with them fixed. Smooth priors
    are solved by conjugate gradients to 1e-12 (:func:`diffsc.hessian_cg.cg_solve`)
    unless ``direct`` (Newton's factored steps), ``fixed``, autograd records
    through the solve, or the prior is uniform (``H`` may be singular); rows
    CG does not finish are factored. ``damping`` ``(N,)`` (factored only)
    adds ``mu diag(A)`` to each row's scaled system ``A`` (Marquardt).
    """
    if problem.l1:
        if problem.family.name == "gaussian" and w.device.type == "cpu" and not recording(basis, w, rhs):
            return gram_cholesky.support_solve(basis, w != 0, rhs)  # compiled; S = I: H_SS = B_S^T B_S
        return support_solve(problem.family, basis, r, w != 0, rhs)
    prior = problem.prior
    if not (direct or fixed is not None or prior.name == "uniform" or recording(basis, w, rhs, r, lam, p)):
        solution, ok = hessian_cg.cg_solve(problem, basis, lam, p, w, r, rhs)
        if bool(ok.all()):
            return solution, ok
        rows = (~ok).nonzero().squeeze(1)
        rest, rest_ok = hessian_solve(problem, basis, lam, p, w[rows], None if r is None else r[rows], rhs[rows],
                                      direct=True)
        return solution.index_copy(0, rows, rest), ok.index_copy(0, rows, rest_ok)
    d = prior.metric_scale(w, p)
    q = (lam * prior.scaled_curvature(w, p)).expand_as(w)
    if damping is not None:  # Marquardt: A + mu diag(A), A the scaled system
        diag = d.square() * problem.family.gram_diagonal(basis, r) + q
        q = q + damping[:, None] * diag
    if fixed is not None:
        d = torch.where(fixed, torch.zeros_like(d), d)
        q = torch.where(fixed, torch.ones_like(q), q)
    return scaled_solve(problem.family, basis, r, d, q, rhs)
