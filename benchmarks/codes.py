"""Time to the same accuracy: diffsc's codes against the usual peers, and its backward.

Problems: a random gaussian basis ``B`` (``D x K``, unit-norm atoms); ``N``
inputs that are gaussian combinations of 5% of the atoms plus gaussian noise
at 20 dB (noise norm 0.1 x the clean norm, per row); float64, seeded. Sizes
64x256, 64x512, 784x256, 784x512 (``--sizes``), N=10000. Each size's L1
strength ``lam`` is bisected so that diffsc's float64 L1 codes of the first
1000 rows have 7.5% non-zeros (the first row's note gives it); the ``kl`` and
``backward`` sections reuse it, with ``p = 0.01``.

Sections (``--only``; one table each, also written to ``--out`` as
``codes-<section>.{csv,json,md}``, ``codes-<section>-cuda.*`` on a GPU):

- ``l1``: accuracy is the relative objective gap ``(F - F*) / F*`` (float64,
  ``F`` summed over the rows, ``F*`` the lowest ``F`` of a diffsc
  ``tol=1e-12`` solve and of every method's codes); reached: gap <= 1e-4.
  Methods: diffsc's default solver in float32 (the ratio base) and float64
  (tol 1e-6); scikit-learn ``sparse_encode`` lasso_lars (one run) and
  lasso_cd (if its defaults miss the gap, up to three retries with 10x
  ``max_iter`` and 10x smaller ``tol``; the note names the setting timed);
  SPAMS ``lasso`` (mode 2, 2 threads) in float64 and float32; a plain float32
  torch FISTA (step ``1/||B||_2^2``, Nesterov momentum, no restart) that
  checks the gap every 10 iterations, the checks included in its time.
  Then ``l1_targets`` (``codes-l1-targets``): per size, whether diffsc
  (float32, default) is >= 2x faster than SPAMS (its faster row) and >= 20x
  faster than lasso_lars, and whether all of those reached the gap.
  ``--skip lasso_lars,lasso_cd`` leaves scikit-learn's rows out (they say
  so, with no time), for a GPU lease too short for lasso_lars.
- ``kl``: sizes 64x256, 64x512, 784x256 (``--kl-sizes``; at 784x512 a
  Newton solve factors 10,000 dense 512x512 systems per iteration, minutes
  per run), priors kl and signed_kl, float64; accuracy: the worst row's
  relative optimality residual (``diffsc.Problem.residual``) <= 1e-6.
  diffsc default (Newton-CG, tol 1e-6; the ratio base); diffsc
  ``solver="newton"`` (factored steps, the default before Newton-CG; one
  run; ``--no-factored`` skips it); diffsc ``solver="eg"``
  (KL only; ``max_iter`` capped at 4x the iterations that take
  ``--eg-budget`` s at the pace of its first 10, since later ones are
  cheaper; the note counts converged codes); scipy
  L-BFGS-B per example on the first 200 rows (numpy objective, numpy's
  BLAS one thread, stopped at the gradient that guarantees residual <= 1e-6;
  see ``lbfgsb``), its time extrapolated to N (it was 20 rows: a
  signed-KL run of 30-70 ms, whose time varied 1.7x between runs);
  diffsc L1 float64 (tol 1e-6) on the same problem, whose note gives the KL
  time / L1 time (target <= 2).
- ``softmax``: text-like counts, V=5000 words, K=100, N=2000 200-word
  documents, ``lam = 0.001`` (``--softmax-strength``; at 0.1 every L1 code
  of these documents is zero), ``p = 0.01``, residual <= 1e-6: diffsc KL
  default (Newton-CG), factored Newton and EG, L-BFGS-B (200 rows, as in
  ``kl``), diffsc L1 default (the active set), proximal Newton and FISTA
  (the note gives the L1 codes' non-zeros).
- ``backward``: gaussian 64x256, N=10000, l1 and kl, float64; the gradient of
  ``(codes * G).sum()`` (fixed random ``G``) w.r.t. the basis. Rows: the
  forward (default solver), the implicit backward alone (note: backward /
  forward, target <= 1), both together (the ratio base), and both together
  on the fixed-iteration runs' rows (below); the first three rows also for
  the other sizes of ``--sizes`` (no fixed-iteration runs). Then, on the first
  ``--unrolled-n`` rows (200: the unrolled graph of 100 Newton iterations
  takes about 30 MB per row, and a run of every section in one process ran
  out of this machine's 24 GB at 300), at each of ``--iterations`` (tol 1e-30, so
  every iteration runs): a solver's forward+backward with the implicit
  backward (the ratio base at that count) and with ``backward="unrolled"``
  (ratio = unrolled / implicit, target >= 5; the note adds the backward
  alone, timed inside the same runs); compare ``peak_MB`` down the counts.
  ``saved_MB``: what autograd keeps for the backward pass (the tensors saved
  for it, counted once per storage): the memory that grows with unrolled
  iterations, where ``peak_MB`` (resident set) also counts the forward's
  transient work and the allocator's reuse.
  An unrolled run that reaches the residual (1e-6) also gives, end to end,
  its time over the default forward + implicit backward's on its rows.
  At the largest count the note gives the unrolled gradient's relative
  difference to the implicit one (same forward) and to the converged
  default's. An implicit backward that raises (an L1 support larger than D
  in unconverged codes) is a row with its message.

Reading a table: ``seconds`` is the median of ``--repeats`` timed runs after
one untimed run; ``peak_MB`` is the untimed run's peak memory above its
start (``harness.measure``; CPU: resident set, freed memory handed back to
the OS first). A first run over 20 s is the measurement (``repeats`` 1).
``ratio`` = seconds / the ratio base's seconds (same section, problem,
prior; for the L1 rows of ``kl`` and ``softmax``, the L1 default), so
ratio > 1 means diffsc's default is faster. ``reached``: the method met the
section's accuracy; the time of one that did not is not comparable.
scikit-learn, SPAMS and scipy run on the CPU whatever ``--device``.

    python benchmarks/codes.py --only l1,kl,softmax         # N=10000: about 35 minutes
    python benchmarks/codes.py --only backward              # its own process: its memory peaks
    python benchmarks/codes.py --only l1 --sizes 64x256     # one section, one size
    python benchmarks/codes.py --only backward --device cuda
    python benchmarks/codes.py --smoke                      # tiny problems; run by the tests
"""

