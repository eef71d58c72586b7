"""Table 1 adapted to our data: music genre from 50 ms audio snippets.

The paper (appendix E, after Raina et al. 2007): 17 genres x 15 clips of
60 s; the first 10 genres unlabeled, for learning the basis; 10 clips of each
of the other 7 genres train a maxent classifier, 5 test it; PCA, L1 and KL
codes on the same basis, with 200, 2,000 and 10,000 training snippets.

Our data (``gtzan-10x10``): 10 genres x 10 clips of 15-20 s. The adaptation:

- each split draws **3 genres as unlabeled** (basis learning) and the other
  **7 as labelled**; of each labelled genre's 10 clips, **7 train and 3 test**
  (train and test snippets always come from different clips);
- the training snippets are drawn at random from the training clips
  (200, 2,000, 10,000 of about 16,000); the test set is every snippet of
  the test clips;
- inputs: :func:`diffsc.datasets.snippet_spectra` (50 ms snippets, Hann
  window, magnitude spectrum pooled into 128 bands, unit norm);
- the basis: ``--atoms`` atoms learned without labels on (at most
  ``--basis-snippets``) snippets of the unlabeled genres, gaussian family
  (squared loss, linear transfer, as in the paper), KL prior. PCA is fitted
  on the same unlabeled snippets;
- features: PCA, L1 codes, KL codes and signed-KL codes on that basis, and
  KL codes after fine-tuning the basis with the classifier; all scored by
  the same maxent classifier;
- accuracy per snippet and per clip (majority vote of the clip's snippets),
  mean ± standard deviation over ``--splits`` random splits.

Run::

    python experiments/music_genre.py [--quick] [--data-dir D] [--out results/music-genre]

Writes ``music_genre.csv`` (one row per split, size and method),
``music_genre.md`` and ``music_genre.png``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import diffsc  # noqa: E402
from diffsc.datasets import audio_features, load_gtzan  # noqa: E402
from diffsc.evaluation import maxent_predictions  # noqa: E402

METHODS = ["PCA", "L1 codes", "KL codes", "signed KL codes", "KL fine-tuned"]
PAPER = {200: (32, 31, 33), 2000: (43, 43, 45), 10000: (48, 49, 50)}  # PCA, L1, KL (appendix E, Table 1)


def arguments(argv):
    p = common.parser("music-genre", __doc__)
    p.add_argument("--splits", type=int, default=5)
    p.add_argument("--sizes", type=int, nargs="+", default=[200, 2000, 10000])
    p.add_argument("--unlabeled-genres", type=int, default=3)
    p.add_argument("--train-clips", type=int, default=7, help="of each labelled genre's clips")
    p.add_argument("--atoms", type=int, default=128)
    p.add_argument("--basis-snippets", type=int, default=6000)
    p.add_argument("--learn-iterations", type=int, default=15)
    p.add_argument("--strength", type=float, default=0.05, help="lambda of the L1, KL and signed-KL priors")
    p.add_argument("--prior-mean", type=float, default=0.01)
    p.add_argument("--l2", type=float, default=1e-3, help="maxent weight penalty l2/2 ||V||^2")
    p.add_argument("--epochs", type=int, default=10, help="fine-tuning epochs at most")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--test-snippets", type=int, default=None,
                   help="test on at most this many snippets of each test clip (default: all)")
    args = p.parse_args(argv)
    if args.quick:
        args.splits, args.sizes, args.atoms, args.test_snippets = 2, [200], 32, 30
        args.basis_snippets, args.learn_iterations, args.epochs = 800, 3, 2
    return args


def split(labels, genres, rng, args):
    """Unlabeled genres, and the training and test clips of the labelled ones."""
    names = sorted(set(labels))
    unlabeled = set(rng.choice(names, args.unlabeled_genres, replace=False))
    train, test = [], []
    for genre in names:
        if genre in unlabeled:
            continue
        clips = rng.permutation(np.flatnonzero(genres == genre))
        train += clips[: args.train_clips].tolist()
        test += clips[args.train_clips:].tolist()
    return sorted(unlabeled), np.array(train), np.array(test)


def clip_accuracy(predicted, truth, clip):
    """Accuracy of a majority vote over each clip's snippets."""
    hits = []
    for c in np.unique(clip):
        votes = np.unique(predicted[clip == c], return_counts=True)
        hits.append(votes[0][votes[1].argmax()] == truth[clip == c][0])
    return float(np.mean(hits))


