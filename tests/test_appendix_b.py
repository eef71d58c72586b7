"""Appendix B: KL on the expanded basis [-B, B] is the signed-KL prior on B."""

import pytest
import torch

import diffsc
from helpers import problem_data


@pytest.mark.parametrize("family", ["gaussian", "softmax"])
@pytest.mark.parametrize("seed", [0, 1])
def test_expanded_kl_equals_signed_kl(family, seed):
    x, basis = problem_data(family, n=10, d=8, k=12, seed=seed)  # over-complete, not orthogonal
    lam, p = 0.3, 0.05
    signed = diffsc.sparse_code(x, basis, family=family, prior="signed_kl", strength=lam, prior_mean=p)
    expanded = diffsc.sparse_code(
        x, torch.cat([-basis, basis], 1), family=family, prior="kl", strength=lam, prior_mean=p
    )
    k = basis.shape[1]
    w_minus, w_plus = expanded[:, :k], expanded[:, k:]
    torch.testing.assert_close(w_plus - w_minus, signed, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(w_plus * w_minus, torch.full_like(signed, p**2), rtol=1e-8, atol=0)


def test_signed_kl_penalty_is_the_minimum_over_splits():
    """min over w+ - w- = d of KL(w+||p) + KL(w-||p) is the signed-KL penalty."""
    kl, signed = diffsc.get_prior("kl"), diffsc.get_prior("signed_kl")
    p = torch.tensor(0.3, dtype=torch.float64)
    for d in [-2.0, -0.1, 0.0, 0.4, 3.0]:
        w_minus = torch.logspace(-6, 1.5, 200001, dtype=torch.float64)
        w_plus = w_minus + d
        ok = w_plus > 0
        total = kl.value(w_plus[ok], p) + kl.value(w_minus[ok], p)
        expected = signed.value(torch.tensor(d, dtype=torch.float64), p)
        torch.testing.assert_close(total.min(), expected, rtol=0, atol=1e-7)
