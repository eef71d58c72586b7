"""Seeded random problems for every family, float64 by default."""

import torch

import diffsc

FAMILY_NAMES = sorted(diffsc.FAMILIES)
SMOOTH_PRIORS = ["uniform", "l2", "kl", "signed_kl"]
STRICT_PRIORS = ["l2", "kl", "signed_kl"]  # strictly convex: codes unique for any basis
L1_PRIORS = ["l1", "nonneg_l1"]


def random_basis(d, k, generator, dtype=torch.float64):
    basis = torch.randn(d, k, generator=generator, dtype=dtype)
    return basis / basis.norm(dim=0)


def random_inputs(family, n, d, generator, dtype=torch.float64):
    """Inputs in the family's domain: reals, counts, or values in [0, 1]."""
    z = torch.randn(n, d, generator=generator, dtype=dtype)
    if family == "gaussian":
        return z
    if family in ("softmax", "poisson"):
        counts = torch.poisson(2 * z.square(), generator=generator)
        counts[:, 0] += 1  # every document has at least one word
        return counts
    return torch.sigmoid(2 * z)


def problem_data(family, n=6, d=8, k=5, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return random_inputs(family, n, d, g, dtype), random_basis(d, k, g, dtype)


def planted(n, d, k, seed, density=0.05):
    """Sparse gaussian combinations of unit-norm atoms plus 10% noise, float64."""
    g = torch.Generator().manual_seed(seed)
    basis = random_basis(d, k, g)
    codes = torch.randn(n, k, generator=g, dtype=torch.float64) * (torch.rand(n, k, generator=g, dtype=torch.float64) < density)
    clean = codes @ basis.T
    return clean + 0.1 * torch.randn(n, d, generator=g, dtype=torch.float64) * clean.std(), basis
