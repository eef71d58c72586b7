"""Damped Newton in the prior's mirror coordinates, for smooth priors.

Each iteration solves ``H step = -grad F`` with the well-conditioned scaled
system of :mod:`diffsc.hessian`, then moves along the curve
``s(w) = s(w_k) + t s'(w_k) step`` in the mirror coordinates ``s = grad R(w)``
(``log(w/p)`` for KL, ``asinh(w/2p)`` for signed KL, ``w`` for L2). The curve
leaves ``w_k`` along the Newton direction, so near the optimum the method is
Newton's (quadratic convergence); far from it, it keeps KL codes positive and
moves a code by orders of magnitude in one step, which is exactly right for
the separable part of the objective. ``t`` is backtracked per example from 1
until Armijo's condition holds. The full step is also taken when it halves
the gradient's norm: near the optimum the decrease of ``F`` drops below its
rounding error while the gradient still measures progress exactly.
"""

from __future__ import annotations

import torch

from ..hessian import hessian_solve
from .result import SolveResult

_ARMIJO = 1e-4
_MAX_BACKTRACK = 40


def newton(problem, x, basis, lam, p, w0, tol, max_iter):
    prior = problem.prior
    n = x.shape[0]
    w = w0
    iterations = torch.zeros(n, dtype=torch.int64, device=x.device)
    stuck = torch.zeros(n, dtype=torch.bool, device=x.device)
    grad_loss, r = problem.loss_gradient(x, basis, w)
    residual = problem.residual(x, basis, lam, p, w, grad_loss)

    for _ in range(max_iter):
        active = (residual > tol) & ~stuck
        if not bool(active.any()):
            break
        idx = active.nonzero().squeeze(1)
        xa, wa, ra = x[idx], w[idx], r[idx]
        g = grad_loss[idx] + lam * prior.grad(wa, p)

        step, ok = hessian_solve(problem, basis, lam, p, wa, ra, -g, fast=True)
        slope = (g * step).sum(-1)
        # Where H was singular or the step is no descent direction (round-off),
        # fall back to the scaled gradient, which always descends.
        fallback = ~ok | ~(slope < 0)
        if bool(fallback.any()):
            d = prior.metric_scale(wa, p)
            step = torch.where(fallback[:, None], -d.square() * g, step)
            slope = (g * step).sum(-1)

        f0 = problem.objective(xa, basis, lam, p, wa)
        g_norm = g.abs().amax(-1)
        t = torch.ones_like(f0)
        accepted = torch.zeros_like(f0, dtype=torch.bool)
        w_new = wa
        for trial in range(_MAX_BACKTRACK):
            cand = prior.mirror_step(wa, p, step, t[:, None])
            f = problem.objective(xa, basis, lam, p, cand)
            good = f <= f0 + _ARMIJO * t * slope
            if trial == 0:
                gl_c, _ = problem.loss_gradient(xa, basis, cand)
                g_c = (gl_c + lam * prior.grad(cand, p)).abs().amax(-1)
                good = good | (g_c <= 0.5 * g_norm)
            good = good & ~accepted
            w_new = torch.where(good[:, None], cand, w_new)
            accepted = accepted | good
            if bool(accepted.all()):
                break
            t = torch.where(accepted, t, t / 2)

        stuck = stuck.index_copy(0, idx, ~accepted)
        iterations = iterations.index_add(0, idx, torch.ones_like(idx))
        w = w.index_copy(0, idx, w_new)
        gl_a, r_a = problem.loss_gradient(xa, basis, w_new)
        grad_loss = grad_loss.index_copy(0, idx, gl_a)
        r = r.index_copy(0, idx, r_a)
        residual = residual.index_copy(
            0, idx, problem.residual(xa, basis, lam, p, w_new, gl_a)
        )

    return SolveResult(w, iterations, residual, residual <= tol, "newton", tol)
