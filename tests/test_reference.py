"""Against independent solvers: scikit-learn's Lasso and scipy's L-BFGS-B."""

import numpy as np
import pytest
import scipy.optimize
import torch
from sklearn.linear_model import Lasso

import diffsc
from helpers import problem_data


@pytest.mark.parametrize("solver", ["gram", "active_set", "fista", "prox_newton"])
@pytest.mark.parametrize("prior", ["l1", "nonneg_l1"])
@pytest.mark.parametrize("seed", range(3))
def test_l1_equals_sklearn_lasso(prior, seed, solver):
    """Lasso minimises 1/(2 n_samples) ||y - X w||^2 + alpha ||w||_1 with the
    D rows of the basis as samples, so alpha = lam / D."""
    x, basis = problem_data("gaussian", n=5, d=20, k=30, seed=seed)
    lam = 0.2
    ours = diffsc.sparse_code(x, basis, prior=prior, strength=lam, solver=solver)
    lasso = Lasso(alpha=lam / basis.shape[0], fit_intercept=False, tol=1e-14, max_iter=200000,
                  positive=prior == "nonneg_l1")
    for row, code in zip(x.numpy(), ours.numpy()):
        lasso.fit(basis.numpy(), row)
        np.testing.assert_allclose(code, lasso.coef_, atol=1e-7)
    assert (ours == 0).any(), "the test should exercise sparsity"


@pytest.mark.parametrize("family", ["gaussian", "softmax"])
@pytest.mark.parametrize("prior", ["kl", "signed_kl", "l2"])
def test_smooth_priors_equal_lbfgsb(family, prior):
    x, basis = problem_data(family, n=4, d=10, k=7, seed=3)
    lam, p = 0.2, 0.1
    problem = diffsc.Problem.of(family, prior)
    target = problem.family.prepare(x)
    ours = diffsc.sparse_code(x, basis, family=family, prior=prior, strength=lam, prior_mean=p)
    lam_t, p_t = torch.tensor(lam, dtype=torch.float64), torch.tensor(p, dtype=torch.float64)
    bounds = [(1e-14, None)] * basis.shape[1] if prior == "kl" else None
    for row, code in zip(target, ours):

        def f_and_grad(w):
            w_t = torch.tensor(w[None], requires_grad=True)
            f = problem.objective(row[None], basis, lam_t, p_t, w_t).sum()
            (g,) = torch.autograd.grad(f, w_t)
            return f.item(), g[0].numpy()

        start = np.full(basis.shape[1], p)
        ref = scipy.optimize.minimize(f_and_grad, start, jac=True, method="L-BFGS-B", bounds=bounds,
                                      options={"ftol": 1e-15, "gtol": 1e-11, "maxiter": 10000})
        np.testing.assert_allclose(code.numpy(), ref.x, atol=1e-6)
        assert problem.objective(row[None], basis, lam_t, p_t, code[None]).item() <= ref.fun + 1e-12


@pytest.mark.parametrize("family", ["softmax", "poisson", "bernoulli"])
@pytest.mark.parametrize("prior", ["l1", "nonneg_l1"])
@pytest.mark.parametrize("solver", ["prox_newton", "active_set"])
def test_l1_of_other_families_equals_lbfgsb_on_split_codes(family, prior, solver):
    """L1 codes of a non-quadratic loss against L-BFGS-B on ``w = u - v``,
    ``u, v >= 0``, where ``lam |w|_1`` is the linear ``lam (u + v)``."""
    x, basis = problem_data(family, n=4, d=12, k=8, seed=5)
    lam = 0.05
    problem = diffsc.Problem.of(family, prior)
    target = problem.family.prepare(x)
    ours, info = diffsc.sparse_code_with_info(x, basis, family=family, prior=prior, strength=lam, solver=solver)
    assert info.solver == solver and info.all_converged
    k = basis.shape[1]
    split = prior == "l1"
    zero = torch.tensor(0.0, dtype=torch.float64)
    for row, code in zip(target, ours):

        def f_and_grad(uv):
            uv_t = torch.tensor(uv, requires_grad=True)
            w = uv_t[:k] - uv_t[k:] if split else uv_t
            f = problem.family.loss(row[None], w[None] @ basis.T).sum() + lam * uv_t.sum()
            (g,) = torch.autograd.grad(f, uv_t)
            return f.item(), g.numpy()

        size = 2 * k if split else k
        ref = scipy.optimize.minimize(f_and_grad, np.zeros(size), jac=True, method="L-BFGS-B",
                                      bounds=[(0, None)] * size,
                                      options={"ftol": 1e-16, "gtol": 1e-12, "maxiter": 20000})
        w_ref = ref.x[:k] - ref.x[k:] if split else ref.x
        np.testing.assert_allclose(code.numpy(), w_ref, atol=2e-6)
        assert problem.objective(row[None], basis, lam, zero, code[None]).item() <= ref.fun + 1e-12
    assert (ours == 0).any() and (ours != 0).any(), "the test should exercise sparsity"
