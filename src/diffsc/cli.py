"""The command line: ``diffsc demo`` (also ``python -m diffsc demo``), ``diffsc compile``, ``diffsc reproduce``."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from .coding import sparse_code_with_info
from .evaluation import maxent_accuracy, top_mass
from .learning import learn_basis
from .module import SparseCodingLayer
from .precompile import GROUPS, precompile
from .supervised import CodePredictor, train_predictor


def _digits(seed):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    return train_test_split(x / 16.0, y, test_size=0.3, stratify=y, random_state=seed)


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


#: ``diffsc reproduce <name>`` -> the script in the repository's experiments/ folder
EXPERIMENTS = {
    "music-genre": "music_genre.py",
    "text-sentiment": "text_sentiment.py",
    "digits": "digits.py",
    "stability": "stability.py",
    "figure1": "figure1.py",
}


def reproduce(args, extra) -> int:
    """Run one experiment script (``experiments/<name>.py``) with its own arguments.

    The scripts live outside the package, in a source checkout; they write
    their results under ``results/<name>/``.
    """
    folder = Path(args.experiments) if args.experiments else Path(__file__).resolve().parents[2] / "experiments"
    script = folder / EXPERIMENTS[args.name]
    if not script.is_file():
        print(f"diffsc reproduce: {script} not found. The experiment scripts live in the repository's "
              "experiments/ folder: run this from a source checkout (pip install -e .) or pass "
              "--experiments DIR.", file=sys.stderr)
        return 2
    command = [sys.executable, str(script), *(["--quick"] if args.quick else []), *extra]
    print("running:", " ".join(command), flush=True)
    return subprocess.run(command, cwd=folder.parent).returncode


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
    p_rep = sub.add_parser(
        "reproduce", help="run one of the paper's experiments (a script in experiments/)",
        description="Run an experiment script; arguments after the name go to the script "
        "(e.g. --data-dir, --seed; see experiments/README.md).",
    )
    p_rep.add_argument("name", choices=sorted(EXPERIMENTS))
    p_rep.add_argument("--quick", action="store_true", help="the script's small, fast mode")
    p_rep.add_argument("--experiments", default=None, help="the experiments folder (default: the checkout's)")
    p_compile = sub.add_parser(
        "compile", help="compile the numba solvers ahead of their first call (once per install)",
        description="Compile and cache the numba solvers by small calls, in worker processes side by side "
        "(diffsc.precompile): a first call then waits for none of it.",
    )
    p_compile.add_argument("--dtypes", default="float64,float32", help="comma-separated (default %(default)s)")
    p_compile.add_argument("--only", default=None, help=f"comma-separated groups of {', '.join(GROUPS)} (default all)")
    p_compile.add_argument("--jobs", type=int, default=None, help="worker processes (default: one a CPU)")
    args, extra = parser.parse_known_args(argv)
    if args.command == "compile" and not extra:
        try:
            precompile(args.dtypes.split(","), None if args.only is None else args.only.split(","), args.jobs)
        except ValueError as err:
            parser.error(str(err))
        return 0
    if args.command == "reproduce":
        return reproduce(args, extra)
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return demo(args)


if __name__ == "__main__":
    sys.exit(main())
