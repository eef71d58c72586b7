"""The result every MAP solver returns, and the shared stopping rule."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class SolveResult:
    """Codes with per-example diagnostics.

    Attributes
    ----------
    codes : (N, K) tensor
    iterations : (N,) int64 tensor, iterations each example took
    residual : (N,) tensor, final relative optimality residual
        (:meth:`diffsc.problem.Problem.residual`)
    converged : (N,) bool tensor, ``residual <= tol``
    solver : str
    tol : float
    """

    codes: torch.Tensor
    iterations: torch.Tensor
    residual: torch.Tensor
    converged: torch.Tensor
    solver: str
    tol: float

    @property
    def all_converged(self) -> bool:
        return bool(self.converged.all())


def default_tol(dtype: torch.dtype) -> float:
    """Relative residual a solve aims for: a few thousand ulps of the dtype.

    float64: 1e-10, float32: 1e-4 (float32 cannot resolve much below
    ``eps * cond(H)`` for the Hessians met in practice).
    """
    return 1e-10 if dtype == torch.float64 else 1e-4


#: How much ``F`` may rise by rounding alone, relative, in units of the dtype's eps.
FLAT_ULPS = 512


def flat(f: torch.Tensor, f0: torch.Tensor) -> torch.Tensor:
    """Where ``F`` went from ``f0`` to ``f`` without rising beyond rounding.

    Near the optimum ``F``'s decrease drops below its rounding error, so a
    solver may accept a step for another sign of progress (a smaller
    gradient or residual), but only there: far from it (softmax, whose
    gradient is bounded) those can fall while ``F`` rises by orders of
    magnitude.
    """
    return f <= f0 + FLAT_ULPS * torch.finfo(f0.dtype).eps * f0.abs().clamp_min(1.0)
