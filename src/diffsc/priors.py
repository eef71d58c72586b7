"""Priors (regularisers) ``R(w)``, SPEC §1.2.

Every method is elementwise: ``w`` is ``(N, K)``, the prior mean ``p`` is a
scalar or ``(K,)`` tensor and broadcasts. The objective is
``F(w) = D_L(x || f(Bw)) + sum_i lam_i R_i(w_i)``.

A *smooth* prior gives its gradient and (diagonal) curvature; the Newton
solver steps in its mirror coordinates ``s = grad R(w)``, which keeps KL codes
positive and lets a code move by orders of magnitude in one step. A *prox*
prior (L1) gives its proximal map instead.
"""

from __future__ import annotations

import torch

def _log_wright_omega(z: torch.Tensor) -> torch.Tensor:
    """``y = log omega(z)``, the root of ``e^y + y = z``, by Newton's method.

    The start lies above the root (``e^z + z > z``; ``z + log z > z`` for
    ``z >= 1``), where Newton's method on this convex increasing function
    descends monotonically: no overshoot, no overflow.
    """
    y = torch.where(z < 1, z, torch.log(z.clamp(min=1)) + 1e-3)
    for _ in range(12):
        ey = torch.exp(y)
        y = y - (ey + y - z) / (ey + 1)
    return y


