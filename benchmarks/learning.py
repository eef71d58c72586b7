r"""Basis learning on MNIST: time for diffsc to reach each peer's final objective.

Every method learns ``K`` atoms (norm <= 1) from the first ``N`` MNIST
training images (float32, pixels in [0, 1]) for the gaussian family with an
L1 prior, i.e. it minimises

.. math::

    J(B) = \frac1N \sum_n \min_w \tfrac12 \|x_n - B w\|^2 + \lambda \|w\|_1 .

``J`` is evaluated the same way for every basis: its atoms are projected onto
the unit ball (all three methods keep them there already; the note gives the
largest norm found before projecting), MAP codes of all ``N`` images come
from ``diffsc.sparse_code_with_info`` (float32, its default solver and
tolerance, cold start), and ``J`` is their mean objective. Evaluation time is
never counted in any method's time.

- scikit-learn ``MiniBatchDictionaryLearning(alpha=lam, batch_size=256,
  max_iter=E, tol=0, max_no_improvement=None)`` (its dictionary's rows are
  the atoms) and SPAMS ``trainDL(lambda1=lam, mode=2, batchsize=256,
  iter=E*N//256, numThreads=torch threads)`` each run once for ``E`` epochs
  on float32 data, timed by the wall clock around the fit. A peer that is
  not installed is left out (the header says so).
- diffsc runs online learning (``diffsc.learning.BasisLearner``, driven as
  ``learn_basis(method="online")`` drives it: statistics of about the last
  ``diffsc.learning.MEMORY`` examples, default code solver, float32) from
  ``K`` random training images
  (``initial_basis``, counted in its time). ``--checkpoints`` times a pass
  its clock is paused and ``J`` evaluated on all ``N`` images; it stops at
  the first checkpoint at or below both peers' final ``J``, or after
  ``--passes`` passes. One untimed online step on a spare basis first loads
  the compiled kernels (numba's cache), a one-off per process.

Commands (defaults: lam=0.5, about 8% non-zero codes; E=2; diffsc batch 256,
8 checkpoints a pass, at most 4 passes)::

    python benchmarks/learning.py                     # N=60000, K=256: minutes (sklearn dominates)
    python benchmarks/learning.py --batch-size 512
    python benchmarks/learning.py --smoke             # N=2000, K=32, E=1: seconds, run by the tests
    python benchmarks/learning.py --device cuda       # diffsc (and every evaluation) on a GPU,
                                                      # the peers on that machine's CPU; not yet run

Reading the table: a peer's row gives its total fit time and final ``J``. A
``diffsc -> <peer>`` row gives diffsc's training time at its first checkpoint
with ``J <=`` that peer's ``J`` (checkpoint resolution: the true crossing is
at or before it), the ``J`` there, and ``ratio`` = peer seconds / diffsc
seconds, to compare with ``target`` (10 for scikit-learn, 2 for SPAMS).
``reached=False``: diffsc did not get there within ``--passes``; its
``seconds`` are then its whole training time and the note bounds the ratio.
The last row is diffsc's final checkpoint (its note: non-zero codes, J at
the start, largest atom norm, unconverged evaluation codes). Single runs on a
shared machine: times vary between runs. Results go to ``--out``:
``learning.{csv,json,md}``, ``learning_curve.csv`` (diffsc's checkpoints)
and ``learning.png`` (``J`` against training seconds, peers' final points);
``learning-cuda*`` with ``--device cuda``, whose clock waits for the GPU.
"""

from __future__ import annotations

import argparse
import csv
import math
import time
import warnings
from pathlib import Path

import numpy as np
import torch

import diffsc
from diffsc.datasets import load_mnist
from diffsc.learning import BasisLearner, initial_basis, online_window
from diffsc.problem import Problem
from diffsc.validation import check_parameter