from __future__ import annotations

import argparse
import ctypes
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import scipy.optimize
import torch
from threadpoolctl import threadpool_limits

import diffsc
from diffsc.solvers import default_solver

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402  (benchmarks/harness.py)

SECTIONS = ("l1", "kl", "softmax", "backward")
SIZES = "64x256,64x512,784x256,784x512"
KL_SIZES = "64x256,64x512,784x256"
SMOKE_SIZES = "16x32,24x48"
GAP = 1e-4  # l1: relative objective gap to reach
RESIDUAL = 1e-6  # kl, softmax, backward: relative optimality residual to reach
SLOW = 20.0  # seconds: a method slower than this runs once
NNZ = 0.075  # fraction of non-zero L1 codes that sets lam
PRIOR_MEAN = 0.01


def _release():
    """Hand freed memory back to the OS, so that the next resident-set peak is not hidden.

    The CPU peak is the resident set's rise; memory a previous run freed but
    glibc kept would otherwise absorb the next run's allocations.
    """
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def timed(fn, repeats, device, once=False):
    """``(seconds, peak bytes, result, repeats used)``: one untimed run, then ``repeats``.

    The first run's peak memory is kept (later runs may reuse freed memory).
    A first run over ``SLOW`` seconds, or ``once``, is the measurement itself.
    """
    _release()
    seconds, peak, out = harness.measure(fn, 1, device)
    if once or repeats <= 1 or seconds > SLOW:
        return seconds, peak, out, 1
    seconds, _, out = harness.measure(fn, repeats, device)
    return seconds, peak, out, repeats



def saved_megabytes(run) -> float:
    """Megabytes autograd holds for the backward pass of the graph ``run()``
    builds (distinct storages of the tensors saved for backward): the memory
    that grows with the iterations when they are unrolled."""
    storages = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        run()
    return round(sum(storages.values()) / 2**20, 1)

class Scorer:
    """Float64 objective and residual of any codes, on the CPU."""

    def __init__(self, family, prior, x, basis, lam, p=PRIOR_MEAN):
        self.problem = diffsc.Problem.of(family, prior)
        self.x = self.problem.family.prepare(x.double().cpu())
        self.basis = basis.double().cpu()
        self.lam = torch.tensor(lam, dtype=torch.float64)
        self.p = torch.tensor(p, dtype=torch.float64)

    def _w(self, w, rows):
        w = torch.as_tensor(np.asarray(w) if not torch.is_tensor(w) else w).detach().double().cpu()
        return self.x[:rows] if rows else self.x, w

    def objective(self, w, rows=None):
        x, w = self._w(w, rows)
        return float(self.problem.objective(x, self.basis, self.lam, self.p, w).sum())

    def residual(self, w, rows=None):
        x, w = self._w(w, rows)
        return float(self.problem.residual(x, self.basis, self.lam, self.p, w).max())


def converged_note(info):
    n = info.converged.numel()
    return (f"solver {info.solver}, {int(info.iterations.max())} it max, "
            f"{int(info.converged.sum())}/{n} converged")


def _prior_terms(prior, w, p):
    """``R(w)`` summed and ``grad R(w)`` of the KL or signed-KL prior, in numpy."""
    if prior == "kl":
        s = np.log(w / p)
        return (w * s - w + p).sum(), s
    s = np.arcsinh(w / (2 * p))  # signed_kl
    return (w * s - np.sqrt(w * w + 4 * p * p) + 2 * p).sum(), s


