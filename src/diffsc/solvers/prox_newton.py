"""Proximal Newton for L1 codes of a non-quadratic loss (softmax, Poisson, Bernoulli).

Each iteration, for every code at once (Lee, Sun & Saunders, *Proximal
Newton-type methods for minimizing composite functions*, SIAM J. Optim.
2014, with glmnet's working set):

* The working set ``W``: the support, and the zero coefficients whose
  gradient violates optimality (``|grad_i D| > lam``), the worst of them, at
  most twice as many as the support holds (:data:`ENTER_SHARE`).
* The loss's quadratic model on ``W``, whose Hessian ``H_W = B_W^T S(r) B_W``
  is one batched product per chunk of rows of similar ``|W|`` (``|W|^2 D``
  a code rather than ``K^2 D``), in float32 until the code's residual is
  below 1e-6 or stalls (then float32's rounding would limit the step).
* Its L1 problem, ``min_z 1/2 z^T H_W z - c^T z + lam |z|_1`` with
  ``c = H_W w - g``, solved by cyclic coordinate descent
  (:mod:`.coordinate_descent`, compiled on the CPU; each coordinate's step
  is a soft threshold), from ``z = w``, to a relative accuracy that
  tightens with the code's residual; then exactly on the support it finds
  (again on a smaller one where a sign changes).
* A backtracking line search along ``d = z - w`` (Armijo's condition with
  the model's decrease ``g^T d + lam (|w + d|_1 - |w|_1)``).

Once ``W`` is the support and its signs are right, the step is Newton's on
the support, so convergence is quadratic: on the benchmarks' text-like
problem (``benchmarks/codes.py``, softmax, 33% non-zeros) three iterations
a code, where the active set (:mod:`.active_set`) adds one atom an
iteration (up to 50 there, each with its support's Hessian formed anew;
about 13x slower). On the small hard problems of
``benchmarks/robustness.py --priors l1`` (16 inputs, D < 40, strength 1e-4
to 5) it converged on every batch, where the active set missed one in
eleven, in about half the active set's time. Coordinate descent updates
its codes in place, which autograd cannot unroll; the active set serves
that case.
"""

from __future__ import annotations

import torch

from ..hessian import by_support_size
from .active_set import _ARMIJO, _MAX_BACKTRACK, _violation, ratio_test
from .coordinate_descent import coordinate_descent
from .polish import polish
from .result import SolveResult, Stall, flat

# Rows whose residual falls less than _STALL in a step, or below _PRECISE_BELOW,
# form H_W in their own dtype from then on (float32 before).
_STALL = 0.5
_PRECISE_BELOW = 1e-6
_RIDGE = 1e-12  # relative to the largest curvature of the row's working set
_MAX_SWEEPS = 200  # coordinate-descent sweeps of one model at most
_POLISHES = 10  # exact solves on a shrinking support after them, at most
_STALL_STEPS = 10  # float32 steps a row may take without halving its residual
# Violators that join the working set in a step: from codes at 0 every
# coefficient of a poisson or bernoulli code may violate optimality (235-251
# of 256 at 64x256, for supports of 57-86), and the model's Hessian is the
# working set's. With at most twice the support (16 at least): poisson L1
# (benchmarks/solver_choice.py's problem, 500 rows) 7.3 -> 2.5 s, bernoulli
# 1.7 -> 0.5 s; softmax text-like unchanged (3.9 s; 2.97 -> 3.01 steps a
# code). Once as many as the support: one of robustness.py's 1,200 l1
# batches short; at twice, none.
ENTER_SHARE, ENTER_MIN = 2.0, 16