def _load_harness():
    """``benchmarks/harness.py``, loaded by path: the script also runs when loaded by the tests."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("harness", Path(__file__).with_name("harness.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


harness = _load_harness()

TARGETS = {"sklearn MiniBatchDictionaryLearning": 10.0, "spams trainDL": 2.0}
NORM_SLACK = 1e-4  # float32 rounding allowed above norm 1 before projecting


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=60000, help="training images (the first n)")
    p.add_argument("--k", type=int, default=256, help="atoms")
    p.add_argument("--strength", type=float, default=0.5, help="lambda, the same for every method")
    p.add_argument("--epochs", type=int, default=2, help="passes of each peer")
    p.add_argument("--batch-size", type=int, default=256, help="diffsc's mini-batch")
    p.add_argument("--passes", type=int, default=4, help="diffsc's most passes")
    p.add_argument("--checkpoints", type=int, default=8, help="diffsc's checkpoints per pass")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--smoke", action="store_true", help="N=2000, K=32, E=1: seconds")
    p.add_argument("--out", type=Path, default=Path(__file__).with_name("results"))
    p.add_argument("--data-dir", default=None, help="folder holding mnist/ (default $DIFFSC_DATA)")
    p.add_argument("--device", default="cpu", help="diffsc's device, e.g. cuda (the peers run on the CPU)")
    args = p.parse_args(argv)
    if args.smoke:
        args.n, args.k, args.epochs, args.batch_size, args.passes = 2000, 32, 1, 256, 2
    return args


# -- the objective, the same for every basis --------------------------------


def project(basis: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Atoms onto the unit ball, and the largest atom norm before."""
    norms = basis.norm(dim=0)
    return basis / norms.clamp_min(1.0), float(norms.max())


def evaluate(x: torch.Tensor, basis, lam: float, chunk: int = 4096) -> dict:
    """``J`` (float64 sum of float32 terms), mean fraction of non-zero codes, unconverged codes."""
    basis = torch.as_tensor(np.ascontiguousarray(basis) if isinstance(basis, np.ndarray) else basis)
    basis, largest = project(basis.to(x.device, torch.float32).contiguous())
    total, nonzero, unconverged = 0.0, 0, 0
    with torch.no_grad(), warnings.catch_warnings():
        # Counted from the solver's own diagnostics instead (the "note" column).
        warnings.filterwarnings("ignore", category=diffsc.ConvergenceWarning)
        for start in range(0, x.shape[0], chunk):
            xs = x[start : start + chunk]
            w, info = diffsc.sparse_code_with_info(xs, basis, family="gaussian", prior="l1", strength=lam)
            r = xs - w @ basis.T
            total += float((0.5 * r.square().sum(1) + lam * w.abs().sum(1)).double().sum())
            nonzero += int((w != 0).sum())
            unconverged += int((~info.converged).sum())
    n = x.shape[0]
    return {
        "J": total / n,
        "nonzero": nonzero / (n * basis.shape[1]),
        "unconverged": unconverged,
        "largest_norm": largest,
    }


def _check_norms(name, value):
    if value > 1 + NORM_SLACK:
        raise AssertionError(f"{name}: an atom of norm {value:.6g} > 1; the comparison assumes atoms <= 1")


# -- peers ----------------------------------------------------------------


