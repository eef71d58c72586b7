"""SPEC §1.3: with B = I and squared loss each coordinate has a closed form."""

import numpy as np
import pytest
import scipy.optimize
import scipy.special
import torch

import diffsc

LAM, P = 0.5, 0.2
X = torch.linspace(-3, 3, 61, dtype=torch.float64)[:, None].repeat(1, 2)
X[:, 1] = X[:, 1] * 0.37 + 0.05  # a second, different column


def codes(prior, x=X, **kw):
    basis = torch.eye(x.shape[1], dtype=torch.float64)
    return diffsc.sparse_code(x, basis, prior=prior, strength=LAM, prior_mean=P, tol=1e-13, **kw)


def test_uniform_is_identity():
    torch.testing.assert_close(codes("uniform"), X)


def test_l2_shrinks():
    torch.testing.assert_close(codes("l2"), X / (1 + LAM))


@pytest.mark.parametrize("prior", ["l1", "nonneg_l1"])
def test_l1_soft_threshold(prior):
    expected = torch.sign(X) * torch.relu(X.abs() - LAM)
    if prior == "nonneg_l1":
        expected = torch.relu(expected)
    torch.testing.assert_close(codes(prior), expected, atol=1e-12, rtol=0)


def test_kl_lambert_w():
    """w = lam W0((p / lam) exp(x / lam)), the principal branch."""
    arg = (P / LAM) * np.exp(X.numpy() / LAM)
    expected = LAM * scipy.special.lambertw(arg, 0).real
    torch.testing.assert_close(codes("kl"), torch.from_numpy(expected), rtol=1e-10, atol=1e-12)


def test_signed_kl_root():
    """The unique root of w + lam asinh(w / 2p) = x, found by bracketing."""
    def root(x):
        return scipy.optimize.brentq(lambda w: w + LAM * np.arcsinh(w / (2 * P)) - x, -10, 10, xtol=1e-15)

    expected = torch.tensor([[root(v) for v in row] for row in X.numpy()], dtype=torch.float64)
    torch.testing.assert_close(codes("signed_kl"), expected, rtol=1e-10, atol=1e-12)


def test_per_atom_strength_and_mean():
    """A (K,) strength and mean act coordinate by coordinate."""
    lam = torch.tensor([0.2, 1.5], dtype=torch.float64)
    p = torch.tensor([0.05, 0.5], dtype=torch.float64)
    basis = torch.eye(2, dtype=torch.float64)
    w = diffsc.sparse_code(X, basis, prior="kl", strength=lam, prior_mean=p, tol=1e-13)
    lam_np, p_np = lam.numpy(), p.numpy()
    expected = lam_np * scipy.special.lambertw((p_np / lam_np) * np.exp(X.numpy() / lam_np)).real
    torch.testing.assert_close(w, torch.from_numpy(expected), rtol=1e-10, atol=1e-12)


def test_kl_at_zero_input_is_near_the_mean():
    """No data: x = 0 gives w = lam W0(p / lam), which tends to p as p / lam -> 0."""
    w = diffsc.sparse_code(torch.zeros(1, 1, dtype=torch.float64), torch.eye(1, dtype=torch.float64),
                           prior="kl", strength=1.0, prior_mean=1e-3)
    assert abs(w.item() - 1e-3) < 2e-6
