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
Rows still short after ``_HANDED_OVER_AFTER`` iterations (the benchmarks'
take 20-130) finish with the active set, in float64 (:func:`_hand_over`).
"""

from __future__ import annotations

import torch

from .. import gram_memo
from ..hessian import hessian_solve
from .active_set import active_set, ratio_test
from .result import SolveResult, finish_in_float64

_CHECK_EVERY = 10
_POLISH_STEPS = 3  # Newton steps per check; each may drop one coefficient per code
_HANDED_OVER_AFTER = 500  # iterations, after which the rows left go to the active set


class _Loss:
    """``D_L`` and its gradient for some rows of ``x``.

    Gaussian codes with ``K <= 2D`` go through the shared ``G = B^T B`` and
    ``B^T x``: a gradient is one ``K x K`` product instead of two ``D x K``
    ones, and ``D_L = 1/2 w^T G w - w^T B^T x + 1/2 |x|^2`` needs no other.
    ``B^T x`` is kept either way (the residual's scale).
    """

    def __init__(self, problem, x, basis, xb, gram, half_xx):
        self.problem, self.x, self.basis, self.xb, self.gram, self.half_xx = problem, x, basis, xb, gram, half_xx

    @classmethod
    def of(cls, problem, x, basis):
        d, k = basis.shape
        if problem.family.name == "gaussian" and k <= 2 * d:
            return cls(problem, x, basis, x @ basis, gram_memo.gram(basis), 0.5 * x.square().sum(-1))
        return cls(problem, x, basis, x @ basis, None, None)

    def take(self, idx):
        half_xx = None if self.half_xx is None else self.half_xx[idx]
        return _Loss(self.problem, self.x[idx], self.basis, self.xb[idx], self.gram, half_xx)

    def gradient(self, w):
        """``grad D_L`` at ``w`` and the reconstruction ``r`` (``None`` through ``G``)."""
        if self.gram is None:
            return self.problem.loss_gradient(self.x, self.basis, w)
        return w @ self.gram - self.xb, None

    def value(self, w, grad):
        """``D_L(w)``, given its gradient there."""
        if self.gram is None:
            return self.problem.family.loss(self.x, w @ self.basis.T)
        return 0.5 * (w * (grad - self.xb)).sum(-1) + self.half_xx


def _state(problem, loss, lam, p, w):
    """``(grad D_L, r, F, residual)`` at the codes ``w``."""
    grad, r = loss.gradient(w)
    f = loss.value(w, grad) + (lam * problem.prior.value(w, p)).sum(-1)
    return grad, r, f, problem.residual(loss.x, loss.basis, lam, p, w, grad, xb=loss.xb)


def _polish(problem, loss, lam, p, w, state):
    """A Newton step on the support, stopped where a coefficient hits zero;
    kept where it lowers ``F`` (or, below rounding, the residual)."""
    grad, r, f, residual = state
    signs = torch.sign(w)
    g = torch.where(w != 0, grad + lam * signs, torch.zeros_like(w))
    step, ok = hessian_solve(problem, loss.basis, lam, p, w, r, -g)  # r None: gaussian, B_S^T B_S
    t, leaving = ratio_test(w, step)
    # The coefficient that stops the step leaves the support exactly.
    cand = problem.prior.project(torch.where(leaving, 0.0, w + t[:, None] * step))
    new = _state(problem, loss, lam, p, cand)
    keep = ok & ((new[2] <= f) | (new[3] < residual)) & (cand != w).any(-1)
    state = tuple(None if old is None else torch.where(keep if old.dim() == 1 else keep[:, None], now, old)
                  for old, now in zip(state, new))
    return torch.where(keep[:, None], cand, w), keep, state


def fista(problem, x, basis, lam, p, w0, tol, max_iter):
    family, prior = problem.family, problem.prior
    n = x.shape[0]
    spectral = torch.linalg.matrix_norm(basis.detach(), ord=2) ** 2  # a step size, not differentiated
    backtrack = family.curvature_bound is None
    lipschitz = spectral * (1.0 if backtrack else family.curvature_bound)

    loss = _Loss.of(problem, x, basis)
    w = prior.project(w0)
    iterations = torch.zeros(n, dtype=torch.int64, device=x.device)
    residual = _state(problem, loss, lam, p, w)[3]
    big_l = torch.full((n,), float(lipschitz), dtype=x.dtype, device=x.device)
    y, t = w, torch.ones_like(big_l)  # momentum state, kept across checks

    done = 0
    while done < max_iter:
        active = residual > tol
        if not bool(active.any()):
            break
        idx = active.nonzero().squeeze(1)
        rows = loss.take(idx)
        xa, wa, la, ya, ta = x[idx], w[idx], big_l[idx], y[idx], t[idx]
        steps = min(_CHECK_EVERY, max_iter - done)
        for _ in range(steps):
            grad_y, _ = rows.gradient(ya)
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
        state = _state(problem, rows, lam, p, wa)
        for _ in range(_POLISH_STEPS):
            wa, kept, state = _polish(problem, rows, lam, p, wa, state)
            polished = polished | kept
        ya = torch.where(polished[:, None], wa, ya)
        ta = torch.where(polished, torch.ones_like(ta), ta)
        w = w.index_copy(0, idx, wa)
        y = y.index_copy(0, idx, ya)
        t = t.index_copy(0, idx, ta)
        big_l = big_l.index_copy(0, idx, la)
        iterations = iterations.index_add(0, idx, torch.full_like(idx, steps))
        residual = residual.index_copy(0, idx, state[3])

        if done >= _HANDED_OVER_AFTER and bool((residual > tol).any()):
            break

    if done < max_iter:
        w, iterations, residual = _hand_over(problem, x, basis, lam, p, w, iterations, residual, tol, max_iter - done)
    return SolveResult(w, iterations, residual, residual <= tol, "fista", tol)


def _hand_over(problem, x, basis, lam, p, w, iterations, residual, tol, budget):
    """Rows FISTA has not finished in ``_HANDED_OVER_AFTER`` iterations go to
    the active set, in float64, from where FISTA left them; kept where their
    residual fell.

    Such rows are ill-conditioned on their support (weak priors on an
    overcomplete basis: supports of about ``D`` atoms), where FISTA's rate is
    slow and float32's own active-set steps creep. On ``robustness.py
    --priors gaussian_l1 --solver fista`` (10 seeds, ``max_iter`` 20,000)
    float64 batches at strength 1e-4 converged 8 of 20 before, in 48 s.
    """
    left = (residual > tol).nonzero().squeeze(1)
    if not left.numel():
        return w, iterations, residual
    wide_tol = tol if x.dtype == torch.float64 else 1e-3 * tol  # (float32's codes then meet tol)
    return finish_in_float64(problem, x, basis, lam, p, w, iterations, residual, left, active_set, wide_tol, budget)
