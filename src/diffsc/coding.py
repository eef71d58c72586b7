"""The public entry point: MAP sparse codes that backpropagation passes through."""

from __future__ import annotations

import warnings

import torch

from . import gram_memo
from .layer import SparseCodeFunction
from .problem import Problem
from .small_lasso import small_lasso
from .solvers import SolveResult, default_solver, default_tol, solve
from .validation import (
    check_basis,
    check_init,
    check_inputs,
    check_parameter,
    check_solver_options,
)

BACKWARD_MODES = ("implicit", "unrolled")


class ConvergenceWarning(UserWarning):
    """Some codes did not reach the requested tolerance."""


class ConvergenceError(RuntimeError):
    """Raised instead of :class:`ConvergenceWarning` when ``strict=True``."""


def sparse_code_with_info(
    x,
    basis,
    *,
    family="gaussian",
    prior="kl",
    strength=0.1,
    prior_mean=0.01,
    tol=None,
    max_iter=None,
    init=None,
    solver=None,
    backward="implicit",
    strict=False,
):
    """MAP sparse codes and the solver's diagnostics.

    Same arguments as :func:`sparse_code`. Returns ``(codes, info)`` where
    ``info`` is a :class:`~diffsc.solvers.SolveResult` whose ``iterations``,
    ``residual`` and ``converged`` have one entry per example (scalars for a
    single example) and whose ``codes`` are the returned codes.
    """
    quick = small_lasso(x, basis, family, prior, strength, prior_mean, tol, max_iter, init, solver, backward)
    if quick is not None:  # (a few plain gaussian L1 inputs: the same codes, without the bookkeeping)
        return quick
    problem = Problem.of(family, prior)
    basis = check_basis(basis)
    x, single = check_inputs(x, basis)
    lam = check_parameter(strength, "strength", basis)
    p = check_parameter(prior_mean, "prior_mean", basis)
    check_solver_options(tol, max_iter)
    if backward not in BACKWARD_MODES:
        raise ValueError(f"backward: must be one of {BACKWARD_MODES}, got {backward!r}")
    options = {"solver": solver, "tol": tol, "max_iter": max_iter}
    if init is not None:
        options["init"] = check_init(init, x.shape[0], basis)

    target = problem.family.prepare(x)  # differentiable: autograd chains through it
    if backward == "implicit" and _records(target, basis, lam, p):
        codes, residual, iterations, converged = SparseCodeFunction.apply(
            target, basis, lam, p, problem, options
        )
        result = SolveResult(
            codes,
            iterations,
            residual,
            converged,
            solver or default_solver(problem, target),
            default_tol(x.dtype) if tol is None else tol,
        )
    elif backward == "implicit":  # nothing to differentiate: the layer's forward alone
        with gram_memo.scope(basis):
            result = solve(problem, target, basis, lam, p, **options)
    else:
        with torch.enable_grad():
            result = solve(problem, target, basis, lam, p, **options)
        result.residual = result.residual.detach()  # diagnostics carry no gradient

    _report(result, strict)
    if single:
        result = SolveResult(
            result.codes[0],
            result.iterations[0],
            result.residual[0],
            result.converged[0],
            result.solver,
            result.tol,
        )
    return result.codes, result


def _records(*tensors) -> bool:
    """Whether autograd records a function of these (else the autograd
    function's bookkeeping is 7 us of an 80 us call on one input, for nothing)."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def sparse_code(
    x,
    basis,
    *,
    family="gaussian",
    prior="kl",
    strength=0.1,
    prior_mean=0.01,
    tol=None,
    max_iter=None,
    init=None,
    solver=None,
    backward="implicit",
    strict=False,
):
    r"""MAP sparse codes of a batch, differentiable w.r.t. every tensor input.

    Solves, for every row ``x_n`` of ``x``,

    .. math::

        \hat w_n = \arg\min_w D_L(x_n \| f(B w)) + \sum_k \lambda_k R(w_k; p_k)

    with the family's matched loss ``D_L`` and transfer ``f`` and the prior
    ``R`` (SPEC §1). The loss is per example and summed over features:
    gaussian ``1/2 ||x - Bw||^2``; softmax ``KL(x_bar || softmax(Bw))`` with
    ``x_bar = x / sum(x)`` (not weighted by the document length).

    Parameters
    ----------
    x : (N, D) or (D,) tensor or array
        Inputs, one example per row. Integer counts are accepted (softmax,
        poisson) and take the basis's dtype.
    basis : (D, K) tensor or array
        One atom per column; float32 or float64.
    family : {"gaussian", "softmax", "poisson", "bernoulli"}
    prior : {"kl", "signed_kl", "l1", "nonneg_l1", "l2", "uniform"} or Prior
    strength : float or (K,) tensor
        ``lam > 0``, scalar or one per atom.
    prior_mean : float or (K,) tensor
        ``p > 0`` of the KL and signed-KL priors (ignored by the others).
    tol : float, optional
        Relative optimality residual to reach (see
        :meth:`diffsc.problem.Problem.residual`); default 1e-10 in float64,
        1e-4 in float32.
    max_iter : int, optional
        Iteration cap (solver-dependent default).
    init : (N, K) tensor, optional
        Warm start, moved into the prior's domain (e.g. KL codes > 0). Its
        rows whose objective exceeds that of the prior's minimiser start as
        they would without one: a far start would cost many steps, or
        overflow.
    solver : {"newton_cg", "newton", "gram", "active_set", "fista", "prox_newton", "eg"}, optional
        Default: ``"newton_cg"`` for smooth priors (``"newton"``, factored
        steps, for the uniform prior and under ``backward="unrolled"``); for
        L1 ``"gram"`` (compiled, gaussian family on the CPU), ``"fista"``
        (gaussian family on other devices), ``"prox_newton"`` (proximal
        Newton, the other families on the CPU), else ``"active_set"`` (and
        under ``backward="unrolled"``).
    backward : {"implicit", "unrolled"}
        ``"implicit"`` solves one system with the code Hessian per example in
        backward (conjugate gradients for smooth priors);
        ``"unrolled"`` records every solver iteration for autograd (a
        reference: its memory grows with the iterations).
    strict : bool
        Raise :class:`ConvergenceError` instead of warning when a code
        misses ``tol``.

    Returns
    -------
    codes : (N, K) or (K,) tensor

    Examples
    --------
    >>> import torch, diffsc
    >>> basis = torch.eye(3, dtype=torch.float64)
    >>> x = torch.tensor([2.0, 0.05, -1.0], dtype=torch.float64)
    >>> diffsc.sparse_code(x, basis, prior="l1", strength=0.1)
    tensor([ 1.9000,  0.0000, -0.9000], dtype=torch.float64)
    """
    codes, _ = sparse_code_with_info(
        x,
        basis,
        family=family,
        prior=prior,
        strength=strength,
        prior_mean=prior_mean,
        tol=tol,
        max_iter=max_iter,
        init=init,
        solver=solver,
        backward=backward,
        strict=strict,
    )
    return codes


def _report(result: SolveResult, strict: bool) -> None:
    if bool(result.converged.all()):
        return
    failed = ~result.converged
    n_failed = int(failed.sum())
    worst = float(result.residual[failed].max())
    message = (
        f"{n_failed} of {result.converged.numel()} codes did not converge "
        f"(solver {result.solver!r}: worst residual {worst:.3g} > tol {result.tol:.3g} "
        f"after up to {int(result.iterations.max())} iterations); "
        "raise max_iter, loosen tol, or check the inputs' scale"
    )
    if strict:
        raise ConvergenceError(message)
    warnings.warn(message, ConvergenceWarning, stacklevel=3)