def run_sklearn(x: np.ndarray, args):
    """MiniBatchDictionaryLearning's basis (D, K), seconds, and a note."""
    from sklearn.decomposition import MiniBatchDictionaryLearning
    from sklearn.exceptions import ConvergenceWarning

    model = MiniBatchDictionaryLearning(
        n_components=args.k,
        alpha=args.strength,
        batch_size=256,
        max_iter=args.epochs,
        random_state=args.seed,
        tol=0,
        max_no_improvement=None,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start = time.perf_counter()
        model.fit(x)
        seconds = time.perf_counter() - start
    # LARS stops its path early on tiny residues (a ConvergenceWarning that is
    # not a failure); it is counted, and anything else is passed on.
    lars = 0
    for w in caught:
        if issubclass(w.category, ConvergenceWarning) and "Early stopping the lars path" in str(w.message):
            lars += 1
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    note = f"epochs {args.epochs} ({model.n_steps_} steps), fit_algorithm=lars"
    if lars:
        note += f", {lars} LARS early-stop warnings"
    return model.components_.T, seconds, note


def run_spams(x: np.ndarray, args):
    """SPAMS trainDL's basis (D, K), seconds, and a note."""
    import spams

    data = np.asfortranarray(x.T)
    iterations = max(1, args.epochs * x.shape[0] // 256)
    start = time.perf_counter()
    basis = spams.trainDL(
        data,
        K=args.k,
        lambda1=args.strength,
        mode=2,
        batchsize=256,
        iter=iterations,
        numThreads=torch.get_num_threads(),  # as many as torch uses
        verbose=False,
    )
    seconds = time.perf_counter() - start
    threads = torch.get_num_threads()
    return basis, seconds, f"epochs {args.epochs} ({iterations} iterations), numThreads={threads}"


PEERS = (
    ("sklearn MiniBatchDictionaryLearning", "sklearn", run_sklearn),
    ("spams trainDL", "spams", run_spams),
)


def installed(module: str) -> bool:
    """Whether the peer's package imports (a broken install counts as missing)."""
    import importlib

    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


# -- diffsc ----------------------------------------------------------------


def run_diffsc(x: torch.Tensor, args, goal: float):
    """Online learning with checkpoints: ``[(training seconds, evaluation)]``, last basis."""
    problem = Problem.of("gaussian", "l1")

    def now():  # a GPU's queued work is finished first
        if x.device.type == "cuda":
            torch.cuda.synchronize(x.device)
        return time.perf_counter()
    n = x.shape[0]
    batches = -(-n // args.batch_size)
    every = max(1, round(batches / args.checkpoints))
    checkpoints = []

    # Warm-up, untimed: numba loads its compiled solver and atom sweep from
    # its cache on the first call of a process (a one-off, like an import).
    target = problem.family.prepare(x)
    spare = initial_basis(target, args.k, problem.family, torch.Generator().manual_seed(args.seed + 1))
    BasisLearner(problem, spare, check_parameter(args.strength, "strength", spare),
                 check_parameter(0.01, "prior_mean", spare)).online_step(target[: args.batch_size])

    clock = now()
    generator = torch.Generator().manual_seed(args.seed)
    basis = initial_basis(target, args.k, problem.family, generator)
    lam = check_parameter(args.strength, "strength", basis)
    p = check_parameter(0.01, "prior_mean", basis)  # unused by L1
    learner = BasisLearner(problem, basis, lam, p)
    learner.window = online_window(n, args.batch_size)  # as learn_basis does
    elapsed = now() - clock

    def checkpoint(elapsed):
        checkpoints.append((elapsed, evaluate(x, learner.basis, args.strength)))
        return checkpoints[-1][1]["J"] <= goal

    checkpoint(elapsed)
    step = 0
    done = False
    for _ in range(args.passes):
        clock = now()
        order = torch.randperm(n, generator=generator)
        for i, start in enumerate(range(0, n, args.batch_size), 1):
            learner.online_step(target[order[start : start + args.batch_size]])
            step += 1
            if i % every == 0 or i == batches:  # every 1/checkpoints of a pass, and at its end
                elapsed += now() - clock
                done = checkpoint(elapsed)
                if done:
                    break
                clock = now()
        if done:
            break
    return checkpoints, learner.basis, step / batches


# -- the report -------------------------------------------------------------


def _row(method, batch_size, seconds, objective, reached="", ratio="", target="", note=""):
    # The table prints 3 significant digits; the note keeps the ones that tell methods apart.
    note = f"J={objective:.6g}; {note}"
    return {
        "method": method,
        "dtype": "float32",
        "batch_size": batch_size,
        "seconds": seconds,
        "objective": objective,
        "reached": reached,
        "ratio": ratio,
        "target": target,
        "note": note,
    }


def _describe(ev, n) -> str:
    return (
        f"{100 * ev['nonzero']:.1f}% non-zero codes, largest atom norm {ev['largest_norm']:.6f}, "
        f"{ev['unconverged']}/{n} evaluation codes unconverged"
    )


def compare(peers: dict, checkpoints, args, passes_done) -> list[dict]:
    rows = []
    for name, (seconds, ev, note) in peers.items():
        rows.append(_row(name, 256, seconds, ev["J"], note=f"{note}; {_describe(ev, args.n)}"))
    for name, (peer_seconds, peer, _) in peers.items():
        hit = next(((t, ev) for t, ev in checkpoints if ev["J"] <= peer["J"]), None)
        method = f"diffsc -> {name.split()[0]}"
        if hit is not None:
            t, ev = hit
            rows.append(
                _row(method, args.batch_size, t, ev["J"], True, peer_seconds / t, TARGETS[name],
                     "first checkpoint at or below the peer's J (checkpoint resolution)")
            )
        else:
            t, ev = checkpoints[-1]
            rows.append(
                _row(method, args.batch_size, t, ev["J"], False, "", TARGETS[name],
                     f"not reached in {passes_done:.3g} passes: ratio < {peer_seconds / t:.3g}")
            )
    t, ev = checkpoints[-1]
    rows.append(
        _row(
            "diffsc online (final)", args.batch_size, t, ev["J"],
            note=(
                f"passes {passes_done:.3g}, checkpoints {len(checkpoints)}, J at start "
                f"{checkpoints[0][1]['J']:.4g}; {_describe(ev, args.n)}"
            ),
        )
    )
    return rows


def write_curve(path: Path, checkpoints) -> None:
    """diffsc's checkpoints: training seconds, J, fraction of non-zero codes."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["seconds", "objective", "nonzero_fraction"])
        writer.writerows([t, ev["J"], ev["nonzero"]] for t, ev in checkpoints)


def plot(path: Path, checkpoints, peers: dict, title: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    times = [max(t, 1e-3) for t, _ in checkpoints]
    ax.plot(times, [ev["J"] for _, ev in checkpoints], "o-", ms=3, label="diffsc online (checkpoints)")
    for (name, (seconds, ev, _)), marker in zip(peers.items(), "s^"):
        ax.plot([seconds], [ev["J"]], marker, ms=8, label=f"{name} (final)")
        ax.axhline(ev["J"], ls=":", lw=0.8, color=ax.lines[-1].get_color())
    ax.set_xscale("log")
    ax.set_xlabel("training seconds (evaluation not counted)")
    ax.set_ylabel("J(B): mean MAP objective over the training images")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> list[dict]:
    args = parse(argv)
    images, _ = load_mnist("train", args.data_dir)  # FileNotFoundError names what is missing
    x = np.ascontiguousarray(images[: args.n], dtype=np.float32)
    args.n = x.shape[0]
    xt = torch.from_numpy(x).to(args.device)  # diffsc's learning and every evaluation run there

    peers = {}
    skipped = []
    for name, module, run in PEERS:
        if not installed(module):
            skipped.append(f"{name}: {module} does not import")
            continue
        basis, seconds, note = run(x, args)
        ev = evaluate(xt, basis, args.strength)
        _check_norms(name, ev["largest_norm"])
        peers[name] = (seconds, ev, note)

    goal = min((ev["J"] for _, ev, _ in peers.values()), default=-math.inf)
    checkpoints, _, passes_done = run_diffsc(xt, args, goal)
    _check_norms("diffsc", max(ev["largest_norm"] for _, ev in checkpoints))

    rows = compare(peers, checkpoints, args, passes_done)
    header = (
        f"{harness.machine_line(args.device)}\n"
        f"MNIST train N={args.n} D=784 K={args.k} gaussian/L1 lambda={args.strength} float32; "
        f"peers {args.epochs} epochs, batch 256; diffsc batch {args.batch_size}, "
        f"{args.checkpoints} checkpoints/pass, at most {args.passes} passes"
    )
    if skipped:
        header += "\nskipped: " + "; ".join(skipped)
    print(header)
    print(harness.text_table(rows))
    name = "learning" if xt.device.type == "cpu" else f"learning-{xt.device.type}"
    harness.write_rows(args.out, name, rows, header)
    write_curve(args.out / f"{name}_curve.csv", checkpoints)
    plot(args.out / f"{name}.png", checkpoints, peers,
         f"MNIST N={args.n}, K={args.k}, lambda={args.strength}, float32")
    return rows


if __name__ == "__main__":
    try:
        main()
    except FileNotFoundError as err:
        raise SystemExit(str(err)) from None
