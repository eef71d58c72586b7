"""The command line's demo runs end to end on the embedded digits."""

import re
import subprocess
import sys

from diffsc.cli import main


def test_demo_prints_the_table_and_saves_the_atoms(capsys, tmp_path):
    figure = tmp_path / "atoms.png"
    args = ["demo", "--atoms", "30", "--iterations", "4", "--epochs", "2", "--figure", str(figure)]
    assert main(args) == 0
    out = capsys.readouterr().out
    for name in ("raw pixels", r"PCA \(30\)", "L1 codes", "KL codes", "KL fine-tuned"):
        row = re.search(rf"^{name}\s+(\d\.\d+)\s", out, re.MULTILINE)
        assert row, f"no row for {name}"
        assert 0.8 < float(row.group(1)) <= 1.0  # ten balanced classes: chance is 0.1
    assert re.search(r"basis: 30 atoms learned without labels in \d+ iterations", out)
    assert figure.stat().st_size > 10_000 and figure.read_bytes()[:4] == b"\x89PNG"


def test_module_entry_point_shows_help():
    result = subprocess.run([sys.executable, "-m", "diffsc", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "demo" in result.stdout


def test_reproduce_runs_an_experiment_script_in_quick_mode(tmp_path, capsys):
    assert main(["reproduce", "figure1", "--quick", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "figure1.png").stat().st_size > 0
    assert "running:" in capsys.readouterr().out


def test_reproduce_says_where_the_scripts_are_when_missing(tmp_path, capsys):
    assert main(["reproduce", "stability", "--experiments", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'stability.py'} not found" in err and "source checkout" in err
