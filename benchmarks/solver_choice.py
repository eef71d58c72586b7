"""Why each prior has the solver it has: time to the same tolerance, side by side.

Problem (as in issue 5): a random gaussian basis with unit-norm atoms, inputs
that are sparse combinations of 5% of the atoms plus noise at 20 dB; for the
softmax family, 200-word documents drawn from the softmax of such combinations. Every
method solves the same batch to a relative optimality residual of ``--tol``
(``diffsc.Problem.residual``, float64), which the script checks; times are the
median of ``--repeats`` runs, and ratios are to diffsc's default solver.

    python benchmarks/solver_choice.py              # N=2000, D=64, K=256
    python benchmarks/solver_choice.py --d 784      # a tall basis
    python benchmarks/solver_choice.py --family softmax --d 5000 --k 100   # text-like counts
    python benchmarks/solver_choice.py --family poisson     # counts (or bernoulli: 0/1)
    python benchmarks/solver_choice.py --mnist      # a real, coherent basis
    python benchmarks/solver_choice.py --smoke      # seconds; run by the tests
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import scipy.optimize
import torch

import diffsc

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402  (benchmarks/harness.py)


def mnist_problem(n, k, seed):
    """The first ``n`` MNIST training images, coded on ``k`` others as atoms.

    A real, coherent basis. Reads ``$DIFFSC_DATA/mnist/train-images-idx3-ubyte.gz``
    (the official IDX file).
    """
    import gzip
    import os
    from pathlib import Path

    path = Path(os.environ.get("DIFFSC_DATA", "../shared/data")) / "mnist" / "train-images-idx3-ubyte.gz"
    if not path.exists():
        raise SystemExit(f"{path} is missing: set DIFFSC_DATA to a folder holding mnist/ "
                         "(the official files from http://yann.lecun.com/exdb/mnist/)")
    with gzip.open(path) as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 784) / 255.0
    rng = np.random.default_rng(seed)
    atoms = images[n + rng.choice(len(images) - n, k, replace=False)].T
    return torch.from_numpy(images[:n].copy()), torch.from_numpy(atoms / np.linalg.norm(atoms, axis=0))


def timed(fn, repeats):
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def residual(problem, x, basis, lam, p, w):
    lam_t, p_t = torch.tensor(lam, dtype=torch.float64), torch.tensor(p, dtype=torch.float64)
    target = problem.family.prepare(x)
    return float(problem.residual(target, basis, lam_t, p_t, torch.as_tensor(w)).max())


def lbfgsb(problem, x, basis, lam, p, tol):
    """Per-example scipy L-BFGS-B, with bounds w > 0 for KL (the classic reference)."""
    lam_t, p_t = torch.tensor(lam, dtype=torch.float64), torch.tensor(p, dtype=torch.float64)
    target = problem.family.prepare(x)
    k = basis.shape[1]
    bounds = [(1e-300, None)] * k if problem.prior.name == "kl" else None
    out = np.empty((x.shape[0], k))
    for i in range(x.shape[0]):
        row = target[i : i + 1]

        def f(w):
            wt = torch.from_numpy(w)[None]
            grad_loss, _ = problem.loss_gradient(row, basis, wt)
            grad = grad_loss + lam_t * problem.prior.grad(wt, p_t)
            return float(problem.objective(row, basis, lam_t, p_t, wt)), grad[0].numpy()

        start = np.full(k, p) if problem.prior.name == "kl" else np.zeros(k)
        res = scipy.optimize.minimize(f, start, jac=True, method="L-BFGS-B", bounds=bounds,
                                      options={"gtol": tol * 1e-3, "ftol": 0, "maxiter": 20000})
        out[i] = res.x
    return out


def run(args):
    family = args.family
    if args.mnist:
        x, basis = mnist_problem(args.n, args.k, args.seed)
        args.d = 784
    else:
        x, basis = harness.make_problem(args.n, args.d, args.k, args.seed, family)
    lam, p, tol = args.strength, args.prior_mean, args.tol
    rows = []

    def add(prior, method, seconds, w, note="", rows_used=slice(None)):
        problem = diffsc.Problem.of(family, prior)
        rows.append((prior, method, seconds, residual(problem, x[rows_used], basis, lam, p, w), note))

    def ours(prior, solver=None):
        def go():
            return diffsc.sparse_code_with_info(x, basis, family=family, prior=prior, strength=lam,
                                                prior_mean=p, tol=tol, solver=solver, max_iter=args.max_iter)

        seconds, (w, info) = timed(go, args.repeats)
        note = f"{int(info.iterations.max())} it max, {int(info.converged.sum())}/{len(w)} converged"
        return f"diffsc {'default (' + info.solver + ')' if solver is None else solver}", seconds, w, note

    warnings.simplefilter("ignore", diffsc.ConvergenceWarning)
    for prior in ("kl", "signed_kl"):
        add(prior, *ours(prior))
        if prior == "kl":
            add(prior, *ours(prior, "eg"))
        sub = slice(0, args.lbfgs_rows)
        problem = diffsc.Problem.of(family, prior)
        s, w = timed(lambda: lbfgsb(problem, x[sub], basis, lam, p, tol), 1)
        add(prior, f"scipy L-BFGS-B per example (x{args.n / args.lbfgs_rows:.0f} from {args.lbfgs_rows} rows)",
            s * args.n / args.lbfgs_rows, w, "extrapolated", sub)
    add("l1", *ours("l1"))
    for solver in ("active_set", "fista", "prox_newton"):
        add("l1", *ours("l1", solver))
    if family == "gaussian":
        from sklearn.decomposition import sparse_encode

        for algorithm in ("lasso_lars", "lasso_cd"):
            # sparse_encode minimises 1/2 ||x - w B^T||^2 + alpha ||w||_1: alpha = lam.
            s, w = timed(lambda: sparse_encode(x.numpy(), basis.numpy().T, algorithm=algorithm,
                                               alpha=lam, max_iter=10000), 1)
            add("l1", f"sklearn {algorithm}", s, w)

    base = {r[0]: r[2] for r in rows if r[1].startswith("diffsc default")}
    print(f"{family}{' (MNIST)' if args.mnist else ''} N={args.n} D={args.d} K={args.k} lam={lam} p={p} tol={tol} float64 cpu, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.machine()}")
    print(f"{'prior':<10}{'method':<58}{'seconds':>9}{'ratio':>8}{'residual':>11}  note")
    for prior, method, seconds, res, note in rows:
        print(f"{prior:<10}{method:<58}{seconds:>9.3f}{seconds / base[prior]:>8.1f}{res:>11.1e}  {note}")
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--family", choices=["gaussian", "softmax", "poisson", "bernoulli"], default="gaussian")
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--d", type=int, default=64)
    parser.add_argument("--k", type=int, default=256)
    parser.add_argument("--strength", type=float, default=0.1)
    parser.add_argument("--prior-mean", type=float, default=0.01)
    parser.add_argument("--tol", type=float, default=1e-6)
    parser.add_argument("--max-iter", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--lbfgs-rows", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mnist", action="store_true",
                        help="MNIST images coded on MNIST images (gaussian; needs DIFFSC_DATA)")
    parser.add_argument("--smoke", action="store_true", help="a tiny problem, one repeat")
    args = parser.parse_args(argv)
    if args.smoke:
        args.n, args.d, args.k, args.repeats, args.lbfgs_rows = 40, 16, 32, 1, 5
    return run(args)


if __name__ == "__main__":
    main()
