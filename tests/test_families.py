"""Families: the matching identity, the curvature S, and the loss's zero."""

import pytest
import torch

import diffsc
from helpers import FAMILY_NAMES, random_inputs


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_matching_identity(name, gen):
    """grad_eta D_L(x || f(eta)) = f(eta) - x, so grad_w D_L = B^T (r - x) (eq. 9)."""
    family = diffsc.get_family(name)
    x = family.prepare(random_inputs(name, 4, 6, gen))
    eta = torch.randn(4, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(family.loss(x, eta).sum(), eta)
    torch.testing.assert_close(grad, family.transfer(eta) - x)


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_curvature_is_jacobian_of_transfer(name, gen):
    family = diffsc.get_family(name)
    eta = torch.randn(6, generator=gen, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(family.transfer, eta)
    r = family.transfer(eta)[None]
    u = torch.randn(1, 6, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(family.curvature_apply(r, u)[0], jac @ u[0])
    basis = torch.randn(6, 3, generator=gen, dtype=torch.float64)
    gram = family.gram(basis, r)
    gram = gram if gram.dim() == 2 else gram[0]
    torch.testing.assert_close(gram, basis.T @ jac @ basis)


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_block_gram_is_the_hessian_block_of_those_atoms(name, gen):
    family = diffsc.get_family(name)
    basis = torch.randn(6, 5, generator=gen, dtype=torch.float64)
    eta = torch.randn(2, 6, generator=gen, dtype=torch.float64)
    idx = torch.tensor([[3, 0, 4], [1, 2, 1]])  # each row's own atoms, in any order
    blocks = family.block_gram(basis.T[idx], family.transfer(eta))
    for row in range(2):
        jac = torch.autograd.functional.jacobian(family.transfer, eta[row])
        cols = basis[:, idx[row]]
        torch.testing.assert_close(blocks[row], cols.T @ jac @ cols)


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_loss_is_a_divergence(name, gen):
    """D_L >= 0, with equality when the reconstruction is the input."""
    family = diffsc.get_family(name)
    eta = torch.randn(5, 6, generator=gen, dtype=torch.float64)
    r = family.transfer(eta)
    torch.testing.assert_close(family.loss(r, eta), torch.zeros(5, dtype=torch.float64))
    x = family.prepare(random_inputs(name, 5, 6, gen))
    assert bool((family.loss(x, eta) >= 0).all())


def test_softmax_loss_is_constrained_poisson_per_word(gen):
    """Appendix D: -log P(x | n r) = n KL(x_bar || r) + C, C independent of r."""
    family = diffsc.get_family("softmax")
    counts = random_inputs("softmax", 1, 6, gen)[0]
    n = counts.sum()
    x_bar = family.prepare(counts[None])

    def nll(eta):
        rate = n * torch.softmax(eta, -1)
        return -torch.distributions.Poisson(rate).log_prob(counts).sum()

    eta1, eta2 = torch.randn(2, 6, generator=gen, dtype=torch.float64)
    lhs = nll(eta1) - nll(eta2)
    rhs = n * (family.loss(x_bar, eta1[None]) - family.loss(x_bar, eta2[None]))[0]
    torch.testing.assert_close(lhs, rhs)


def test_unknown_family():
    with pytest.raises(ValueError, match=r"family: unknown family 'laplace'"):
        diffsc.get_family("laplace")


def test_softmax_loss_exact_where_eta_is_huge():
    # Logits 2^56 apart by 16: KL(x || softmax) = log(1 + e^-16) for x on the
    # larger. logsumexp(eta) - x . eta cancels to the rounding of 2^56 (16):
    # a line search once took such a point for F = -1e15.
    family = diffsc.get_family("softmax")
    eta = torch.tensor([[2.0**56, 2.0**56 - 16, 0.0]], dtype=torch.float64)
    x = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)
    expected = torch.log1p(torch.exp(torch.tensor(-16.0, dtype=torch.float64)))
    torch.testing.assert_close(family.loss(x, eta)[0], expected, rtol=1e-8, atol=0)  # log(1 + 1e-7): 1e-9