def _numpy_objective(family, prior, x_row, basis, gram, lam, p):
    """``F`` and its gradient for one row, in numpy (no torch per call), and
    ``|B^T x|_inf`` (a term of the residual's scale).

    Written out here, independent of diffsc. Gaussian: ``1/2 w^T G w - c^T w
    + 1/2 |x|^2 + lam R(w)`` with ``G = B^T B``, ``c = B^T x``. Softmax (``x``
    a type, summing to 1): ``sum x log x - x^T log softmax(B w) + lam R(w)``,
    whose loss gradient is ``B^T (softmax(B w) - x)``.
    """
    c = basis.T @ x_row
    if family == "gaussian":
        half = 0.5 * x_row @ x_row

        def loss(w):
            gw = gram @ w
            return 0.5 * w @ gw - c @ w + half, gw - c
    else:
        seen = x_row > 0
        entropy = x_row[seen] @ np.log(x_row[seen])

        def loss(w):
            eta = basis @ w
            top = eta.max()
            log_r = eta - top - np.log(np.exp(eta - top).sum())
            return entropy - x_row @ log_r, basis.T @ np.exp(log_r) - c

    def f(w):
        value, grad = loss(w)
        prior_value, prior_grad = _prior_terms(prior, w, p)
        return value + lam * prior_value, grad + lam * prior_grad

    return f, np.abs(c).max()


LBFGSB_RESTARTS = 3  # fresh L-BFGS-B starts after one that stopped short (_lbfgsb_row)


def lbfgsb(scorer, rows, tol, blas_threads=1, restarts=LBFGSB_RESTARTS):
    """Per-example scipy L-BFGS-B, bounds w > 0 for KL, restarted where it
    stops short (:func:`_lbfgsb_row`).

    Stops at ``gtol = tol * |B^T x|_inf``: ``|B^T x|_inf`` is one of the terms
    of the residual's scale (:meth:`diffsc.Problem.residual`), so that gradient
    means residual <= tol, without running far past it. The objective is
    numpy (:func:`_numpy_objective`): a call costs microseconds, not the tens
    that a few torch operators on one row take. numpy's BLAS runs one thread:
    its matrix-vector products are small, and with two threads beside
    torch's it was 1.2-1.3x slower on the gaussian problems and 48x on the
    softmax one (each thread waits on the other's, on two cores;
    ``benchmarks/blas_threads.py``). ``blas_threads=None`` leaves numpy's default.
    """
    family, prior = scorer.problem.family.name, scorer.problem.prior.name
    basis, lam, p = scorer.basis.numpy(), float(scorer.lam), float(scorer.p)
    gram = basis.T @ basis if family == "gaussian" else None
    with threadpool_limits(blas_threads, user_api="blas"):
        return np.stack([_lbfgsb_row(family, prior, scorer.x[i].numpy(), basis, gram, lam, p, tol, restarts)
                         for i in range(rows)])


def _lbfgsb_row(family, prior, x_row, basis, gram, lam, p, tol, restarts=LBFGSB_RESTARTS):
    """One row's L-BFGS-B solve, restarted from where it stopped while it
    stops short of ``gtol`` but still lowers ``F`` (at most ``restarts``).

    KL codes whose optimum is near 0 (curvature ``lam / w`` of 1e9 and more)
    end its line search with "relative reduction of F <= factr * epsmch"
    long before ``gtol`` (e.g. 52 iterations, gradient 0.8): a fresh start
    drops the stale curvature pairs, as a user of L-BFGS-B would (64x256,
    40 rows: worst residual 0.68 -> 1.1e-5, benchmarks/lbfgsb_restarts.py). It does not help a code whose
    optimum is so near 0 that ``F`` cannot tell it from the bound (784x256:
    the bound's gradient -20.6, the change in ``F`` about ``lam w* = 1e-15``):
    such rows stay short of the tolerance, and ``reached`` says so.

    A restart also lifts codes that the line search drove onto the bound
    while their gradient there asks them to grow (KL's ``lam log(w / p)`` is
    about ``-700 lam`` at the bound) back to ``p``: from the bound its line
    search stops ("ABNORMAL"), and every restart from there stopped at once
    (a 40x12 problem's third row: residual 0.97, after one restart from
    ``p`` 3.5e-4, on an AMD EPYC; the same row converged on the machines before).
    """
    f, scale = _numpy_objective(family, prior, x_row, basis, gram, lam, p)
    k = basis.shape[1]
    # the smallest normal float64: a KL code whose optimum lies below it counts as optimal
    # there in the residual (diffsc.Problem.residual), as it does not at 1e-300
    lower = np.finfo(np.float64).tiny if prior == "kl" else None
    w = np.full(k, p) if lower else np.zeros(k)
    options = {"gtol": tol * scale, "ftol": 0, "maxiter": 20000}
    best = np.inf
    for _ in range(1 + restarts):
        res = scipy.optimize.minimize(f, w, jac=True, method="L-BFGS-B",
                                      bounds=[(lower, None)] * k if lower else None, options=options)
        projected = np.where((res.x <= lower) & (res.jac > 0), 0, res.jac) if lower else res.jac
        if np.abs(projected).max() <= options["gtol"] or res.fun >= best:
            break
        w, best = res.x, res.fun
        if lower:
            w = np.where((res.x <= lower) & (res.jac < 0), p, res.x)
    return res.x