def prox_newton(problem, x, basis, lam, p, w0, tol, max_iter):
    family, prior = problem.family, problem.prior
    n, k = x.shape[0], basis.shape[1]
    lam_k = lam.expand(k)
    bases = (basis.to(torch.float32) if basis.dtype == torch.float64 else basis, basis)
    iterations = torch.zeros(n, dtype=torch.int64, device=x.device)
    stuck = torch.zeros(n, dtype=torch.bool, device=x.device)
    precise = torch.zeros(n, dtype=torch.bool, device=x.device)  # rows whose H_W is formed in their dtype

    def objective(x, w, eta):
        return family.loss(x, eta) + (lam_k * prior.value(w, p)).sum(-1)

    # carried: F, grad D_L, r and the residual at w (B^T x for the residual's scale)
    w = prior.project(w0)
    xb, eta = x @ basis, w @ basis.T
    f, r = objective(x, w, eta), family.transfer(eta)
    grad_loss = (r - x) @ basis
    residual = problem.residual(x, basis, lam, p, w, grad_loss, xb=xb)
    # float32 rows whose residual stops halving stop too, and are finished in
    # float64 (solvers._finished_in_float64): on a nearly singular support
    # float32's steps can cycle at a residual above tol to max_iter.
    stall = Stall(residual, _STALL_STEPS if x.dtype == torch.float32 else max_iter + 1)
    for _ in range(max_iter):
        active = (residual > tol) & ~stuck
        if not bool(active.any()):
            break
        idx = active.nonzero().squeeze(1)
        xa, wa, ga, ra, fa = x[idx], w[idx], grad_loss[idx], r[idx], f[idx]
        step = _model_step(family, prior, bases, lam_k, wa, ga, ra, residual[idx], tol, precise[idx])

        slope = (ga * step).sum(-1) + (lam_k * (prior.value(wa + step, p) - prior.value(wa, p))).sum(-1)
        t = torch.ones_like(fa)
        accepted = torch.zeros_like(fa, dtype=torch.bool)
        w_new, f_new, eta_new = wa, fa, None
        for trial in range(_MAX_BACKTRACK):
            cand = prior.project(wa + t[:, None] * step)
            eta_c = cand @ basis.T
            f_c = objective(xa, cand, eta_c)
            good = f_c <= fa + _ARMIJO * t * slope
            if trial == 0 and not bool(good.all()):
                # Near the optimum F is flat to rounding; the residual still measures progress.
                lower = problem.residual(xa, basis, lam, p, cand, xb=xb[idx]) < residual[idx]
                good = good | (lower & flat(f_c, fa))
            good = good & ~accepted
            w_new = torch.where(good[:, None], cand, w_new)
            f_new = torch.where(good, f_c, f_new)
            eta_new = eta_c if eta_new is None else torch.where(good[:, None], eta_c, eta_new)
            accepted = accepted | good
            if bool(accepted.all()):
                break
            t = torch.where(accepted, t, t / 2)

        r_a = torch.where(accepted[:, None], family.transfer(eta_new), ra)
        gl_a = torch.where(accepted[:, None], (r_a - xa) @ basis, ga)
        res_a = problem.residual(xa, basis, lam, p, w_new, gl_a, xb=xb[idx])
        # A float32 H_W converges linearly, at about cond(H) * 1e-7: rows near
        # their optimum, or stalled (an ill-conditioned H), take their dtype's.
        stalled = (res_a > _STALL * residual[idx]) | (res_a < _PRECISE_BELOW)
        precise = precise.index_copy(0, idx, precise[idx] | stalled)
        stall.update(idx, res_a, accepted & (t == 1))
        stuck = stuck.index_copy(0, idx, ~accepted | stall.stalled[idx])
        iterations = iterations.index_add(0, idx, torch.ones_like(idx))
        w, f, r = w.index_copy(0, idx, w_new), f.index_copy(0, idx, f_new), r.index_copy(0, idx, r_a)
        grad_loss, residual = grad_loss.index_copy(0, idx, gl_a), residual.index_copy(0, idx, res_a)
    return SolveResult(w, iterations, residual, residual <= tol, "prox_newton", tol)


