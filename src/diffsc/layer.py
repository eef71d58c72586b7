"""The torch autograd Function: solve forward, implicit pullback backward."""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from . import gram_memo
from .implicit import pullback
from .solvers import solve


class SparseCodeFunction(torch.autograd.Function):
    """``codes = argmin_w F(w; x, basis, lam, p)`` with the implicit backward.

    Forward returns ``(codes, residual, iterations, converged)``; only the
    codes are differentiable. The saved tensors are the inputs and the codes,
    so backward memory does not depend on the solver's iteration count.
    """

    @staticmethod
    def forward(ctx, x, basis, lam, p, problem, options):
        with gram_memo.scope(basis) as memo:  # B^T B formed once, for the backward too
            result = solve(problem, x, basis, lam, p, **options)
        ctx.problem, ctx.gram, ctx.store = problem, memo.gram, memo.store()
        ctx.save_for_backward(x, basis, lam, p, result.codes)
        ctx.mark_non_differentiable(result.residual, result.iterations, result.converged)
        return result.codes, result.residual, result.iterations, result.converged

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_codes, *_):
        x, basis, lam, p, w = ctx.saved_tensors
        with gram_memo.scope(basis, ctx.gram, ctx.store):
            grads = pullback(ctx.problem, x, basis, lam, p, w, grad_codes, ctx.needs_input_grad[:4])
        return (*grads, None, None)
