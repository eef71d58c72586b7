"""The sparse coder as a torch ``nn.Module``: a layer backpropagation passes through."""

from __future__ import annotations

import torch
from torch import nn

from .coding import sparse_code
from .families import get_family
from .learning import project_atoms
from .priors import get_prior
from .validation import check_basis, check_parameter


class SparseCodingLayer(nn.Module):
    r"""MAP sparse codes of its input, with the basis as a learnable parameter.

    ``forward(x)`` returns :func:`diffsc.sparse_code` of ``x`` for the layer's
    basis, so gradients reach ``basis`` (and ``strength``, ``prior_mean`` when
    learnable) through the implicit backward of SPEC §2. After an optimiser
    step, call :meth:`project_` to put the atoms back in the unit ball.

    Parameters
    ----------
    basis : (D, K) tensor or array
        Initial basis (copied); see :func:`diffsc.learn_basis` to learn one.
    family, prior, strength, prior_mean, tol, max_iter, solver, backward, strict
        As in :func:`diffsc.sparse_code`.
    learn_strength, learn_prior_mean : bool
        Make ``lam`` / ``p`` trainable. They are stored as logarithms
        (``log_strength``, ``log_prior_mean``) so that they stay positive.

    Examples
    --------
    >>> import torch, diffsc
    >>> layer = diffsc.SparseCodingLayer(torch.eye(4, 6, dtype=torch.float64), prior="kl")
    >>> model = torch.nn.Sequential(layer, torch.nn.Linear(6, 2, dtype=torch.float64))
    >>> model(torch.ones(3, 4, dtype=torch.float64)).sum().backward()
    >>> layer.basis.grad.shape
    torch.Size([4, 6])
    """

    def __init__(
        self,
        basis,
        *,
        family="gaussian",
        prior="kl",
        strength=0.1,
        prior_mean=0.01,
        learn_strength=False,
        learn_prior_mean=False,
        tol=None,
        max_iter=None,
        solver=None,
        backward="implicit",
        strict=False,
    ):
        super().__init__()
        basis = check_basis(basis).detach().clone()
        self.family = get_family(family).name
        self.prior = get_prior(prior).name
        self.basis = nn.Parameter(basis)
        lam = check_parameter(strength, "strength", basis).clone()
        p = check_parameter(prior_mean, "prior_mean", basis).clone()
        self._register("log_strength", lam.log(), learn_strength)
        self._register("log_prior_mean", p.log(), learn_prior_mean)
        self.options = {"tol": tol, "max_iter": max_iter, "solver": solver, "backward": backward, "strict": strict}

    def _register(self, name, value, learnable):
        if learnable:
            self.register_parameter(name, nn.Parameter(value))
        else:
            self.register_buffer(name, value)

    def config(self) -> dict:
        """Constructor arguments besides the basis, strength and prior mean (for saving)."""
        return {
            "family": self.family,
            "prior": self.prior,
            "learn_strength": isinstance(self.log_strength, nn.Parameter),
            "learn_prior_mean": isinstance(self.log_prior_mean, nn.Parameter),
            **self.options,
        }

    @property
    def strength(self) -> torch.Tensor:
        return self.log_strength.exp()

    @property
    def prior_mean(self) -> torch.Tensor:
        return self.log_prior_mean.exp()

    @property
    def n_atoms(self) -> int:
        return self.basis.shape[1]

    def forward(self, x, init=None):
        """Codes ``(N, K)`` of ``x`` ``(N, D)``; ``init`` warm-starts the solver."""
        return sparse_code(
            x,
            self.basis,
            family=self.family,
            prior=self.prior,
            strength=self.strength,
            prior_mean=self.prior_mean,
            init=init,
            **self.options,
        )

    @torch.no_grad()
    def project_(self) -> "SparseCodingLayer":
        """Put every atom back in the unit ball (call after each optimiser step)."""
        self.basis.copy_(project_atoms(self.basis, self.family))
        return self

    def extra_repr(self) -> str:
        d, k = self.basis.shape
        return f"D={d}, K={k}, family={self.family!r}, prior={self.prior!r}"
