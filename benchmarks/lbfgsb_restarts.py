"""Per-example L-BFGS-B for KL codes with and without its restarts, side by side.

``codes.lbfgsb`` restarts a row's solve where L-BFGS-B stops short of its
gradient tolerance but still lowers ``F`` (``codes.LBFGSB_RESTARTS``). For
the kl section's KL problems this times it on the first rows of the same
N = 10,000 problem with no restarts and with the default, and reports each
one's time and worst relative residual (``diffsc.Problem.residual``).

    python benchmarks/lbfgsb_restarts.py            # about a minute
    python benchmarks/lbfgsb_restarts.py --smoke    # seconds; run by the tests
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import codes  # noqa: E402
import harness  # noqa: E402
from profile_smooth import STRENGTH  # noqa: E402  (the kl section's strengths)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=40)
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--smoke", action="store_true", help="one small run (seconds)")
    args = parser.parse_args(argv)
    sizes, n = ["64x256", "784x256"], 10000
    if args.smoke:
        sizes, n, args.rows = ["16x32"], 20, 3
    rows = []
    for size in sizes:
        d, k = map(int, size.split("x"))
        x, basis = harness.make_problem(n, d, k, seed=0)
        scorer = codes.Scorer("gaussian", "kl", x[:args.rows], basis, STRENGTH.get(size, 0.1))
        for restarts in (0, codes.LBFGSB_RESTARTS):
            start = time.perf_counter()
            w = codes.lbfgsb(scorer, args.rows, codes.RESIDUAL, restarts=restarts)
            seconds = time.perf_counter() - start
            residual = scorer.problem.residual(scorer.x, scorer.basis, scorer.lam, scorer.p, torch.from_numpy(w))
            rows.append({"problem": size, "rows": args.rows, "restarts": restarts, "seconds": seconds,
                         "worst_residual": float(residual.max()),
                         "rows_short": int((residual > codes.RESIDUAL).sum())})
    header = harness.machine_line()
    print(f"{header}\nper-example L-BFGS-B, KL codes, with and without restarts (one run each)\n"
          f"{harness.text_table(rows)}")
    if not args.smoke:
        harness.write_rows(Path(args.out), "lbfgsb-restarts", rows, header)
    return rows


if __name__ == "__main__":
    main()
