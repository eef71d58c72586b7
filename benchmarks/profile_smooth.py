"""Where Newton-CG's time and work go on a smooth-prior problem of ``codes.py``.

Solves the planted gaussian problem (``harness.make_problem``, the ``kl``
section's ``lam`` for the size, ``p = 0.01``, residual 1e-6) once under the
torch profiler and prints: the time, the share of the matrix products
(``aten::mm``) in the wall time, the Newton steps per code, and the
Hessian products per Newton step (each chunk's steps, counted by wrapping
the functions that make them). Then the work by Newton step: per phase
(float32's first steps, then float64's) and step (0 is the start's
evaluation), the rows that took it and the rows of Hessian products and of
objective-and-gradient evaluations it cost, each a matrix product per row,
per code of the problem. ``--forcing`` sets the inexact Newton steps'
relative accuracy (``newton_cg._FORCING``, 0.1): at 1e-3 they are nearly
exact, which shows how many steps the curve itself needs.

    python benchmarks/profile_smooth.py --size 64x256 --prior signed_kl
    python benchmarks/profile_smooth.py --size 784x256 --prior kl --forcing 1e-3
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

import diffsc  # noqa: E402
import diffsc.hessian_cg as hessian_cg  # noqa: E402
import diffsc.solvers.newton_cg_compiled as compiled  # noqa: E402

newton_cg = sys.modules["diffsc.solvers.newton_cg"]  # the module (the package exports its function)

#: the kl section's strengths (codes.py bisects them for 7.5% L1 non-zeros)
STRENGTH = {"64x256": 0.1885, "64x512": 0.3113, "784x256": 0.03026}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="64x256", help=f"one of {sorted(STRENGTH)}")
    parser.add_argument("--prior", default="signed_kl", choices=["kl", "signed_kl", "l2"])
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--forcing", type=float, default=newton_cg._FORCING,
                        help="relative accuracy of each Newton step's CG (default %(default)s)")
    args = parser.parse_args(argv)
    d, k = map(int, args.size.split("x"))
    x, basis = harness.make_problem(args.n, d, k, seed=0)
    options = dict(family="gaussian", prior=args.prior, strength=STRENGTH[args.size], prior_mean=0.01,
                   tol=1e-6, solver="newton_cg")
    diffsc.sparse_code_with_info(x[:100], basis, **options)  # warm-up

    # Products are counted where they are made: hessian_cg.Products in the
    # torch loop, the compiled loop's _Chunk.product (gaussian codes on the CPU);
    # evaluations likewise; steps where each chunk solve (a phase) takes one.
    calls, per_step = [], []
    work = Counter()  # (phase, step, "products" | "evaluations" | "rows") -> rows
    at = {"phase": None, "step": 0}

    def solve(original):
        def chunk_solve(model, w, *args, **options):
            at["phase"], at["step"] = str(w.dtype).removeprefix("torch."), 0
            return original(model, w, *args, **options)
        return chunk_solve

    def rows_of(kind, original):
        def counted(owner, v, *args, **kwargs):
            work[at["phase"], at["step"], kind] += v.shape[0]
            if kind == "products":
                calls.append(1)
            return original(owner, v, *args, **kwargs)
        return counted

    def step(original, rows):
        def one_step(*args):
            at["step"] += 1
            work[at["phase"], at["step"], "rows"] += rows(args)
            before = len(calls)
            out = original(*args)
            per_step.append(len(calls) - before)
            return out
        return one_step

    patched = {
        (newton_cg, "_solve_chunk"): solve,
        (hessian_cg.Products, "__call__"): lambda f: rows_of("products", f),
        (compiled._Chunk, "product"): lambda f: rows_of("products", f),
        (newton_cg._Model, "evaluate"): lambda f: rows_of("evaluations", f),
        (compiled._Chunk, "loss_gradient"): lambda f: rows_of("evaluations", f),
        (newton_cg, "_direction"): lambda f: step(f, lambda a: a[1].shape[0]),  # (model, w, ...)
        (compiled, "_newton_step"): lambda f: step(f, lambda a: a[1].size),  # (chunk, idx, ...)
    }
    originals = {key: getattr(*key) for key in patched}
    for (owner, name), wrap in patched.items():
        setattr(owner, name, wrap(originals[owner, name]))
    forcing = newton_cg._FORCING
    newton_cg._FORCING = args.forcing
    try:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            start = time.perf_counter()
            _, info = diffsc.sparse_code_with_info(x, basis, **options)
            seconds = time.perf_counter() - start
    finally:
        newton_cg._FORCING = forcing
        for (owner, name), original in originals.items():
            setattr(owner, name, original)
    events = prof.key_averages()
    # the share of the wall time (the profiler does not see the compiled kernels)
    total = 1e6 * seconds
    mm = sum(e.self_cpu_time_total for e in events if e.key in ("aten::mm", "aten::addmm"))
    steps = info.iterations.float()
    print(harness.machine_line())
    print(f"{args.size} {args.prior} N={args.n}: {seconds:.3f} s, {1e6 * seconds / args.n:.0f} us a code; "
          f"matrix products {100 * mm / total:.0f}% of the (profiled) time")
    print(f"Newton steps per code: mean {float(steps.mean()):.2f}, max {int(steps.max())}; Hessian products "
          f"per step of a chunk ({newton_cg.CHUNK} rows): {min(per_step)}-{max(per_step)}, "
          f"mean {sum(per_step) / len(per_step):.1f}")
    table = by_step(work, args.n)
    print(f"Work by Newton step (forcing {args.forcing:g}), matrix products per code of the problem:")
    print(f"{'phase':8} {'step':>4} {'rows':>6} {'hessian':>8} {'evals':>6} {'share':>6}")
    for phase, step_no, rows, products, evaluations, share in table:
        print(f"{phase:8} {step_no:>4} {rows:>6} {products:>8.2f} {evaluations:>6.2f} {share:>6.1%}")
    print(f"all: {sum(r[3] for r in table):.2f} Hessian products and {sum(r[4] for r in table):.2f} "
          f"evaluations a code")
    return {"seconds": seconds, "mm_share": mm / total, "products_per_step": per_step,
            "steps_max": int(steps.max()), "by_step": table}


def by_step(work, n):
    """Rows ``(phase, step, rows, products, evaluations, share)``: products
    and evaluations per code of the ``n``, ``share`` of all their rows."""
    keys = sorted({(phase, step) for phase, step, _ in work}, key=lambda k: (k[0] != "float32", k[1]))
    total = sum(v for (_, _, kind), v in work.items() if kind != "rows")
    return [(phase, step, work[phase, step, "rows"], work[phase, step, "products"] / n,
             work[phase, step, "evaluations"] / n,
             (work[phase, step, "products"] + work[phase, step, "evaluations"]) / total)
            for phase, step in keys]


if __name__ == "__main__":
    main()
