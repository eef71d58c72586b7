"""Small batches: diffsc's time per call against the peers' at N = 1 to 512 inputs.

``codes.py`` times N = 10,000 inputs, where each solver's fixed cost per
call (its Gram matrix, its start, its Python loop) is spread over the batch.
A PyTorch layer codes mini-batches, and an online user codes one input at a
time: there the fixed cost is the time. This script times one call of each
method on the first N inputs of ``codes.py``'s problems (same seed, same
bisected L1 strength, ``p = 0.01``), float64, for each N of ``--batches``:

- ``l1``: diffsc (default solver, ``tol = 1e-6``), SPAMS ``lasso`` (mode 2,
  2 threads; also given the Gram matrix ``Q = B^T B``, formed once outside
  the timing, as diffsc keeps its own for a basis coded again unchanged)
  and scikit-learn ``sparse_encode`` (``lasso_cd``; ``lasso_lars`` too with
  ``--lars``); reached: relative objective gap to diffsc's ``tol = 1e-12``
  codes ``<= 1e-4`` (as in ``codes.py``).
- ``kl`` and ``signed_kl``: diffsc (default solver, ``tol = 1e-6``) and
  scipy's L-BFGS-B per example (``codes.lbfgsb``: numpy objective, one BLAS
  thread, stopped at the gradient that guarantees the residual), timed on
  the first ``min(N, 50)`` inputs and scaled to N; reached: worst relative
  optimality residual ``<= 1e-6`` (on those inputs for L-BFGS-B).
- ``diffsc forward+backward``: a layer's training step for each prior (the
  codes at ``tol = 1e-6`` and the basis gradient of ``(codes *
  weights).sum()``), its ``ratio`` the step over diffsc's forward call
  above; the note gives the backward alone (``reached`` is not judged).

diffsc's repeated calls code one unchanged basis, so from the third on
they take the Gram matrix ``B^T B`` kept from the calls before
(:mod:`diffsc.gram_memo`), as inference with a fixed model does; the
training steps change the basis every step, as an optimiser does.

``seconds`` is the median over repeats that together take at least
``--budget`` seconds (at least 3), after one untimed call; ``ratio`` = the
method's seconds / diffsc's on the same problem, prior and N (> 1: diffsc
is faster). Results go to ``results/batch-sizes.{csv,json,md}``.

    python benchmarks/batch_sizes.py              # about 2 minutes
    python benchmarks/batch_sizes.py --smoke      # run by the tests
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import types
import warnings
from pathlib import Path

import numpy as np
import torch

import diffsc

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402  (benchmarks/harness.py)
from codes import GAP, PRIOR_MEAN, RESIDUAL, Bench, Scorer, lbfgsb  # noqa: E402

LBFGSB_ROWS = 50  # L-BFGS-B is timed on at most this many inputs and scaled to N


def timed(fn, budget):
    """``(median seconds, last result)``: one untimed call, then repeats for ``budget`` s (at least 3)."""
    out = fn()
    times = []
    while len(times) < 3 or sum(times) < budget:
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def peers_l1(x, basis, lam, lars):
    """``{method: callable -> codes (N, K) numpy}`` for the L1 peers that are installed."""
    from sklearn.decomposition import sparse_encode

    xn, bt = x.numpy(), np.ascontiguousarray(basis.numpy().T)
    found = {"sklearn lasso_cd": lambda: sparse_encode(xn, bt, algorithm="lasso_cd", alpha=lam)}
    if lars:
        found["sklearn lasso_lars"] = lambda: sparse_encode(xn, bt, algorithm="lasso_lars", alpha=lam)
    try:
        import spams
    except ImportError:
        return found
    xf, bf = np.asfortranarray(xn.T), np.asfortranarray(basis.numpy())
    found["spams lasso"] = lambda: spams.lasso(xf, D=bf, lambda1=lam, mode=2, numThreads=2).toarray().T
    # a fixed basis's Gram matrix formed once, outside the timing, as diffsc keeps its own (gram_memo)
    gram = np.asfortranarray(bf.T @ bf)
    found["spams lasso (Gram given)"] = lambda: spams.lasso(
        xf, Q=gram, q=np.asfortranarray(bf.T @ xf), lambda1=lam, mode=2, numThreads=2).toarray().T
    return found


def training_step(x, basis, prior, lam, budget):
    """``(step, backward)`` median seconds of a layer's training step: the
    codes (``tol = 1e-6``, as the forward rows) and the basis gradient of
    ``(codes * weights).sum()``, then a tiny gradient step on the basis (in
    place, untimed, as an optimiser's: no step reuses another's ``G``); one
    untimed step, then at least 5 for ``budget`` seconds."""
    basis = basis.clone().requires_grad_()
    weights = torch.randn(x.shape[0], basis.shape[1], generator=torch.Generator().manual_seed(1),
                          dtype=x.dtype)
    steps, backward = [], []
    while len(steps) < 6 or sum(steps) < budget:
        start = time.perf_counter()
        codes = diffsc.sparse_code(x, basis, prior=prior, strength=lam, prior_mean=PRIOR_MEAN, tol=RESIDUAL)
        middle = time.perf_counter()
        (grad,) = torch.autograd.grad((codes * weights).sum(), basis)
        steps.append(time.perf_counter() - start)
        backward.append(time.perf_counter() - middle)
        with torch.no_grad():
            basis -= 1e-9 * grad
    return statistics.median(steps[1:]), statistics.median(backward[1:])


def run(sizes, batches, budget, lars=False, n_data=10000):
    """The table's rows; ``n_data``: inputs drawn (``codes.py``'s problems, whose first ``N`` are coded)."""
    bench = Bench(types.SimpleNamespace(n=n_data, seed=0, device="cpu"))
    rows = []
    for size in sizes:
        x_all, basis = bench.data(size)
        lam, _ = bench.strength(size)
        for n in batches:
            x = x_all[:n]

            def add(prior, method, seconds, base, reached, note=""):
                rows.append({"problem": size, "n": n, "prior": prior, "method": method,
                             "seconds": seconds, "per_input_ms": 1e3 * seconds / n,
                             "ratio": seconds / base, "reached": reached, "note": note})

            def step(prior, base):
                seconds, backward = training_step(x, basis, prior, lam, budget)
                add(prior, "diffsc forward+backward", seconds, base, True, f"backward {1e3 * backward:.3g} ms")

            # L1: the objective gap to tight codes
            score = Scorer("gaussian", "l1", x, basis, lam)
            ref = diffsc.sparse_code(x, basis, prior="l1", strength=lam, tol=1e-12)
            f_ref = score.objective(ref)

            def gap_ok(w):
                return score.objective(w) - f_ref <= GAP * f_ref  # (F* = 0 where an input is 0)

            base, w = timed(lambda: diffsc.sparse_code(x, basis, prior="l1", strength=lam, tol=1e-6), budget)
            add("l1", "diffsc", base, base, gap_ok(w))
            step("l1", base)
            for method, fn in peers_l1(x, basis, lam, lars).items():
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # lasso_cd's ConvergenceWarning: `reached` tells
                    seconds, w = timed(fn, budget)
                add("l1", method, seconds, base, gap_ok(w))

            # KL and signed KL: the worst residual
            for prior in ("kl", "signed_kl"):
                score = Scorer("gaussian", prior, x, basis, lam)

                def ours():
                    return diffsc.sparse_code(x, basis, prior=prior, strength=lam, prior_mean=PRIOR_MEAN,
                                              tol=RESIDUAL)

                base, w = timed(ours, budget)
                add(prior, "diffsc", base, base, score.residual(w) <= RESIDUAL)
                step(prior, base)
                m = min(n, LBFGSB_ROWS)
                seconds, w = timed(lambda: lbfgsb(score, m, RESIDUAL), budget)
                add(prior, "scipy L-BFGS-B per example", seconds * n / m, base,
                    score.residual(w, rows=m) <= RESIDUAL, "" if m == n else f"timed on {m} inputs, x{n / m:g}")
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="64x256,784x256")
    parser.add_argument("--batches", default="1,8,64,512")
    parser.add_argument("--budget", type=float, default=0.5, help="seconds of repeats per cell, at least")
    parser.add_argument("--lars", action="store_true", help="add scikit-learn's lasso_lars")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--smoke", action="store_true", help="tiny problems; run by the tests")
    args = parser.parse_args(argv)
    if args.smoke:
        rows = run(["16x32"], [1, 4], 0.0, n_data=200)
    else:
        rows = run(args.sizes.split(","), [int(b) for b in args.batches.split(",")], args.budget, args.lars)
    print(harness.machine_line())
    print(harness.text_table(rows))
    if not args.smoke:
        harness.write_rows(args.out, "batch-sizes", rows, harness.machine_line())
    return rows


if __name__ == "__main__":
    main()
