"""FISTA with adaptive restart and an active-set Newton finish, for L1.

Proximal gradient steps ``w = prox(y - grad D(y) / L, lam / L)`` with Nesterov
momentum, restarted whenever the momentum points uphill (O'Donoghue &
Candes, 2015). ``L`` is the family's curvature bound times ``||B||_2^2``; for a
family without a bound (poisson) it is found by backtracking per example.

Every ``check_every`` iterations the codes' support and signs are frozen and
Newton steps are taken on the support (the L1 term is then linear,
``lam * sign(w)``), each cut short where a coefficient would change sign:
that coefficient leaves the support, as in homotopy methods. For the gaussian
family this solves the problem exactly once FISTA has found the atoms to add,
which turns FISTA's slow linear tail into a short finite one. A step is kept
only where it lowers the objective (or, below rounding, the residual).
"""

from __future__ import annotations

import torch

from ..hessian import hessian_solve
from .active_set import ratio_test
from .result import SolveResult

_CHECK_EVERY = 10
_POLISH_STEPS = 3  # Newton steps per check; each may drop one coefficient per code


def _polish(problem, x, basis, lam, p, w):
    """A Newton step on the support, stopped where a coefficient hits zero."""
    grad_loss, r = problem.loss_gradient(x, basis, w)
    signs = torch.sign(w)
    g = torch.where(w != 0, grad_loss + lam * signs, torch.zeros_like(w))
    step, ok = hessian_solve(problem, basis, lam, p, w, r, -g)
    t, leaving = ratio_test(w, step)
    # The coefficient that stops the step leaves the support exactly.
    cand = problem.prior.project(torch.where(leaving, 0.0, w + t[:, None] * step))
    better = (
        problem.objective(x, basis, lam, p, cand) <= problem.objective(x, basis, lam, p, w)
    ) | (problem.residual(x, basis, lam, p, cand) < problem.residual(x, basis, lam, p, w, grad_loss))
    keep = ok & better & (cand != w).any(-1)
    return torch.where(keep[:, None], cand, w), keep


def fista(problem, x, basis, lam, p, w0, tol, max_iter):
    family, prior = problem.family, problem.prior
    n = x.shape[0]
    spectral = torch.linalg.matrix_norm(basis.detach(), ord=2) ** 2  # a step size, not differentiated
    backtrack = family.curvature_bound is None
    lipschitz = spectral * (1.0 if backtrack else family.curvature_bound)

    w = prior.project(w0)
    iterations = torch.zeros(n, dtype=torch.int64, device=x.device)
    residual = problem.residual(x, basis, lam, p, w)
    big_l = torch.full((n,), float(lipschitz), dtype=x.dtype, device=x.device)
    y, t = w, torch.ones_like(big_l)  # momentum state, kept across checks

    done = 0
    while done < max_iter:
        active = residual > tol
        if not bool(active.any()):
            break
        idx = active.nonzero().squeeze(1)
        xa, wa, la, ya, ta = x[idx], w[idx], big_l[idx], y[idx], t[idx]
        steps = min(_CHECK_EVERY, max_iter - done)
        for _ in range(steps):
            grad_y, _ = problem.loss_gradient(xa, basis, ya)
            cand = prior.prox(ya - grad_y / la[:, None], lam / la[:, None])
            if backtrack:
                # Sufficient decrease of the smooth part, else double L there.
                for _ in range(60):
                    diff = cand - ya
                    bound = (
                        family.loss(xa, ya @ basis.T)
                        + (grad_y * diff).sum(-1)
                        + 0.5 * la * diff.square().sum(-1)
                    )
                    fails = ~(family.loss(xa, cand @ basis.T) <= bound)
                    if not bool(fails.any()):
                        break
                    la = torch.where(fails, 2 * la, la)
                    cand = torch.where(
                        fails[:, None],
                        prior.prox(ya - grad_y / la[:, None], lam / la[:, None]),
                        cand,
                    )
            t_next = (1 + torch.sqrt(1 + 4 * ta.square())) / 2
            momentum = ((ta - 1) / t_next)[:, None] * (cand - wa)
            # Adaptive restart: drop the momentum where it opposes the gradient step.
            restart = ((ya - cand) * (cand - wa)).sum(-1) > 0
            ya = torch.where(restart[:, None], cand, cand + momentum)
            ta = torch.where(restart, torch.ones_like(ta), t_next)
            wa = cand
        done += steps

        polished = torch.zeros_like(ta, dtype=torch.bool)
        for _ in range(_POLISH_STEPS):
            wa, kept = _polish(problem, xa, basis, lam, p, wa)
            polished = polished | kept
        ya = torch.where(polished[:, None], wa, ya)
        ta = torch.where(polished, torch.ones_like(ta), ta)
        w = w.index_copy(0, idx, wa)
        y = y.index_copy(0, idx, ya)
        t = t.index_copy(0, idx, ta)
        big_l = big_l.index_copy(0, idx, la)
        iterations = iterations.index_add(0, idx, torch.full_like(idx, steps))
        residual = residual.index_copy(0, idx, problem.residual(xa, basis, lam, p, wa))

    return SolveResult(w, iterations, residual, residual <= tol, "fista", tol)
