"""MNIST digits: maxent on raw pixels, PCA, L1 codes, KL codes and fine-tuned KL codes.

The protocol (the paper's handwritten-digit experiment, adapted to two CPU
cores; the settings are printed into the results):

1. A basis of ``--atoms`` atoms is learned **without labels** on
   ``--basis-images`` training images (gaussian family, KL prior, batch
   learning). L1 and KL codes use this same basis.
2. For each number of training labels in ``--sizes`` (the first n of a fixed
   random order of the 60,000 training images), the same maxent classifier
   (:func:`diffsc.evaluation.maxent_accuracy`, one ``l2`` for all) is trained
   on each feature set: raw pixels, PCA with as many components as atoms
   (fitted on the unlabeled basis images), L1 codes and KL codes.
3. "KL fine-tuned": the basis and the maxent head are trained jointly through
   the KL codes (:func:`diffsc.train_predictor`, 10% of the n labels held out
   for early stopping).
4. Error is measured on the official 10,000 test images.

Run::

    python experiments/digits.py [--quick] [--data-dir D] [--out results/digits]

Writes ``digits.csv`` (size, method, test error, seconds), ``digits.md`` and
``digits.png``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import diffsc  # noqa: E402
from diffsc.datasets import load_mnist  # noqa: E402
from diffsc.evaluation import maxent_accuracy, top_mass  # noqa: E402

METHODS = ["raw pixels", "PCA", "L1 codes", "KL codes", "KL fine-tuned"]


def arguments(argv):
    p = common.parser("digits", __doc__)
    p.add_argument("--atoms", type=int, default=128)
    p.add_argument("--basis-images", type=int, default=10000)
    p.add_argument("--learn-iterations", type=int, default=10)
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000, 10000, 60000])
    p.add_argument("--test-images", type=int, default=10000, help="first n official test images")
    p.add_argument("--strength", type=float, default=0.1, help="lambda of the KL and L1 priors")
    p.add_argument("--prior-mean", type=float, default=0.01)
    p.add_argument("--l2", type=float, default=1e-3, help="maxent weight penalty l2/2 ||V||^2")
    p.add_argument("--epochs", type=int, default=5, help="fine-tuning epochs at most")
    p.add_argument("--lr", type=float, default=1e-3)
    args = p.parse_args(argv)
    if args.quick:
        args.atoms, args.basis_images, args.learn_iterations = 24, 600, 3
        args.sizes, args.test_images, args.epochs = [300, 600], 1000, 2
    return args


def codes(x, basis, prior, args):
    w = diffsc.sparse_code(
        torch.from_numpy(x), basis, prior=prior, strength=args.strength, prior_mean=args.prior_mean, tol=1e-8
    )
    return w.numpy()


def fine_tuned_error(basis, x, y, x_test, y_test, args):
    coder = diffsc.SparseCodingLayer(basis, prior="kl", strength=args.strength, prior_mean=args.prior_mean, tol=1e-8)
    model = diffsc.CodePredictor(coder, n_outputs=10)
    result = diffsc.train_predictor(
        model, torch.from_numpy(x), torch.from_numpy(y), epochs=args.epochs, lr=args.lr, l2=args.l2,
        batch_size=256, seed=args.seed,
    )
    with torch.no_grad():
        predicted = torch.cat([model(chunk).argmax(-1) for chunk in torch.from_numpy(x_test).split(2000)])
    return 1.0 - float((predicted.numpy() == y_test).mean()), result.best_epoch


def plot(path, rows, sizes):
    fig, ax = common.subplots()
    for method in METHODS:
        errors = [100 * r["test_error"] for r in rows if r["method"] == method]
        ax.plot(sizes, errors, marker="o", label=method)
    ax.set_xscale("log")
    ax.set_xlabel("training labels")
    ax.set_ylabel("test error (%)")
    ax.set_title("MNIST, maxent on each feature set")
    ax.legend()
    common.save_figure(fig, path)


def main(argv=None):
    args = arguments(argv)
    clock = common.Stopwatch()
    torch.manual_seed(args.seed)
    x_all, y_all = load_mnist("train", args.data_dir)
    x_test, y_test = load_mnist("test", args.data_dir)
    x_test, y_test = x_test[: args.test_images], y_test[: args.test_images]
    order = np.random.default_rng(args.seed).permutation(len(x_all))
    x_all, y_all = x_all[order], y_all[order]
    print(f"MNIST: {len(x_all)} training images, {len(x_test)} test images", flush=True)

    unlabeled = x_all[-args.basis_images:]  # the end of the order: disjoint from small label sets
    learned = diffsc.learn_basis(
        unlabeled, args.atoms, prior="kl", strength=args.strength, prior_mean=args.prior_mean,
        max_iter=args.learn_iterations, seed=args.seed, progress=True,
    )
    basis = learned.basis
    print(f"basis: {args.atoms} atoms from {len(unlabeled)} unlabeled images, "
          f"{learned.n_iter} iterations, {clock.seconds():.0f}s", flush=True)

    from sklearn.decomposition import PCA

    pca = PCA(args.atoms, random_state=args.seed).fit(unlabeled)
    largest = max(args.sizes)
    features = {"raw pixels": (x_all[:largest], x_test), "PCA": (pca.transform(x_all[:largest]), pca.transform(x_test))}
    seconds = {"raw pixels": 0.0, "PCA": 0.0}
    sparsity = {}
    for prior, name in (("l1", "L1 codes"), ("kl", "KL codes")):
        start = common.Stopwatch()
        train_codes, test_codes = codes(x_all[:largest], basis, prior, args), codes(x_test, basis, prior, args)
        seconds[name] = start.seconds()
        features[name] = (train_codes, test_codes)
        sparsity[name] = top_mass(test_codes)
        print(f"{name}: {seconds[name]:.0f}s, top-10% mass {sparsity[name]:.2f}", flush=True)

    rows = []
    for n in args.sizes:
        y = y_all[:n]
        for method in METHODS[:-1]:
            start = common.Stopwatch()
            train, test = features[method]
            error = 1.0 - maxent_accuracy(train[:n], y, test, y_test, args.l2)
            rows.append({"size": n, "method": method, "test_error": error,
                         "seconds": round(seconds[method] * n / largest + start.seconds(), 2), "note": ""})
            print(f"n={n:>6} {method:<14} error {100 * error:.2f}%", flush=True)
        start = common.Stopwatch()
        error, best = fine_tuned_error(basis, x_all[:n], y, x_test, y_test, args)
        rows.append({"size": n, "method": "KL fine-tuned", "test_error": error,
                     "seconds": round(start.seconds(), 2), "note": f"best epoch {best}"})
        print(f"n={n:>6} {'KL fine-tuned':<14} error {100 * error:.2f}% (best epoch {best})", flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    common.write_csv(args.out / "digits.csv", rows)
    plot(args.out / "digits.png", rows, args.sizes)
    table = [[f"{n:,}"] + [f"{100 * r['test_error']:.2f}" for m in METHODS for r in rows
                           if r["size"] == n and r["method"] == m] for n in args.sizes]
    text = (
        "# MNIST: test error (%) of the same maxent classifier on each feature set\n\n"
        + common.markdown_table(["training labels", *METHODS], table)
        + f"\nSettings: {args.atoms} atoms learned without labels on {args.basis_images} training images "
        f"({args.learn_iterations} batch iterations, gaussian family, KL prior, lambda = {args.strength}, "
        f"p = {args.prior_mean}); L1 codes with the same lambda on the same basis; PCA with {args.atoms} "
        f"components; maxent l2 = {args.l2}; fine-tuning: at most {args.epochs} epochs of Adam "
        f"(lr {args.lr}), 10% of the labels held out for early stopping. Test: the first "
        f"{len(x_test):,} official test images. Top-10% mass of the test codes: "
        + ", ".join(f"{k} {v:.2f}" for k, v in sparsity.items())
        + f".\n\nWall time {clock.seconds():.0f} s on {common.machine()}.\n"
        + ("\nQuick mode: tiny settings for the test suite, not a result.\n" if args.quick else "")
    )
    (args.out / "digits.md").write_text(text)
    print(text)
    return rows


if __name__ == "__main__":
    main()
