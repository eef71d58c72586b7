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
forms it anew, unless the last basis coded twice in a row had the same
values (:func:`_form`: repeated L1 calls on one input of a fixed 784x256
basis, float64, took 0.20 ms instead of 1.44 ms in ``benchmarks/batch_sizes.py``).
What else a solve derives from the basis alone (the ridge start's factor,
``G`` in float32) is kept with it (:func:`derived`). Callers must not change
what they are given in place.
"""

from __future__ import annotations

import contextlib
import contextvars
import ctypes
import threading

import torch

_SCOPE = contextvars.ContextVar("diffsc_gram_scope", default=None)


class Memo:
    """The scope's basis and its Gram matrix, once formed (else None)."""

    def __init__(self, basis, gram=None, store=None):
        self.basis, self.gram, self._store = basis, gram, store

    def store(self):
        """What :func:`derived` keeps for the scope's basis: the kept entry's
        (:func:`_entry`, looked up once a scope), else the scope's own."""
        if self._store is None:
            self._store = _entry(self.basis)
            if self._store is None:
                self._store = {}
        return self._store


@contextlib.contextmanager
def scope(basis, gram=None, store=None):
    """Within it, :func:`gram` of ``basis`` is formed at most once (``gram``, if
    given, is taken as it), and what :func:`derived` makes of it likewise
    (``store``: an earlier scope's :meth:`Memo.store`, so that a backward
    does not count as the basis coded again). Yields the :class:`Memo`."""
    memo = Memo(basis, gram, store)
    token = _SCOPE.set(memo)
    try:
        yield memo
    finally:
        _SCOPE.reset(token)


def gram(basis: torch.Tensor) -> torch.Tensor:
    """``B^T B``: the scope's, if ``basis`` is its basis and autograd does not record it."""
    if torch.is_grad_enabled() and basis.requires_grad:  # autograd records it: its own, with its graph
        return basis.T @ basis
    memo = _SCOPE.get()
    if memo is None or memo.basis is not basis:
        return _form(basis)  # (no scope: kept across calls, _entry; another basis's scope: formed anew)
    if memo.gram is None:
        memo.gram = _form(basis)
    return memo.gram


def scoped(basis) -> bool:
    """Whether ``basis`` is the current scope's basis."""
    memo = _SCOPE.get()
    return memo is not None and memo.basis is basis


def derived(basis, kind, key, make):
    """``make()``, formed once for ``basis`` within a scope of it, and kept
    across calls while the basis is coded again unchanged (as its Gram
    matrix is, :func:`_form`): one of each ``kind``, for the ``key`` (a tuple
    of what else it depends on, compared by ``==``) it was made for."""
    if torch.is_grad_enabled() and basis.requires_grad:
        return make()
    memo = _SCOPE.get()
    if memo is None:
        store = _entry(basis)
    else:  # (another basis within a scope, e.g. a cast of its basis, is not a sighting of one coded again)
        store = memo.store() if memo.basis is basis else None
    if store is None:
        return make()
    made = store.get(kind)
    if made is None or made[0] != key:
        made = store[kind] = (key, make())
    return made[1]


def values_key(tensor):
    """A :func:`derived` key for a small tensor's values (a strength, its dtype and device)."""
    return tensor.dtype, tensor.device, tuple(tensor.shape), tuple(tensor.detach().reshape(-1).tolist())


#: The last basis's memory seen, ``(where, version)``, and what is kept
#: across calls, ``(where, the basis's values then, {kind: (key, made)})``:
#: see :func:`_entry`.
_seen = None
_kept = None
_LOCK = threading.Lock()


def _where(basis):
    return basis.data_ptr(), tuple(basis.shape), basis.stride(), basis.dtype, basis.device


def _form(basis):
    """``B^T B``, kept across calls for a basis coded again unchanged (:func:`_entry`)."""
    return derived(basis, "gram", (), lambda: basis.T @ basis)


def _entry(basis):
    """What is kept for ``basis`` across calls, or None.

    A basis seen twice in a row at the same memory and version (inference
    with a fixed model, an estimator's ``transform`` on a stream) has its
    values kept, and from then on what :func:`derived` makes of it; a later
    call whose basis has those very values (:func:`_same_values`: one pass
    over ``B`` against ``D K^2`` multiply-adds for ``G``) takes them. A basis that
    changes between calls (training) is never copied. Equal values are the
    test, so a change the version does not see (through a numpy view)
    cannot reuse a stale ``G``."""
    global _seen, _kept
    where = _where(basis)
    with _LOCK:
        kept = _kept
    if kept is not None and kept[0] == where and _same_values(kept[1], basis):
        return kept[2]
    seen = (where, basis._version)
    with _LOCK:
        twice = _seen == seen
        if twice:
            kept = _kept = (where, basis.detach().clone(), {})
        _seen = seen
    return kept[2] if twice else None


def _libc_memcmp():
    try:
        memcmp = ctypes.CDLL(None).memcmp
    except (OSError, TypeError, AttributeError):  # no C library in the process's namespace (Windows)
        return None
    memcmp.restype, memcmp.argtypes = ctypes.c_int, (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)
    return memcmp


_memcmp = _libc_memcmp()


def _same_values(kept, basis):
    """Whether ``basis`` holds the kept copy's values (same shape and dtype).

    Contiguous CPU tensors have their bytes compared by the C library's
    ``memcmp``: 2.8 us at 64x256 float64 and 39 us at 784x256, where
    ``torch.equal`` took 12.5 and 58 (a call on one input takes 80-190 us).
    Bytes, not values: the same bits give the same products, and a 0 where
    -0 was reads as a change (``G`` is formed again, equal to the kept)."""
    if (_memcmp is not None and kept.device.type == "cpu" and basis.device.type == "cpu"
            and kept.is_contiguous() and basis.is_contiguous()):
        return _memcmp(kept.data_ptr(), basis.data_ptr(), basis.numel() * basis.element_size()) == 0
    return torch.equal(kept, basis)
