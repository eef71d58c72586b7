"""The compiled gaussian L1 solver's time a code, on one thread, against another checkout's.

``diffsc.solvers.gram`` codes each input in its own compiled loop; a call
spreads blocks of inputs over the threads, so the L1 rows of ``codes.py``
are this loop's time a code, halved, plus ``X B``. Here the loop itself
runs on the calling thread (its blocks one after another) on ``codes.py``'s
l1 problems (the planted problem, ``--n`` inputs, the section's bisected
``lam``, cold start; float32 at its default tolerance 1e-4, float64 at
1e-6), given ``G`` and ``B^T x``, so that a change to the loop is measured
without ``X B``, the thread team or the harness.

``--against SRC`` loads a second copy of diffsc from the ``src`` folder of
another checkout (``git worktree add /tmp/base REV``) under another name,
and the two loops run alternately, ``--repeats`` times each: this machine's
times drift by 10-25% over minutes, so only alternating runs compare
(``--this SRC`` likewise replaces this checkout's copy). The table gives
the median microseconds a code, the iterations and support size a code,
the largest difference between the two versions' codes, and ``ratio`` =
the other's median / this one's (> 1: this one is faster). The two take
turns going first (the first of a pair ran slower in an early A/B). The
same code against itself read 0.82-1.03 here, median 0.996.

    python benchmarks/l1_per_code.py                              # one minute
    python benchmarks/l1_per_code.py --against /tmp/base/src      # two versions alternately
    python benchmarks/l1_per_code.py --smoke                      # seconds; run by the tests
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

from diffsc.gram_cholesky import BLOCK  # noqa: E402

#: codes.py's l1 strengths, bisected for 7.5% non-zero codes (its notes)
STRENGTH = {"64x256": 0.1885, "64x512": 0.3113, "784x256": 0.03026, "784x512": 0.04286}
TOL = {torch.float32: 1e-4, torch.float64: 1e-6}


def load_copy(src, name):
    """The ``diffsc`` package under ``src`` as ``name`` (its own modules and numba cache): its L1 solver module."""
    init = Path(src) / "diffsc" / "__init__.py"
    if not init.exists():
        raise SystemExit(f"no diffsc package at {init.parent}: give a checkout's src folder")
    spec = importlib.util.spec_from_file_location(name, init, submodule_search_locations=[str(init.parent)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return importlib.import_module(f"{name}.solvers.gram")


def run_loop(gram_module, gram, c, lam, tol, rank):
    """The loop over all rows on this thread: ``(seconds, codes, iterations)``."""
    n, k = c.shape
    w = np.zeros((n, k), c.dtype)
    iterations, residual = np.zeros(n, np.int64), np.zeros(n, c.dtype)
    start = time.perf_counter()
    for first in range(0, n, BLOCK):
        gram_module._solve_rows(gram, c, lam, w, False, tol, 1000, iterations, residual, rank, first)
    seconds = time.perf_counter() - start
    if not (residual <= tol).all():
        raise RuntimeError(f"{int((residual > tol).sum())} codes short of tol {tol}: not a fair timing")
    return seconds, w, iterations


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(STRENGTH), help=f"DxK list, of {sorted(STRENGTH)}")
    parser.add_argument("--dtypes", default="float32,float64")
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--against", default=None, help="another checkout's src folder, run alternately")
    parser.add_argument("--this", default=None, help="a checkout's src folder instead of the installed diffsc")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--smoke", action="store_true", help="one small run (seconds)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.sizes, args.n, args.repeats = "64x256", 300, 1
    this = load_copy(args.this, "diffsc_this") if args.this else importlib.import_module("diffsc.solvers.gram")
    versions = {"this": this}
    if args.against:
        versions["other"] = load_copy(args.against, "diffsc_other")

    rows = []
    for size in args.sizes.split(","):
        d, k = map(int, size.split("x"))
        x, basis = harness.make_problem(args.n, d, k, seed=0)
        for name in args.dtypes.split(","):
            dtype = getattr(torch, name)
            xs, bs = x.to(dtype), basis.to(dtype)
            c, gram = (xs @ bs).contiguous().numpy(), (bs.T @ bs).contiguous().numpy()
            lam = np.full(k, STRENGTH[size], c.dtype)
            times, codes = {v: [] for v in versions}, {}
            for v, module in versions.items():  # untimed: compiles or loads the kernels
                run_loop(module, gram, c[:BLOCK], lam, TOL[dtype], min(d, k))
            for repeat in range(args.repeats):
                order = list(versions.items())
                for v, module in order if repeat % 2 == 0 else order[::-1]:
                    seconds, w, iterations = run_loop(module, gram, c, lam, TOL[dtype], min(d, k))
                    times[v].append(seconds)
                    codes[v] = (w, iterations)
            w, iterations = codes["this"]
            row = dict(problem=size, dtype=name, n=args.n, us_a_code=statistics.median(times["this"]) / args.n * 1e6,
                       iterations=float(iterations.mean()), support=float((w != 0).sum(1).mean()))
            if args.against:
                row["other_us"] = statistics.median(times["other"]) / args.n * 1e6
                row["ratio"] = row["other_us"] / row["us_a_code"]
                row["max_code_diff"] = float(np.abs(w - codes["other"][0]).max())
                row["same_iterations"] = float((iterations == codes["other"][1]).mean())
            rows.append(row)
            print(harness.text_table([row]).splitlines()[-1], flush=True)

    header = (f"{harness.machine_line()}; one thread, the loop alone; {args.this or 'this checkout'}"
              f"{' against ' + args.against if args.against else ''}")
    print(f"\n{header}\n{harness.text_table(rows)}")
    if not args.smoke:
        harness.write_rows(Path(args.out), "l1-per-code", rows, header)
    return rows


if __name__ == "__main__":
    main()
