"""B^T B formed once for a forward solve and its backward (diffsc.gram_memo)."""

import sys

import pytest
import torch

import diffsc
from diffsc import gram_memo
from diffsc.problem import Problem
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
    def __init__(self, basis, gram=None, store=None):
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


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("transposed", [False, True])
def test_a_change_in_any_entry_is_seen(empty_cache, dtype, transposed):
    # contiguous bases are compared bytewise, others by value: the last
    # entry too (the byte count), and a non-contiguous view
    basis = torch.randn(5, 7, dtype=dtype)
    basis = basis.T if transposed else basis
    gram_memo.gram(basis), gram_memo.gram(basis)
    kept = gram_memo.gram(basis)
    assert gram_memo.gram(basis) is kept
    for index in [(0, 0), (-1, -1)]:
        basis.numpy()[index] += 1.0  # through numpy: torch's version counter does not see it
        changed = gram_memo.gram(basis)
        assert changed is not kept
        torch.testing.assert_close(changed, basis.T @ basis)
        basis.numpy()[index] -= 1.0
        kept = gram_memo.gram(basis)
        torch.testing.assert_close(kept, basis.T @ basis)


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


def test_what_a_solve_derives_is_kept_for_its_key(empty_cache):
    basis = torch.randn(7, 5, dtype=torch.float64)
    made = []

    def make(value):
        return lambda: made.append(value) or torch.tensor(value)

    assert float(gram_memo.derived(basis, "start", (1,), make(1.0))) == 1.0  # seen once: not kept
    gram_memo.derived(basis, "start", (1,), make(1.0))  # seen twice: kept from here on
    assert float(gram_memo.derived(basis, "start", (1,), make(9.0))) == 1.0 and made == [1.0, 1.0]
    assert float(gram_memo.derived(basis, "start", (2,), make(2.0))) == 2.0  # another key replaces it
    assert float(gram_memo.derived(basis, "start", (1,), make(3.0))) == 3.0
    assert made == [1.0, 1.0, 2.0, 3.0]
    basis.numpy()[0, 0] += 1.0  # changed: made anew
    assert float(gram_memo.derived(basis, "start", (1,), make(4.0))) == 4.0


@pytest.mark.parametrize("prior", ["kl", "signed_kl"])
@pytest.mark.parametrize("d, k", [(12, 16), (6, 30)])  # the ridge start from B^T x, and by its D x D system
def test_kept_ridge_starts_and_casts_give_fresh_codes(empty_cache, prior, d, k):
    x, basis = problem_data("gaussian", n=5, d=d, k=k, seed=5)
    options = dict(prior=prior, prior_mean=0.05, tol=1e-10)
    rows = (slice(0, 1), slice(0, 5))  # the factor (fewer rows than K) and the inverse
    fresh = {(strength, r.stop): diffsc.sparse_code(x[r], basis.clone(), strength=strength, **options)
             for strength in (0.1, 0.3) for r in rows}
    gram_memo._seen = gram_memo._kept = None
    for strength in (0.1, 0.1, 0.1, 0.3, 0.1):  # kept from the second call; a new strength, then the old
        for r in rows:
            codes, info = diffsc.sparse_code_with_info(x[r], basis, strength=strength, **options)
            assert bool(info.converged.all())
            torch.testing.assert_close(codes, fresh[strength, r.stop], rtol=1e-8, atol=1e-10)
    kept = gram_memo._kept
    assert kept is not None and "ridge start" in kept[2] and "basis cast" in kept[2]
    basis.numpy()[:, 0] *= 0.5  # through numpy: no version bump
    codes = diffsc.sparse_code(x, basis, strength=0.1, **options)
    torch.testing.assert_close(codes, diffsc.sparse_code(x, basis.clone(), strength=0.1, **options),
                               rtol=1e-8, atol=1e-10)
    # (a stale start or cast would still reach these codes: what is kept is checked itself)
    kept = gram_memo._kept[2]
    assert torch.equal(kept["basis cast"][1], basis.to(torch.float32))
    if k <= 2 * d:
        assert torch.equal(kept["gram cast"][1], (basis.T @ basis).to(torch.float32))
    newton_cg = sys.modules["diffsc.solvers.newton_cg"]
    start = newton_cg._RidgeStart(Problem.of("gaussian", prior), basis, torch.tensor(0.1, dtype=torch.float64),
                                  torch.tensor(0.05, dtype=torch.float64), torch.float32, 5)
    assert torch.equal(kept["ridge start"][1][0], start._map()[0])


@pytest.mark.parametrize("d, k", [(12, 16), (6, 30)])
def test_a_training_step_is_one_sighting_and_a_changing_basis_is_not_copied(empty_cache, d, k):
    x, basis = problem_data("gaussian", n=5, d=d, k=k, seed=6)
    basis.requires_grad_()
    codes = diffsc.sparse_code(x, basis, prior="kl", strength=0.1, prior_mean=0.05)
    codes.square().sum().backward()  # the backward is the same call's, not the basis coded again
    assert gram_memo._kept is None
    for _ in range(3):  # training: the basis updated in place between steps
        with torch.no_grad():
            basis -= 0.01 * basis.grad
        basis.grad = None
        diffsc.sparse_code(x, basis, prior="kl", strength=0.1, prior_mean=0.05).square().sum().backward()
    assert gram_memo._kept is None
