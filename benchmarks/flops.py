"""The smooth-prior solver loop's achieved matrix-multiply FLOP/s, as a share of the device's peak.

Issue 5 asks, on a GPU, for "the solver loop's achieved FLOP/s as a fraction
of the card's matmul peak"; this measures it on whatever device runs it. For
each problem of ``codes.py``'s kl section (the planted gaussian problem,
N = 10,000, the section's ``lam`` for the size, ``p = 0.01``, residual 1e-6,
float64 codes) and each smooth prior:

- ``gflop_f32``, ``gflop_f64``: the matrix products of one solve, counted by
  dtype as torch dispatches them (``torch.utils.flop_counter``'s formulas for
  mm, addmm, bmm). The compiled loop's numba kernels are elementwise and are
  not counted; nor are the rare factored steps (``torch.linalg``);
- ``seconds``: the solve's wall time, the median of 3 after an untimed run;
- ``peak_f32``, ``peak_f64``: the device's matmul rate per dtype, GFLOP/s of
  a large square product (2048 on a CPU, 8192 on a GPU), the median of 5;
- ``achieved``: the counted GFLOP over the wall time, and ``of_f32_peak`` its
  share of the float32 peak (most of the loop's products are float32);
- ``at_peak``: the share of the wall time the counted products would take at
  their dtype's peak, ``(gflop_f32 / peak_f32 + gflop_f64 / peak_f64) / seconds``:
  how close the loop is to being bound by its matrix products alone;
- ``rows``: the rows Newton-CG solves together. ``--rows auto,512`` times
  both its default (512 on a CPU, on a GPU as many as a quarter of its free
  memory holds) and 512 rows;
- ``ops``, ``syncs``: the torch operators one solve dispatches, and the host
  reads among them (``bool(t)``, ``t.item()``). The compiled CPU loop's
  numba kernels are not among them; ``--torch-loop`` counts, on the CPU,
  the torch loop that CUDA runs, where each operator is a kernel launch and
  each host read waits for the GPU.

``--priors l1 --solvers active_set,fista`` counts the same for the L1
solvers a GPU can run (the same problems, the same ``lam``: the kl
section's is the one that gives 7.5% non-zero L1 codes). ``--family
softmax`` takes ``codes.py``'s text-like problem instead (V = 5,000,
K = 100, N = 2,000 documents, ``lam = 0.001``).

    python benchmarks/flops.py                      # CPU, about a minute
    python benchmarks/flops.py --device cuda --rows auto,512   # on a GPU
    python benchmarks/flops.py --torch-loop --rows 10000 --sizes 64x256,784x256 --repeats 1
                                                    # CUDA's loop on the CPU: its ops and syncs
    python benchmarks/flops.py --priors l1 --solvers active_set,fista --repeats 1   # L1 on a GPU's path
    python benchmarks/flops.py --family softmax --priors l1 --solvers active_set,prox_newton --repeats 1
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402
from profile_smooth import STRENGTH  # noqa: E402  (the kl section's strengths)

import diffsc  # noqa: E402
from diffsc import hessian_cg  # noqa: E402
newton_cg = importlib.import_module("diffsc.solvers.newton_cg")  # the module, not the function it exports


#: The priors timed by default: the smooth ones, the loop this measures.
PRIORS = "kl,signed_kl"
#: Problems (size: lam) and N per family: codes.py's kl and softmax sections.
PROBLEMS = {"gaussian": (STRENGTH, 10000), "softmax": ({"5000x100": 0.001}, 2000)}
#: Operators that copy a value to the host: on a GPU each waits for the queue to drain.
HOST_READS = {"aten._local_scalar_dense", "aten.is_nonzero", "aten.item"}


class MatmulFlops(TorchDispatchMode):
    """Counts the floating-point operations of the matrix products run inside,
    by dtype; and every operator dispatched (``ops``: on a GPU, a kernel
    launch each, most of them) and the host reads among them (``syncs``)."""

    def __init__(self):
        super().__init__()
        self.flops = Counter()
        self.ops = self.syncs = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self.ops += 1
        self.syncs += str(func._overloadpacket) in HOST_READS
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.flops[out.dtype] += formula(*args, **kwargs, out_val=out)
        return out


def matmul_peak(dtype, device, size, repeats=5):
    """GFLOP/s of a ``size x size`` product in ``dtype``: the median of ``repeats`` after one untimed."""
    a = torch.randn(size, size, dtype=dtype, device=device)
    b = torch.randn(size, size, dtype=dtype, device=device)
    a @ b
    seconds, _, _ = harness.measure(lambda: a @ b, repeats, str(device))
    return 2 * size**3 / seconds / 1e9


@contextmanager
def newton_cg_setting(rows, compiled):
    """Newton-CG solves ``rows`` rows together, on any device ("auto": its
    default), with its compiled CPU loop or not."""
    saved = newton_cg.CHUNK, hessian_cg.GPU_MEMORY_SHARE, newton_cg.COMPILED
    newton_cg.COMPILED = compiled
    if rows != "auto":
        newton_cg.CHUNK, hessian_cg.GPU_MEMORY_SHARE = int(rows), 0
    try:
        yield
    finally:
        newton_cg.CHUNK, hessian_cg.GPU_MEMORY_SHARE, newton_cg.COMPILED = saved


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", choices=sorted(PROBLEMS), default="gaussian")
    parser.add_argument("--sizes", default=None, help=f"DxK list, of {sorted(STRENGTH)} (gaussian)")
    parser.add_argument("--priors", default=PRIORS)
    parser.add_argument("--solvers", default="default", help="solver names for sparse_code, or default")
    parser.add_argument("--n", type=int, default=None, help="examples (default 10,000; softmax 2,000)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rows", default="auto", help="rows Newton-CG solves together: auto and/or numbers")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--torch-loop", action="store_true", help="the torch loop (CUDA's) on the CPU too")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--smoke", action="store_true", help="one small run (seconds)")
    args = parser.parse_args(argv)
    strength, n = PROBLEMS[args.family]
    args.sizes = args.sizes or ",".join(strength)
    args.n = args.n or n
    if args.smoke:
        args.sizes, args.n, args.repeats = ("64x256", 300, 1) if args.family == "gaussian" else ("5000x100", 20, 1)
        args.priors = "kl" if args.family == "gaussian" else args.priors
    device = torch.device(args.device)
    square = 8192 if device.type == "cuda" else 2048
    peak = {dtype: matmul_peak(dtype, device, 256 if args.smoke else square)
            for dtype in (torch.float32, torch.float64)}

    rows = []
    for size in args.sizes.split(","):
        d, k = map(int, size.split("x"))
        x, basis = harness.make_problem(args.n, d, k, seed=0, family=args.family)
        x, basis = x.to(device), basis.to(device)
        runs = [(p, r, s) for p in args.priors.split(",") for r in args.rows.split(",")
                for s in args.solvers.split(",")]
        for prior, chunk, solver in runs:
            def solve():
                return diffsc.sparse_code_with_info(x, basis, family=args.family, prior=prior, strength=strength[size],
                                                    prior_mean=0.01, tol=1e-6,
                                                    solver=None if solver == "default" else solver)

            with newton_cg_setting(chunk, compiled=not args.torch_loop):
                together = hessian_cg.rows_at_once(device, max(d, k), newton_cg.CHUNK)
                solve()  # untimed: compiles, warms the caches
                seconds, _, (_, info) = harness.measure(solve, args.repeats, args.device)
                with MatmulFlops() as counted:
                    solve()
            f32, f64 = counted.flops[torch.float32] / 1e9, counted.flops[torch.float64] / 1e9
            achieved = (f32 + f64) / seconds
            rows.append({
                "problem": size, "n": args.n, "prior": prior, "device": str(device), "rows": min(together, args.n),
                "seconds": seconds,
                "gflop_f32": f32, "gflop_f64": f64, "achieved_GFLOPs": achieved,
                "peak_f32": peak[torch.float32], "peak_f64": peak[torch.float64],
                "of_f32_peak": achieved / peak[torch.float32],
                "at_peak": (f32 / peak[torch.float32] + f64 / peak[torch.float64]) / seconds,
                "ops": counted.ops, "syncs": counted.syncs,
                "note": f"solver {info.solver}, {int(info.converged.sum())}/{args.n} converged",
            })
    header = harness.machine_line(args.device)
    print(f"{header}\nmatrix-multiply FLOP/s of the solver loop\n{harness.text_table(rows)}")
    if not args.smoke:
        loop = "-torch-loop" if args.torch_loop else ""
        priors = "" if args.priors == PRIORS else "-" + args.priors.replace(",", "-")
        family = "" if args.family == "gaussian" else f"-{args.family}"
        harness.write_rows(Path(args.out), f"flops-{device.type}{loop}{priors}{family}", rows, header)
    return rows


if __name__ == "__main__":
    main()
