"""An active-set Newton method for L1 (feature-sign search, batched).

Each iteration, for every code at once (Lee, Battle, Raina & Ng, *Efficient
sparse coding algorithms*, NIPS 2007, generalised to any family):

* If the code is not optimal on its support ``S`` (the gradient of
  ``D(w) + lam * sign(w)^T w`` on ``S`` is not ~0), take a Newton step on
  ``S`` with the signs fixed. The step stops where a coefficient reaches
  zero (that coefficient leaves ``S``) and is backtracked until Armijo's
  condition holds; for the gaussian family a step that does not stop early
  solves the problem on ``S`` exactly.
* Once it is nearly so (its error below half the worst violation off the
  support), add the coefficient that violates optimality most
  (``|grad_i D| > lam``) with the sign that lowers the objective. When ``S``
  is optimal the Newton step on ``S + {i}`` moves the new coefficient the
  right way (its entry of ``H^{-1}`` is positive); every step is checked
  against the objective all the same.

The number of iterations is about the number of atoms that enter and leave
the support, each a gradient and a small ``|S| x |S|`` solve, instead of the
hundreds of proximal steps first-order methods take on coherent bases.
Where a support's system is singular (more than ``D`` atoms, or two
identical ones) a small ridge makes the step a descent direction, and the
ratio test shrinks the support; where no step helps, the code takes a
proximal gradient step instead. Such supports (weak priors on an
overcomplete basis) can leave float32 codes creeping, their residual
stuck near 1e-3: a float32 row whose residual has not halved in
``max(50, 2 min(D, K))`` iterations stops, to be finished in float64
(:func:`diffsc.solvers._finished_in_float64`). On ``robustness.py``'s
problems (``--priors l1`` and ``gaussian_l1``, 25 seeds) that took the
float32 batches it left short from 23 and 53 to none, in two thirds and
under half the time.
"""

from __future__ import annotations

import torch

from ..hessian import support_solve
from .result import SolveResult, flat

_ARMIJO = 1e-4
_ADD_WHEN = 0.5  # add once the support's error is below this share of the worst violation
_MAX_BACKTRACK = 30
_STALL = 50  # float32 iterations a row may take without halving its residual (at least)


