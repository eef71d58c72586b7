"""How long online learning's statistics should remember: J after each pass.

Online basis learning on the first ``--n`` MNIST training images (gaussian,
L1, ``lam = 0.5``, K = 256, mini-batches of 256, float32), from the same
initial atoms and in the same order, for several ``--windows``: the period,
in mini-batches, of ``diffsc.learning.BasisLearner``'s statistics (it keeps
the previous period's and the current one's). ``J`` is the mean MAP
objective over all ``N`` images after each pass. The default period,
``diffsc.learning.MEMORY`` = 10,000 examples (39 mini-batches of 256), comes
from this table.

    DIFFSC_DATA=../shared/data python benchmarks/online_memory.py
    python benchmarks/online_memory.py --smoke       # seconds; run by the tests
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import torch

import diffsc
from diffsc.datasets import load_mnist
from diffsc.learning import BasisLearner, initial_basis, mean_objective
from diffsc.problem import Problem

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402  (benchmarks/harness.py)


def objective(problem, x, basis, lam, p) -> float:
    """``J``: the mean MAP objective over ``x`` (diffsc's own ``mean_objective``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", diffsc.ConvergenceWarning)
        w = diffsc.sparse_code(x, basis, prior="l1", strength=lam)
    return mean_objective(problem, x, basis, lam, p, w)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=60000)
    p.add_argument("--k", type=int, default=256)
    p.add_argument("--strength", type=float, default=0.5)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--passes", type=int, default=2)
    p.add_argument("--windows", default="20,39,80,118,235", help="periods in mini-batches (39: the default)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--out", type=Path, default=Path(__file__).with_name("results"))
    args = p.parse_args(argv)
    if args.smoke:
        args.n, args.k, args.windows = 1000, 16, "2,4"
    images, _ = load_mnist("train", args.data_dir)
    x = torch.from_numpy(images[: args.n]).float()
    problem = Problem.of("gaussian", "l1")
    start = initial_basis(x, args.k, problem.family, torch.Generator().manual_seed(0))
    lam = torch.tensor(args.strength, dtype=x.dtype)
    p = torch.tensor(0.01, dtype=x.dtype)  # unused by L1
    rows = []
    for window in (int(v) for v in args.windows.split(",")):
        learner = BasisLearner(problem, start.clone(), lam, p)
        learner.window = window
        order_generator = torch.Generator().manual_seed(1)
        row = {"period_batches": window, "period_examples": window * args.batch_size}
        for done in range(1, args.passes + 1):
            order = torch.randperm(args.n, generator=order_generator)
            for s in range(0, args.n, args.batch_size):
                learner.online_step(x[order[s : s + args.batch_size]])
            row[f"J_pass_{done}"] = f"{objective(problem, x, learner.basis, lam, p):.4f}"
        rows.append(row)
    header = f"{harness.machine_line()}\nMNIST N={args.n} K={args.k} lam={args.strength} batch {args.batch_size}"
    print(f"{header}\n{harness.text_table(rows)}")
    harness.write_rows(args.out, "online-memory", rows, header)
    return rows


if __name__ == "__main__":
    main()
