"""Smoke run of benchmarks/learning.py: every method's row, a decreasing curve, the files.

Needs the MNIST training files in ``$DIFFSC_DATA``; skipped with the loader's
message otherwise.
"""

import csv
import importlib.util
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load():
    spec = importlib.util.spec_from_file_location("learning_benchmark", ROOT / "benchmarks" / "learning.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_learning_smoke(tmp_path, capsys):
    bench = _load()
    try:
        rows = bench.main(["--smoke", "--out", str(tmp_path)])
    except FileNotFoundError as error:  # no MNIST files in $DIFFSC_DATA
        pytest.skip(str(error))
    by_method = {row["method"]: row for row in rows}

    peers = [name for name, module, _ in bench.PEERS if bench.installed(module)]
    for name in peers:
        assert name in by_method, name
        reach = by_method[f"diffsc -> {name.split()[0]}"]
        assert reach["target"] == bench.TARGETS[name]
        assert isinstance(reach["reached"], bool)
        if reach["reached"]:
            assert reach["objective"] <= by_method[name]["objective"]
            assert reach["ratio"] == pytest.approx(by_method[name]["seconds"] / reach["seconds"])
    assert "diffsc online (final)" in by_method
    for row in rows:
        assert math.isfinite(row["objective"]) and row["objective"] > 0, row
        assert row["seconds"] > 0, row
        assert row["dtype"] == "float32"

    with open(tmp_path / "learning_curve.csv") as f:
        curve = [(float(r["seconds"]), float(r["objective"])) for r in csv.DictReader(f)]
    assert len(curve) >= 2
    times, objectives = zip(*curve)
    assert list(times) == sorted(times)
    assert objectives[-1] < objectives[0]  # learning lowered J
    assert objectives[-1] == pytest.approx(by_method["diffsc online (final)"]["objective"])

    for name in ("learning.csv", "learning.json", "learning.md", "learning.png", "learning_curve.csv"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert (tmp_path / "learning.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = capsys.readouterr().out
    assert out.splitlines()[0] == bench.harness.machine_line() and "diffsc online (final)" in out


def test_learning_smoke_without_peers(tmp_path, capsys, monkeypatch):
    """A peer that does not import is left out, and the header says so."""
    bench = _load()
    monkeypatch.setattr(bench, "installed", lambda module: False)
    try:
        rows = bench.main(["--smoke", "--out", str(tmp_path)])
    except FileNotFoundError as error:
        pytest.skip(str(error))
    assert [row["method"] for row in rows] == ["diffsc online (final)"]
    assert "passes 2," in rows[0]["note"]  # no peer objective to stop at: every pass runs
    out = capsys.readouterr().out
    assert "skipped: sklearn MiniBatchDictionaryLearning: sklearn does not import" in out
    assert (tmp_path / "learning.png").stat().st_size > 0


def test_online_memory_smoke(tmp_path, capsys):
    """benchmarks/online_memory.py, which chose diffsc.learning.MEMORY, still runs."""
    spec = importlib.util.spec_from_file_location("online_memory", ROOT / "benchmarks" / "online_memory.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        rows = module.main(["--smoke", "--out", str(tmp_path)])
    except FileNotFoundError as error:  # no MNIST here: the loader says where to get it
        pytest.skip(str(error))
    assert [row["period_batches"] for row in rows] == [2, 4]
    for row in rows:  # a second pass does not undo the first
        assert 0 < float(row["J_pass_2"]) <= float(row["J_pass_1"])
    assert (tmp_path / "online-memory.md").exists() and "period_examples" in capsys.readouterr().out