def active_set(problem, x, basis, lam, p, w0, tol, max_iter):
    family, prior = problem.family, problem.prior
    n = x.shape[0]
    lam_k = lam.expand(basis.shape[1])
    step_size = 1.0 / (
        torch.linalg.matrix_norm(basis.detach(), ord=2) ** 2 * (family.curvature_bound or 1.0)
    )
    w = prior.project(w0)
    iterations = torch.zeros(n, dtype=torch.int64, device=x.device)
    stuck = torch.zeros(n, dtype=torch.bool, device=x.device)

    grad_loss, r = problem.loss_gradient(x, basis, w)
    residual = problem.residual(x, basis, lam, p, w, grad_loss)
    # float32 rows whose residual stops falling stop too, and are finished in
    # float64 (solvers._finished_in_float64). One atom enters an iteration,
    # and a support may grow to min(D, K) atoms before the residual halves.
    low, since = residual.clone(), torch.zeros_like(iterations)
    stall = max(_STALL, 2 * min(basis.shape)) if x.dtype == torch.float32 else max_iter + 1
    for _ in range(max_iter):
        active = (residual > tol) & ~stuck
        if not bool(active.any()):
            break
        idx = active.nonzero().squeeze(1)
        xa, wa, ga, ra = x[idx], w[idx], grad_loss[idx], r[idx]
        signs = torch.sign(wa)
        on_support = torch.where(wa != 0, ga + lam_k * signs, torch.zeros_like(wa))
        # Where the support is closer to optimal than the worst violation off
        # it, the coefficient that violates optimality most enters. (Letting
        # several enter at once was measured: it cycles on coherent bases.)
        violation = _violation(prior, wa, ga, lam_k)
        best, enter = violation.max(-1)
        on_error = _relative(on_support, ga, lam_k, xa, basis)
        off_error = _relative(best.clamp(min=0)[:, None], ga, lam_k, xa, basis)
        add = (on_error <= torch.clamp(_ADD_WHEN * off_error, min=tol)) & (best > 0)
        entering = add[:, None] & (torch.arange(wa.shape[1], device=x.device) == enter[:, None])
        signs = torch.where(entering, -torch.sign(ga), signs)
        support = signs != 0
        g = torch.where(support, ga + lam_k * signs, torch.zeros_like(wa))
        step, ok = support_solve(family, basis, ra, support, -g, ridge=True)

        t, leaving = ratio_test(wa, step)
        slope = (g * step).sum(-1)
        f0 = problem.objective(xa, basis, lam, p, wa)
        accepted = torch.zeros_like(t, dtype=torch.bool)
        w_new = wa
        for trial in range(_MAX_BACKTRACK):
            cand = wa + t[:, None] * step
            if trial == 0:  # the coefficient that stops the step leaves exactly
                cand = torch.where(leaving, torch.zeros_like(cand), cand)
            cand = prior.project(cand)
            f = problem.objective(xa, basis, lam, p, cand)
            good = f <= f0 + _ARMIJO * t * slope
            if trial == 0 and not bool(good.all()):
                # Near the optimum the residual still measures progress.
                lower = problem.residual(xa, basis, lam, p, cand) < residual[idx]
                good = good | (lower & flat(f, f0))
            good = good & ok & ~accepted
            w_new = torch.where(good[:, None], cand, w_new)
            accepted = accepted | good
            if bool(accepted.all()):
                break
            t = torch.where(accepted, t, t / 2)

        # No Newton progress (singular support, or F flat to rounding):
        # a proximal gradient step instead.
        fallback = ~accepted
        if bool(fallback.any()):
            prox = prior.prox(wa - step_size * ga, step_size * lam_k)
            better = problem.objective(xa, basis, lam, p, prox) < f0
            w_new = torch.where((fallback & better)[:, None], prox, w_new)
            stuck = stuck.index_copy(0, idx, stuck[idx] | (fallback & ~better))
        w = w.index_copy(0, idx, w_new)
        iterations = iterations.index_add(0, idx, torch.ones_like(idx))
        gl_a, r_a = problem.loss_gradient(xa, basis, w_new)
        grad_loss = grad_loss.index_copy(0, idx, gl_a)
        r = r.index_copy(0, idx, r_a)
        residual = residual.index_copy(0, idx, problem.residual(xa, basis, lam, p, w_new, gl_a))
        halved = residual[idx] <= 0.5 * low[idx]
        low = low.index_copy(0, idx, torch.where(halved, residual[idx], low[idx]))
        since = since.index_copy(0, idx, torch.where(halved, 0, since[idx] + 1))
        stuck = stuck | (since >= stall)

    return SolveResult(w, iterations, residual, residual <= tol, "active_set", tol)


def ratio_test(w, step):
    """The largest ``t <= 1`` keeping the sign of every nonzero ``w + t step``.

    Returns ``t`` per row and the coefficients that reach zero at ``t``.
    """
    crossing = (w != 0) & ((w + step) * torch.sign(w) <= 0)
    ratios = torch.where(crossing, w / torch.where(crossing, -step, 1), torch.ones_like(w))
    t, _ = ratios.min(-1)
    return t, crossing & (ratios == t[:, None])


def _violation(prior, w, grad_loss, lam):
    """How far each zero coefficient is from optimal (> 0: it should enter)."""
    if prior.nonnegative:
        excess = -grad_loss - lam
    else:
        excess = grad_loss.abs() - lam
    return torch.where(w == 0, excess, torch.full_like(w, -1.0))


def _relative(g, grad_loss, lam, x, basis):
    """``||g||_inf`` on the residual's scale (see ``Problem.residual``)."""
    scale = torch.stack(
        [grad_loss.abs().amax(-1), lam.abs().amax(-1).expand(len(g)), (x @ basis).abs().amax(-1)]
    ).amax(0)
    return g.abs().amax(-1) / torch.where(scale > 0, scale, 1)
