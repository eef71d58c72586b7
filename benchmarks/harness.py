"""What every benchmark shares: the planted problem, timing, peak memory,
versions, and the table.

A benchmark produces rows (dicts). :func:`measure` runs a callable, returning
its median wall time over ``repeats`` runs and the peak memory it used above
what was in use when it started (CPU: the kernel's resident-set high-water
mark, reset at the start; CUDA: ``torch.cuda.max_memory_allocated``).
"""

from __future__ import annotations

import csv
import importlib.metadata
import json
import os
import platform
import statistics
import threading
import time
from pathlib import Path

import torch


def make_problem(n, d, k, seed, family="gaussian"):
    """``(x, basis)`` float64: sparse combinations of 5% of the atoms plus 20 dB noise.

    ``family="softmax"``: 200-word documents drawn from the softmax of 10x such
    combinations (``d`` is the vocabulary), none empty. ``"poisson"``: counts
    drawn with rates ``exp`` of the combinations; ``"bernoulli"``: 0/1 drawn
    with probabilities their ``sigmoid``.
    """
    g = torch.Generator().manual_seed(seed)
    basis = torch.randn(d, k, generator=g, dtype=torch.float64)
    basis /= basis.norm(dim=0)
    active = torch.rand(n, k, generator=g, dtype=torch.float64) < 0.05
    codes = torch.randn(n, k, generator=g, dtype=torch.float64) * active
    clean = codes @ basis.T
    if family == "softmax":
        rates = 200 * torch.softmax(10 * clean, dim=1)
        counts = torch.poisson(rates, generator=g)
        counts[:, 0] += 1  # no empty document
        return counts, basis
    if family == "poisson":
        return torch.poisson(clean.exp(), generator=g), basis
    if family == "bernoulli":
        return torch.bernoulli(torch.sigmoid(clean), generator=g), basis
    noise = torch.randn(n, d, generator=g, dtype=torch.float64)
    noise *= clean.norm(dim=1, keepdim=True) / noise.norm(dim=1, keepdim=True) * 0.1  # 20 dB
    return clean + noise, basis


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _high_water_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise OSError("no VmHWM in /proc/self/status")


def _reset_high_water() -> bool:
    """Set the kernel's resident-set high-water mark to the current resident set (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        _high_water_bytes()
    except OSError:
        return False
    return True


class PeakMemory:
    """Peak memory above the starting point while the block runs, in bytes.

    On Linux CPUs the kernel's resident-set high-water mark is reset on entry
    and read on exit: exact, and nothing runs beside the block. A thread that
    polled the resident set every millisecond made the timed code 4-15%
    slower on two cores (it wakes a thousand times a second, wanting the GIL
    and a core); it is the fallback where the mark cannot be reset (and can
    miss a spike shorter than a millisecond). On CUDA the allocator's own peak
    is read. Elsewhere ``peak`` stays None.
    """

    def __init__(self, device: str = "cpu"):
        self.device = torch.device(device)
        self.peak = None

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
        elif os.path.exists("/proc/self/statm"):
            self._start = _rss_bytes()
            self._high_water = _reset_high_water()
            if not self._high_water:
                self._max = self._start
                self._stop = threading.Event()
                self._thread = threading.Thread(target=self._sample, daemon=True)
                self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.001):
            self._max = max(self._max, _rss_bytes())

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device) - self._start
        elif getattr(self, "_high_water", False):
            self.peak = max(_high_water_bytes(), _rss_bytes()) - self._start
        elif hasattr(self, "_thread"):
            self._stop.set()
            self._thread.join()
            self.peak = max(self._max, _rss_bytes()) - self._start
        return False


def measure(fn, repeats: int = 3, device: str = "cpu"):
    """``(median seconds, peak bytes of the first run, fn's last result)``."""
    times, peak, out = [], None, None
    for i in range(repeats):
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize(device)
        with PeakMemory(device) as memory:
            start = time.perf_counter()
            out = fn()
            if torch.device(device).type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - start)
        if i == 0:
            peak = memory.peak
    return statistics.median(times), peak, out


def versions() -> dict:
    """Versions of diffsc and of every peer that is installed."""
    found = {}
    for package in ("diffsc", "torch", "numpy", "scipy", "scikit-learn", "spams-bin", "numba"):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


def machine_line(device: str = "cpu") -> str:
    """The machine, threads and versions, one line for every table's header."""
    if torch.device(device).type == "cuda":
        where = torch.cuda.get_device_name(device)
    else:
        where = f"{platform.machine()} CPU, {os.cpu_count()} cores, torch {torch.get_num_threads()} threads"
    listed = ", ".join(f"{k} {v}" for k, v in versions().items())
    return f"{where}; {listed}"


def megabytes(peak) -> str:
    return "-" if peak is None else f"{peak / 2**20:.0f}"


def write_rows(out: Path, name: str, rows: list[dict], header: str) -> None:
    """``<name>.csv``, ``<name>.json`` (rows with the header) and a Markdown table."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / f"{name}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (out / f"{name}.json").write_text(json.dumps({"machine": header, "rows": rows}, indent=1))
    (out / f"{name}.md").write_text(f"{header}\n\n{markdown(rows)}")


def markdown(rows: list[dict]) -> str:
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(_cell(row[k]) for k in keys) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def text_table(rows: list[dict]) -> str:
    """The rows as aligned plain text, for the terminal."""
    keys = list(rows[0])
    cells = [[_cell(row[k]) for k in keys] for row in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    lines = ["  ".join(k.ljust(w) for k, w in zip(keys, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def _cell(value) -> str:
    if isinstance(value, float):
        if value == 0 or 1e-3 <= abs(value) < 1e5:
            return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
        return f"{value:.2e}"
    return str(value)
