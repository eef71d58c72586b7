"""'KL maintains sparsity' and 'KL adds stability', measured on one learned basis.

On scikit-learn's bundled handwritten digits (1,797 8x8 images, no
download), a basis is learned without labels (gaussian family, KL prior).
Then, for L1, KL and signed-KL codes on that same basis and each strength
``lambda`` in ``--strengths``:

- **sparsity**: the mean share of each code's l1 mass in its largest 10% of
  coefficients (1 = at most 10% non-zeros; 0.1 = flat);
- **stability**: each test image ``x`` is perturbed to ``x + eps ||x|| u``
  with ``u`` a random unit direction; the code's relative change
  ``||w(x') - w(x)|| / ||w(x)||`` divided by the input's relative change
  ``eps`` (median over images): how much the code moves per unit of input
  perturbation. For L1 also the share of coefficients whose zero/non-zero
  status flips.

Since a strength means something different under each prior, the plot puts
each prior's (sparsity, sensitivity) pairs side by side: the question is
which prior moves less at the same sparsity.

Run::

    python experiments/stability.py [--quick] [--out results/stability]

Writes ``stability.csv``, ``stability.md`` and ``stability.png``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import diffsc  # noqa: E402
from diffsc.evaluation import top_mass  # noqa: E402

PRIORS = {"l1": "L1", "kl": "KL", "signed_kl": "signed KL"}


def arguments(argv):
    p = common.parser("stability", __doc__)
    p.add_argument("--atoms", type=int, default=100)
    p.add_argument("--strengths", type=float, nargs="+", default=[0.003, 0.01, 0.03, 0.1, 0.3, 1.0])
    p.add_argument("--epsilons", type=float, nargs="+", default=[0.01, 0.1])
    p.add_argument("--prior-mean", type=float, default=0.01)
    p.add_argument("--images", type=int, default=500, help="test images perturbed")
    p.add_argument("--learn-iterations", type=int, default=30)
    args = p.parse_args(argv)
    if args.quick:
        args.atoms, args.strengths, args.epsilons, args.images = 30, [0.03, 0.3], [0.03], 60
        args.learn_iterations = 4
    return args


def code(x, basis, prior, lam, args):
    return diffsc.sparse_code(x, basis, prior=prior, strength=lam, prior_mean=args.prior_mean, tol=1e-9)


def plot(path, rows, epsilon):
    fig, ax = common.subplots()
    for prior, label in PRIORS.items():
        points = [(r["top10_mass"], r["sensitivity"], r["strength"]) for r in rows
                  if r["prior"] == prior and r["epsilon"] == epsilon]
        mass, sens, lams = zip(*points)
        ax.plot(mass, sens, marker="o", label=label)
        for m, s, lam in points:
            ax.annotate(f"λ={lam:g}", (m, s), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("sparsity: share of l1 mass in the largest 10% of coefficients")
    ax.set_ylabel(f"code change per unit input change (eps = {epsilon:g})")
    ax.set_yscale("log")
    ax.set_title("Sparsity against stability on one learned basis (digits)")
    ax.legend()
    common.save_figure(fig, path)


def compare_at_equal_sparsity(rows, epsilon) -> str:
    """KL's sensitivity interpolated at each L1 point's sparsity, as a ratio."""
    def curve(prior):
        points = sorted((r["top10_mass"], r["sensitivity"]) for r in rows
                        if r["prior"] == prior and r["epsilon"] == epsilon)
        return np.array(points).T

    kl_mass, kl_sens = curve("kl")
    l1_mass, l1_sens = curve("l1")
    inside = (l1_mass >= kl_mass.min()) & (l1_mass <= kl_mass.max())
    if not inside.any():
        return f"No L1 point lies within the KL codes' range of sparsity (eps = {epsilon:g}): no comparison."
    ratios = l1_sens[inside] / np.interp(l1_mass[inside], kl_mass, kl_sens)
    return (
        f"At equal sparsity (KL's sensitivity interpolated in top-10% mass at the {int(inside.sum())} L1 "
        f"points within KL's range, eps = {epsilon:g}), L1 codes move {ratios.min():.2f} to "
        f"{ratios.max():.2f} times as much as KL codes per unit of input change."
    )


def main(argv=None):
    args = arguments(argv)
    clock = common.Stopwatch()
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_train, x_test = train_test_split(x / 16.0, test_size=0.3, stratify=y, random_state=args.seed)
    basis = diffsc.learn_basis(x_train, args.atoms, prior="kl", strength=0.1, prior_mean=args.prior_mean,
                               max_iter=args.learn_iterations, seed=args.seed).basis
    x = torch.from_numpy(x_test[: args.images])
    g = torch.Generator().manual_seed(args.seed)
    u = torch.randn(x.shape, generator=g, dtype=x.dtype)
    u = u / u.norm(dim=1, keepdim=True)

    rows = []
    for prior, label in PRIORS.items():
        for lam in args.strengths:
            w = code(x, basis, prior, lam, args)
            mass = top_mass(w.numpy())
            for eps in args.epsilons:
                moved = code(x + eps * x.norm(dim=1, keepdim=True) * u, basis, prior, lam, args)
                size = w.norm(dim=1)
                # an all-zero L1 code (lambda above the image's max correlation) has no relative change
                change = ((moved - w).norm(dim=1) / size)[size > 0]
                flips = float(((moved != 0) != (w != 0)).double().mean()) if prior == "l1" else float("nan")
                rows.append({"prior": prior, "strength": lam, "epsilon": eps, "top10_mass": round(mass, 4),
                             "sensitivity": float(change.median() / eps), "support_flips": flips})
                print(f"{label:<10} lambda={lam:<5g} eps={eps:<5g} top-10% mass {mass:.2f}  "
                      f"code change / input change {rows[-1]['sensitivity']:.3f}", flush=True)

    summary = compare_at_equal_sparsity(rows, args.epsilons[0])
    print(summary)
    args.out.mkdir(parents=True, exist_ok=True)
    common.write_csv(args.out / "stability.csv", rows)
    plot(args.out / "stability.png", rows, args.epsilons[0])
    table = [[PRIORS[r["prior"]], f"{r['strength']:g}", f"{r['epsilon']:g}", f"{r['top10_mass']:.2f}",
              f"{r['sensitivity']:.3f}", "" if np.isnan(r["support_flips"]) else f"{100 * r['support_flips']:.1f}%"]
             for r in rows]
    text = (
        "# Sparsity and stability of L1, KL and signed-KL codes on one learned basis\n\n"
        + common.markdown_table(
            ["prior", "lambda", "eps", "top-10% mass", "code change / input change (median)", "L1 support flips"],
            table)
        + f"\n{summary}\n\nBasis: {args.atoms} atoms learned without labels on {len(x_train)} scikit-learn digits "
        f"(gaussian family, KL prior, lambda 0.1, p = {args.prior_mean}, "
        f"{args.learn_iterations} batch iterations); {len(x)} test images, each "
        "perturbed by eps times its norm in one random direction. Top-10% mass: share of each code's "
        "l1 mass in its largest 10% of coefficients (1 = sparse, 0.1 = flat).\n\n"
        f"Wall time {clock.seconds():.0f} s on {common.machine()}.\n"
        + ("\nQuick mode: tiny settings for the test suite, not a result.\n" if args.quick else "")
    )
    (args.out / "stability.md").write_text(text)
    print(text)
    return rows


if __name__ == "__main__":
    main()
