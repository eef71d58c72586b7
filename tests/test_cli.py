"""The command line's demo runs end to end on the embedded digits."""

import re
import subprocess
import sys

from diffsc.cli import main


def test_demo_prints_the_table(capsys):
    assert main(["demo", "--atoms", "40"]) == 0
    out = capsys.readouterr().out
    for name in ("raw pixels", "PCA", "l1 codes", "kl codes", "signed_kl codes"):
        row = re.search(rf"^{name}\s+(\d\.\d+)\s", out, re.MULTILINE)
        assert row, f"no row for {name}"
        assert 0.8 < float(row.group(1)) <= 1.0  # ten balanced classes: chance is 0.1
    assert "implicit backward" in out


def test_module_entry_point_shows_help():
    result = subprocess.run([sys.executable, "-m", "diffsc", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "demo" in result.stdout
