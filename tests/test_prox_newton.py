"""Proximal Newton for L1 codes of non-quadratic losses (``solver="prox_newton"``).

Its codes are checked against L-BFGS-B and the other L1 solvers in
``test_reference.py`` and ``test_batching.py``; here: how it converges, and
how it is chosen and refused.
"""

import itertools
import sys

import pytest
import torch

import diffsc
from helpers import problem_data, random_basis, random_inputs


def _text_like(n=40, v=300, k=12, seed=0):
    """Counts of 100-word documents drawn from the softmax of sparse combinations."""
    g = torch.Generator().manual_seed(seed)
    basis = torch.randn(v, k, generator=g, dtype=torch.float64)
    codes = torch.randn(n, k, generator=g, dtype=torch.float64) * (torch.rand(n, k, generator=g) < 0.3)
    words = torch.softmax(codes @ basis.T, dim=-1)
    return torch.stack([torch.bincount(torch.multinomial(row, 100, replacement=True, generator=g), minlength=v)
                        for row in words]).double(), basis


def test_newton_convergence_in_few_iterations():
    x, basis = _text_like()
    kw = dict(family="softmax", prior="l1", strength=0.03, tol=1e-10)
    codes, info = diffsc.sparse_code_with_info(x, basis, solver="prox_newton", **kw)
    assert info.solver == "prox_newton" and info.all_converged
    # the working set holds every atom that enters: no atom-by-atom growth
    # (here 5.1 iterations a code against 11.4, most of them a damped start)
    active, a_info = diffsc.sparse_code_with_info(x, basis, solver="active_set", **kw)
    assert float(info.iterations.double().mean()) < 0.6 * float(a_info.iterations.double().mean())
    assert (codes != 0).any(1).all() and (codes == 0).any()
    torch.testing.assert_close(codes, active, rtol=1e-6, atol=1e-8)


def test_float32_codes():
    x, basis = _text_like(seed=1)
    codes, info = diffsc.sparse_code_with_info(x.float(), basis.float(), family="softmax", prior="l1", strength=1e-3,
                                               solver="prox_newton")
    assert codes.dtype == torch.float32 and info.all_converged and info.tol == 1e-4
    exact = diffsc.sparse_code(x, basis, family="softmax", prior="l1", strength=1e-3)
    assert float((codes.double() - exact).abs().max()) < 1e-3 * float(exact.abs().max())


def test_ill_conditioned_supports_reach_float64_tolerance():
    # Supports of as many atoms as D: a float32 H_W stalls there (linear
    # convergence at cond(H) * 1e-7), so those rows form theirs in float64.
    x, basis = problem_data("gaussian", n=12, d=10, k=16, seed=8)
    kw = dict(prior="l1", strength=0.05, tol=1e-12)
    codes, info = diffsc.sparse_code_with_info(x, basis, solver="prox_newton", **kw)
    assert info.all_converged and int(info.iterations.max()) <= 8
    torch.testing.assert_close(codes, diffsc.sparse_code(x, basis, solver="gram", **kw), rtol=1e-8, atol=1e-10)


def test_non_convergence_is_reported():
    x, basis = _text_like()
    with pytest.warns(diffsc.ConvergenceWarning, match="solver 'prox_newton'"):
        _, info = diffsc.sparse_code_with_info(x, basis, family="softmax", prior="l1", strength=1e-3, max_iter=1,
                                               solver="prox_newton")
    assert not info.all_converged and int(info.iterations.max()) == 1


def test_implicit_gradients_through_its_codes_equal_the_active_sets():
    x, basis = _text_like(n=6, v=50, k=8)
    grads = []
    for solver in ("prox_newton", "active_set"):
        b = basis.clone().requires_grad_(True)
        codes = diffsc.sparse_code(x, b, family="softmax", prior="l1", strength=1e-3, solver=solver)
        (grad,) = torch.autograd.grad((codes * torch.linspace(-1, 1, 8, dtype=torch.float64)).sum(), b)
        grads.append(grad)
    assert grads[0].abs().max() > 0
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-6, atol=1e-9)


def test_refuses_to_be_unrolled():
    x, basis = _text_like(n=3, v=20, k=4)
    basis.requires_grad_(True)
    with pytest.raises(ValueError, match="^solver: 'prox_newton' updates its codes in place"):
        diffsc.sparse_code(x, basis, family="softmax", prior="l1", solver="prox_newton", backward="unrolled")