class Prior:
    """Base class of all priors."""

    name: str = ""
    uses_mean = False  # whether the prior mean p enters R

    def value(self, w: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        """``R_i(w_i)`` elementwise."""
        raise NotImplementedError

    def minimiser(self, p: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """The minimiser of ``R`` alone, broadcastable to the codes."""
        return torch.zeros((), dtype=like.dtype, device=like.device)

    def initial(self, p: torch.Tensor, shape, like: torch.Tensor) -> torch.Tensor:
        """A starting code: :meth:`minimiser`, one copy a solver may overwrite."""
        if type(self).minimiser is Prior.minimiser:  # 0: one operation, not three (5 us of a 130 us call)
            return torch.zeros(shape, dtype=like.dtype, device=like.device)
        return torch.broadcast_to(self.minimiser(p, like), shape).clone(memory_format=torch.contiguous_format)

    def project(self, w: torch.Tensor) -> torch.Tensor:
        """Move a warm start into the prior's domain."""
        return w

    #: Whether codes are bounded below (KL: w > 0) and may underflow to the bound.
    has_floor = False

    def at_floor(self, w: torch.Tensor) -> torch.Tensor:
        """Codes at the smallest value the dtype can hold in the prior's domain."""
        return torch.zeros_like(w, dtype=torch.bool)

    def optimality_gradient(self, w: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """The gradient ``g`` as optimality counts it: a code held at the
        floor that still wants to shrink is as small as it can be and, like
        one at a bound, optimal (its entry is 0)."""
        if not self.has_floor:
            return g
        return torch.where(self.at_floor(w) & (g > 0), 0.0, g)

    def grad_mean(self, w, p):
        """``d grad R / d p`` elementwise (zero when ``p`` does not enter)."""
        return torch.zeros_like(w)


class SmoothPrior(Prior):
    """A twice differentiable prior with diagonal curvature."""

    #: Whether the mirror map's inverse is exponential (KL's exp, signed KL's
    #: sinh), so that a solver limits each step's mirror move against overflow.
    exponential_mirror = False

    def grad(self, w, p):
        raise NotImplementedError

    def curvature(self, w, p):
        """Diagonal of the Hessian of ``R``."""
        raise NotImplementedError

    def metric_scale(self, w, p):
        """``d = curvature^(-1/2)`` (1 where the curvature is 0), computed stably.

        The Newton and backward systems are solved as
        ``(D G D + lam diag(d^2 c)) z = D g`` with ``D = diag(d)``, whose
        eigenvalues are bounded below by ``lam`` even where ``1/w`` explodes
        (SPEC §2, numerics).
        """
        raise NotImplementedError

    def scaled_curvature(self, w, p):
        """``d^2 * curvature``: 1 for strictly convex priors, 0 for uniform."""
        return torch.ones_like(w)

    def mirror(self, w, p):
        return self.grad(w, p)

    def mirror_inverse(self, s, p):
        raise NotImplementedError

    def mirror_derivative(self, w, p):
        return self.curvature(w, p)

    def value_at(self, w, s, p):
        """``R(w)`` given its mirror coordinate ``s = grad R(w)`` too (cheaper for some)."""
        return self.value(w, p)

    def mirror_curve(self, w, p, ds, t):
        """The point ``w(t)`` with ``s(w(t)) = s(w) + t ds``, so ``w'(0) = ds / s'(w)``."""
        return self.project(self.mirror_inverse(self.mirror(w, p) + t * ds, p))


class Uniform(SmoothPrior):
    """``R(w) = 0``: maximum likelihood codes."""

    name = "uniform"

    def value(self, w, p):
        return torch.zeros_like(w)

    def grad(self, w, p):
        return torch.zeros_like(w)

    def curvature(self, w, p):
        return torch.zeros_like(w)

    def metric_scale(self, w, p):
        return torch.ones_like(w)

    def scaled_curvature(self, w, p):
        return torch.zeros_like(w)

    def mirror(self, w, p):
        return w

    def mirror_inverse(self, s, p):
        return s

    def mirror_derivative(self, w, p):
        return torch.ones_like(w)


class L2(SmoothPrior):
    """Gaussian prior ``R(w) = 1/2 w^2``."""

    name = "l2"

    def value(self, w, p):
        return 0.5 * w.square()

    def grad(self, w, p):
        return w

    def curvature(self, w, p):
        return torch.ones_like(w)

    def metric_scale(self, w, p):
        return torch.ones_like(w)

    def mirror_inverse(self, s, p):
        return s


class KL(SmoothPrior):
    """Unnormalized KL prior ``R(w) = w log(w/p) - w + p`` on ``w > 0``."""

    name = "kl"
    uses_mean = True
    exponential_mirror = True
    has_floor = True

    def value(self, w, p):
        return torch.special.xlogy(w, w / p) - w + p

    def grad(self, w, p):
        return torch.log(w / p)

    def value_at(self, w, s, p):
        return w * s - w + p

    def curvature(self, w, p):
        return 1.0 / w

    def metric_scale(self, w, p):
        return torch.sqrt(w)

    def grad_mean(self, w, p):
        return -1.0 / p * torch.ones_like(w)

    def mirror_inverse(self, s, p):
        return p * torch.exp(s)

    def minimiser(self, p, like):
        return p.to(like)

    def coordinate_log_step(self, w, p, lam, grad_loss, curvature):
        """``log(v / w)`` for the minimiser ``v`` of the one-coordinate model

            grad_loss (v - w) + curvature / 2 (v - w)^2 + lam R(v),

        whose optimality condition ``c (v - w) + grad_loss + lam log(v / p) = 0``
        gives ``v = (lam / c) omega(log(c p / lam) + (c w - grad_loss) / lam)``
        with Wright's omega function (``omega(z) = W0(e^z)``), here in logs so
        that codes e^-700 or e^+700 away are reached in one step.
        """
        c = curvature.clamp_min(torch.finfo(w.dtype).tiny)
        z = torch.log(c * p / lam) + (c * w - grad_loss) / lam
        return torch.log(lam / c) + _log_wright_omega(z) - torch.log(w)

    def project(self, w):
        # Codes that underflow to 0 would give log(0); keep them representable.
        return w.clamp_min(torch.finfo(w.dtype).tiny)

    def at_floor(self, w):
        # The optimum p exp(-grad D / lam) can lie below the smallest normal
        # number (grad D / lam > 700 in float64, > 80 in float32).
        return w <= torch.finfo(w.dtype).tiny


class SignedKL(SmoothPrior):
    """The arcsinh prior: KL on the expanded basis ``[-B, B]`` (appendix B).

    ``R(w) = w asinh(w / 2p) - sqrt(w^2 + 4p^2) + 2p`` on all of ``w``,
    the root as ``hypot(w, 2p)``: ``w^2`` overflows float32 beyond
    ``|w| ~ 1.8e19`` (a far warm start), and hypot is the faster.
    """

    name = "signed_kl"
    uses_mean = True
    exponential_mirror = True

    def value(self, w, p):
        return w * torch.asinh(w / (2 * p)) - torch.hypot(w, 2 * p) + 2 * p

    def grad(self, w, p):
        return torch.asinh(w / (2 * p))

    def value_at(self, w, s, p):
        # torch's asinh is slow (several ns an entry): the solver keeps s instead.
        return w * s - torch.hypot(w, 2 * p) + 2 * p

    def curvature(self, w, p):
        return 1.0 / torch.hypot(w, 2 * p)

    def metric_scale(self, w, p):
        return torch.sqrt(torch.hypot(w, 2 * p))

    def grad_mean(self, w, p):
        return -w / (p * torch.hypot(w, 2 * p))

    def mirror_inverse(self, s, p):
        return 2 * p * torch.sinh(s)


class L1(Prior):
    """Laplacian prior ``R(w) = |w|``, optionally restricted to ``w >= 0``."""

    uses_mean = False

    def __init__(self, nonnegative: bool = False):
        self.nonnegative = nonnegative
        self.name = "nonneg_l1" if nonnegative else "l1"

    def value(self, w, p):
        return w.abs()

    def prox(self, v, threshold):
        """``argmin_w 1/2 (w - v)^2 + threshold * R(w)``, elementwise."""
        if self.nonnegative:
            return torch.relu(v - threshold)
        return torch.sign(v) * torch.relu(v.abs() - threshold)

    def project(self, w):
        return torch.relu(w) if self.nonnegative else w

    def min_norm_subgradient(self, w, grad_loss, lam):
        """The smallest element of ``grad_loss + lam * dR(w)`` (0 at an optimum)."""
        on_support = grad_loss + lam * torch.sign(w)
        if self.nonnegative:
            # At w = 0 the subdifferential of lam*w + [w >= 0] is (-inf, lam].
            off_support = torch.clamp(grad_loss + lam, max=0.0)
        else:
            off_support = torch.sign(grad_loss) * torch.relu(grad_loss.abs() - lam)
        return torch.where(w != 0, on_support, off_support)

    def grad(self, w, p):
        """The gradient on the support, ``sign(w)`` (used by the backward pass)."""
        return torch.sign(w)


PRIORS: dict[str, Prior] = {
    pr.name: pr for pr in (Uniform(), L2(), L1(), L1(nonnegative=True), KL(), SignedKL())
}


def get_prior(prior: str | Prior) -> Prior:
    """Look a prior up by name (or pass an instance through)."""
    if isinstance(prior, Prior):
        return prior
    try:
        return PRIORS[prior]
    except (KeyError, TypeError):
        raise ValueError(f"prior: unknown prior {prior!r}; choose one of {sorted(PRIORS)}") from None
