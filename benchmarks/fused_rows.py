"""Small batches of smooth-prior codes and gradients: the fused loops against the chunk loops.

Gaussian KL and signed-KL codes of batches of at most ``FUSED_ROWS`` rows,
cold started, take the fused loop (``diffsc.solvers.newton_cg_fused``: the
whole iteration one numba function); larger batches the chunk loop
(``newton_cg_compiled``; the fused loop off with ``newton_cg.FUSED``). For
each problem of ``codes.py``'s kl section (the planted problem, the
section's ``lam``, ``p = 0.01``, residual 1e-6, float64) and each batch size
of ``--batches``, both loops code the same ``--calls`` batches (consecutive
rows), alternating each ``--repeats`` times; a time is the median call of a
round, the best round's (times on these shared machines drift by 10-25%
over minutes). ``speedup`` = chunk loop / fused loop; ``steps``: Newton
steps a code, fused and chunk. Then the backward (the basis gradient of
``(codes * weights).sum()``, after each batch's codes, untimed) with the
fused CG (``diffsc.hessian_cg.fused_cg_rows``) and with ``compiled_cg``,
alternating likewise: ``backward_speedup``. Here ``FUSED_ROWS`` and
``FUSED_CG_ROWS`` are set above every batch size, so that the fused loops
are timed where the defaults would not take them.

    python benchmarks/fused_rows.py               # about a minute
    python benchmarks/fused_rows.py --smoke       # seconds; run by the tests
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

import torch  # noqa: E402

import diffsc  # noqa: E402
import diffsc.hessian_cg as hessian_cg  # noqa: E402

newton_cg = importlib.import_module("diffsc.solvers.newton_cg")  # the module, not the function it exports


def _round(x, basis, n, calls, options):
    """The median time of ``calls`` calls on batches of ``n`` rows, and the last call's info."""
    times = []
    for c in range(calls):
        rows = x[c * n:(c + 1) * n]
        start = time.perf_counter()
        _, info = diffsc.sparse_code_with_info(rows, basis, **options)
        times.append(time.perf_counter() - start)
    return statistics.median(times), info


def _backward_round(x, basis, n, calls, options):
    """The median time of ``calls`` backward passes (the basis gradient of
    ``(codes * weights).sum()``), each after its batch's codes (untimed)."""
    basis = basis.clone().requires_grad_(True)
    weights = torch.linspace(-1, 1, basis.shape[1], dtype=basis.dtype)
    times = []
    for c in range(calls):
        loss = (diffsc.sparse_code(x[c * n:(c + 1) * n], basis, **options) * weights).sum()
        start = time.perf_counter()
        loss.backward()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="64x256,64x512,784x256", help=f"DxK list, of {sorted(STRENGTH)}")
    parser.add_argument("--priors", default="kl,signed_kl")
    parser.add_argument("--batches", default="1,4,8,16,32,64")
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--smoke", action="store_true", help="one small run (seconds)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.sizes, args.priors, args.batches, args.calls, args.repeats = "64x256", "kl", "1,4", 2, 1
    batches = [int(b) for b in args.batches.split(",")]

    rows = []
    fused_rows, fused_cg_rows = newton_cg.FUSED_ROWS, hessian_cg.FUSED_CG_ROWS
    newton_cg.FUSED_ROWS = max(batches)
    try:
        for size in args.sizes.split(","):
            d, k = map(int, size.split("x"))
            x, basis = harness.make_problem(args.calls * max(batches), d, k, seed=0)
            for prior in args.priors.split(","):
                options = dict(family="gaussian", prior=prior, strength=STRENGTH[size], prior_mean=0.01, tol=1e-6)
                for n in batches:
                    best, info = {True: float("inf"), False: float("inf")}, {}
                    for fused in (True, False):  # untimed: compiles, keeps the basis's Gram matrix
                        newton_cg.FUSED = fused
                        diffsc.sparse_code_with_info(x[:n], basis, **options)
                    back = {True: float("inf"), False: float("inf")}
                    for _ in range(args.repeats):
                        for fused in (True, False):
                            newton_cg.FUSED = fused
                            seconds, info[fused] = _round(x, basis, n, args.calls, options)
                            best[fused] = min(best[fused], seconds)
                        newton_cg.FUSED = True
                        for fused in (True, False):
                            hessian_cg.FUSED_CG_ROWS = max(batches) if fused else 0
                            back[fused] = min(back[fused], _backward_round(x, basis, n, args.calls, options))
                        hessian_cg.FUSED_CG_ROWS = fused_cg_rows
                    rows.append({
                        "problem": size, "prior": prior, "n": n,
                        "fused_ms": 1e3 * best[True], "chunk_ms": 1e3 * best[False],
                        "speedup": best[False] / best[True],
                        "fused_steps": float(info[True].iterations.double().mean()),
                        "chunk_steps": float(info[False].iterations.double().mean()),
                        "converged": bool(info[True].converged.all() and info[False].converged.all()),
                        "backward_fused_ms": 1e3 * back[True], "backward_chunk_ms": 1e3 * back[False],
                        "backward_speedup": back[False] / back[True],
                    })
    finally:
        newton_cg.FUSED, newton_cg.FUSED_ROWS, hessian_cg.FUSED_CG_ROWS = True, fused_rows, fused_cg_rows
    header = harness.machine_line()
    print(f"{header}\nSmooth-prior codes of small batches: the fused loop and the chunk loop "
          f"(median call of {args.calls}, best of {args.repeats} alternating rounds)\n{harness.text_table(rows)}")
    if not args.smoke:
        harness.write_rows(Path(args.out), "fused-rows", rows, header)
    return rows


if __name__ == "__main__":
    main()
