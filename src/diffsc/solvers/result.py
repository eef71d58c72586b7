"""The result every MAP solver returns, and the shared stopping rules."""

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


def finish_in_float64(problem, x, basis, lam, p, w, iterations, residual, rows, function, tol, budget):
    """``(w, iterations, residual)`` with rows ``rows`` solved again by ``function``
    in float64 from where they are, to ``tol``, within ``budget`` iterations;
    kept where their residual, in their own dtype, fell (out of place, so
    that autograd may pass through)."""
    wide = torch.float64
    finish = function(problem, x[rows].to(wide), basis.to(wide), lam.to(wide), p.to(wide), w[rows].to(wide), tol,
                      budget)
    codes = problem.prior.project(finish.codes.to(x.dtype))
    found = problem.residual(x[rows], basis, lam, p, codes)
    better = found < residual[rows]
    keep = rows[better]
    return (w.index_copy(0, keep, codes[better]),
            iterations.index_add(0, keep, finish.iterations.to(iterations)[better]),
            residual.index_copy(0, keep, found[better]))


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


class Stall:
    """Rows whose residual has not halved in ``steps`` steps: they leave the
    loop (:func:`.newton_cg.newton_cg` hands them to :func:`.newton.newton`).

    Inexact Newton crawls where ``H`` is ill-conditioned beyond what
    ``min(0.1, sqrt(residual))`` resolves: under a weak prior (signed KL,
    lam = 1e-6, p = 0.01, 30 x 60) the CG direction, accurate on ``B``'s
    large directions, all but missed the near-null space the step lay in
    (cosine 0.06 with Newton's), and the rows took 100 steps of ``F``
    falling by 1e-6, the residual cycling between 1e-4 and 3e-6. The
    benchmarks' rows halve it at every step. Signed KL only (``steps`` is
    ``newton_cg._STALL_STEPS``; else more than ``max_iter``): stalled KL rows, at
    their floor or jumping, fared worse with the factored steps
    (``newton_cg.HANDED_OVER``).

    It also counts, per row, the whole steps in a row that did not halve the
    residual (:attr:`missed`), after each of which Newton-CG asks 10x more of
    its next direction: the milder remedy for the same near-null-space misses.
    """

    def __init__(self, residual, steps):
        self.steps = steps
        self.mark = residual.clone()
        self.since = torch.zeros_like(residual, dtype=torch.int64)
        self.stalled = torch.zeros_like(residual, dtype=torch.bool)
        self.last = residual.clone()
        #: Whole steps in a row (``t = 1``) that did not halve the residual:
        #: the line search trusted the model, so the shortfall is the
        #: direction's, and Newton-CG asks more of the next one's CG.
        self.missed = torch.zeros_like(residual, dtype=torch.int64)

    def update(self, idx, residual, whole):
        """The rows ``idx`` took a step to ``residual``; ``whole``: which took the whole step."""
        halved = residual <= 0.5 * self.mark[idx]
        self.mark[idx] = torch.where(halved, residual, self.mark[idx])
        self.since[idx] = torch.where(halved, 0, self.since[idx] + 1)
        self.stalled[idx] = self.since[idx] >= self.steps
        missed = whole & ~(residual <= 0.5 * self.last[idx])
        self.missed[idx] = torch.where(missed, self.missed[idx] + 1, 0)
        self.last[idx] = residual
