"""``G = B^T B`` formed once for a forward solve and its backward.

A call may need the Gram matrix in several places: the solver, its float64
finish, the backward's Hessian solve. On a small batch forming it is most
of the work (784x256, float64: 1.2 ms, where one code's KL solve takes
2-3 ms). Inside :func:`scope` the first :func:`gram` of the scope's basis
(that very tensor) is kept and later ones reuse it; the autograd layer
(:class:`diffsc.layer.SparseCodeFunction`) carries it from the forward to
the backward, as it carries the basis itself (autograd refuses a backward
whose saved basis was changed in place since). Outside a scope, or where
autograd records through the product (unrolled backward), :func:`gram`
forms it anew. Callers must not change it in place.
"""

from __future__ import annotations

import contextlib
import contextvars

import torch

_SCOPE = contextvars.ContextVar("diffsc_gram_scope", default=None)


class Memo:
    """The scope's basis and its Gram matrix, once formed (else None)."""

    def __init__(self, basis, gram=None):
        self.basis, self.gram = basis, gram


@contextlib.contextmanager
def scope(basis, gram=None):
    """Within it, :func:`gram` of ``basis`` is formed at most once (``gram``, if
    given, is taken as it). Yields the :class:`Memo`."""
    memo = Memo(basis, gram)
    token = _SCOPE.set(memo)
    try:
        yield memo
    finally:
        _SCOPE.reset(token)


def gram(basis: torch.Tensor) -> torch.Tensor:
    """``B^T B``: the scope's, if ``basis`` is its basis and autograd does not record it."""
    memo = _SCOPE.get()
    if memo is None or memo.basis is not basis or (torch.is_grad_enabled() and basis.requires_grad):
        return _form(basis)
    if memo.gram is None:
        memo.gram = _form(basis)
    return memo.gram


def _form(basis):
    return basis.T @ basis
