"""Where Newton-CG's time goes on a smooth-prior problem of ``codes.py``.

Solves the planted gaussian problem (``harness.make_problem``, the ``kl``
section's ``lam`` for the size, ``p = 0.01``, residual 1e-6) once under the
torch profiler and prints: the time, the share of the matrix products
(``aten::mm``) in the wall time, the Newton steps per code, and the
Hessian products per Newton step (each chunk's steps, counted by wrapping
the functions that make them).

    python benchmarks/profile_smooth.py --size 64x256 --prior signed_kl
"""

from __future__ import annotations

import argparse
import sys
import time
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
    args = parser.parse_args(argv)
    d, k = map(int, args.size.split("x"))
    x, basis = harness.make_problem(args.n, d, k, seed=0)
    options = dict(family="gaussian", prior=args.prior, strength=STRENGTH[args.size], prior_mean=0.01,
                   tol=1e-6, solver="newton_cg")
    diffsc.sparse_code_with_info(x[:100], basis, **options)  # warm-up

    # Products are counted where they are made: hessian_cg.Products in the
    # torch loop, the compiled loop's _Chunk.product (gaussian codes on the CPU).
    calls, per_step = [], []
    patched = [(hessian_cg.Products, "__call__"), (compiled._Chunk, "product"),
               (newton_cg, "_direction"), (compiled, "_newton_step")]
    originals = [getattr(owner, name) for owner, name in patched]

    def counted(original):
        def product(*args, **kwargs):
            calls.append(1)
            return original(*args, **kwargs)
        return product

    def step(original):
        def one_step(*args):
            before = len(calls)
            out = original(*args)
            per_step.append(len(calls) - before)
            return out
        return one_step

    for (owner, name), original, wrap in zip(patched, originals, [counted, counted, step, step]):
        setattr(owner, name, wrap(original))
    try:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            start = time.perf_counter()
            _, info = diffsc.sparse_code_with_info(x, basis, **options)
            seconds = time.perf_counter() - start
    finally:
        for (owner, name), original in zip(patched, originals):
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
    return {"seconds": seconds, "mm_share": mm / total, "products_per_step": per_step,
            "steps_max": int(steps.max())}


if __name__ == "__main__":
    main()
