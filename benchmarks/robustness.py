"""How often the default solvers reach the tolerance, over a sweep of hard cases.

Random problems (D in [3, 40), K in [2, 80), 16 inputs each, gaussian inputs
scaled by 10 on odd seeds) for every family and smooth prior, five
(strength, prior mean) pairs from mild to extreme, float64 and float32, each
solved with the default tolerance and ``--max-iter``. Prints, per setting,
how many of the batches converged completely, the iterations their codes
took in all (``SolveInfo.iterations`` summed: Newton steps for the smooth
priors), and the seconds the solves took in all; then each batch that fell
short (its seed, family, size and setting). A batch that does not is
reported by the library with a ConvergenceWarning; this script counts them.

``--init V`` starts every code at ``V`` (a warm start far from the codes,
e.g. 1e29, 1e3 or 1e-30) instead of the solver's own start.

``--priors l1`` sweeps the L1 priors (``l1``, ``nonneg_l1``) of the
non-gaussian families instead, from strength 1e-4 to 5: the problems on which to compare
the L1 solvers (``--solver active_set``, ``--solver prox_newton``).
``--priors gaussian_l1`` sweeps the gaussian lasso the same way: at the weak
strengths the codes of an overcomplete basis use about ``D`` atoms, where
the compiled Gram solver must swap atoms in and out of a full support.

    python benchmarks/robustness.py                 # 25 seeds, a minute or two
    python benchmarks/robustness.py --priors l1 --solver prox_newton
    python benchmarks/robustness.py --priors gaussian_l1
    python benchmarks/robustness.py --seeds 10 --init 1e29
    python benchmarks/robustness.py --smoke         # run by the tests
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
import warnings
from collections import Counter
from pathlib import Path

import torch

import diffsc

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from helpers import random_basis, random_inputs  # noqa: E402  (the tests' problem generator)

SETTINGS = [(1e-4, 1e-4), (1e-2, 1e-3), (0.5, 0.1), (5.0, 2.0), (1e-3, 10.0)]
FAMILIES = ["gaussian", "softmax", "poisson", "bernoulli"]
PRIORS = ["l2", "kl", "signed_kl"]
# L1: the prior mean plays no part
L1_SETTINGS = [(1e-4, 1.0), (1e-2, 1.0), (0.5, 1.0), (5.0, 1.0)]
SWEEPS = {"smooth": (FAMILIES, PRIORS, SETTINGS),
          "l1": (FAMILIES[1:], ["l1", "nonneg_l1"], L1_SETTINGS),
          "gaussian_l1": (FAMILIES[:1], ["l1", "nonneg_l1"], L1_SETTINGS)}


def run(seeds, max_iter, solver=None, priors="smooth", device="cpu", init=None):
    families, prior_names, settings = SWEEPS[priors]
    done, total, steps = Counter(), Counter(), Counter()
    short = []  # the batches that fell short
    seconds = 0.0
    for seed in range(seeds):
        g = torch.Generator().manual_seed(seed)
        d = int(torch.randint(3, 40, (1,), generator=g))
        k = int(torch.randint(2, 80, (1,), generator=g))
        for family, prior, (lam, p) in itertools.product(families, prior_names, settings):
            x = random_inputs(family, 16, d, g) * (10 if family == "gaussian" and seed % 2 else 1)
            basis = random_basis(d, k, g)
            for dtype in (torch.float64, torch.float32):
                start = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", diffsc.ConvergenceWarning)
                    start_codes = None if init is None else torch.full((x.shape[0], k), init, dtype=dtype,
                                                                        device=device)
                    w, info = diffsc.sparse_code_with_info(
                        x.to(device, dtype), basis.to(device, dtype), family=family, prior=prior,
                        strength=lam, prior_mean=p, max_iter=max_iter, solver=solver, init=start_codes,
                    )
                seconds += time.perf_counter() - start
                key = (prior, lam, p, str(dtype).split(".")[1])
                total[key] += 1
                converged = info.all_converged and bool(torch.isfinite(w).all())
                done[key] += int(converged)
                if not converged:
                    short.append(f"seed {seed} {family} {d}x{k} {prior} lam {lam:g} p {p:g} {key[3]}: "
                                 f"{int(info.converged.sum())}/{x.shape[0]} codes, worst residual "
                                 f"{float(info.residual.max()):.2g} (tol {info.tol:g})")
                steps[key] += int(info.iterations.sum())
    start = "its own start" if init is None else f"every code at {init:g}"
    print(f"{seeds} seeds x {len(families)} families, max_iter={max_iter}, solver {solver or 'default'}, "
          f"from {start}: batches fully converged")
    print(f"{'prior':<10}{'lam':>8}{'p':>8}  {'dtype':<8}{'converged':>10}{'steps':>9}")
    for key in sorted(total):
        prior, lam, p, dtype = key
        print(f"{prior:<10}{lam:>8g}{p:>8g}  {dtype:<8}{done[key]:>6}/{total[key]:<3}{steps[key]:>9}")
    print(f"all: {sum(done.values())}/{sum(total.values())}, solved in {seconds:.1f} s")
    for line in short:
        print("short:", line)
    return done, total


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=25)
    parser.add_argument("--max-iter", type=int, default=300)
    parser.add_argument("--smoke", action="store_true", help="one seed")
    parser.add_argument("--solver", default=None, help="e.g. newton (factored); default: the library's")
    parser.add_argument("--priors", choices=sorted(SWEEPS), default="smooth")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--init", type=float, default=None, help="start every code here (a far warm start)")
    args = parser.parse_args(argv)
    return run(1 if args.smoke else args.seeds, args.max_iter, args.solver, args.priors, args.device, args.init)


if __name__ == "__main__":
    main()
