"""The command line: ``diffsc demo`` (also ``python -m diffsc demo``)."""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from .coding import sparse_code_with_info


def _digits(seed):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    return train_test_split(x / 16.0, y, test_size=0.3, stratify=y, random_state=seed)


def _maxent_accuracy(train, y_train, test, y_test):
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train)
    clf = LogisticRegression(max_iter=2000).fit(scaler.transform(train), y_train)
    return clf.score(scaler.transform(test), y_test)


def _top_mass(codes, share=0.1):
    """Mean share of each code's l1 mass held by its largest 10% of coefficients."""
    mags = np.sort(np.abs(codes), axis=1)[:, ::-1]
    top = max(1, int(round(share * mags.shape[1])))
    return float(np.mean(mags[:, :top].sum(1) / np.maximum(mags.sum(1), 1e-300)))


def demo(args) -> int:
    """Sparse codes of scikit-learn's digits under each prior, scored by maxent.

    The basis is ``--atoms`` training images scaled to unit norm (a data-sample
    dictionary); every code family shares it, so the table compares priors.
    """
    from sklearn.decomposition import PCA

    torch.manual_seed(args.seed)
    x_train, x_test, y_train, y_test = _digits(args.seed)
    rng = np.random.default_rng(args.seed)
    atoms = x_train[rng.choice(len(x_train), args.atoms, replace=False)].T
    basis = torch.from_numpy(atoms / np.linalg.norm(atoms, axis=0))
    print(f"digits: {len(x_train)} train / {len(x_test)} test images of 8x8 pixels; "
          f"basis: {args.atoms} training images as unit-norm atoms")

    rows = [("raw pixels", _maxent_accuracy(x_train, y_train, x_test, y_test), 0.0, float("nan"), "")]
    pca = PCA(args.atoms if args.atoms <= 64 else 64, random_state=args.seed).fit(x_train)
    rows.append(("PCA", _maxent_accuracy(pca.transform(x_train), y_train, pca.transform(x_test), y_test),
                 0.0, float("nan"), ""))
    for prior in ("l1", "kl", "signed_kl"):
        start = time.perf_counter()
        codes, infos = [], []
        for x in (x_train, x_test):
            w, info = sparse_code_with_info(torch.from_numpy(x), basis, prior=prior,
                                            strength=args.strength, prior_mean=args.prior_mean)
            codes.append(w.numpy())
            infos.append(info)
        seconds = time.perf_counter() - start
        sparsity = _top_mass(codes[0])
        iters = max(int(i.iterations.max()) for i in infos)
        rows.append((f"{prior} codes", _maxent_accuracy(codes[0], y_train, codes[1], y_test),
                     seconds, sparsity, f"{infos[0].solver}, <= {iters} it"))

    print(f"\n{'features':<16}{'test accuracy':>14}{'code time':>11}{'top-10% mass':>14}  solver")
    for name, acc, seconds, sparsity, solver in rows:
        print(f"{name:<16}{acc:>14.3f}{seconds:>10.2f}s{sparsity:>14.2f}  {solver}")

    # The codes are differentiable: one gradient of a loss on the KL codes
    # w.r.t. the basis, through the implicit backward pass (SPEC §2).
    b = basis.clone().requires_grad_()
    x = torch.from_numpy(x_train)
    start = time.perf_counter()
    w, _ = sparse_code_with_info(x, b, prior="kl", strength=args.strength, prior_mean=args.prior_mean)
    forward = time.perf_counter() - start
    start = time.perf_counter()
    w.square().sum().backward()
    backward = time.perf_counter() - start
    print(f"\nd(sum of squared KL codes)/d(basis): norm {b.grad.norm():.3g}; "
          f"forward {forward:.2f}s, implicit backward {backward:.2f}s for {len(x)} codes")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="diffsc", description="Differentiable sparse coding.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_demo = sub.add_parser("demo", help="sparse codes of scikit-learn's digits (no download)")
    p_demo.add_argument("--atoms", type=int, default=200, help="number of atoms K (default 200)")
    p_demo.add_argument("--strength", type=float, default=0.1, help="lambda (default 0.1)")
    p_demo.add_argument("--prior-mean", type=float, default=0.01, help="p of the KL priors (default 0.01)")
    p_demo.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    return demo(args)


if __name__ == "__main__":
    sys.exit(main())
