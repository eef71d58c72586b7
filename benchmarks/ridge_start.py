"""Newton-CG with and without its ridge start, side by side in one process.

Gaussian KL and signed-KL codes asked to start at the prior's minimiser
start from the ridge codes ``(G + lam I)^{-1} B^T x`` (``diffsc.solvers.
newton_cg._RidgeStart``; off with ``newton_cg.RIDGE_START``). For each problem of ``codes.py``'s kl section (the
planted problem, N = 10,000, the section's ``lam``, ``p = 0.01``, residual
``--tol``, float64) and each prior, the two starts are timed alternately,
``--repeats`` times each (times on these shared machines drift by 10-25%
over minutes, so alternating is what makes them comparable), and the
median of each is reported with the Newton steps a code.

    python benchmarks/ridge_start.py                 # about two minutes
    python benchmarks/ridge_start.py --tol 1e-10     # float64's default tolerance
    python benchmarks/ridge_start.py --smoke         # seconds; run by the tests
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402
from profile_smooth import STRENGTH  # noqa: E402  (the kl section's strengths)

import diffsc  # noqa: E402

newton_cg = importlib.import_module("diffsc.solvers.newton_cg")  # the module, not the function it exports


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(STRENGTH), help=f"DxK list, of {sorted(STRENGTH)}")
    parser.add_argument("--priors", default="kl,signed_kl")
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--tol", type=float, default=1e-6)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--smoke", action="store_true", help="one small run (seconds)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.sizes, args.priors, args.n, args.repeats = "64x256", "kl", 300, 1

    rows = []
    try:
        for size in args.sizes.split(","):
            d, k = map(int, size.split("x"))
            x, basis = harness.make_problem(args.n, d, k, seed=0)
            for prior in args.priors.split(","):
                options = dict(family="gaussian", prior=prior, strength=STRENGTH[size], prior_mean=0.01,
                               tol=args.tol, solver="newton_cg")
                diffsc.sparse_code_with_info(x[:100], basis, **options)  # untimed: compiles, warms the caches
                times, steps = {True: [], False: []}, {}
                for _ in range(args.repeats):
                    for ridge in (True, False):
                        newton_cg.RIDGE_START = ridge
                        start = time.perf_counter()
                        _, info = diffsc.sparse_code_with_info(x, basis, **options)
                        times[ridge].append(time.perf_counter() - start)
                        steps[ridge] = info
                with_ridge, without = statistics.median(times[True]), statistics.median(times[False])
                rows.append({
                    "problem": size, "n": args.n, "prior": prior, "tol": args.tol,
                    "ridge_seconds": with_ridge, "plain_seconds": without, "speedup": without / with_ridge,
                    "ridge_steps": float(steps[True].iterations.double().mean()),
                    "plain_steps": float(steps[False].iterations.double().mean()),
                    "converged": bool(steps[True].converged.all() and steps[False].converged.all()),
                })
    finally:
        newton_cg.RIDGE_START = True
    header = harness.machine_line()
    print(f"{header}\nNewton-CG from the ridge start and from the prior's minimiser "
          f"(median of {args.repeats}, alternating)\n{harness.text_table(rows)}")
    if not args.smoke:
        tol = "" if args.tol == 1e-6 else f"-tol{args.tol:g}"
        harness.write_rows(Path(args.out), f"ridge-start{tol}", rows, header)
    return rows


if __name__ == "__main__":
    main()
