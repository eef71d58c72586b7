"""Matched loss/transfer pairs ("families"), SPEC §1.1.

A family is one convex potential ``psi``. The transfer is its gradient,
``r = f(eta) = grad psi(eta)``, and the loss is its Bregman divergence

    D_L(x || f(eta)) = psi(eta) - <x, eta> + psi*(x),

so ``grad_eta D_L = f(eta) - x`` by construction and, with ``eta = B w``,
``grad_w D_L = B^T (r - x)`` (appendix C, eq. 9). The constant ``psi*(x)``
makes the loss zero at a perfect reconstruction; it never changes a code.

Shapes: ``x``, ``eta`` and ``r`` are ``(N, D)``; losses are ``(N,)``.
"""

from __future__ import annotations

import torch

from . import gram_memo


def _xlogx(x: torch.Tensor) -> torch.Tensor:
    """``x log x`` with the limit ``0 log 0 = 0``."""
    return torch.special.xlogy(x, x)


class Family:
    """Base class: a convex potential, its gradient (transfer) and Hessian ``S``."""

    name: str = ""
    #: A bound on the largest eigenvalue of ``S`` (``None``: unbounded).
    curvature_bound: float | None = None
    #: Whether ``B^T S B`` is the same for every example (``S`` constant).
    shared_gram = False
    #: Whether ``f(eta + c 1) = f(eta)`` (softmax): atoms may then be centred.
    shift_invariant = False

    def transfer(self, eta: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def loss(self, x: torch.Tensor, eta: torch.Tensor) -> torch.Tensor:
        """``D_L(x || f(eta))`` per example, shape ``(N,)``."""
        raise NotImplementedError

    def curvature_weights(self, r: torch.Tensor) -> torch.Tensor:
        """Diagonal of ``S = d r / d eta`` (families whose ``S`` is diagonal)."""
        raise NotImplementedError

    def curvature_apply(self, r: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """``S u`` row by row, with ``S`` evaluated at ``r``."""
        return self.curvature_weights(r) * u

    def gram(self, basis: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """``B^T S B``: ``(n, K, K)``, or ``(K, K)`` when it does not depend on ``r``."""
        s = self.curvature_weights(r)
        return torch.einsum("dk,nd,dl->nkl", basis, s, basis)

    def gram_diagonal(self, basis: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """The diagonal of ``B^T S B``, ``(n, K)``, without forming it."""
        return self.curvature_weights(r) @ basis.square()

    def block_gram(self, cols: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """``C^T S C`` per row for each row's own atoms ``cols`` ``(n, s, D)``:
        the Hessian block of those atoms, ``(n, s, s)``, one batched product.
        (Not ``(S^(1/2) C)^T (S^(1/2) C)``: the square root's derivative is
        infinite where a weight is 0, and autograd may unroll this.)"""
        return (cols * self.curvature_weights(r)[:, None, :]) @ cols.mT

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Check the inputs and map them to the loss's target (e.g. counts to types)."""
        return x


class Gaussian(Family):
    """Linear transfer ``r = eta`` with squared loss ``1/2 ||x - r||^2``; ``S = I``."""

    name = "gaussian"
    curvature_bound = 1.0
    shared_gram = True

    def transfer(self, eta):
        return eta

    def loss(self, x, eta):
        return 0.5 * (x - eta).square().sum(-1)

    def curvature_weights(self, r):
        return torch.ones_like(r)

    def gram(self, basis, r):
        return gram_memo.gram(basis)

    def gram_diagonal(self, basis, r):
        return basis.square().sum(0).expand(r.shape[0], -1)


class Softmax(Family):
    """Normalized exponential with KL loss: the constrained-Poisson text model.

    ``r = softmax(eta)``; ``D_L = KL(x_bar || r) = sum_i x_bar_i log(x_bar_i / r_i)``
    with ``x_bar = x / sum(x)``; ``S = diag(r) - r r^T``.

    Inputs may be raw word counts: :meth:`prepare` normalises each row to a
    type ``x_bar``. The loss is *not* weighted by the document length ``n``;
    the constrained-Poisson negative log-likelihood is ``n`` times this loss
    (appendix D), so the codes of strength ``lam`` here are those of strength ``n * lam`` there.
    """

    name = "softmax"
    shift_invariant = True
    curvature_bound = 0.5  # the eigenvalues of diag(r) - r r^T are at most 1/2

    def transfer(self, eta):
        return torch.softmax(eta, dim=-1)

    def loss(self, x, eta):
        # -sum x log r with log r = log_softmax(eta), for x summing to 1: not
        # logsumexp(eta) - x . eta, whose two terms cancel to rounding noise of
        # |eta| (F of a code e^80 away read -1e15, and a line search took it).
        return _xlogx(x).sum(-1) - (x * torch.log_softmax(eta, dim=-1)).sum(-1)

    def curvature_apply(self, r, u):
        return r * u - r * (r * u).sum(-1, keepdim=True)

    def gram(self, basis, r):
        br = r @ basis  # (n, K) = B^T r per example
        weighted = torch.einsum("dk,nd,dl->nkl", basis, r, basis)
        return weighted - br.unsqueeze(-1) * br.unsqueeze(-2)

    def gram_diagonal(self, basis, r):
        return r @ basis.square() - (r @ basis).square()

    def block_gram(self, cols, r):
        # C^T (diag(r) - r r^T) C = (C diag(r))^T C - (C^T r)(C^T r)^T
        cr = cols @ r.unsqueeze(-1)  # C^T r, (n, s, 1)
        return (cols * r[:, None, :]) @ cols.mT - cr * cr.mT

    def prepare(self, x):
        if (x < 0).any():
            raise ValueError("x: the softmax family takes non-negative counts; found negative entries")
        total = x.sum(-1, keepdim=True)
        if (total <= 0).any():
            raise ValueError("x: the softmax family needs every row (document) to have a positive total count")
        return x / total


class Poisson(Family):
    """Exponential transfer ``r = exp(eta)`` with Poisson loss ``sum r - x log r``."""

    name = "poisson"

    def transfer(self, eta):
        return torch.exp(eta)

    def loss(self, x, eta):
        return (torch.exp(eta) - x * eta + _xlogx(x) - x).sum(-1)

    def curvature_weights(self, r):
        return r

    def prepare(self, x):
        if (x < 0).any():
            raise ValueError("x: the poisson family takes non-negative counts; found negative entries")
        return x


class Bernoulli(Family):
    """Logistic transfer ``r = sigmoid(eta)`` with cross-entropy loss."""

    name = "bernoulli"
    curvature_bound = 0.25

    def transfer(self, eta):
        return torch.sigmoid(eta)

    def loss(self, x, eta):
        entropy = _xlogx(x) + _xlogx(1 - x)
        return (torch.nn.functional.softplus(eta) - x * eta + entropy).sum(-1)

    def curvature_weights(self, r):
        return r * (1 - r)

    def prepare(self, x):
        if ((x < 0) | (x > 1)).any():
            raise ValueError("x: the bernoulli family takes inputs in [0, 1]")
        return x


FAMILIES: dict[str, Family] = {
    f.name: f for f in (Gaussian(), Softmax(), Poisson(), Bernoulli())
}


def get_family(family: str | Family) -> Family:
    """Look a family up by name (or pass an instance through)."""
    if isinstance(family, Family):
        return family
    try:
        return FAMILIES[family]
    except (KeyError, TypeError):
        raise ValueError(
            f"family: unknown family {family!r}; choose one of {sorted(FAMILIES)}"
        ) from None
