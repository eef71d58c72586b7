"""Every bad input raises a clear error that names the argument."""

import numpy as np
import pytest
import torch

import diffsc

D, K = 8, 5


def data():
    g = torch.Generator().manual_seed(0)
    return torch.rand(4, D, generator=g, dtype=torch.float64), torch.randn(D, K, generator=g, dtype=torch.float64)


def nan_at(t, index=(0, 0)):
    t = t.clone()
    t[index] = float("nan")
    return t


def inf_at(t, index=(0, 0)):
    t = t.clone()
    t[index] = float("inf")
    return t


X, B = data()

CASES = [
    # (description, kwargs for sparse_code, exception, message regex)
    ("x with NaN", dict(x=nan_at(X)), ValueError, r"^x: contains NaN or infinite values$"),
    ("x with inf", dict(x=inf_at(X)), ValueError, r"^x: contains NaN or infinite values$"),
    ("basis with NaN", dict(basis=nan_at(B)), ValueError, r"^basis: contains NaN or infinite values$"),
    ("basis 1-D", dict(basis=B[:, 0]), ValueError, r"^basis: expected a 2-D \(D, K\) matrix, got shape \(8,\)$"),
    ("basis empty", dict(basis=B[:, :0]), ValueError, r"^basis: has an empty dimension, shape \(8, 0\)$"),
    ("basis integer", dict(basis=B.long()), TypeError, r"^basis: dtype torch.int64 is not supported; use float32 or float64$"),
    ("x 3-D", dict(x=X[None]), ValueError, r"^x: expected shape \(N, D\) or \(D,\), got \(1, 4, 8\)$"),
    ("x wrong D", dict(x=X[:, :5]), ValueError, r"^x: has 5 features but the basis has D = 8 rows$"),
    ("empty batch", dict(x=X[:0]), ValueError, r"^x: empty batch \(N = 0\)$"),
    ("x float32", dict(x=X.float()), TypeError, r"^x: dtype torch.float32 differs from the basis's torch.float64; convert one of them$"),
    ("x not numbers", dict(x=[["a"] * D]), TypeError, r"^x: expected numbers, got an array of dtype <U1$"),
    ("x on another device", dict(x=X.to("meta")), ValueError, r"^x: on device meta but the basis is on cpu$"),
    ("negative counts", dict(x=X - 0.5, family="softmax"), ValueError, r"^x: the softmax family takes non-negative counts; found negative entries$"),
    ("empty document", dict(x=X * torch.tensor([[0.0], [1], [1], [1]], dtype=torch.float64), family="softmax"), ValueError,
     r"^x: the softmax family needs every row \(document\) to have a positive total count$"),
    ("negative poisson counts", dict(x=X - 0.5, family="poisson"), ValueError, r"^x: the poisson family takes non-negative counts; found negative entries$"),
    ("bernoulli outside [0, 1]", dict(x=X + 0.5, family="bernoulli"), ValueError, r"^x: the bernoulli family takes inputs in \[0, 1\]$"),
    ("strength zero", dict(strength=0.0), ValueError, r"^strength: must be > 0, got 0$"),
    ("strength negative per atom", dict(strength=torch.tensor([0.1, 0.1, -1.0, 0.1, 0.1], dtype=torch.float64)), ValueError, r"^strength: must be > 0, got -1$"),
    ("strength NaN", dict(strength=float("nan")), ValueError, r"^strength: contains NaN or infinite values$"),
    ("strength wrong shape", dict(strength=np.ones(3)), ValueError,
     r"^strength: expected a scalar or one value per atom \(shape \(5,\)\), got shape \(3,\)$"),
    ("strength float32", dict(strength=torch.tensor(0.1)), TypeError, r"^strength: dtype torch.float32 differs from the basis's torch.float64$"),
    ("prior mean zero", dict(prior_mean=0.0), ValueError, r"^prior_mean: must be > 0, got 0$"),
    ("prior mean negative", dict(prior_mean=-0.5), ValueError, r"^prior_mean: must be > 0, got -0.5$"),
    ("prior mean inf", dict(prior_mean=float("inf")), ValueError, r"^prior_mean: contains NaN or infinite values$"),
    ("strength below float32's range", dict(strength=1e-50, dtype=torch.float32), ValueError,
     r"^strength: must be > 0, got 0$"),
    ("prior mean beyond float32's range", dict(prior_mean=1e39, dtype=torch.float32), ValueError,
     r"^prior_mean: contains NaN or infinite values$"),
    ("strength on another device", dict(strength=torch.tensor(0.1, dtype=torch.float64, device="meta")), ValueError,
     r"^strength: on device meta but the basis is on cpu$"),
    ("tol zero", dict(tol=0.0), ValueError, r"^tol: must be a number in \(0, 1\), got 0.0$"),
    ("max_iter zero", dict(max_iter=0), ValueError, r"^max_iter: must be a positive integer, got 0$"),
    ("max_iter float", dict(max_iter=2.5), ValueError, r"^max_iter: must be a positive integer, got 2.5$"),
    ("backward unknown", dict(backward="adjoint"), ValueError, r"^backward: must be one of \('implicit', 'unrolled'\), got 'adjoint'$"),
    ("family unknown", dict(family="laplace"), ValueError, r"^family: unknown family 'laplace'; choose one of"),
    ("prior unknown", dict(prior="cauchy"), ValueError, r"^prior: unknown prior 'cauchy'; choose one of"),
    ("solver unknown", dict(solver="admm"), ValueError, r"^solver: unknown solver 'admm'; choose one of \['active_set', 'eg', 'fista', 'gram', 'newton', 'newton_cg', 'prox_newton'\]$"),
    ("solver for the wrong prior", dict(solver="eg", prior="l1"), ValueError, r"^solver: 'eg' cannot solve the 'l1' prior$"),
    ("init wrong shape", dict(init=torch.ones(4, 3, dtype=torch.float64)), ValueError, r"^init: expected shape \(4, 5\), got \(4, 3\)$"),
    ("init NaN", dict(init=nan_at(torch.ones(4, K, dtype=torch.float64))), ValueError, r"^init: contains NaN or infinite values$"),
    ("init float32", dict(init=torch.ones(4, K)), TypeError, r"^init: must match the basis's dtype and device"),
]


@pytest.mark.parametrize(("kwargs", "error", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_named(kwargs, error, message):
    kwargs = dict(kwargs)
    x, basis = kwargs.pop("x", X), kwargs.pop("basis", B)
    if "dtype" in kwargs:  # the inputs in another dtype
        dtype = kwargs.pop("dtype")
        x, basis = x.to(dtype), basis.to(dtype)
    with pytest.raises(error, match=message):
        diffsc.sparse_code(x, basis, **kwargs)


def test_error_happens_before_any_work_for_both_entry_points():
    with pytest.raises(ValueError, match=r"^strength: must be > 0"):
        diffsc.sparse_code_with_info(X, B, strength=-1.0)
