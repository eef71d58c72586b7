"""Exponentiated gradient (mirror descent) for the KL prior: the classic baseline.

``w <- w * exp(-eta grad F(w))``, the multiplicative update long used for KL
sparse coding. The step ``eta`` adapts per example: it grows by 1.5 after an
accepted step and halves until Armijo's condition holds. Kept as the baseline
the Newton solver is measured against, not as a default.
"""

from __future__ import annotations

import torch

from .result import SolveResult

_ARMIJO = 1e-4
_CHECK_EVERY = 10


def exponentiated_gradient(problem, x, basis, lam, p, w0, tol, max_iter):
    prior = problem.prior
    n = x.shape[0]
    w = prior.project(w0)
    eta = torch.ones(n, dtype=x.dtype, device=x.device)
    iterations = torch.zeros(n, dtype=torch.int64, device=x.device)
    residual = problem.residual(x, basis, lam, p, w)
    done = 0
    while done < max_iter:
        active = residual > tol
        if not bool(active.any()):
            break
        idx = active.nonzero().squeeze(1)
        xa, wa, ea = x[idx], w[idx], eta[idx]
        steps = min(_CHECK_EVERY, max_iter - done)
        for _ in range(steps):
            grad_loss, _ = problem.loss_gradient(xa, basis, wa)
            g = grad_loss + lam * prior.grad(wa, p)
            f0 = problem.objective(xa, basis, lam, p, wa)
            accepted = torch.zeros_like(ea, dtype=torch.bool)
            w_new = wa
            for _ in range(60):
                cand = prior.project(wa * torch.exp((-ea[:, None] * g).clamp(max=30)))
                f = problem.objective(xa, basis, lam, p, cand)
                good = (f <= f0 + _ARMIJO * (g * (cand - wa)).sum(-1)) & ~accepted
                w_new = torch.where(good[:, None], cand, w_new)
                accepted = accepted | good
                if bool(accepted.all()):
                    break
                ea = torch.where(accepted, ea, ea / 2)
            wa = w_new
            ea = torch.where(accepted, 1.5 * ea, ea)
        done += steps
        w = w.index_copy(0, idx, wa)
        eta = eta.index_copy(0, idx, ea)
        iterations = iterations.index_add(0, idx, torch.full_like(idx, steps))
        residual = residual.index_copy(0, idx, problem.residual(xa, basis, lam, p, wa))
    return SolveResult(w, iterations, residual, residual <= tol, "eg", tol)