def run_split(s, x, labels, clips, clip_genres, args):
    rng = np.random.default_rng(args.seed + s)
    unlabeled, train_clips, test_clips = split(labels, clip_genres, rng, args)
    pool = np.flatnonzero(np.isin(clips, train_clips))
    test = np.flatnonzero(np.isin(clips, test_clips))
    if args.test_snippets is not None:  # the first snippets of each test clip
        test = np.concatenate([np.flatnonzero(clips == c)[: args.test_snippets] for c in test_clips])
    free = np.flatnonzero(np.isin(labels, unlabeled))
    free = rng.permutation(free)[: args.basis_snippets]
    print(f"split {s}: unlabeled {', '.join(unlabeled)}; {len(pool)} training and {len(test)} test snippets; "
          f"basis from {len(free)} unlabeled snippets", flush=True)

    basis = diffsc.learn_basis(x[free], args.atoms, prior="kl", strength=args.strength,
                               prior_mean=args.prior_mean, max_iter=args.learn_iterations,
                               seed=args.seed + s, progress=True).basis
    from sklearn.decomposition import PCA

    pca = PCA(min(args.atoms, x.shape[1]), random_state=args.seed).fit(x[free])
    chosen = rng.permutation(pool)[: max(args.sizes)]
    features = {"PCA": pca.transform(x[chosen]), }
    test_features = {"PCA": pca.transform(x[test])}
    for prior, name in (("l1", "L1 codes"), ("kl", "KL codes"), ("signed_kl", "signed KL codes")):
        both = diffsc.sparse_code(torch.from_numpy(x[np.concatenate([chosen, test])]), basis, prior=prior,
                                  strength=args.strength, prior_mean=args.prior_mean, tol=1e-8).numpy()
        features[name], test_features[name] = both[: len(chosen)], both[len(chosen):]

    classes = sorted(set(labels[pool]))
    y_all = np.searchsorted(classes, labels)
    rows = []
    for n in args.sizes:
        index = chosen[:n]
        for method in METHODS[:-1]:
            predicted = maxent_predictions(features[method][:n], y_all[index], test_features[method], args.l2)
            rows.append(row(s, n, method, predicted, y_all[test], clips[test]))
        predicted = fine_tuned_predictions(basis, x[index], y_all[index], x[test], len(classes), args, s)
        rows.append(row(s, n, "KL fine-tuned", predicted, y_all[test], clips[test]))
        print("  " + "  ".join(f"{r['method']} {100 * r['snippet_accuracy']:.1f}/{100 * r['clip_accuracy']:.0f}"
                               for r in rows[-len(METHODS):]) + f"  (n = {n}; snippet/clip %)", flush=True)
    return rows


def row(s, n, method, predicted, truth, clip):
    return {"split": s, "size": n, "method": method,
            "snippet_accuracy": float((predicted == truth).mean()),
            "clip_accuracy": clip_accuracy(predicted, truth, clip)}


def fine_tuned_predictions(basis, x, y, x_test, n_classes, args, s):
    coder = diffsc.SparseCodingLayer(basis, prior="kl", strength=args.strength, prior_mean=args.prior_mean, tol=1e-8)
    model = diffsc.CodePredictor(coder, n_outputs=n_classes)
    diffsc.train_predictor(model, torch.from_numpy(x), torch.from_numpy(y), epochs=args.epochs, lr=args.lr,
                           l2=args.l2, batch_size=128, seed=args.seed + s)
    with torch.no_grad():
        return model(torch.from_numpy(x_test)).argmax(-1).numpy()


