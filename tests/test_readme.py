"""The README's usage example runs as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_examples_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the learning example saves a file
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.DOTALL)
    assert blocks, "the README has no python example"
    namespace = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
    basis, codes, info = namespace["basis"], namespace["codes"], namespace["info"]
    assert basis.grad is not None and codes.shape == (1000, 128)
    assert bool(info.converged.all())
    objective = namespace["learned"].objective
    assert all(b <= a for a, b in zip(objective, objective[1:]))
    assert isinstance(namespace["model"], namespace["diffsc"].CodePredictor)
    assert (tmp_path / "digits.pt").exists()
