"""Exponentiated gradient (mirror descent) for the KL prior: the classic baseline.

``w <- w * exp(-eta grad F(w))``, the multiplicative update long used for KL
sparse coding. The step ``eta`` adapts per example: it grows by 1.5 after an
accepted step and halves until Armijo's condition holds. Kept as the baseline
the Newton solvers are measured against, not as a default, and written to be
a fair one: an accepted step costs two products with ``B`` (the candidate's
``B w`` gives its objective and, once accepted, its gradient), with no
objective or gradient computed twice.
"""

from __future__ import annotations

import torch

from .result import SolveResult

_ARMIJO = 1e-4
_CHECK_EVERY = 10


def exponentiated_gradient(problem, x, basis, lam, p, w0, tol, max_iter):
    family, prior = problem.family, problem.prior
    n = x.shape[0]
    w = prior.project(w0)
    xb = x @ basis

    def objective(xa, wa):
        """``F`` and ``B w`` per row."""
        eta = wa @ basis.T
        return family.loss(xa, eta) + (lam * prior.value(wa, p)).sum(-1), eta

    def loss_gradient(xa, eta):
        return (family.transfer(eta) - xa) @ basis

    f, eta_all = objective(x, w)
    grad_loss = loss_gradient(x, eta_all)
    step = torch.ones(n, dtype=x.dtype, device=x.device)
    iterations = torch.zeros(n, dtype=torch.int64, device=x.device)
    residual = problem.residual(x, basis, lam, p, w, grad_loss, xb=xb)
    # Rows where no step of the line search lowers F (it is flat to rounding
    # there, short of tol) stop: each further iteration would cost 60
    # objectives, for nothing.
    stuck = torch.zeros(n, dtype=torch.bool, device=x.device)
    done = 0
    while done < max_iter:
        active = (residual > tol) & ~stuck
        if not bool(active.any()):
            break
        idx = active.nonzero().squeeze(1)
        xa, wa, fa, ga, ea, eta_a = x[idx], w[idx], f[idx], grad_loss[idx], step[idx], eta_all[idx]
        steps = min(_CHECK_EVERY, max_iter - done)
        for taken in range(1, steps + 1):
            g = ga + lam * prior.grad(wa, p)
            accepted = torch.zeros_like(ea, dtype=torch.bool)
            w_new, f_new, eta_new = wa, fa, eta_a
            for _ in range(60):
                cand = prior.project(wa * torch.exp((-ea[:, None] * g).clamp(max=30)))
                f_c, eta_c = objective(xa, cand)
                good = (f_c <= fa + _ARMIJO * (g * (cand - wa)).sum(-1)) & ~accepted
                w_new = torch.where(good[:, None], cand, w_new)
                f_new = torch.where(good, f_c, f_new)
                eta_new = torch.where(good[:, None], eta_c, eta_new)
                accepted = accepted | good
                if bool(accepted.all()):
                    break
                ea = torch.where(accepted, ea, ea / 2)
            wa, fa, eta_a = w_new, f_new, eta_new
            ga = loss_gradient(xa, eta_a)
            ea = torch.where(accepted, 1.5 * ea, ea)
            if not bool(accepted.all()):
                stuck = stuck.index_copy(0, idx, ~accepted)
                break
        done += taken
        w, f, grad_loss = w.index_copy(0, idx, wa), f.index_copy(0, idx, fa), grad_loss.index_copy(0, idx, ga)
        eta_all, step = eta_all.index_copy(0, idx, eta_a), step.index_copy(0, idx, ea)
        iterations = iterations.index_add(0, idx, torch.full_like(idx, taken))
        residual = residual.index_copy(0, idx, problem.residual(xa, basis, lam, p, wa, ga, xb=xb[idx]))
    return SolveResult(w, iterations, residual, residual <= tol, "eg", tol)