def test_far_optimum_of_a_nearly_unregularised_poisson_code():
    # Found by a sweep like benchmarks/robustness.py's: its optimum lies at
    # |w| = 118, and the exact solve after coordinate descent stopped where a
    # sign changed, so each step moved ~1 (300 iterations to a residual of
    # 6e-5). Solving again on the smaller support reaches it in under 20.

    g = torch.Generator().manual_seed(0)
    d, k = int(torch.randint(3, 40, (1,), generator=g)), int(torch.randint(2, 80, (1,), generator=g))
    for family in ["softmax"] * 5 + ["poisson"]:  # the sweep's sixth problem of this seed
        x, basis = random_inputs(family, 16, d, g), random_basis(d, k, g)
    kw = dict(family="poisson", prior="l1", strength=1e-4)
    codes, info = diffsc.sparse_code_with_info(x[10:11], basis, solver="prox_newton", max_iter=20, **kw)
    assert info.all_converged and float(codes.abs().max()) > 100
    torch.testing.assert_close(codes, diffsc.sparse_code(x[10:11], basis, solver="active_set", **kw),
                               rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("nonnegative", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_coordinate_descent_compiled_and_torch_reach_the_models_minimiser(nonnegative, dtype):
    # prox_newton's models: 1/2 z^T h z - c^T z + lam |z|_1 on each row's
    # first coordinates (the rest padding, held at 0), from a start z.
    from diffsc.priors import get_prior
    from diffsc.solvers.coordinate_descent import coordinate_descent

    g = torch.Generator().manual_seed(3)
    n, s = 9, 7
    a = torch.randn(n, 12, s, generator=g, dtype=torch.float64)
    h = a.transpose(1, 2) @ a
    c = 3 * torch.randn(n, s, generator=g, dtype=torch.float64)
    lam = torch.rand(n, s, generator=g, dtype=torch.float64) + 0.5
    v = (torch.arange(s) < torch.randint(1, s + 1, (n, 1), generator=g)).double()
    h = v.unsqueeze(-1) * h * v.unsqueeze(-2) + torch.diag_embed(1 - v)
    z0 = torch.randn(n, s, generator=g, dtype=torch.float64).abs() * v
    prior = get_prior("nonneg_l1" if nonnegative else "l1")
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    args = [t.to(dtype) for t in (h, c, lam, z0, v)] + [torch.full((n,), tol, dtype=dtype)]
    solutions = [coordinate_descent(prior, *args, max_sweeps=5000, compiled=compiled) for compiled in (True, False)]
    for z in solutions:
        assert torch.equal(z * (1 - v.to(dtype)), torch.zeros_like(z))  # padding stays 0
        z = z.double()
        grad = (h @ z.unsqueeze(-1)).squeeze(-1) - c  # of the smooth part
        on = z != 0
        # optimality: grad = -lam sign(z) on the support, |grad| <= lam off it (>= -lam if z >= 0)
        assert float(((grad + lam * torch.sign(z)) * on).abs().max()) < 1e3 * tol
        off = (v > 0) & ~on
        low = -grad[off] if nonnegative else grad[off].abs()
        assert bool((low <= lam[off] * (1 + 1e3 * tol)).all())
        if nonnegative:
            assert bool((z >= 0).all())
        assert on.any() and off.any()
    torch.testing.assert_close(solutions[0], solutions[1], rtol=0, atol=1e4 * tol)


@pytest.mark.parametrize("family", ["softmax", "poisson", "bernoulli"])
def test_codes_at_zero_share_one_hessian(family):
    # Rows whose codes are all 0 (the default start) have r = f(0): their
    # working-set blocks are gathered from one K x K Hessian, not formed per row.
    from diffsc.families import get_family
    from diffsc.solvers.prox_newton import _blocks

    fam = get_family(family)
    x, basis = problem_data(family, n=6, d=9, k=7, seed=5)
    w = torch.zeros(6, 7, dtype=torch.float64)
    w[3:, 2] = 0.4  # rows 3-5 off zero
    r = fam.transfer(w @ basis.T)
    g = torch.Generator().manual_seed(0)
    idx = torch.stack([torch.randperm(7, generator=g) for _ in range(6)])
    counts = torch.tensor([7, 3, 5, 2, 7, 4])
    zero = ~(w != 0).any(1)
    on = (torch.arange(7) < counts[:, None]).double()
    mask = on.unsqueeze(-1) * on.unsqueeze(-2)  # each row's working set (the caller masks the rest)
    widths = []  # the blocks formed: (rows, atoms) of each call
    block_gram = fam.block_gram
    fam.block_gram = lambda cols, r: widths.append(tuple(cols.shape[:2])) or block_gram(cols, r)
    try:
        shared = _blocks(fam, basis, r, idx, counts, zero) * mask
        assert (1, 7) in widths and all(rows <= 3 for rows, _ in widths)  # one K x K block, then rows 3-5
        formed = _blocks(fam, basis, r, idx, counts, torch.zeros_like(zero)) * mask
    finally:
        del fam.block_gram
    torch.testing.assert_close(shared, formed, rtol=1e-12, atol=1e-14)
    assert (shared.diagonal(dim1=1, dim2=2) > 0).sum() == counts.sum()


@pytest.mark.parametrize("way", ["compiled", "torch"])
def test_polish_solves_each_rows_support_exactly(way):
    # _polish solves z_S = H_SS^{-1} (c_S - lam sign(z_S)) on each row's own
    # support, gathered to the front (the largest support's size, not the
    # working set's): checked against each row's solve on its support alone.
    # The CPU's compiled step (solvers/polish.py) and torch's (other devices).
    from diffsc.solvers.polish import polish
    from diffsc.solvers.prox_newton import _model, _polish_torch

    _polish = polish if way == "compiled" else _polish_torch

    g = torch.Generator().manual_seed(4)
    n, s = 7, 12
    a = torch.randn(n, 30, s, generator=g, dtype=torch.float64)
    h = a.transpose(1, 2) @ a
    lam = torch.full((n, s), 0.1, dtype=torch.float64)
    z = torch.randn(n, s, generator=g, dtype=torch.float64) * (torch.rand(n, s, generator=g) < 0.4)
    z[0] = 0  # an empty support
    exact = torch.zeros_like(z)
    for i in range(n):
        on = (z[i] != 0).nonzero().squeeze(1)
        exact[i, on] = 2 * z[i, on]  # the solve's target, with the signs of z
    # c such that 2 z is the support's solution: c_S = H_SS (2 z_S) + lam sign(z_S)
    c = torch.zeros_like(z)
    for i in range(n):
        on = (z[i] != 0).nonzero().squeeze(1)
        c[i, on] = h[i][on][:, on] @ exact[i, on] + lam[i, on] * torch.sign(z[i, on])
    every = torch.arange(n)
    polished, moved = _polish(h, every, c, lam, z)
    torch.testing.assert_close(polished, exact, rtol=1e-9, atol=1e-10)  # signs hold: the whole way
    some = torch.tensor([5, 2])  # a subset of the rows: their own blocks of h
    torch.testing.assert_close(_polish(h, some, c[some], lam[some], z[some])[0], exact[some], rtol=1e-9, atol=1e-10)
    assert not bool(moved.any())
    assert bool((_model(h, c, lam, polished) <= _model(h, c, lam, z)).all())
    # a coefficient whose sign the solve would flip stops the step there, and leaves
    c[1] = -c[1]
    stopped, moved = _polish(h, every, c, lam, z)
    assert int((z[1] != 0).sum()) > 1 and bool(moved[1]) and int((stopped[1] != 0).sum()) < int((z[1] != 0).sum())


def test_working_set_takes_the_worst_violators_up_to_twice_the_support():
    prox = sys.modules["diffsc.solvers.prox_newton"]  # (the package exports its function under that name)
    g = torch.Generator().manual_seed(0)
    k = 100
    violation = torch.rand(3, k, generator=g, dtype=torch.float64) - 0.2  # about 80 violators a row
    w = torch.zeros(3, k, dtype=torch.float64)
    w[1, :5] = 1.0  # a support of 5: ENTER_MIN violators join
    w[2, :30] = -1.0  # a support of 30: 60 may join (fewer violate)
    violation[w != 0] = -1  # (as _violation marks the support)
    working = prox._working_set(w, violation)
    joined = working & (w == 0)
    violating = (violation > 0).sum(1).tolist()
    assert joined.sum(1).tolist() == [prox.ENTER_MIN, prox.ENTER_MIN, min(int(prox.ENTER_SHARE * 30), violating[2])]
    assert bool(working[w != 0].all())
    for i in range(3):  # the worst ones
        assert float(violation[i][joined[i]].min()) >= float(violation[i][(w[i] == 0) & ~joined[i]].max())


def test_float32_rows_that_stall_are_finished_in_float64():
    # robustness.py --priors l1, seed 0, poisson 24x17, lam 1e-4, float32: one
    # row's support held all 17 atoms, nearly singular in float32, and its
    # steps cycled at a residual of 3e-4 (tol 1e-4) to max_iter. A float32 row
    # whose residual stops halving now stops, and float64 finishes it.
    g = torch.Generator().manual_seed(0)
    d, k = int(torch.randint(3, 40, (1,), generator=g)), int(torch.randint(2, 80, (1,), generator=g))
    settings = [(1e-4, 1.0), (1e-2, 1.0), (0.5, 1.0), (5.0, 1.0)]
    for family, prior, (lam, _) in itertools.product(["softmax", "poisson"], ["l1", "nonneg_l1"], settings):
        x, basis = random_inputs(family, 16, d, g), random_basis(d, k, g)
        if (family, prior, lam) == ("poisson", "l1", 1e-4):
            break
    codes, info = diffsc.sparse_code_with_info(x.float(), basis.float(), family="poisson", prior="l1",
                                               strength=1e-4, max_iter=100)
    assert info.all_converged and bool(torch.isfinite(codes).all())
    assert int(info.iterations.max()) < 100, info.iterations.tolist()
