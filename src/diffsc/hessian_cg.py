"""Hessian solves by conjugate gradients, with batched Hessian products (SPEC §2).

``H = B^T S(r) B + lam R''(w)`` is never formed: a product ``H v`` for a batch
of vectors is two matrix products with ``B`` (one with the shared
``G = B^T B`` for the gaussian family where ``K <= 2D``). The systems are
solved in the prior's scaling of :mod:`diffsc.hessian`,

    (S G S + diag(shift)) z = S rhs,      H^{-1} rhs = S z,      S = diag(R''^(-1/2)),

whose eigenvalues are ``>= lam`` and whose entries stay finite in float32
where ``1/w`` of a KL code does not, with the Jacobi preconditioner: in this
scaling ``H`` is ``lam I`` plus a term of rank ``<= D``, so a few dozen
iterations reach 1e-12 where a factorisation costs ``D^2 K`` or ``K^3`` per
example. Used by the Newton-CG solver (loosely, for its steps) and by the
backward pass (tightly) for smooth priors. For the gaussian family on the
CPU the iteration runs compiled (:func:`compiled_cg`, one fused pass per
iteration around the products), which both use there; the backward's
float64 solves there run float32 rounds of iterative refinement
(:func:`_compiled_solve`). Solves of a few rows, where the Python between
the passes and products is the time, run whole as one compiled loop, each
row on a thread (:func:`fused_cg_rows`; the fused Newton-CG loop calls
:func:`fused_cg`).
"""

from __future__ import annotations

import types

import numba
import numpy as np
import torch

from . import gram_memo
from .gram_cholesky import use_torch_threads

#: Conjugate-gradient iterations per solve, at most.
CG_MAX = 200
#: float64 solves of the backward (gaussian, CPU) run float32 CG, each round
#: to this relative accuracy on the float64 residual of the rounds before
#: (iterative refinement), at most this many rounds; rows that a round does
#: not improve 10x, or left short after them, finish in float64. Chunks of
#: fewer rows than REFINE_ROWS stay float64: the rounds' own work cost as
#: much as they saved (64x256 KL backward, 32 rows: 2.43 -> 2.51 ms) or more
#: (one row: 0.50 -> 0.63 ms); from 64 rows they saved 4-25% (ad hoc, alternating).
REFINE = True
REFINE_REL = 1e-6
REFINE_ROUNDS = 4
REFINE_ROWS = 64
#: Rows solved together by :func:`cg_solve` on the CPU: their (rows, K) vectors stay in cache.
ROWS = 512
#: On a GPU, as many rows as fit in this share of the free memory: at 512
#: rows each of a loop's small operations costs its launch, not its
#: arithmetic (Newton-CG on an H200: whole batches of 10,000 rows 11-17x
#: faster than 512-row chunks, of 100,000 rows 1.5-3x faster than 21,000).
GPU_MEMORY_SHARE = 0.25
#: A row's peak memory, in float64 vectors of the wider of D, K: 7-20 measured
#: (``benchmarks/results/cuda``), with margin.
ROW_VECTORS = 32
#: numba's fast-math flags for the compiled kernels: reassociation vectorises
#: the row sums; the no-NaN/no-inf flags are left out, because the kernels
#: test for both (a curvature that is not > 0, an exp that overflows).
FASTMATH = {"reassoc", "contract", "nsz"}
#: Gaussian rows on the CPU take :func:`compiled_cg` in :func:`cg_solve`...
COMPILED = True
#: ... and solves of at most this many rows :func:`fused_cg_rows`, the whole
#: loop compiled: a backward on one row 1.3-1.9x faster, on 16 1.1-2.3x, on 64
#: 0.73-1.46x (``benchmarks/fused_rows.py``'s ``backward_speedup``, two runs).
FUSED_CG_ROWS = 16


def rows_at_once(device, width, cpu_rows=ROWS):
    """Rows of ``width`` entries to solve together: ``cpu_rows`` on the CPU
    (and devices other than CUDA), on a GPU as many as its free memory holds."""
    if device.type != "cuda":
        return cpu_rows
    free, _ = torch.cuda.mem_get_info(device)
    return rows_in_memory(free, width, cpu_rows)