def _model_step(family, prior, bases, lam_k, w, grad_loss, r, residual, tol, precise):
    """``z - w`` for the minimiser ``z`` of the quadratic model plus L1 on the working set."""
    working = _working_set(w, _violation(prior, w, grad_loss, lam_k))
    counts = working.sum(1)
    s = max(int(counts.max()), 1)
    # each row's working set first (ascending), padded by coordinates held at 0
    idx = torch.argsort((~working).to(torch.int8), dim=1, stable=True)[:, :s]
    v = (torch.arange(s, device=w.device) < counts[:, None]).to(w.dtype)
    h = _working_hessian(family, bases, r, idx, v, precise, ~(w != 0).any(1))
    w_s, lam_s = w.gather(1, idx) * v, lam_k[idx]
    c = (h @ w_s.unsqueeze(-1)).squeeze(-1) - grad_loss.gather(1, idx) * v
    # Inexact: the model need not be solved much past the code's own residual.
    accuracy = (0.01 * torch.minimum(residual, torch.ones_like(residual))).clamp_min(0.01 * tol)
    z = coordinate_descent(prior, h, c, lam_s, w_s, v, accuracy, _MAX_SWEEPS)
    rows = torch.arange(z.shape[0], device=z.device)
    for _ in range(_POLISHES):  # again only for the rows a sign stopped
        z_rows, moved = _polish(h, rows, c[rows], lam_s[rows], z[rows])
        z = z.index_copy(0, rows, z_rows)
        rows = rows[moved]
        if rows.numel() == 0:
            break
    return torch.zeros_like(w).scatter(1, idx, (z - w_s) * v)


def _working_set(w, violation):
    """The support and its worst violators of optimality: at most ``ENTER_SHARE``
    times as many as the support holds, ``ENTER_MIN`` at least (all of them
    with ``ENTER_SHARE = None``)."""
    support = w != 0
    violating = violation > 0
    if ENTER_SHARE is None:
        return support | violating
    cap = torch.clamp((ENTER_SHARE * support.sum(1)).long(), min=ENTER_MIN, max=w.shape[1])
    kth = violation.sort(1, descending=True).values.gather(1, (cap - 1).unsqueeze(1))
    return support | (violating & (violation >= kth))


def _working_hessian(family, bases, r, idx, v, precise, zero):
    """``H_W``, ``(n, s, s)``, in chunks of rows; padding rows and columns are the identity's.

    Formed in float32 (``bases[0]``; ``bases[1]`` is the codes' dtype, for the
    ``precise`` rows): a Newton step needs a few digits, and forming ``H_W``
    is most of an iteration's time. The gradient, the objective and the
    model's linear term stay in the codes' dtype. Rows whose codes are all
    ``zero`` (the default start) share ``r = f(0)``, so their blocks are
    taken from one ``K x K`` Hessian."""
    counts = v.sum(1).long()
    h = _blocks(family, bases[0], r, idx, counts, zero).to(v.dtype)
    if bool(precise.any()):
        rows = precise.nonzero().squeeze(1)
        h[rows] = _blocks(family, bases[1], r[rows], idx[rows], counts[rows], zero[rows])
    h.mul_(v.unsqueeze(-1)).mul_(v.unsqueeze(-2))  # (in place: h is (n, s, s), 100 MB at 200x251 float64)
    diag = h.diagonal(dim1=-2, dim2=-1)
    # padding is the identity's; an atom without curvature here gets a little
    # (a coordinate step divides by it)
    diag.add_(1 - v + _RIDGE * diag.amax(-1, keepdim=True))
    return h


