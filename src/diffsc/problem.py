"""The MAP problem ``min_w F(w) = D_L(x || f(Bw)) + sum_i lam_i R(w_i)``.

The optimality condition belongs here, not to a solver: solvers only find its
root, and the backward pass only needs the root.

Shapes: ``x`` ``(N, D)`` (already prepared by the family), ``basis`` ``(D, K)``,
codes ``w`` ``(N, K)``, ``lam`` and ``p`` scalars or ``(K,)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .families import Family, get_family
from .priors import L1, Prior, SmoothPrior, get_prior


@dataclass(frozen=True)
class Problem:
    family: Family
    prior: Prior

    @classmethod
    def of(cls, family: str | Family, prior: str | Prior) -> "Problem":
        return cls(get_family(family), get_prior(prior))

    @property
    def smooth(self) -> bool:
        return isinstance(self.prior, SmoothPrior)

    @property
    def l1(self) -> bool:
        return isinstance(self.prior, L1)

    def reconstruction(self, basis, w):
        """``r = f(B w)`` row by row."""
        return self.family.transfer(w @ basis.T)

    def objective(self, x, basis, lam, p, w):
        """``F(w)`` per example, shape ``(N,)``."""
        return self.family.loss(x, w @ basis.T) + (lam * self.prior.value(w, p)).sum(-1)

    def loss_gradient(self, x, basis, w):
        """``grad_w D_L = B^T (r - x)`` (appendix C, eq. 9) and ``r``."""
        r = self.reconstruction(basis, w)
        return (r - x) @ basis, r

    def residual(self, x, basis, lam, p, w, grad_loss=None, xb=None, grad_prior=None):
        """Relative optimality residual per example, shape ``(N,)``.

        ``||g||_inf / max(||B^T(r - x)||_inf, ||lam grad R(w)||_inf, ||B^T x||_inf, ||lam w R''(w)||_inf)``
        where ``g = B^T(r - x) + lam grad R(w)`` for a smooth prior and the
        minimum-norm subgradient for L1; 0 means optimal. The scale makes the
        residual invariant to the scale of ``x``, ``B`` and ``lam`` together.
        Its last term is how much ``lam grad R`` moves when ``w`` changes by
        a relative ``1`` (``lam`` for KL): ``lam grad R`` cannot be resolved more
        finely than ``eps`` times it, e.g. KL codes near ``p`` for tiny inputs.
        A KL code at the dtype's smallest normal number whose gradient is
        still positive counts as optimal: its optimum underflows.
        ``xb`` (``x @ basis``) and ``grad_prior`` (``grad R(w)``): where the
        caller has them already.
        """
        if grad_loss is None:
            grad_loss, _ = self.loss_gradient(x, basis, w)
        grad_prior = lam * (self.prior.grad(w, p) if grad_prior is None else grad_prior)
        if self.l1:
            g = self.prior.min_norm_subgradient(w, grad_loss, lam)
        else:
            g = self.prior.optimality_gradient(w, grad_loss + grad_prior)
        terms = [grad_loss, grad_prior, x @ basis if xb is None else xb]
        if self.smooth:
            terms.append(lam * w * self.prior.curvature(w, p))
        scale = torch.stack([t.abs().amax(-1) for t in terms]).amax(0)
        num = g.abs().amax(-1)
        return torch.where(scale > 0, num / torch.where(scale > 0, scale, 1), num)
