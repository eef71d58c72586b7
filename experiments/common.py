"""What every experiment script shares: arguments, timing, and writing results.

Each script writes, under ``results/<name>/``, the raw numbers as CSV, a
Markdown table (``<name>.md``) and a PNG plot. Scripts use only diffsc's
public API (``diffsc``, ``diffsc.datasets``, ``diffsc.evaluation``).
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

REPOSITORY = Path(__file__).resolve().parents[1]


def parser(name: str, doc: str) -> argparse.ArgumentParser:
    """The arguments every experiment takes: --quick, --out, --data-dir, --seed."""
    p = argparse.ArgumentParser(prog=f"{name}.py", description=doc.strip().splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a small, fast run (the test suite runs it)")
    p.add_argument("--out", type=Path, default=REPOSITORY / "results" / name, help="output folder")
    p.add_argument(
        "--data-dir", type=Path, default=None,
        help="folder holding the data sets (default: $DIFFSC_DATA)",
    )
    p.add_argument("--seed", type=int, default=0)
    return p


def machine() -> str:
    """One line naming the machine and versions, for the results' footers."""
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), numpy {np.__version__}"
    )


def write_csv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def markdown_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def mean_std(values, scale=100.0, digits=1) -> str:
    """``"mean ± std"`` of a list (percentages by default; std with ddof=1)."""
    values = np.asarray(values, dtype=float) * scale
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{values.mean():.{digits}f} ± {values.std(ddof=1):.{digits}f}"


class Stopwatch:
    """Wall time since creation, for the results' footers."""

    def __init__(self):
        self.start = time.perf_counter()

    def seconds(self) -> float:
        return time.perf_counter() - self.start


def subplots(*grid, figsize=(6, 4)):
    """A figure and its axes, without pyplot's global state (scripts may run in tests)."""
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    axes = fig.subplots(*grid)
    return fig, axes


def save_figure(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
