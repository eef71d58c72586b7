"""The command line: ``diffsc demo`` (also ``python -m diffsc demo``)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from .coding import sparse_code_with_info
from .learning import learn_basis
from .module import SparseCodingLayer
from .supervised import CodePredictor, train_predictor


def _digits(seed):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    return train_test_split(x / 16.0, y, test_size=0.3, stratify=y, random_state=seed)


def maxent_accuracy(train, y_train, test, y_test, l2):
    """Accuracy of the maxent classifier on standardised features.

    scikit-learn's ``LogisticRegression`` minimises ``C sum CE + 1/2 ||V||^2``;
    with ``C = 1 / (l2 N)`` that is the head of :mod:`diffsc.supervised`,
    ``mean CE + l2/2 ||V||^2``: every row of the table uses the same classifier.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train)
    clf = LogisticRegression(C=1.0 / (l2 * len(train)), max_iter=5000, tol=1e-8)
    clf.fit(scaler.transform(train), y_train)
    return clf.score(scaler.transform(test), y_test)


def top_mass(codes, share=0.1):
    """Mean share of each code's l1 mass held by its largest 10% of coefficients."""
    mags = np.sort(np.abs(codes), axis=1)[:, ::-1]
    top = max(1, int(round(share * mags.shape[1])))
    return float(np.mean(mags[:, :top].sum(1) / np.maximum(mags.sum(1), 1e-300)))


def _codes(x, basis, prior, args):
    w, info = sparse_code_with_info(
        torch.from_numpy(x), basis, prior=prior, strength=args.strength, prior_mean=args.prior_mean
    )
    return w.numpy(), int(info.iterations.max())


def mosaic(basis, side=8, cols=10):
    """Atoms ``(side*side, K)`` tiled as images, each scaled to [-1, 1], NaN gaps."""
    k = basis.shape[1]
    rows = -(-k // cols)
    tiles = np.full((rows * (side + 1), cols * (side + 1)), np.nan)
    for i in range(k):
        atom = basis[:, i].reshape(side, side)
        r, c = divmod(i, cols)
        tiles[r * (side + 1): r * (side + 1) + side, c * (side + 1): c * (side + 1) + side] = (
            atom / max(np.abs(atom).max(), 1e-12)
        )
    return tiles


def save_atoms(path, before, after):
    """The learned atoms as 8x8 images, before and after fine-tuning."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 5.4))
    for ax, basis, title in zip(axes, (before, after), ("learned without labels", "after fine-tuning")):
        ax.imshow(mosaic(basis), cmap="RdBu_r", vmin=-1, vmax=1)
        ax.set_title(title)
        ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def demo(args) -> int:
    """Learn a basis on scikit-learn's digits, then compare features by maxent accuracy.

    The basis is learned without labels (gaussian family, KL prior). L1 and KL
    codes on that same basis, PCA and raw pixels go to the same maxent
    classifier; finally the KL coder's basis and the classifier are
    fine-tuned jointly through the codes.
    """
    start_all = time.perf_counter()
    torch.manual_seed(args.seed)
    x_train, x_test, y_train, y_test = _digits(args.seed)
    print(f"digits: {len(x_train)} train / {len(x_test)} test images of 8x8 pixels")

    start = time.perf_counter()
    learned = learn_basis(
        x_train, args.atoms, prior="kl", strength=args.strength, prior_mean=args.prior_mean,
        max_iter=args.iterations, seed=args.seed, progress=True,
    )
    learn_time = time.perf_counter() - start
    print(f"basis: {args.atoms} atoms learned without labels in {learned.n_iter} iterations, "
          f"{learn_time:.1f}s (objective {learned.objective[0]:.4f} -> {learned.objective[-1]:.4f})")
    basis = learned.basis

    rows = [("raw pixels", maxent_accuracy(x_train, y_train, x_test, y_test, args.l2), 0.0, float("nan"), "")]
    from sklearn.decomposition import PCA

    start = time.perf_counter()
    pca = PCA(min(args.atoms, x_train.shape[1]), random_state=args.seed).fit(x_train)
    features = pca.transform(x_train), pca.transform(x_test)
    rows.append((f"PCA ({pca.n_components_})", maxent_accuracy(*features[:1], y_train, features[1], y_test, args.l2),
                 time.perf_counter() - start, float("nan"), ""))
    for prior in ("l1", "kl"):
        start = time.perf_counter()
        (train, it1), (test, it2) = _codes(x_train, basis, prior, args), _codes(x_test, basis, prior, args)
        rows.append((f"{prior.upper()} codes", maxent_accuracy(train, y_train, test, y_test, args.l2),
                     time.perf_counter() - start, top_mass(train), f"<= {max(it1, it2)} solver iterations"))

    # Fine-tuning: the basis and the maxent head jointly, through the codes (SPEC §2-3).
    start = time.perf_counter()
    coder = SparseCodingLayer(basis, prior="kl", strength=args.strength, prior_mean=args.prior_mean, tol=1e-8)
    model = CodePredictor(coder, n_outputs=10)
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)
    result = train_predictor(model, xt, yt, epochs=args.epochs, lr=args.lr, l2=args.l2, seed=args.seed,
                             progress=True)
    with torch.no_grad():
        codes = coder(torch.from_numpy(x_train)).numpy()
        accuracy = float((model(torch.from_numpy(x_test)).argmax(-1).numpy() == y_test).mean())
    rows.append(("KL fine-tuned", accuracy, time.perf_counter() - start, top_mass(codes),
                 f"best of {len(result.history) - 1} epochs: {result.best_epoch}"))

    # time: computing the features (codes, PCA), not the classifier
    print(f"\n{'features':<16}{'test accuracy':>14}{'time':>8}{'top-10% mass':>14}  notes")
    for name, acc, seconds, sparsity, note in rows:
        mass = "-" if np.isnan(sparsity) else f"{sparsity:.2f}"
        print(f"{name:<16}{acc:>14.3f}{seconds:>7.1f}s{mass:>14}  {note}")

    figure = Path(args.figure)
    figure.parent.mkdir(parents=True, exist_ok=True)
    save_atoms(figure, basis.numpy(), coder.basis.detach().numpy())
    print(f"\natoms saved to {figure}; total {time.perf_counter() - start_all:.1f}s")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="diffsc", description="Differentiable sparse coding.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_demo = sub.add_parser(
        "demo", help="learn a basis on scikit-learn's digits (no download), compare features, fine-tune"
    )
    p_demo.add_argument("--atoms", type=int, default=100, help="number of atoms K (default 100)")
    p_demo.add_argument("--strength", type=float, default=0.1, help="lambda (default 0.1)")
    p_demo.add_argument("--prior-mean", type=float, default=0.01, help="p of the KL prior (default 0.01)")
    p_demo.add_argument("--iterations", type=int, default=30, help="basis learning iterations (default 30)")
    p_demo.add_argument("--epochs", type=int, default=30, help="fine-tuning epochs at most (default 30)")
    p_demo.add_argument("--lr", type=float, default=1e-3, help="Adam step of fine-tuning (default 1e-3)")
    p_demo.add_argument("--l2", type=float, default=1e-3, help="weight of l2/2 ||V||^2 on the classifier (default 1e-3)")
    p_demo.add_argument("--figure", default="diffsc-demo-atoms.png", help="where to save the atoms' figure")
    p_demo.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    return demo(args)


if __name__ == "__main__":
    sys.exit(main())