def plain_fista(x, basis, lam, done, max_iter, chunk=10):
    """Float32 FISTA, no restart; stops when ``done(w)`` after a chunk of iterations."""
    d, k = basis.shape
    lipschitz = torch.linalg.matrix_norm(basis, ord=2) ** 2
    gram = k <= 2 * d  # the cheaper gradient: (N,K)@(K,K) or two (N,D,K) products
    if gram:
        g, c = basis.T @ basis, x @ basis
    w = torch.zeros(x.shape[0], k, dtype=x.dtype, device=x.device)
    y, t, it = w, 1.0, 0
    while it < max_iter:
        for _ in range(chunk):
            grad = y @ g - c if gram else (y @ basis.T - x) @ basis
            z = y - grad / lipschitz
            w_new = torch.sign(z) * (z.abs() - lam / lipschitz).clamp_min(0)
            t_new = (1 + math.sqrt(1 + 4 * t * t)) / 2
            y = w_new + ((t - 1) / t_new) * (w_new - w)
            w, t = w_new, t_new
        it += chunk
        if done(w):
            break
    return w, it


class Bench:
    def __init__(self, args):
        self.args = args
        self.device = args.device
        self._data, self._lam = {}, {}

    def data(self, size):
        if size not in self._data:
            d, k = (int(v) for v in size.split("x"))
            self._data[size] = harness.make_problem(self.args.n, d, k, self.args.seed)
        return self._data[size]

    def strength(self, size):
        """``(lam, nnz fraction)``: bisection (geometric) on the first 1000 rows."""
        if size not in self._lam:
            x, basis = self.data(size)
            sub = x[:1000].to(self.device)
            b = basis.to(self.device)
            hi = float((sub @ b).abs().max())  # every code is 0 above this
            lo = hi * 1e-3
            for _ in range(30):
                lam = math.sqrt(lo * hi)
                w, _ = diffsc.sparse_code_with_info(sub, b, family="gaussian", prior="l1", strength=lam)
                frac = float((w.abs() > 0).double().mean())
                if abs(frac - NNZ) <= 0.001:
                    break
                lo, hi = (lam, hi) if frac > NNZ else (lo, lam)
            self._lam[size] = (lam, frac)
        return self._lam[size]

    def row(self, section, problem, n, prior, method, dtype, device, seconds, base, peak, repeats,
            note, **accuracy):
        return {"section": section, "problem": problem, "n": n, "prior": prior, "method": method,
                "dtype": dtype, "device": device, "seconds": seconds,
                "ratio": seconds / base if base else float("nan"), **accuracy,
                "peak_MB": harness.megabytes(peak), "repeats": repeats, "note": note}

    def eg_cap(self, call):
        """``max_iter`` for EG: 4x what ``--eg-budget`` s allow at the pace of its first 10 iterations."""
        seconds, _, _ = harness.measure(lambda: call("eg", 10), 1, self.device)
        # x4: later iterations are cheaper (converged codes drop out of the batch).
        cap = int(4 * self.args.eg_budget / max(seconds / 10, 1e-9)) // 10 * 10
        return min(max(cap, 10), 20000)

    # ------------------------------------------------------------------ l1
    def l1(self):
        args, dev = self.args, self.device
        rows, targets = [], []
        for size in args.sizes:
            x, basis = self.data(size)
            n, (d, k) = x.shape[0], basis.shape
            lam, frac = self.strength(size)
            score = Scorer("gaussian", "l1", x, basis, lam)
            x64, b64 = x.to(dev), basis.to(dev)
            x32, b32 = x64.float(), b64.float()
            ref, _ = diffsc.sparse_code_with_info(x64, b64, family="gaussian", prior="l1",
                                                  strength=lam, tol=1e-12)
            f_ref = score.objective(ref)
            found = []  # (row, codes) until F* is known

            def add(method, dtype, device, seconds, peak, repeats, w, note):
                found.append(({"method": method, "dtype": dtype, "device": device, "seconds": seconds,
                               "peak": peak, "repeats": repeats, "note": note}, w))

            def skipped(method, dtype, why):
                add(method, dtype, "cpu", float("nan"), None, 0, None, f"skipped: {why}")

            def ours(dtype, **options):
                xs, bs = (x32, b32) if dtype == "float32" else (x64, b64)
                return lambda: diffsc.sparse_code_with_info(xs, bs, family="gaussian", prior="l1",
                                                            strength=lam, **options)

            s, peak, (w, info), r = timed(ours("float32"), args.repeats, dev)
            add("diffsc", "float32", dev, s, peak, r, w, converged_note(info) + ", default tol")
            s, peak, (w, info), r = timed(ours("float64", tol=1e-6), args.repeats, dev)
            add("diffsc", "float64", dev, s, peak, r, w, converged_note(info) + ", tol 1e-6")

            # scikit-learn: sparse_encode minimises 1/2 ||x - w B^T||^2 + alpha ||w||_1, alpha = lam.
            from sklearn.decomposition import sparse_encode
            from sklearn.linear_model import Lasso

            xn, bt = x.numpy(), np.ascontiguousarray(basis.numpy().T)
            if "lasso_lars" in args.skip:
                skipped("sklearn lasso_lars", "float64", "--skip")
            else:
                s, peak, w, r = timed(lambda: sparse_encode(xn, bt, algorithm="lasso_lars", alpha=lam),
                                      args.repeats, "cpu", once=True)
                add("sklearn lasso_lars", "float64", "cpu", s, peak, r, w, "sparse_encode defaults")

            def lasso_cd(max_iter, tol):
                if max_iter is None:
                    return lambda: sparse_encode(xn, bt, algorithm="lasso_cd", alpha=lam)
                # What sparse_encode builds, with max_iter and tol (which it does not expose) set.
                def go():
                    clf = Lasso(alpha=lam / d, fit_intercept=False, precompute=bt @ bt.T, tol=tol,
                                max_iter=max_iter, warm_start=True)
                    clf.fit(bt.T, xn.T, check_input=False)
                    return clf.coef_.reshape(n, k)
                return go

            def time_lasso_cd():
                """Its defaults, else up to three retries with 10x max_iter and 10x smaller tol."""
                settings = [(None, None)] + [(1000 * 10**i, 1e-8 / 10**i) for i in (1, 2, 3)]
                missed = []
                for max_iter, tol in settings:
                    fn = lasso_cd(max_iter, tol)
                    _release()
                    s, peak, w = harness.measure(fn, 1, "cpu")
                    gap = (score.objective(w) - f_ref) / f_ref
                    if gap <= GAP or (max_iter, tol) == settings[-1]:
                        r = 1
                        if s <= SLOW and args.repeats > 1:
                            s, _, w = harness.measure(fn, args.repeats, "cpu")
                            r = args.repeats
                        break
                    missed.append(f"gap {gap:.1e} with " + ("defaults" if max_iter is None
                                                            else f"max_iter={max_iter}, tol={tol:g}"))
                setting = ("sparse_encode defaults (max_iter=1000, tol=1e-8)" if max_iter is None
                           else f"Lasso as sparse_encode builds it, max_iter={max_iter}, tol={tol:g}")
                add("sklearn lasso_cd", "float64", "cpu", s, peak, r, w,
                    setting + "".join(f"; before: {m}" for m in missed))

            if "lasso_cd" in args.skip:
                skipped("sklearn lasso_cd", "float64", "--skip")
            else:
                time_lasso_cd()

            try:
                import spams
            except ImportError:
                spams = None
            for dtype in ("float64", "float32"):
                if spams is None:
                    skipped("spams lasso", dtype, "spams not importable")
                    continue
                xf = np.asfortranarray(xn.T, dtype=dtype)
                bf = np.asfortranarray(basis.numpy(), dtype=dtype)
                s, peak, w, r = timed(lambda: spams.lasso(xf, D=bf, lambda1=lam, mode=2, numThreads=2),
                                      args.repeats, "cpu")
                add("spams lasso", dtype, "cpu", s, peak, r, w.toarray().T, "mode=2, numThreads=2")

            def done(w):
                return (score.objective(w) - f_ref) / f_ref <= GAP

            s, peak, (w, it), r = timed(lambda: plain_fista(x32, b32, lam, done, args.fista_max_iter),
                                        args.repeats, dev)
            add("plain fista (torch)", "float32", dev, s, peak, r, w,
                f"{it} it, gap checked every 10 (included)")

            f_star = min([f_ref] + [score.objective(w) for _, w in found if w is not None])
            base = found[0][0]["seconds"]
            problem = f"{d}x{k}"
            for info, w in found:
                gap = (score.objective(w) - f_star) / f_star if w is not None else float("nan")
                res = score.residual(w) if w is not None else float("nan")
                note = info["note"] + (f"; lam={lam:.4g} ({100 * frac:.2f}% nnz)" if info is found[0][0] else "")
                rows.append(self.row("l1", problem, n, "l1", info["method"], info["dtype"],
                                     info["device"], info["seconds"], base, info["peak"],
                                     info["repeats"], note, objective_gap=gap, residual=res,
                                     reached=bool(gap <= GAP)))
            targets.append(self._targets(problem, [r for r in rows if r["problem"] == problem]))
        return rows, targets

    @staticmethod
    def _targets(problem, rows):
        def seconds(method, dtype="float64"):
            hit = [r for r in rows if r["method"] == method and r["dtype"] == dtype]
            return hit[0]["seconds"] if hit else float("nan")

        ours = seconds("diffsc", "float32")
        spams = min(seconds("spams lasso"), seconds("spams lasso", "float32"))
        lars = seconds("sklearn lasso_lars")
        compared = [r for r in rows if (r["method"], r["dtype"]) == ("diffsc", "float32")
                    or r["method"] in ("spams lasso", "sklearn lasso_lars")]
        return {"problem": problem, "diffsc_seconds": ours, "spams_seconds": spams,
                "spams_over_diffsc": spams / ours, "spams_2x": None if math.isnan(spams) else spams >= 2 * ours,
                "lars_seconds": lars, "lars_over_diffsc": lars / ours,
                "lars_20x": None if math.isnan(lars) else lars >= 20 * ours,
                "all_reached": all(r["reached"] for r in compared if not math.isnan(r["seconds"])),
                "note": "diffsc float32 default vs the faster SPAMS row (float64 or float32) and lasso_lars"}

    # ------------------------------------------------------------------ kl
    def _smooth(self, section, problem, x, basis, lam, priors, l1_solvers, lbfgs_rows, family="gaussian"):
        """Rows for the smooth priors, then L1, on one problem (float64, residual <= 1e-6)."""
        args, dev = self.args, self.device
        n = x.shape[0]
        xd, bd = x.to(dev), basis.to(dev)

        def call(prior, solver=None, max_iter=None):
            return diffsc.sparse_code_with_info(xd, bd, family=family, prior=prior, strength=lam,
                                                prior_mean=PRIOR_MEAN, tol=RESIDUAL, solver=solver,
                                                max_iter=max_iter)

        rows, newton = [], {}
        for prior in priors:
            score = Scorer(family, prior, x, basis, lam)

            def add(method, device, seconds, base, peak, repeats, res, note):
                rows.append(self.row(section, problem, n, prior, method, "float64", device, seconds,
                                     base, peak, repeats, note, residual=res, reached=bool(res <= RESIDUAL)))

            s, peak, (w, info), r = timed(lambda: call(prior), args.repeats, dev)
            newton[prior] = s
            add("diffsc default", dev, s, s, peak, r, score.residual(w), converged_note(info))
            if args.factored:  # the previous default, once: factored Newton steps
                s2, peak, (w, info), r = timed(lambda: call(prior, "newton"), 1, dev)
                add("diffsc newton (factored)", dev, s2, s, peak, r, score.residual(w), converged_note(info))
            if prior == "kl":
                cap = self.eg_cap(lambda solver, it: call(prior, solver, it))
                s2, peak, (w, info), r = timed(lambda: call(prior, "eg", cap), args.repeats, dev)
                add("diffsc eg", dev, s2, s, peak, r, score.residual(w),
                    converged_note(info) + f", max_iter={cap} (~{args.eg_budget:g} s cap)")
            rows_used = min(lbfgs_rows, n)
            # timed like the others (a median of 3 after an untimed run, when
            # short); enough rows that a signed-KL run is not tens of ms
            s2, peak, w, r = timed(lambda: lbfgsb(score, rows_used, RESIDUAL), args.repeats, "cpu")
            add("scipy L-BFGS-B per example", "cpu", s2 * n / rows_used, s, peak, r,
                score.residual(w, rows_used),
                f"extrapolated x{n / rows_used:g} from {rows_used} rows (their residual, peak)")

        score = Scorer(family, "l1", x, basis, lam)
        l1_base = None
        for solver in l1_solvers:
            s, peak, (w, info), r = timed(lambda: call("l1", solver), args.repeats, dev)
            note = converged_note(info) + f", tol 1e-6, {100 * float((w != 0).double().mean()):.1f}% nnz"
            if l1_base is None:
                l1_base = s
                note += "; " + ", ".join(f"{p}/L1 time = {newton[p] / s:.2f}" for p in priors) + " (target <= 2)"
            rows.append(self.row(section, problem, n, "l1", f"diffsc {solver or 'default'}", "float64", dev,
                                 s, l1_base, peak, r, note, residual=score.residual(w),
                                 reached=bool(score.residual(w) <= RESIDUAL)))
        return rows

    def kl(self):
        rows = []
        for size in self.args.kl_sizes:
            x, basis = self.data(size)
            lam, _ = self.strength(size)
            got = self._smooth("kl", size, x, basis, lam, ("kl", "signed_kl"), (None,), self.args.lbfgs_rows)
            got[0]["note"] += f"; lam={lam:.4g}, p={PRIOR_MEAN}"
            rows += got
        return rows

    def softmax(self):
        a = self.args
        x, basis = harness.make_problem(a.softmax_n, a.softmax_v, a.softmax_k, a.seed, family="softmax")
        lam = a.softmax_strength
        # the L1 default (proximal Newton on the CPU, the active set elsewhere), then the others
        default = default_solver(diffsc.Problem.of("softmax", "l1"), torch.empty(0, device=a.device))
        others = tuple(solver for solver in ("prox_newton", "active_set", "fista") if solver != default)
        rows = self._smooth("softmax", f"{a.softmax_v}x{a.softmax_k}", x, basis, lam, ("kl",),
                            (None, *others), a.lbfgs_rows, family="softmax")
        rows[0]["note"] += f"; lam={lam:g}, p={PRIOR_MEAN}, 200-word documents"
        return rows

    # ------------------------------------------------------------ backward
    def backward(self):
        rows = []
        for size in [self.args.backward_size] + self.args.backward_more:
            rows += self._backward(size, unrolled=size == self.args.backward_size)
        return rows

    def _backward(self, size, unrolled):
        a, dev = self.args, self.device
        x, basis = self.data(size)
        lam, _ = self.strength(size)
        n = x.shape[0]
        nu = min(a.unrolled_n, n)
        g = torch.Generator().manual_seed(a.seed + 1)
        weights = torch.randn(n, basis.shape[1], generator=g, dtype=torch.float64).to(dev)
        xd = x.to(dev)
        rows = []

        def sync():
            if torch.device(dev).type == "cuda":
                torch.cuda.synchronize(dev)

        for prior in ("l1", "kl"):
            score = Scorer("gaussian", prior, x, basis, lam)
            b = basis.to(dev).clone().requires_grad_(True)  # not the cached basis

            def forward(rows_=n, **options):
                return diffsc.sparse_code_with_info(xd[:rows_], b, family="gaussian", prior=prior,
                                                    strength=lam, prior_mean=PRIOR_MEAN, **options)

            def both(rows_=n, **options):
                """Gradient, codes, info and the backward's own seconds."""
                codes, info = forward(rows_, **options)
                sync()
                start = time.perf_counter()
                (grad,) = torch.autograd.grad((codes * weights[:rows_]).sum(), b)
                sync()
                return grad, codes.detach(), info, time.perf_counter() - start

            def add(method, rows_, max_iter, seconds, base, peak, repeats, w, note, saved="-"):
                res = score.residual(w, rows_) if w is not None else float("nan")
                rows.append(self.row("backward", size, rows_, prior, method, "float64", dev, seconds,
                                     base, peak, repeats, note, max_iter=max_iter, residual=res,
                                     reached=bool(res <= RESIDUAL), saved_MB=saved))

            sf, pf, (codes, info), rf = timed(forward, a.repeats, dev)
            graph = [(codes * weights).sum()]  # a list, so that the graph can be freed after timing
            sb, pb, _, rb = timed(lambda: torch.autograd.grad(graph[0], b, retain_graph=True), a.repeats, dev)
            graph.clear()
            del codes
            s, peak, (_, w, _, _), r = timed(both, a.repeats, dev)
            add("forward (default solver)", n, "-", sf, s, pf, rf, w, converged_note(info))
            add("backward implicit", n, "-", sb, s, pb, rb, w, f"backward/forward = {sb / sf:.2f} (target <= 1)")
            add("forward+backward implicit", n, "-", s, s, peak, r, w, f"lam={lam:.4g}, p={PRIOR_MEAN}")
            if not unrolled:
                continue
            # End to end on the fixed-iteration runs' rows: the default solver's
            # forward and the implicit backward, against each unrolled run that
            # reaches the residual too.
            sd, pd, (_, w, info_d, _), rd = timed(lambda: both(nu), a.repeats, dev)
            add("forward+backward implicit", nu, "-", sd, sd, pd, rd, w,
                f"default solver ({info_d.solver}); N={nu}, as the runs below")

            solvers = ("fista",) if prior == "l1" else ("newton", "eg")
            for solver in solvers:
                for i, it in enumerate(a.iterations):
                    options = dict(solver=solver, max_iter=it, tol=1e-30)
                    smaller = f"; N={nu} (fixed-iteration runs)" if nu < n else ""
                    try:
                        si, pi, (gi, w, info_i, bi), ri = timed(lambda: both(nu, **options), a.repeats, dev)
                        add(f"implicit {solver}", nu, it, si, si, pi, ri, w,
                            f"{int(info_i.iterations.max())} it run" + smaller,
                            saved_megabytes(lambda: forward(nu, **options)))
                    except RuntimeError as error:  # e.g. an L1 support larger than D, unconverged
                        si = gi = None
                        add(f"implicit {solver}", nu, it, float("nan"), None, None, 0, None,
                            f"failed: {str(error).split(', so')[0]}" + smaller)
                    su, pu, (gu, w, info_u, bu), ru = timed(lambda: both(nu, backward="unrolled", **options),
                                                        a.repeats, dev)
                    note = f"{int(info_u.iterations.max())} it run"
                    if bool(gu.isnan().any()):
                        note += f"; unrolled gradient has {int(gu.isnan().sum())} NaN entries"
                    if si is not None:
                        note += (f"; unrolled/implicit = {su / si:.1f} (target >= 5), "
                                 f"backward alone {bu:.3g} s vs {bi:.3g} s = {bu / bi:.1f}")
                    if score.residual(w, nu) <= RESIDUAL:
                        note += f"; end to end, unrolled/default forward+backward = {su / sd:.0f}"
                    if i == len(a.iterations) - 1:
                        g_conv = both(nu)[0]  # implicit, converged default forward
                        diffs = [(gi, "implicit (same forward)"), (g_conv, "converged default")]
                        note += "; grad rel. diff " + ", ".join(
                            f"{float((gu - ref).norm() / ref.norm()):.1e} vs {what}"
                            for ref, what in diffs if ref is not None)
                    add(f"unrolled {solver}", nu, it, su, si, pu, ru, w, note,
                        saved_megabytes(lambda: forward(nu, backward="unrolled", **options)))
        return rows


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default=",".join(SECTIONS), help="sections, comma-separated")
    parser.add_argument("--sizes", default=None, help=f"DxK list for l1 (default {SIZES})")
    parser.add_argument("--kl-sizes", default=None,
                        help=f"DxK list for kl (default {KL_SIZES}: at 784x512 a Newton solve "
                             "factors 10,000 512x512 systems an iteration, minutes per run)")
    parser.add_argument("--n", type=int, default=None, help="inputs per problem (default 10000)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs (default 3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eg-budget", type=float, default=None, help="seconds an EG run may take (100)")
    parser.add_argument("--unrolled-n", type=int, default=None, help="rows for the fixed-iteration runs (200)")
    parser.add_argument("--iterations", default=None, help="fixed iteration counts (25,50,100)")
    parser.add_argument("--softmax-strength", type=float, default=0.001, help="lam of the softmax section")
    parser.add_argument("--skip", default="", help="l1 peers to leave out: lasso_lars, lasso_cd (rows say so)")
    parser.add_argument("--no-factored", dest="factored", action="store_false",
                        help="kl, softmax: skip the factored Newton row (at 784x256 about a minute a prior)")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--smoke", action="store_true", help="tiny problems, one repeat (seconds)")
    args = parser.parse_args(argv)
    args.only = [s for s in args.only.split(",") if s]
    for s in args.only:
        if s not in SECTIONS:
            parser.error(f"--only: unknown section {s!r}; choose from {SECTIONS}")
    smoke = args.smoke
    defaults = dict(
        sizes=SMOKE_SIZES if smoke else SIZES, kl_sizes=SMOKE_SIZES if smoke else KL_SIZES,
        n=300 if smoke else 10000, repeats=1 if smoke else 3,
        eg_budget=2.0 if smoke else 100.0, unrolled_n=200,
    )
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.skip = set(filter(None, args.skip.split(",")))
    if args.skip - {"lasso_lars", "lasso_cd"}:
        unknown = sorted(args.skip - {"lasso_lars", "lasso_cd"})
        parser.error(f"--skip: unknown peers {unknown}; choose lasso_lars, lasso_cd")
    args.sizes = args.sizes.split(",")
    args.kl_sizes = args.kl_sizes.split(",")
    args.lbfgs_rows = 5 if smoke else 200  # 0.6-20 ms a row
    args.fista_max_iter = 5000
    args.softmax_v, args.softmax_k, args.softmax_n = (300, 30, 100) if smoke else (5000, 100, 2000)
    args.backward_size = args.sizes[0] if smoke else "64x256"
    # the other sizes: forward, backward and both only (no unrolled runs)
    args.backward_more = [size for size in args.sizes if size != args.backward_size]
    if args.iterations is None:
        args.iterations = "10,20,30" if smoke else "25,50,100"
    args.iterations = [int(v) for v in args.iterations.split(",")]
    args.out = Path(args.out)
    return args


def main(argv=None):
    """Run the sections; returns ``{section: rows}`` (and ``l1_targets`` with ``l1``)."""
    args = parse(argv)
    from sklearn.exceptions import ConvergenceWarning as SklearnConvergenceWarning

    bench, results = Bench(args), {}
    header = harness.machine_line(args.device)
    on = "" if torch.device(args.device).type == "cpu" else f"-{torch.device(args.device).type}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", diffsc.ConvergenceWarning)
        warnings.simplefilter("ignore", SklearnConvergenceWarning)  # judged by the gap instead
        for section in args.only:
            got = getattr(bench, section)()
            rows, extra = got if section == "l1" else (got, None)
            results[section] = rows
            print(f"\n{header}\ncodes {section}\n{harness.text_table(rows)}", flush=True)
            harness.write_rows(args.out, f"codes-{section}{on}", rows, header)
            if extra is not None:
                results["l1_targets"] = extra
                print(f"\nissue targets (l1)\n{harness.text_table(extra)}", flush=True)
                harness.write_rows(args.out, f"codes-l1-targets{on}", extra, header)
    return results


if __name__ == "__main__":
    main()
