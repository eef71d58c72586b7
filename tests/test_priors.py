"""Priors: gradients, curvatures and mixed derivatives against autograd; the prox."""

import pytest
import torch

import diffsc
from helpers import L1_PRIORS, SMOOTH_PRIORS


def _codes(name, gen):
    w = torch.randn(3, 4, generator=gen, dtype=torch.float64)
    return w.abs() + 0.1 if name == "kl" else w


def _grad(out, inp, create_graph=False):
    """d out / d inp, zero where out does not depend on inp (uniform, L2)."""
    if not out.requires_grad:
        return torch.zeros_like(inp)
    return torch.autograd.grad(out, inp, create_graph=create_graph)[0]


def _mean():
    return torch.tensor([0.3, 0.1, 1.0, 2.0], dtype=torch.float64)


@pytest.mark.parametrize("name", SMOOTH_PRIORS)
def test_gradient_and_curvature_match_autograd(name, gen):
    prior = diffsc.get_prior(name)
    w = _codes(name, gen).requires_grad_()
    p = _mean()
    grad = _grad(prior.value(w, p).sum(), w, create_graph=True)
    torch.testing.assert_close(grad, prior.grad(w, p))
    curv = _grad(grad.sum(), w)  # elementwise prior: diagonal Hessian
    torch.testing.assert_close(curv, prior.curvature(w, p))


@pytest.mark.parametrize("name", SMOOTH_PRIORS)
def test_grad_mean_matches_autograd(name, gen):
    prior = diffsc.get_prior(name)
    w = _codes(name, gen)
    p = _mean().requires_grad_()
    mixed = _grad(prior.grad(w, p).sum(), p)
    torch.testing.assert_close(mixed, prior.grad_mean(w, p).sum(0))


@pytest.mark.parametrize("name", SMOOTH_PRIORS)
def test_metric_scale(name, gen):
    """d^2 * R'' is the scaled curvature (1, or 0 for the uniform prior)."""
    prior = diffsc.get_prior(name)
    w, p = _codes(name, gen), _mean()
    d = prior.metric_scale(w, p)
    expected = prior.scaled_curvature(w, p)
    torch.testing.assert_close(d.square() * prior.curvature(w, p), expected)


@pytest.mark.parametrize("name", SMOOTH_PRIORS)
def test_mirror_curve_leaves_along_the_step(name, gen):
    """w(t) with s(w(t)) = s(w) + t s'(w) step: w(0) = w and w'(0) = step (Armijo's slope)."""
    prior = diffsc.get_prior(name)
    w, p = _codes(name, gen), _mean()
    step = 0.1 * torch.randn(3, 4, generator=gen, dtype=torch.float64)
    ds = prior.mirror_derivative(w, p) * step
    torch.testing.assert_close(prior.mirror_curve(w, p, ds, 0.0), w)
    h = 1e-6
    deriv = (prior.mirror_curve(w, p, ds, h) - prior.mirror_curve(w, p, ds, -h)) / (2 * h)
    torch.testing.assert_close(deriv, step, rtol=1e-6, atol=1e-8)


def test_kl_mean_is_the_minimiser():
    prior = diffsc.get_prior("kl")
    p = _mean()
    w = torch.linspace(0.01, 3, 500, dtype=torch.float64)[:, None]
    values = prior.value(w, p)
    best = w[values.argmin(0), 0]
    torch.testing.assert_close(best, p, atol=0.01, rtol=0)
    torch.testing.assert_close(prior.value(p[None], p), torch.zeros(1, 4, dtype=torch.float64))


@pytest.mark.parametrize("name", L1_PRIORS)
def test_prox_is_the_argmin(name, gen):
    prior = diffsc.get_prior(name)
    v = 2 * torch.randn(20, generator=gen, dtype=torch.float64)
    threshold = 0.7
    grid = torch.linspace(-6, 6, 120001, dtype=torch.float64)
    if prior.nonnegative:
        grid = grid[grid >= 0]
    objective = 0.5 * (grid[None] - v[:, None]).square() + threshold * prior.value(grid[None], None)
    brute = grid[objective.argmin(1)]
    torch.testing.assert_close(prior.prox(v, threshold), brute, atol=2e-4, rtol=0)


def test_unknown_prior():
    with pytest.raises(ValueError, match=r"prior: unknown prior 'cauchy'"):
        diffsc.get_prior("cauchy")