def rows_in_memory(free_bytes, width, at_least=ROWS):
    """Rows whose vectors fit in ``GPU_MEMORY_SHARE`` of ``free_bytes``, at least ``at_least``."""
    return max(at_least, int(GPU_MEMORY_SHARE * free_bytes) // (ROW_VECTORS * 8 * max(width, 1)))


class Products:
    """``v -> B^T S(r) B v`` for a batch of vectors, in the basis' dtype or a lower one."""

    def __init__(self, family, basis, low, gram=None):
        """``gram``: ``B^T B`` in a wider dtype, if at hand (cast, not formed anew)."""
        self.family, self.basis = family, basis
        self.gaussian = family.name == "gaussian"
        d, k = basis.shape
        # (the casts of a basis coded again unchanged are kept with its G; no
        # reference to the basis itself is kept)
        self.basis_low = basis if low == basis.dtype else \
            gram_memo.derived(basis, "basis cast", (low,), lambda: basis.to(low))
        self.gram_low = None
        if gram is not None:
            gram = gram.to(basis.dtype)
        elif self.gaussian and k <= 2 * d:
            gram = gram_memo.gram(basis)
            if low != basis.dtype:
                self.gram_low = gram_memo.derived(basis, "gram cast", (low,), lambda: gram.to(low))
        self.gram = gram
        if self.gram_low is None and gram is not None:
            self.gram_low = gram.to(low)

    def __call__(self, v, r):
        high = v.dtype == self.basis.dtype
        basis, gram = (self.basis, self.gram) if high else (self.basis_low, self.gram_low)
        if gram is not None:
            return v @ gram
        u = v @ basis.T
        if not self.gaussian:
            u = self.family.curvature_apply(r, u)
        return u @ basis


def scaled_system(problem, basis, lam, p, w, r):
    """``(scale, shift, diag)``: ``S``, the prior's part and the diagonal of the scaled system."""
    prior = problem.prior
    scale = prior.metric_scale(w, p)
    shift = (lam * prior.scaled_curvature(w, p)).expand_as(w)
    gii = problem.family.gram_diagonal(basis, r if r is not None else w[:, :1])
    return scale, shift, (scale.square() * gii + shift).expand_as(w)


def cg(products, g, scale, shift, diag, r, free, rel, dtype, max_iter=None):
    """Jacobi-preconditioned CG for ``H d = -g`` on the ``free`` coordinates, in ``dtype``.

    Returns the scaled solution ``z`` (``d = scale * free * z``) and which rows
    reached ``rel``: their preconditioned residual ``rel`` times the start's.
    Each row stops once it does.
    """
    max_iter = CG_MAX if max_iter is None else max_iter
    n = g.shape[0]
    scale = (scale * free).to(dtype)
    shift, inv_diag = shift.to(dtype), diag.to(dtype).reciprocal()
    r_low = None if r is None else r.to(dtype)
    res = -scale * g.to(dtype)
    z = res * inv_diag
    q = z
    rz = torch.linalg.vecdot(res, z)
    target = rel.to(dtype).square() * rz
    sol = torch.zeros_like(res)
    done = torch.zeros(n, dtype=torch.bool, device=g.device)
    reached = rz <= target
    # The live rows' vectors are kept compact (fused ops, no scatter per
    # iteration); finished rows leave once they are half of them.
    live = torch.arange(n, device=g.device)
    s_l, shift_l, inv_l, target_l, r_l, sol_l = scale, shift, inv_diag, target, r_low, torch.zeros_like(res)
    for _ in range(max_iter):
        hq = torch.addcmul(shift_l * q, s_l, products(s_l * q, r_l))
        curv_q = torch.linalg.vecdot(q, hq)
        alpha = (rz / torch.where(curv_q > 0, curv_q, 1)).unsqueeze(-1)
        sol_l.addcmul_(alpha, q)
        res.addcmul_(alpha, hq, value=-1)
        z = res * inv_l
        rz_new = torch.linalg.vecdot(res, z)
        reached = rz_new <= target_l
        finished = reached | ~(curv_q > 0)
        if bool(finished.all()):
            break
        q = torch.addcmul(z, (rz_new / rz).unsqueeze(-1), q)
        rz = rz_new
        if 2 * int(finished.sum()) >= live.numel():  # compact: the finished rows stop costing
            sol[live], done[live] = sol_l, reached
            keep = ~finished
            live, q, res, rz, sol_l, reached = live[keep], q[keep], res[keep], rz[keep], sol_l[keep], reached[keep]
            s_l, shift_l, inv_l, target_l = scale[live], shift[live], inv_diag[live], target[live]
            r_l = None if r_low is None else r_low[live]
    sol[live], done[live] = sol_l, reached
    return sol, done


@numba.njit(parallel=True, cache=True, fastmath=FASTMATH)
def _cg_step(product, q, sq, res, sol, scale, shift, inv_diag, rz, target, halted, done):
    """One iteration of :func:`cg` per row, given ``product = (S q) G``; writes ``S q`` anew.

    Rows that reached their target (``done``) go on improving while they
    are in the products anyway; rows whose curvature is not positive (H is
    not positive definite to this precision: factored instead) or whose
    residual is exactly 0 are ``halted``.
    """
    for i in numba.prange(q.shape[0]):
        if halted[i]:
            continue
        curv = 0.0
        for j in range(q.shape[1]):
            curv += q[i, j] * (shift[j] * q[i, j] + scale[i, j] * product[i, j])
        if not curv > 0:
            halted[i] = True
            continue
        alpha = rz[i] / curv
        rz_new = 0.0
        for j in range(q.shape[1]):
            sol[i, j] += alpha * q[i, j]
            res[i, j] -= alpha * (shift[j] * q[i, j] + scale[i, j] * product[i, j])
            rz_new += res[i, j] * res[i, j] * inv_diag[i, j]
        done[i] = rz_new <= target[i]
        if not rz_new > 0:
            halted[i] = True
            continue
        beta = rz_new / rz[i]
        rz[i] = rz_new
        for j in range(q.shape[1]):
            q[i, j] = res[i, j] * inv_diag[i, j] + beta * q[i, j]
            sq[i, j] = scale[i, j] * q[i, j]


@numba.njit(parallel=True, cache=True, fastmath=FASTMATH)
def _cg_start(res, scale, inv_diag, rel, q, sq, rz, target, done):
    """CG's first iterate ``q = M^-1 res`` and each row's target ``rel^2 rz``."""
    for i in numba.prange(res.shape[0]):
        rzi = 0.0
        for j in range(res.shape[1]):
            q[i, j] = res[i, j] * inv_diag[i, j]
            sq[i, j] = scale[i, j] * q[i, j]
            rzi += res[i, j] * q[i, j]
        rz[i] = rzi
        target[i] = rel[i] * rel[i] * rzi
        done[i] = rz[i] <= target[i]


def compiled_cg(product, shift, res, scale, inv_diag, rel, max_iter):
    """:func:`cg` for the gaussian family on the CPU, each iteration's
    elementwise work one compiled pass (the products stay ``product``'s).

    Solves the scaled system for the right-hand side ``res`` (numpy rows;
    ``shift`` is ``lam``, the prior's scaled curvature being 1); ``res`` is
    overwritten. Returns the scaled solution ``z`` and which rows reached
    ``rel``. Rows done go on improving while they are in the products
    anyway; they leave once they are half of the rows left.
    """
    n = res.shape[0]
    q, sq = np.empty_like(res), np.empty_like(res)
    rz, target, done = np.empty(n, res.dtype), np.empty(n, res.dtype), np.empty(n, np.bool_)
    _cg_start(res, scale, inv_diag, rel, q, sq, rz, target, done)
    sol = np.zeros_like(q)
    halted = np.zeros_like(done)
    live = np.arange(n)
    rows = (q, sq, res, scale, inv_diag, rz, target, halted, done)
    sol_l = sol
    for _ in range(max_iter):
        halted_l, done_l = rows[-2], rows[-1]
        finished = halted_l | done_l
        left = finished.size - np.count_nonzero(finished)
        if left == 0:
            break
        if 2 * left <= finished.size:  # compact: finished rows stop costing
            sol[live], done[live] = sol_l, done_l
            keep = np.flatnonzero(~finished)
            live, sol_l = live[keep], sol_l[keep]
            rows = tuple(v[keep] for v in rows)
        q_l, sq_l, res_l, scale_l, inv_l, rz_l, target_l, halted_l, done_l = rows
        _cg_step(product(sq_l), q_l, sq_l, res_l, sol_l, scale_l, shift, inv_l, rz_l, target_l, halted_l, done_l)
    sol[live], done[live] = sol_l, rows[-1]
    return sol, done


@numba.njit(cache=True, fastmath=FASTMATH)
def times(v, m):
    """``v m``, each row of ``m`` read once for all rows of ``v``. (Not
    ``np.dot``: BLAS's thread team beside numba's and torch's, each waiting
    for the others' cores, made 64 rows take 5-9 ms where they took 0.2 ms
    with BLAS on one thread.)"""
    out = np.zeros((v.shape[0], m.shape[1]), v.dtype)
    for l in range(m.shape[0]):
        for i in range(v.shape[0]):
            a = v[i, l]
            for j in range(m.shape[1]):
                out[i, j] += a * m[l, j]
    return out


@numba.njit(cache=True, fastmath=FASTMATH)
def times_transposed(v, m):
    """``v m^T``: row by row dot products."""
    out = np.empty((v.shape[0], m.shape[0]), v.dtype)
    for i in range(v.shape[0]):
        for d in range(m.shape[0]):
            acc = 0.0
            for j in range(m.shape[1]):
                acc += v[i, j] * m[d, j]
            out[i, d] = acc
    return out


@numba.njit(cache=True)
def gaussian_product(v, gram_route, gram, basis):
    """``v B^T B`` for the rows of ``v``: by ``G`` on the Gram route, else through ``B``."""
    if gram_route:
        return times(v, gram)
    return times(times_transposed(v, basis), basis)


def serial_twin(kernel, fastmath=FASTMATH):
    """A parallel kernel compiled again without its threads, for loops that
    spread their rows over the threads themselves or have too few rows to
    share (:func:`fused_cg`, :mod:`diffsc.solvers.newton_cg_fused`)."""
    f = kernel.py_func
    twin = types.FunctionType(f.__code__, f.__globals__, f.__name__, f.__defaults__, f.__closure__)
    twin.__qualname__ = f.__qualname__ + "_serial"  # (its own cache entry)
    return numba.njit(cache=True, fastmath=fastmath)(twin)


_cg_start_serial, _cg_step_serial = serial_twin(_cg_start), serial_twin(_cg_step)


@numba.njit(cache=True)
def fused_cg(gram_route, gram, basis, shift, res, scale, inv_diag, rel, max_iter):
    """:func:`compiled_cg` compiled whole, for a few gaussian rows (its
    callers give it one): ``(z, done)``. The products are
    :func:`gaussian_product`'s; the kernels run without threads. Rows done
    go on improving while others run (no compaction: the rows are few)."""
    n = res.shape[0]
    q, sq = np.empty_like(res), np.empty_like(res)
    rz, target, done = np.empty(n, res.dtype), np.empty(n, res.dtype), np.empty(n, np.bool_)
    _cg_start_serial(res, scale, inv_diag, rel, q, sq, rz, target, done)
    sol = np.zeros_like(q)
    halted = np.zeros_like(done)
    for _ in range(max_iter):
        if (halted | done).all():
            break
        _cg_step_serial(gaussian_product(sq, gram_route, gram, basis), q, sq, res, sol, scale, shift, inv_diag, rz,
                        target, halted, done)
    return sol, done


@numba.njit(parallel=True, cache=True)
def fused_cg_rows(gram_route, gram, basis, shift, res, scale, inv_diag, rel, max_iter):
    """:func:`fused_cg` row by row, the rows spread over the threads."""
    n = res.shape[0]
    sol, done = np.zeros_like(res), np.zeros(n, np.bool_)
    for i in numba.prange(n):
        z, ok = fused_cg(gram_route, gram, basis, shift, res[i:i + 1], scale[i:i + 1], inv_diag[i:i + 1],
                         rel[i:i + 1], max_iter)
        sol[i], done[i] = z[0], ok[0]
    return sol, done


#: A free coordinate whose scaled curvature ``S^2 H_ii`` is at most this
#: share of the prior's part is nearly decoupled (:func:`decouple`).
DECOUPLED = 1e-6


def decouple(g, scale, shift, diag, free, z, product):
    """``(z, product)`` with the nearly decoupled free coordinates (KL codes
    near 0) solved from their own row of the scaled system given the others'
    step, ``product = H_L d`` (``d = S z``) following their change.

    CG's iterates scale such a coordinate's step by the batch's ``alpha``
    and its scaled norm does not see it: a KL code that float32 left at its
    floor (1e-38) but that float64 puts lower took 3-4 Newton steps of linear
    convergence (784x256 KL: 80 of the float64 phase's chunk steps, now 20).
    ``product`` follows each own coordinate's change but not its neighbours':
    it is off by ``|H_L| |change of d|``, moves of codes near 0."""
    c = diag - shift  # S^2 H_ii
    own = free & (scale > 0) & (c <= DECOUPLED * shift)
    if not bool(own.any()):
        return z, product
    safe = torch.where(own, scale, 1)
    others = product - c * z / safe
    z = torch.where(own, -scale * (g + others) / (shift + c), z)
    return z, torch.where(own, others + c * z / safe, product)


def gradient_change(products, g, scale, shift, r, free, z, product=None):
    """``|g + H d|_inf`` for ``d = S z`` on the free coordinates, in ``g``'s dtype:
    the gradient the step leaves by the quadratic model, in the residual's norm
    (the scaled norm CG minimises weighs a coordinate by ``S^2``, which hides
    KL codes near 0 whose gradient the residual still counts). ``product``
    is ``H_L d``, if known."""
    scale = scale * free
    if product is None:
        product = products(scale * z, r)
    shift_term = torch.where(scale > 0, shift * z / torch.where(scale > 0, scale, 1), 0.0)
    return ((g + product + shift_term) * free).abs().amax(-1)


def cg_solve(problem, basis, lam, p, w, r, rhs, rel=1e-12):
    """``H^{-1} rhs`` for a smooth prior whose scaled curvature is positive.

    Returns the solution and ``ok`` per row: False where ``rel`` was not reached
    (the caller solves those rows otherwise). Gaussian rows on the CPU take
    :func:`compiled_cg`.
    """
    compiled = COMPILED and problem.family.name == "gaussian" and rhs.device.type == "cpu"
    # float32 products for the compiled float64 solve's refinement rounds
    products = Products(problem.family, basis, torch.float32 if compiled and REFINE else basis.dtype)
    out = torch.empty_like(rhs)
    ok = torch.empty(rhs.shape[0], dtype=torch.bool, device=rhs.device)
    free = torch.ones((), dtype=torch.bool, device=rhs.device)
    step = rows_at_once(rhs.device, max(basis.shape))
    for start in range(0, rhs.shape[0], step):
        rows = slice(start, min(start + step, rhs.shape[0]))
        r_rows = None if products.gram is not None or r is None else r[rows]
        scale, shift, diag = scaled_system(problem, basis, lam, p, w[rows], r_rows)
        if compiled:
            z, ok[rows] = _compiled_solve(products, scale, shift, diag, rhs[rows], rel)
        else:
            rel_rows = torch.full_like(scale[:, 0], rel)
            z, ok[rows] = cg(products, -rhs[rows], scale, shift, diag, r_rows, free, rel_rows, rhs.dtype)
        out[rows] = scale * z
    return out, ok


def _compiled_solve(products, scale, shift, diag, rhs, rel):
    """:func:`cg`'s ``(z, ok)`` for ``H d = rhs`` through :func:`compiled_cg`.

    float64 rows are solved by iterative refinement: float32 CG (half the
    product time) to ``REFINE_REL`` on the float64 residual of the rounds
    before, two rounds for ``rel = 1e-12``, each judged by its true float64
    residual (CG's recursive one drifts); a row a round does not improve 10x
    goes on in float64 from where it is. ``products`` has float32's ``G``
    and ``B``. On ``codes.py``'s KL problems (N = 10,000) the backward took
    0.233/0.321/0.450 s against 0.298/0.482/0.556 s in float64 alone
    (64x256, 784x256, 64x512; one run each, ad hoc)."""
    b = (scale * rhs).contiguous().numpy()
    use_torch_threads()
    # shift = lam times the scaled curvature, 1 for every prior solved here: one row holds it
    shift, scale, inv_diag = shift[0].contiguous().numpy(), scale.contiguous().numpy(), \
        diag.reciprocal().contiguous().numpy()
    if b.shape[0] <= FUSED_CG_ROWS:  # (in the basis's dtype, as the rows below REFINE_ROWS)
        route = products.gram is not None
        gram = products.gram.detach().contiguous().numpy() if route else np.empty((0, 0), b.dtype)
        z, ok = fused_cg_rows(route, gram, products.basis.detach().contiguous().numpy(), shift, b.copy(), scale,
                              inv_diag, np.full(b.shape[0], rel, b.dtype), CG_MAX)
        return torch.from_numpy(z), torch.from_numpy(ok)
    product = lambda v: products(torch.from_numpy(v), None).numpy()  # noqa: E731  (in v's dtype, or float32)
    if b.dtype != np.float64 or not REFINE or b.shape[0] < REFINE_ROWS:
        z, ok = compiled_cg(product, shift, b.copy(), scale, inv_diag, np.full(b.shape[0], rel, b.dtype), CG_MAX)
        return torch.from_numpy(z), torch.from_numpy(ok)
    z, res = np.zeros_like(b), b.copy()
    norm = _preconditioned_norm(res, inv_diag)
    goal = rel * rel * norm
    live = norm > goal
    for _ in range(REFINE_ROUNDS):
        rows = np.flatnonzero(live)
        if rows.size == 0:
            break
        low = lambda v: v[rows].astype(np.float32)  # noqa: E731
        want = np.maximum(np.sqrt(goal[rows] / norm[rows]), REFINE_REL).astype(np.float32)
        step, _ = compiled_cg(product, shift.astype(np.float32), low(res), low(scale), low(inv_diag), want, CG_MAX)
        z_new = z[rows] + step
        sz = scale[rows] * z_new
        res_new = b[rows] - shift * z_new - scale[rows] * product(sz)
        norm_new = _preconditioned_norm(res_new, inv_diag[rows])
        better = norm_new < norm[rows]
        z[rows] = np.where(better[:, None], z_new, z[rows])
        res[rows] = np.where(better[:, None], res_new, res[rows])
        # a round that did not gain 10x (float32 short of the system) leaves the row to float64
        live[rows] = (norm_new > goal[rows]) & (norm_new <= 0.1 * norm[rows])
        norm[rows] = np.minimum(norm_new, norm[rows])
    ok = norm <= goal
    rows = np.flatnonzero(~ok)
    if rows.size:  # float64 CG for the rest, on their residual
        want = np.sqrt(goal[rows] / norm[rows])
        step, done = compiled_cg(product, shift, res[rows], scale[rows], inv_diag[rows], want, CG_MAX)
        z[rows] += step
        ok[rows] = done
    return torch.from_numpy(z), torch.from_numpy(ok)


def _preconditioned_norm(res, inv_diag):
    """``res^T M^{-1} res`` per row, the norm CG's ``rel`` is measured in."""
    return np.einsum("ij,ij,ij->i", res, res, inv_diag)
