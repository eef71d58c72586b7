"""Weak KL priors on small overcomplete gaussian problems: how often the default solver crawls.

The tests' problems (``helpers.problem_data``: 16 inputs, ``D x K`` with
``K > D``, the inputs as drawn and times 10), ``--seeds`` seeds each,
gaussian KL codes at ``lam = p = 1e-4`` (the extreme setting of
``robustness.py``), float32 and float64, the default solver and tolerance,
``--max-iter`` steps. Under so weak a prior ``H`` is ``lam I`` on ``B``'s
null space, and Newton-CG's inexact directions (accurate to
``min(0.1, sqrt(residual))`` in CG's norm) can miss the part of the step
that lies there: such rows crawl, whole steps at a time that barely move
the residual. Prints per dtype the batches fully converged, the batches
whose slowest code took more than ``SLOW`` steps, the steps of all codes,
and the seconds; then the batches that fell short.

Then a weaker prior still: ``problem_data("gaussian", n=100, d=30, k=60)``,
seeds 1-4, KL at ``lam = 1e-6``, ``p = 0.01``, ``max_iter = 100`` (the
default): per dtype and seed, the codes converged and their mean steps. Its
optimum is nearly the nonnegative least-squares fit (30 codes of unit size,
30 of e^-60 to e^-700).

    python benchmarks/weak_kl.py            # 40 seeds, about a minute
    python benchmarks/weak_kl.py --smoke    # run by the tests
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import torch

import diffsc

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from helpers import problem_data  # noqa: E402  (the tests' problem generator)

SIZES = [(6, 12), (8, 12), (10, 16), (8, 20), (12, 30)]
SCALES = [1.0, 10.0]
SLOW = 60  # steps beyond which a batch counts as slow (the benchmarks' codes take 4-9)


def run(seeds, max_iter, dtypes=(torch.float32, torch.float64)):
    """``{dtype name: (converged, slow, batches, steps)}``; prints the table."""
    results, short = {}, []
    for dtype in dtypes:
        name = str(dtype).split(".")[1]
        converged = slow = batches = steps = 0
        start = time.perf_counter()
        for seed in range(seeds):
            for d, k in SIZES:
                x, basis = problem_data("gaussian", n=16, d=d, k=k, seed=seed, dtype=dtype)
                for scale in SCALES:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", diffsc.ConvergenceWarning)
                        _, info = diffsc.sparse_code_with_info(x * scale, basis, family="gaussian", prior="kl",
                                                               strength=1e-4, prior_mean=1e-4, max_iter=max_iter)
                    batches += 1
                    done = bool(info.converged.all())
                    converged += done
                    slow += int(info.iterations.max()) > SLOW
                    steps += int(info.iterations.sum())
                    if not done:
                        short.append(f"seed {seed} {d}x{k} inputs x{scale:g} {name}: "
                                     f"{int(info.converged.sum())}/16 codes, worst residual "
                                     f"{float(info.residual.max()):.2g} (tol {info.tol:g})")
        results[name] = (converged, slow, batches, steps)
        print(f"{name}: {converged}/{batches} batches converged, {slow} slow (a code over {SLOW} steps), "
              f"{steps} steps, {time.perf_counter() - start:.1f} s")
    for line in short:
        print("short:", line)
    return results


def weaker(seeds=(1, 2, 3, 4)):
    """The 30 x 60 problems at ``lam = 1e-6``: ``{(dtype, seed): (converged, mean steps)}``."""
    out = {}
    for dtype in (torch.float64, torch.float32):
        name = str(dtype).split(".")[1]
        for seed in seeds:
            x, basis = problem_data("gaussian", n=100, d=30, k=60, seed=seed, dtype=dtype)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", diffsc.ConvergenceWarning)
                _, info = diffsc.sparse_code_with_info(x, basis, family="gaussian", prior="kl", strength=1e-6,
                                                       prior_mean=0.01, max_iter=100)
            out[name, seed] = (int(info.converged.sum()), float(info.iterations.double().mean()))
            print(f"lam 1e-6, 30x60, seed {seed}, {name}: {out[name, seed][0]}/100 codes converged within "
                  f"100 steps, {out[name, seed][1]:.1f} steps a code")
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=40)
    parser.add_argument("--max-iter", type=int, default=300)
    parser.add_argument("--smoke", action="store_true", help="two seeds")
    args = parser.parse_args(argv)
    print(f"gaussian KL, lam = p = 1e-4, sizes {', '.join(f'{d}x{k}' for d, k in SIZES)}, "
          f"inputs x{', x'.join(f'{s:g}' for s in SCALES)}, max_iter={args.max_iter}, default solver")
    results = run(2 if args.smoke else args.seeds, args.max_iter)
    weaker((1,) if args.smoke else (1, 2, 3, 4))
    return results


if __name__ == "__main__":
    main()
