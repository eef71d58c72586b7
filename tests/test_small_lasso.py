"""The small gaussian L1 call's fast path: the general path's codes, or no answer."""

import math
import warnings

import numpy as np
import pytest
import torch

import diffsc
from diffsc import gram_memo
from diffsc import small_lasso as quick
from helpers import problem_data

ARGS = dict(family="gaussian", prior="l1", strength=0.1, prior_mean=0.01, tol=None, max_iter=None, init=None,
            solver=None, backward="implicit")


def _call(x, basis, **changes):
    return quick.small_lasso(x, basis, **{**ARGS, **changes})


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("prior", ["l1", "nonneg_l1"])
@pytest.mark.parametrize("n", [1, 5, quick.ROWS])
def test_same_codes_and_diagnostics_as_the_general_path(n, prior, dtype):
    x, basis = problem_data("gaussian", n=n, d=12, k=30, seed=n, dtype=dtype)
    lam = 0.05 * float((x @ basis).abs().max())
    codes, info = _call(x, basis, prior=prior, strength=lam)
    # the general path (solver named: the fast path declines it)
    ref, ref_info = diffsc.sparse_code_with_info(x, basis, prior=prior, strength=lam, solver="gram")
    assert codes.dtype == dtype and codes.shape == ref.shape
    torch.testing.assert_close(codes, ref, rtol=0, atol=0)
    for name in ("iterations", "residual", "converged"):
        torch.testing.assert_close(getattr(info, name), getattr(ref_info, name), rtol=0, atol=0)
    assert (info.solver, info.tol) == (ref_info.solver, ref_info.tol)
    assert int((codes != 0).sum()) > 0
    # the public call takes it
    public, _ = diffsc.sparse_code_with_info(x, basis, prior=prior, strength=lam)
    torch.testing.assert_close(public, codes, rtol=0, atol=0)


def test_one_input_gives_one_code():
    x, basis = problem_data("gaussian", n=1, d=12, k=30, seed=1)
    codes, info = _call(x[0], basis)
    ref, ref_info = diffsc.sparse_code_with_info(x[0], basis, prior="l1", strength=0.1, solver="gram")
    assert codes.shape == (30,) and info.iterations.dim() == 0 and bool(info.converged)
    torch.testing.assert_close(codes, ref, rtol=0, atol=0)
    torch.testing.assert_close(info.residual, ref_info.residual, rtol=0, atol=0)


def _declined():
    x, basis = problem_data("gaussian", n=3, d=12, k=30, seed=2)
    nan_x, inf_basis = x.clone(), basis.clone()
    nan_x[1, 2] = math.nan
    inf_basis[4, 7] = math.inf
    big = problem_data("gaussian", n=quick.ROWS + 1, d=12, k=30, seed=2)[0]
    cases = {
        "softmax family": (x, basis, dict(family="softmax")),
        "kl prior": (x, basis, dict(prior="kl")),
        "a tensor strength": (x, basis, dict(strength=torch.tensor(0.1, dtype=torch.float64))),
        "strength 0": (x, basis, dict(strength=0.0)),
        "strength nan": (x, basis, dict(strength=math.nan)),
        "prior mean -1": (x, basis, dict(prior_mean=-1.0)),
        "a float32 strength that rounds to 0": (x.float(), basis.float(), dict(strength=1e-50)),
        "tol 1": (x, basis, dict(tol=1.0)),
        "max_iter 0": (x, basis, dict(max_iter=0)),
        "an init": (x, basis, dict(init=torch.zeros(3, 30, dtype=torch.float64))),
        "a named solver": (x, basis, dict(solver="gram")),
        "unrolled backward": (x, basis, dict(backward="unrolled")),
        "more rows than a block": (big, basis, {}),
        "an empty batch": (x[:0], basis, {}),
        "numpy inputs": (x.numpy(), basis, {}),
        "a basis that requires grad": (x, basis.clone().requires_grad_(), {}),
        "mismatched dtypes": (x.float(), basis, {}),
        "mismatched features": (x[:, :11], basis, {}),
        "a NaN input": (nan_x, basis, {}),
        "an infinite basis entry": (x, inf_basis, {}),
        "codes left short (max_iter 1)": (x, basis, dict(strength=0.001, max_iter=1)),
    }
    return cases


@pytest.mark.parametrize("case", list(_declined()))
def test_declines_what_the_general_path_must_take(case):
    x, basis, changes = _declined()[case]
    assert _call(x, basis, **changes) is None


@pytest.mark.parametrize("case, error", [
    ("a NaN input", "x: contains NaN"),
    ("an infinite basis entry", "basis: contains NaN"),
    ("strength 0", "strength: must be > 0"),
    ("prior mean -1", "prior_mean: must be > 0"),
    ("an empty batch", "empty batch"),
    ("mismatched features", "features"),
])
def test_refused_inputs_keep_their_errors(case, error):
    x, basis, changes = _declined()[case]
    args = {name: value for name, value in {**ARGS, **changes}.items() if value is not None}
    with pytest.raises(ValueError, match=error):
        diffsc.sparse_code_with_info(x, basis, **args)


def test_codes_left_short_are_reported_by_the_general_path():
    x, basis, changes = _declined()["codes left short (max_iter 1)"]
    with pytest.warns(diffsc.ConvergenceWarning):
        diffsc.sparse_code_with_info(x, basis, prior="l1", **changes)


def test_a_basis_coded_again_unchanged_keeps_its_gram_matrix(monkeypatch):
    # (a fresh record: a basis freed by an earlier test may have left this memory's sighting)
    monkeypatch.setattr(gram_memo, "_seen", None)
    monkeypatch.setattr(gram_memo, "_kept", None)
    x, basis = problem_data("gaussian", n=2, d=12, k=30, seed=5)
    formed = []
    original = torch.Tensor.__matmul__

    def counting(a, b):
        if a.shape == (30, 12) and b.shape == (12, 30):
            formed.append(1)
        return original(a, b)

    monkeypatch.setattr(torch.Tensor, "__matmul__", counting)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        first = [_call(x, basis)[0] for _ in range(4)]
    assert len(formed) == 2  # the third call on takes the kept G (gram_memo)
    for codes in first[1:]:
        assert np.array_equal(codes.numpy(), first[0].numpy())
    # a change in place is seen: G formed anew, codes of the changed basis
    basis.mul_(2)
    changed = _call(x, basis)[0]
    assert len(formed) == 3
    torch.testing.assert_close(changed, diffsc.sparse_code(x, basis, prior="l1", strength=0.1, solver="gram"),
                               rtol=0, atol=0)
