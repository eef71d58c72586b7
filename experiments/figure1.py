"""Figure 1 of Bradley & Bagnell (2008): how each prior shrinks a code.

With the identity basis ``B = I``, the squared loss (gaussian family) and a
scalar strength ``lam`` and prior mean ``p``, every coordinate is coded alone
(SPEC §1.3). The codes come from the library's solvers (``diffsc.sparse_code``);
the closed forms are overlaid as thin dashed lines and their agreement with the
solvers is printed.

A  the code ``w`` against the input ``x`` for the uniform, L2, L1 and KL
   priors. KL only gives positive codes, so its signed version is solved as in
   appendix B: KL on the expanded basis ``[-I, I]``, ``w = w+ - w-``.
B  the offset ``x - w = lam * grad R(w)`` against ``w``: flat (uniform),
   linear (L2), a step (L1), ``asinh`` (signed KL).
C  the prior densities ``exp(-R(w))``, normalised numerically, for L1, L2 and
   signed KL.

Run::

    python experiments/figure1.py [--out results/figure1] [--quick]
        [--strength 0.5] [--prior-mean 0.1]

It writes ``figure1.png``, the raw curves of panels A and B as ``figure1.csv``
(columns ``prior, x, code, offset``) and those of panel C as
``figure1_density.csv`` (columns ``prior, w, density``).
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from scipy.integrate import trapezoid
from scipy.special import wrightomega

import diffsc

X_MAX = 3.0  # panels A and B show x in [-X_MAX, X_MAX]
W_WIDE = 30.0  # densities normalised on [-W_WIDE, W_WIDE]; L1 (heaviest tail) loses e^-30
LABELS = {
    "uniform": "uniform",
    "l2": "L2",
    "l1": "L1",
    "kl": "KL (w > 0)",
    "signed_kl": "signed KL",
}
COLORS = {"uniform": "0.5", "l2": "C0", "l1": "C3", "kl": "C2", "signed_kl": "C1"}


def solver_codes(x, lam, p):
    """Codes of the inputs ``x`` (a 1-D tensor) under every prior, from the solvers."""
    one = torch.eye(1, dtype=torch.float64)
    column = x[:, None]  # N examples, D = K = 1: B = I acts coordinatewise
    kwargs = {"strength": lam, "prior_mean": p}
    codes = {
        name: diffsc.sparse_code(column, one, prior=name, **kwargs)[:, 0]
        for name in ("uniform", "l2", "l1", "kl")
    }
    # Appendix B: KL on [-I, I] with codes (w-, w+) is the signed-KL prior on I.
    split = diffsc.sparse_code(column, torch.cat([-one, one], dim=1), prior="kl", **kwargs)
    codes["signed_kl"] = split[:, 1] - split[:, 0]
    # The same code from the signed-KL prior itself: the two must coincide.
    direct = diffsc.sparse_code(column, one, prior="signed_kl", **kwargs)[:, 0]
    return codes, float((codes["signed_kl"] - direct).abs().max())


def closed_form_errors(x, codes, lam, p):
    """Max abs error of each solver curve against its closed form (SPEC §1.3)."""
    x, w = x.numpy(), {name: c.numpy() for name, c in codes.items()}
    exact = {
        "uniform": x,
        "l2": x / (1 + lam),
        "l1": np.sign(x) * np.maximum(np.abs(x) - lam, 0.0),
        # lam * W0((p/lam) exp(x/lam)); wrightomega(z) = W0(exp(z)) without overflow.
        "kl": lam * wrightomega(np.log(p / lam) + x / lam).real,
    }
    errors = {name: float(np.abs(w[name] - exact[name]).max()) for name in exact}
    # Signed KL has no closed form: w is the root of g(w) = w + lam asinh(w/2p) - x.
    # Since g' >= 1, the residual |g(w)| bounds the distance to the root.
    residual = w["signed_kl"] + lam * np.arcsinh(w["signed_kl"] / (2 * p)) - x
    errors["signed_kl"] = float(np.abs(residual).max())
    return exact, errors


def densities(n_points, p):
    """``exp(-R(w))`` normalised by the trapezoid rule, for L1, L2 and signed KL."""
    w = torch.linspace(-W_WIDE, W_WIDE, n_points, dtype=torch.float64)
    p = torch.tensor(p, dtype=torch.float64)
    out = {}
    for name in ("l1", "l2", "signed_kl"):
        density = torch.exp(-diffsc.get_prior(name).value(w, p)).numpy()
        out[name] = density / trapezoid(density, w.numpy())
    return w.numpy(), out


def plot(x, codes, exact, w_grid, dens, lam, p):
    fig = Figure(figsize=(13, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    ax_a, ax_b, ax_c = fig.subplots(1, 3)
    x_np = x.numpy()
    for name, code in codes.items():
        code = code.numpy()
        thin = {"lw": 1.2, "alpha": 0.7} if name == "kl" else {"lw": 2.0}
        ax_a.plot(x_np, code, color=COLORS[name], label=LABELS[name], **thin)
        ax_b.plot(code, x_np - code, color=COLORS[name], label=LABELS[name], **thin)
        if name in exact:
            ax_a.plot(x_np, exact[name], color="k", lw=0.7, ls="--")
    ax_a.plot([], [], color="k", lw=0.7, ls="--", label="closed form")
    ax_a.set(title="A", xlabel="input $x$", ylabel=r"code $\hat w$")
    ax_a.set_aspect("equal")
    ax_b.set(
        title="B",
        xlabel=r"code $\hat w$",
        ylabel=r"offset $x - \hat w = \lambda \nabla R(\hat w)$",
        xlim=(-X_MAX, X_MAX),
        ylim=(-2.0, 2.0),  # the KL offset lam*log(w/p) runs to -inf as w -> 0
    )
    for name, density in dens.items():
        ax_c.plot(w_grid, density, color=COLORS[name], lw=2.0, label=LABELS[name])
    ax_c.set(
        title="C",
        xlabel="$w$",
        ylabel=r"density $\propto \exp(-R(w))$",
        xlim=(-X_MAX, X_MAX),
        ylim=(0.0, None),
    )
    for ax in (ax_a, ax_b, ax_c):
        ax.grid(alpha=0.3)
        ax.axhline(0.0, color="k", lw=0.5, zorder=0)
        ax.legend(fontsize=8, loc="upper left")
    fig.suptitle(rf"Identity basis, squared loss, $\lambda = {lam:g}$, $p = {p:g}$")
    return fig


def write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/figure1"))
    parser.add_argument("--quick", action="store_true", help="coarse grids (test suite)")
    parser.add_argument("--strength", type=float, default=0.5, help="lambda (default 0.5)")
    parser.add_argument("--prior-mean", type=float, default=0.1, help="p (default 0.1)")
    args = parser.parse_args(argv)
    lam, p = args.strength, args.prior_mean
    start = time.perf_counter()

    n = 30 if args.quick else 600
    # Integer multiples of the step, so that x = 0 is exactly on the grid: at a
    # round-off x ~ 1e-17 the [-I, I] solve cannot meet its relative tolerance
    # (every term of the residual's scale is then round-off itself).
    x = torch.arange(-n, n + 1, dtype=torch.float64) * (X_MAX / n)
    codes, split_vs_direct = solver_codes(x, lam, p)
    exact, errors = closed_form_errors(x, codes, lam, p)
    w_grid, dens = densities(601 if args.quick else 6001, p)

    args.out.mkdir(parents=True, exist_ok=True)
    fmt = "{:.17g}".format  # round-trips float64
    write_csv(
        args.out / "figure1.csv",
        ["prior", "x", "code", "offset"],
        [
            (name, fmt(xi), fmt(wi), fmt(xi - wi))
            for name, code in codes.items()
            for xi, wi in zip(x.tolist(), code.tolist())
        ],
    )
    write_csv(
        args.out / "figure1_density.csv",
        ["prior", "w", "density"],
        [(name, fmt(wi), fmt(di)) for name, d in dens.items() for wi, di in zip(w_grid, d)],
    )
    plot(x, codes, exact, w_grid, dens, lam, p).savefig(args.out / "figure1.png", dpi=150)

    print("max |solver - closed form| (signed KL: |w + lam asinh(w/2p) - x|):")
    for name, error in errors.items():
        print(f"  {name:10s} {error:.2e}")
    print(f"  signed KL via [-I, I] vs signed_kl prior: {split_vs_direct:.2e}")
    print(f"wrote {args.out / 'figure1.png'}, {args.out / 'figure1.csv'}, "
          f"{args.out / 'figure1_density.csv'} in {time.perf_counter() - start:.1f} s")
    return errors


if __name__ == "__main__":
    main()