def summary(rows, sizes, key):
    table = []
    for n in sizes:
        cells = [mean_std_of(rows, n, m, key) for m in METHODS]
        paper = PAPER.get(n)
        table.append([f"{n:,}", *cells, " / ".join(f"{v}" for v in paper) if paper and key == "snippet_accuracy" else ""])
    return table


def mean_std_of(rows, n, method, key):
    return common.mean_std([r[key] for r in rows if r["size"] == n and r["method"] == method])


def plot(path, rows, sizes):
    fig, axes = common.subplots(1, 2, figsize=(10, 4))
    for ax, key, title in zip(axes, ("snippet_accuracy", "clip_accuracy"), ("per snippet", "per clip (majority vote)")):
        for method in METHODS:
            values = [[100 * r[key] for r in rows if r["size"] == n and r["method"] == method] for n in sizes]
            ax.errorbar(sizes, [np.mean(v) for v in values], yerr=[np.std(v, ddof=1) if len(v) > 1 else 0 for v in values],
                        marker="o", capsize=3, label=method)
        ax.set_xscale("log")
        ax.set_xlabel("training snippets")
        ax.set_ylabel("accuracy (%)")
        ax.set_title(f"7-way genre accuracy, {title}")
    axes[0].legend(fontsize=8)
    common.save_figure(fig, path)


def main(argv=None):
    args = arguments(argv)
    clock = common.Stopwatch()
    torch.manual_seed(args.seed)
    clips = load_gtzan(args.data_dir)
    x, labels, clip_of = audio_features(clips)
    clip_genres = np.array([clip.label for clip in clips])
    print(f"GTZAN: {len(clips)} clips, {len(x)} snippets of {x.shape[1]} bands", flush=True)
    rows = []
    for s in range(args.splits):
        rows += run_split(s, x, np.asarray(labels), clip_of, clip_genres, args)

    args.out.mkdir(parents=True, exist_ok=True)
    common.write_csv(args.out / "music_genre.csv", rows)
    plot(args.out / "music_genre.png", rows, args.sizes)
    header = ["training snippets", *METHODS, "paper: PCA / L1 / KL"]
    text = (
        "# Music genre (Table 1 adapted): 7-way accuracy (%), mean ± std over "
        f"{args.splits} random splits\n\n## Per snippet\n\n"
        + common.markdown_table(header, summary(rows, args.sizes, "snippet_accuracy"))
        + "\n## Per clip (majority vote of its snippets)\n\n"
        + common.markdown_table(header[:-1], [r[:-1] for r in summary(rows, args.sizes, "clip_accuracy")])
        + f"\nData: GTZAN subset, 10 genres x 10 clips of 15-20 s ({len(x):,} snippets of 50 ms). Each split: "
        f"{args.unlabeled_genres} genres unlabeled (basis), the other {10 - args.unlabeled_genres} labelled with "
        f"{args.train_clips} training and {10 - args.train_clips} test clips each. The paper: 17 genres x 15 "
        "clips of 60 s, 10 unlabeled genres, 10 training and 5 test clips per labelled genre; its numbers are "
        "per snippet.\n\n"
        f"Settings: {args.atoms} atoms learned on at most {args.basis_snippets} unlabeled snippets "
        f"({args.learn_iterations} batch iterations, gaussian family, KL prior); lambda = {args.strength} for the "
        f"L1, KL and signed-KL codes, p = {args.prior_mean}; PCA with {min(args.atoms, x.shape[1])} components "
        f"on the same unlabeled snippets; maxent l2 = {args.l2}; fine-tuning at most {args.epochs} epochs of "
        f"Adam (lr {args.lr}), 10% of the training snippets held out for early stopping.\n\n"
        f"Wall time {clock.seconds():.0f} s on {common.machine()}.\n"
        + ("\nQuick mode: tiny settings for the test suite, not a result.\n" if args.quick else "")
    )
    (args.out / "music_genre.md").write_text(text)
    print(text)
    return rows


if __name__ == "__main__":
    main()
