"""The paper's footnote: a basis with two identical atoms.

KL splits the weight evenly and the code is unique; L1's is not: moving
weight between the twins leaves its objective unchanged.
"""

import torch

import diffsc
from helpers import problem_data


def _twins(seed=0):
    x, basis = problem_data("gaussian", n=4, d=10, k=4, seed=seed)
    x = x + 2 * basis[:, :1].T  # give the duplicated atom real weight
    return x, torch.cat([basis, basis[:, :1]], 1)  # atom 0 and atom 4 are identical


def test_kl_splits_evenly_whatever_the_start():
    x, basis = _twins()
    a = diffsc.sparse_code(x, basis, prior="kl", strength=0.1, prior_mean=0.01)
    start = torch.rand(4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 3
    b = diffsc.sparse_code(x, basis, prior="kl", strength=0.1, prior_mean=0.01, init=start)
    torch.testing.assert_close(a[:, 0], a[:, 4])
    torch.testing.assert_close(a, b)
    assert bool((a[:, 0] > 0.1).all())


def test_l1_is_not_unique():
    x, basis = _twins()
    problem = diffsc.Problem.of("gaussian", "l1")
    lam, p = torch.tensor(0.1, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64)
    first = diffsc.sparse_code(x, basis, prior="l1", strength=0.1)
    # Start from all the twin weight on atom 0, then on atom 4: both stay optimal.
    start = first.clone()
    start[:, 0], start[:, 4] = first[:, 0] + first[:, 4], 0.0
    on_0 = diffsc.sparse_code(x, basis, prior="l1", strength=0.1, init=start)
    on_4 = diffsc.sparse_code(x, basis, prior="l1", strength=0.1, init=start[:, [4, 1, 2, 3, 0]])
    assert bool((on_0[:, 0] > 0.3).all()) and bool((on_0[:, 4] == 0).all())
    assert bool((on_4[:, 4] > 0.3).all()) and bool((on_4[:, 0] == 0).all())
    f0 = problem.objective(x, basis, lam, p, on_0)
    f4 = problem.objective(x, basis, lam, p, on_4)
    torch.testing.assert_close(f0, f4)
    # ...and so is every split between them: the L1 code is not a function of x.
    torch.testing.assert_close(problem.objective(x, basis, lam, p, (on_0 + on_4) / 2), f0)
