"""Per-example L-BFGS-B with numpy's BLAS on one thread and on its default, side by side.

``codes.py`` runs its L-BFGS-B peer with numpy's BLAS limited to one thread
(``codes.lbfgsb``): its matrix-vector products are small, and with the
default (one thread per core) beside torch's own threads they wait on each
other. For the kl section's signed-KL problems and the softmax section's
KL problem, this times ``codes.lbfgsb`` on the first rows (200 gaussian,
as ``codes.py`` does; 20 softmax, which take 18 s with the default) with
one thread and with the default, alternately, ``--repeats`` times, and
reports the medians.

    python benchmarks/blas_threads.py            # about two minutes
    python benchmarks/blas_threads.py --smoke    # seconds; run by the tests
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import codes  # noqa: E402
import harness  # noqa: E402
from profile_smooth import STRENGTH  # noqa: E402  (the kl section's strengths)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--smoke", action="store_true", help="one small run (seconds)")
    args = parser.parse_args(argv)
    problems = [("64x256", "gaussian", "signed_kl", 200), ("784x256", "gaussian", "signed_kl", 200),
                ("5000x100", "softmax", "kl", 20)]
    if args.smoke:
        problems, args.repeats = [("16x32", "gaussian", "signed_kl", 3), ("60x8", "softmax", "kl", 3)], 1
    rows = []
    for size, family, prior, n in problems:
        d, k = map(int, size.split("x"))
        x, basis = harness.make_problem(n, d, k, seed=0, family=family)
        lam = STRENGTH.get(size, 0.001 if family == "softmax" else 0.1)
        scorer = codes.Scorer(family, prior, x, basis, lam)
        times = {1: [], None: []}
        for _ in range(args.repeats):
            for threads in times:
                start = time.perf_counter()
                codes.lbfgsb(scorer, n, codes.RESIDUAL, blas_threads=threads)
                times[threads].append(time.perf_counter() - start)
        one, default = statistics.median(times[1]), statistics.median(times[None])
        rows.append({"problem": size, "family": family, "prior": prior, "rows": n,
                     "one_thread_s": one, "default_threads_s": default, "slowdown": default / one})
    header = harness.machine_line()
    print(f"{header}\nper-example L-BFGS-B, numpy's BLAS on one thread and on its default "
          f"(median of {args.repeats}, alternating)\n{harness.text_table(rows)}")
    if not args.smoke:
        harness.write_rows(Path(args.out), "blas-threads", rows, header)
    return rows


if __name__ == "__main__":
    main()