def _blocks(family, basis, r, idx, counts, zero):
    """``B_W^T S(r) B_W`` per row in ``basis``'s dtype, ``(n, s, s)``, on
    each row's first ``counts`` coordinates (past them: zero or another
    padding coordinate's entries, for the caller to mask), rows chunked by
    working-set size, rows at ``zero`` codes gathered from their shared Hessian."""
    n, s = idx.shape
    h = torch.zeros(n, s, s, dtype=basis.dtype, device=basis.device)
    r = r.to(basis.dtype)
    # one K x K block where it costs less than the zero rows' own blocks
    zero = zero & (basis.shape[1] ** 2 < int(counts[zero].square().sum()))
    if bool(zero.any()):
        at_zero = zero.nonzero().squeeze(1)
        shared = family.block_gram(basis.T.unsqueeze(0), r[at_zero[:1]])[0]  # (K, K) at r = f(0)
        z_idx = idx[at_zero]
        h[at_zero] = shared[z_idx.unsqueeze(-1), z_idx.unsqueeze(-2)]
    rest = (~zero).nonzero().squeeze(1)
    for rows, size in by_support_size(counts[rest], lambda size: size * basis.shape[0]):
        rows = rest[rows]
        h[rows, :size, :size] = family.block_gram(basis.T[idx[rows, :size]], r[rows])
    return h


def _polish(h, rows, c, lam, z):
    """:func:`_polish_torch`'s step, compiled on the CPU (:func:`.polish.polish`)."""
    if z.device.type == "cpu":
        return polish(h, rows, c, lam, z)
    return _polish_torch(h, rows, c, lam, z)


def _polish_torch(h, rows, c, lam, z):
    """Towards the model's exact minimiser on ``z``'s support with its signs,
    ``z_S = H_SS^{-1} (c_S - lam sign(z_S))``, as far as the signs hold (the
    coefficient that reaches 0 there leaves, as in the active set's steps),
    where that lowers the model; and which rows stopped at a sign (the
    caller solves those again on their smaller support: stopping there let
    a far poisson code move about 1 a step, 300 steps short of its optimum).

    Coordinate descent finds the support in a few sweeps but converges on it
    only linearly (slowly where ``H_W`` is ill-conditioned, and along the null
    space of a support of more than ``D`` atoms); the exact solve makes the
    step Newton's on the support. ``h``: every row's ``H_W``, of which
    ``rows`` are those of ``c``, ``lam`` and ``z`` (gathered with their
    supports: ``h[rows]`` first copied whole blocks, 16% of a poisson solve)."""
    # Each row's support first, the system as large as the largest support
    # (not the working set: early on 240 coordinates for supports of 77, where
    # a 200-row poisson L1 batch at 64x256 spent 7 of its 9.4 s factoring).
    # Off the support z and the step are 0, so the model is the support's.
    support = z != 0
    m = max(int(support.sum(1).max()), 1)
    first = torch.argsort((~support).to(torch.int8), dim=1, stable=True)[:, :m]
    z_s, c_s, lam_s = z.gather(1, first), c.gather(1, first), lam.gather(1, first)
    signs = torch.sign(z_s)
    on = (signs != 0).to(z.dtype)
    a = h[rows[:, None, None], first.unsqueeze(-1), first.unsqueeze(1)]  # (a copy: masked in place)
    a.mul_(on.unsqueeze(-1)).mul_(on.unsqueeze(-2))
    a.diagonal(dim1=-2, dim2=-1).add_(1 - on)
    chol, info = torch.linalg.cholesky_ex(a)
    ok = info == 0
    chol = torch.where(ok[:, None, None], chol, torch.eye(m, dtype=z.dtype, device=z.device))
    exact = on * torch.cholesky_solve((on * (c_s - lam_s * signs)).unsqueeze(-1), chol).squeeze(-1)
    t, leaving = ratio_test(z_s, exact - z_s)
    polished = torch.where(leaving, 0.0, z_s + t[:, None] * (exact - z_s))
    ok = ok & (_model(a, c_s, lam_s, polished) <= _model(a, c_s, lam_s, z_s))
    # rows cut short by a sign may go further on their smaller support
    return torch.where(ok[:, None], z.scatter(1, first, polished), z), ok & leaving.any(-1)


def _model(h, c, lam, z):
    """``1/2 z^T h z - c^T z + lam |z|_1`` per row."""
    return (z * (0.5 * (h @ z.unsqueeze(-1)).squeeze(-1) - c)).sum(-1) + (lam * z.abs()).sum(-1)


__all__ = ["prox_newton"]
