"""A few gaussian L1 inputs, coded without the general call's bookkeeping.

One 64x256 input took ~100 us a call where its compiled solve
(:mod:`diffsc.solvers.gram`) takes 6: the rest was about thirty torch
operations (checks, the start, the result and its report) of 2-5 us each,
and SPAMS's ``lasso`` took 66-76 us. The plainest call (gaussian family, L1
or non-negative L1 prior, at most :data:`ROWS` CPU inputs of the basis's
dtype that autograd does not record, numbers for the strength and the prior
mean, and every other option at its default) is done here in numpy around
the same compiled loop, with the same checks. Anything else takes the
general path, which also gives every refused input its error: this path
only recognises the calls it can take, and hands back any whose codes it
leaves short of ``tol``, for the general path to finish or report.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch

from . import gram_memo
from .gram_cholesky import BLOCK
from .solvers import SOLVERS, SolveResult, default_tol
from .solvers.gram import compiled_codes
from .validation import valid_max_iter, valid_tol

ROWS = BLOCK  # one block of rows: the compiled loop runs on the calling thread
_PRIORS = {"l1": False, "nonneg_l1": True}  # name -> whether codes are non-negative
_FLOAT32 = (1e-30, 1e30)  # a float32 parameter outside it takes the general path (0 or inf there)


def small_lasso(x, basis, family, prior, strength, prior_mean, tol, max_iter, init, solver, backward):
    """``(codes, SolveResult)`` as :func:`diffsc.sparse_code_with_info` returns
    them, or None where the general path must take the call."""
    if not (family == "gaussian" and type(prior) is str and prior in _PRIORS and solver is None
            and init is None and backward == "implicit"):
        return None
    if not (type(x) is torch.Tensor and type(basis) is torch.Tensor and _plain(x, basis)):
        return None
    single = x.dim() == 1
    n = 1 if single else x.shape[0]
    if tol is None:
        tol = default_tol(x.dtype)
    if max_iter is None:
        max_iter = SOLVERS["gram"][2]
    lam = _positive(strength, basis.dtype)
    if (not 1 <= n <= ROWS or lam is None or _positive(prior_mean, basis.dtype) is None
            or not (valid_tol(tol) and valid_max_iter(max_iter))):
        return None
    xs = x.numpy()
    if not math.isfinite(xs.sum()):
        return None
    k = basis.shape[1]
    with torch.no_grad():
        gram = np.ascontiguousarray(gram_memo.gram(basis).numpy())
        # A non-finite entry of B makes its column's G_kk = sum_d B_dk^2 non-finite:
        # K numbers to check instead of D K (a pass over B, 20 us at 784x256).
        if not math.isfinite(np.trace(gram)):
            return None
        c = (x.reshape(n, -1) @ basis).numpy()  # (torch's product: numpy's BLAS threads would fight torch's)
    w = np.zeros((n, k), xs.dtype)
    iterations, residual = compiled_codes(gram, c, np.full(k, lam, xs.dtype), w, _PRIORS[prior], tol, max_iter,
                                          min(basis.shape))
    if not (residual <= tol).all():
        return None
    result = SolveResult(torch.from_numpy(w), torch.from_numpy(iterations), torch.from_numpy(residual),
                         torch.ones(n, dtype=torch.bool), "gram", tol)
    if single:
        result = SolveResult(result.codes[0], result.iterations[0], result.residual[0], result.converged[0],
                             "gram", tol)
    return result.codes, result


def _plain(x, basis) -> bool:
    """CPU tensors of one float dtype, of matching shapes, that autograd does not record."""
    return (basis.dtype in (torch.float32, torch.float64) and x.dtype == basis.dtype
            and x.device.type == "cpu" and basis.device.type == "cpu"
            and not (x.requires_grad or basis.requires_grad)
            and basis.dim() == 2 and basis.shape[1] > 0 and x.dim() in (1, 2) and x.shape[-1] == basis.shape[0] > 0)


def _positive(value, dtype):
    """``value`` as a float where it is a finite number > 0 that the dtype holds, else None."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        return None
    number = float(value)
    low, high = _FLOAT32 if dtype == torch.float32 else (0.0, math.inf)
    return number if low < number < high else None

