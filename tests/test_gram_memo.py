"""B^T B formed once for a forward solve and its backward (diffsc.gram_memo)."""

import pytest
import torch

import diffsc
from diffsc import gram_memo
from helpers import problem_data


def test_the_scope_keeps_its_basis_gram_only():
    basis = torch.randn(6, 4, dtype=torch.float64)
    assert gram_memo.gram(basis) is not gram_memo.gram(basis)  # no scope: formed anew
    with gram_memo.scope(basis) as memo:
        first = gram_memo.gram(basis)
        assert gram_memo.gram(basis) is first and memo.gram is first
        torch.testing.assert_close(first, basis.T @ basis)
        other = basis.clone()  # equal values, another tensor: formed anew
        assert gram_memo.gram(other) is not first
    given = torch.eye(4, dtype=torch.float64)
    with gram_memo.scope(basis, given):
        assert gram_memo.gram(basis) is given


def test_autograd_recording_forms_its_own():
    basis = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    with gram_memo.scope(basis):
        recorded = gram_memo.gram(basis)
        assert recorded.grad_fn is not None and gram_memo.gram(basis) is not recorded
        with torch.no_grad():
            kept = gram_memo.gram(basis)
            assert kept.grad_fn is None and gram_memo.gram(basis) is kept


@pytest.mark.parametrize("prior", ["l1", "kl"])
def test_one_gram_for_a_forward_and_its_backward(prior, monkeypatch):
    # gaussian on the CPU, K <= 2D: the solver, its float32 phase, the ridge
    # start and the backward's Hessian solve all take G
    x, basis = problem_data("gaussian", n=20, d=12, k=16, seed=3)
    basis.requires_grad_()
    formed = []
    form = gram_memo._form
    monkeypatch.setattr(gram_memo, "_form", lambda b: formed.append(b) or form(b))
    codes = diffsc.sparse_code(x, basis, prior=prior, strength=0.1, prior_mean=0.05)
    (grad,) = torch.autograd.grad(codes.square().sum(), basis)
    assert len(formed) == 1
    monkeypatch.setattr(gram_memo, "scope", _no_memo)  # the same gradient, every G formed anew
    codes_again = diffsc.sparse_code(x, basis, prior=prior, strength=0.1, prior_mean=0.05)
    (grad_again,) = torch.autograd.grad(codes_again.square().sum(), basis)
    assert len(formed) > 2
    torch.testing.assert_close(grad, grad_again, rtol=1e-9, atol=1e-12)


class _no_memo:
    def __init__(self, basis, gram=None):
        self.memo = gram_memo.Memo(basis)

    def __enter__(self):
        return self.memo

    def __exit__(self, *exc):
        return False


@pytest.fixture
def empty_cache(monkeypatch):
    monkeypatch.setattr(gram_memo, "_seen", None)
    monkeypatch.setattr(gram_memo, "_kept", None)


def test_a_basis_coded_twice_unchanged_keeps_its_gram(empty_cache):
    basis = torch.randn(7, 5, dtype=torch.float64)
    first = gram_memo.gram(basis)
    second = gram_memo.gram(basis)  # seen twice: kept from here on
    assert first is not second and gram_memo.gram(basis) is second
    torch.testing.assert_close(second, basis.T @ basis)


def test_a_kept_gram_is_never_stale(empty_cache):
    basis = torch.randn(7, 5, dtype=torch.float64)
    gram_memo.gram(basis), gram_memo.gram(basis)
    kept = gram_memo.gram(basis)
    basis.numpy()[0, 0] += 1.0  # through numpy: torch's version counter does not see it
    changed = gram_memo.gram(basis)
    assert changed is not kept
    torch.testing.assert_close(changed, basis.T @ basis)
    same_values = basis.clone()  # other memory, equal values: formed anew, equal
    torch.testing.assert_close(gram_memo.gram(same_values), changed)


def test_a_basis_changed_between_calls_is_not_copied(empty_cache):
    basis = torch.randn(7, 5, dtype=torch.float64)
    for _ in range(4):  # a training loop: updated in place each step
        gram_memo.gram(basis)
        basis.add_(0.01)
    assert gram_memo._kept is None


def test_codes_after_a_basis_changed_in_place_through_numpy(empty_cache):
    x, basis = problem_data("gaussian", n=10, d=12, k=16, seed=4)
    for _ in range(3):
        diffsc.sparse_code(x, basis, prior="l1", strength=0.1)
    basis.numpy()[:, 0] *= 0.5  # no version bump
    codes = diffsc.sparse_code(x, basis, prior="l1", strength=0.1)
    fresh = diffsc.sparse_code(x, basis.clone(), prior="l1", strength=0.1)
    torch.testing.assert_close(codes, fresh)
