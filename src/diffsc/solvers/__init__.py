"""MAP solvers: each finds the root of the problem's optimality condition.

One file per solver; each takes ``(problem, x, basis, lam, p, w0, tol,
max_iter)`` with prepared tensors (``w0`` its own, to overwrite if it likes)
and returns a :class:`SolveResult`. They
never print or warn: :func:`diffsc.sparse_code` turns non-convergence into a
warning (or an error when ``strict``).
"""

from __future__ import annotations

import torch

from ..hessian import recording
from .active_set import active_set
from .eg import exponentiated_gradient
from .fista import fista
from .gram import gram_active_set
from .newton import newton
from .newton_cg import newton_cg
from .prox_newton import prox_newton
from .result import SolveResult, default_tol, finish_in_float64

#: name -> (function, which priors it handles, default max_iter)
SOLVERS = {
    "newton": (newton, lambda problem: problem.smooth, 100),
    "newton_cg": (newton_cg, lambda problem: problem.smooth, 100),
    "active_set": (active_set, lambda problem: problem.l1, 2000),
    "gram": (gram_active_set, lambda problem: problem.l1, 2000),
    "fista": (fista, lambda problem: problem.l1, 20000),
    "prox_newton": (prox_newton, lambda problem: problem.l1, 100),
    "eg": (exponentiated_gradient, lambda problem: problem.prior.name == "kl", 20000),
}


def default_solver(problem, x=None, differentiable=False) -> str:
    """For smooth priors Newton-CG, or Newton's factored steps when autograd
    unrolls the iterations (Newton-CG updates in place) and for the uniform
    prior (maximum likelihood: ``H`` may be singular, where conjugate gradients
    pick another of the minimisers than the factored step).

    For L1 under unrolled autograd the torch active set (the others update in
    place); else for the gaussian family the compiled Gram solver on the CPU
    and FISTA on other devices, and for the other families proximal Newton on
    the CPU and the active set on other devices. (On a GPU each torch
    operator is a kernel launch and each host read a wait: the active set's
    one atom an iteration costs 11-60x the launches of FISTA and 420-780x
    its host reads, counted by ``benchmarks/flops.py --priors l1``, and took
    0.85-1.8 s on an H200. Off the CPU proximal Newton's coordinate descent
    is torch operators, a few a coordinate and sweep: fewer in all than the
    active set's on the text-like problem of ``flops.py --family softmax``,
    but on small problems they made it 38x slower than the active set on the
    CPU; neither is yet timed on a GPU for these families.)"""
    if not problem.l1:
        return "newton" if differentiable or problem.prior.name == "uniform" else "newton_cg"
    cpu = x is None or x.device.type == "cpu"
    if differentiable:
        return "active_set"
    if problem.family.name == "gaussian":
        return "gram" if cpu else "fista"
    return "prox_newton" if cpu else "active_set"


def solve(problem, x, basis, lam, p, *, solver=None, tol=None, max_iter=None, init=None):
    """Solve the MAP problem for a prepared batch (see :func:`diffsc.sparse_code`)."""
    differentiable = recording(x, basis, lam, p)
    name = solver or default_solver(problem, x, differentiable)
    if name not in SOLVERS:
        raise ValueError(f"solver: unknown solver {name!r}; choose one of {sorted(SOLVERS)}")
    function, handles, default_iter = SOLVERS[name]
    if not handles(problem):
        raise ValueError(f"solver: {name!r} cannot solve the {problem.prior.name!r} prior")
    if name == "gram" and problem.family.name != "gaussian":
        raise ValueError(f"solver: 'gram' solves the gaussian family only, not {problem.family.name!r}")
    if name == "gram" and differentiable:
        raise ValueError("solver: 'gram' is compiled code that autograd cannot unroll; use 'active_set' or 'fista'")
    if name == "newton_cg" and differentiable:
        raise ValueError("solver: 'newton_cg' updates its codes in place, which autograd cannot unroll; use 'newton'")
    if name == "prox_newton" and differentiable:
        raise ValueError("solver: 'prox_newton' updates its codes in place, which autograd cannot unroll; "
                         "use 'active_set' or 'fista'")
    tol = default_tol(x.dtype) if tol is None else tol
    max_iter = default_iter if max_iter is None else max_iter
    shape = (x.shape[0], basis.shape[1])
    # Solvers own their start and may overwrite it (a user's init is copied).
    if init is None:
        w0 = problem.prior.initial(p, shape, x)
    else:
        w0 = problem.prior.project(init).clone()
        if name != "newton_cg":  # which does it itself, from its own cold start
            w0 = _no_worse_than_cold(problem, x, basis, lam, p, w0)
    result = function(problem, x, basis, lam, p, _finite_start(problem, x, basis, lam, p, w0), tol, max_iter)
    if x.dtype == torch.float32 and not differentiable and name not in ("eg", "fista"):
        result = _finished_in_float64(problem, x, basis, lam, p, result, function, max_iter)
    return result


def _finished_in_float64(problem, x, basis, lam, p, result, function, max_iter):
    """float32 codes the solver left short of ``tol`` before ``max_iter``
    (it stopped: no step it could take lowered ``F``, or the active set's
    residual stopped falling) are finished in
    float64 from where they stopped, within the iterations left, and kept
    where their float32 residual then meets ``tol``.

    A support as large as ``D`` (gaussian L1, 30x60, lam 0.1: float32
    stopped at residuals 2-3e-4 against 1e-4) or a nearly singular ``H`` is
    beyond float32's own steps, not its precision: the float64 codes, cast
    back, had residuals of 5-9e-8. (EG and FISTA stop only at ``max_iter``.)
    """
    short = ~result.converged & (result.iterations < max_iter) & torch.isfinite(result.codes).all(-1)
    if not bool(short.any()):
        return result
    idx = short.nonzero().squeeze(1)
    result.codes, result.iterations, result.residual = finish_in_float64(
        problem, x, basis, lam, p, result.codes, result.iterations, result.residual, idx, function,
        1e-3 * result.tol, max_iter - int(result.iterations[idx].max()))
    result.converged = result.residual <= result.tol
    return result


def _no_worse_than_cold(problem, x, basis, lam, p, w0):
    """A warm start's rows whose objective exceeds that of the prior's
    minimiser start there instead (the cold start; NaN counts as worse).

    Such a start is worse than none, and can be far: from codes of 1e29 (or
    1e3 in float32) FISTA, the active set and proximal Newton did not
    converge in their ``max_iter``, and Newton's KL codes shrank by ``e`` a
    step (``tests/test_newton_cg.py``, ``tests/test_solver_regressions.py``).
    Two objective evaluations, with a warm start only.
    """
    start = problem.prior.initial(p, w0.shape, x)
    with torch.no_grad():
        worse = ~(problem.objective(x, basis, lam, p, w0) <= problem.objective(x, basis, lam, p, start))
    return torch.where(worse[:, None], start, w0) if bool(worse.any()) else w0


def _finite_start(problem, x, basis, lam, p, w0):
    """Shrink a start whose objective overflows (e.g. exp(B w) with KL's ``w = p``).

    Codes are scaled towards 0 by 10 at a time where ``F(w0)`` is not finite.
    The gaussian objective is finite wherever its (checked) inputs are.
    """
    if problem.family.name == "gaussian":
        return w0
    for _ in range(40):
        bad = ~torch.isfinite(problem.objective(x, basis, lam, p, w0))
        if not bool(bad.any()):
            break
        w0 = torch.where(bad[:, None], problem.prior.project(w0 / 10), w0)
    return w0


__all__ = ["SOLVERS", "SolveResult", "default_solver", "default_tol", "solve"]
