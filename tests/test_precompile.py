"""``diffsc compile``: each group reaches the compiled code it names, and a
later process finds it in numba's cache."""

import importlib
import os
import subprocess
import sys

import numpy as np
import pytest

from diffsc import precompile

SPIED = {  # module: the compiled entry points its Python code calls
    "diffsc.solvers.newton_cg_fused": ["_solve_rows"],
    "diffsc.hessian_cg": ["fused_cg_rows", "_cg_step"],
    "diffsc.solvers.newton_cg_compiled": ["_accept", "_lower_of_line"],
    "diffsc.solvers.gram": ["_solve_block", "_solve_all"],
    "diffsc.gram_cholesky": ["_support_solve_all"],
    "diffsc.solvers.coordinate_descent": ["_sweeps"],
    "diffsc.solvers.polish": ["_polish_rows"],
    "diffsc.learning": ["_sparse_moments", "_atom_block"],
}
BOTH = precompile.DTYPES
REACHES = {  # entry point: its dtypes
    # the fused loop and its backward, the chunk loop and its backward
    # (float64 codes' own line fallback is rare: its first use compiles it)
    "smooth": {"_solve_rows": BOTH, "fused_cg_rows": BOTH, "_accept": BOTH, "_lower_of_line": ("float32",),
               "_cg_step": BOTH},
    "l1": dict.fromkeys(["_solve_block", "_solve_all", "_support_solve_all", "_sweeps", "_polish_rows",
                         "_sparse_moments", "_atom_block"], BOTH),
}


@pytest.fixture
def reached(monkeypatch):
    """``{(entry point, dtype of its first array argument)}`` of the calls made."""
    seen = set()
    for module_name, names in SPIED.items():
        module = importlib.import_module(module_name)
        for name in names:
            def spy(*args, _name=name, _f=getattr(module, name)):
                arrays = [a for a in args if isinstance(a, np.ndarray) and a.dtype.kind == "f"]
                seen.add((_name, str(arrays[0].dtype)))
                return _f(*args)
            monkeypatch.setattr(module, name, spy)
    return seen


@pytest.mark.parametrize("group", precompile.GROUPS)
def test_each_group_reaches_its_compiled_code_in_each_dtype(group, reached):
    for dtype in precompile.DTYPES:
        precompile._run_group(group, (dtype,))
    assert {(name, dtype) for name, dtypes in REACHES[group].items() for dtype in dtypes} <= reached


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="unknown"):
        precompile.precompile(groups=["fused"], report=None)
    with pytest.raises(ValueError, match="unknown"):
        precompile.precompile(dtypes=["float16"], report=None)
    with pytest.raises(ValueError, match="jobs"):
        precompile.precompile(jobs=0, report=None)


def test_the_command_refuses_bad_arguments_plainly():
    from diffsc.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["compile", "--only", "fused"])
    assert exit_.value.code == 2


def test_a_later_process_compiles_nothing(tmp_path):
    # The command compiles into numba's cache (here an empty one); a fresh
    # process then codes and differentiates without compiling anything.
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    out = subprocess.run([sys.executable, "-m", "diffsc", "compile", "--only", "l1", "--dtypes", "float64"],
                         env=env, capture_output=True, text=True, check=True).stdout
    assert "l1:" in out and "done in" in out
    check = (
        "from numba.core import event\n"
        "compiled = []\n"
        "class Listener(event.Listener):\n"
        "    def on_start(self, ev): pass\n"
        "    def on_end(self, ev): compiled.append(ev.data['dispatcher'].py_func.__qualname__)\n"
        "event.register('numba:compile', Listener())\n"
        "import torch, diffsc\n"
        "g = torch.Generator().manual_seed(1)\n"
        "b = torch.randn(20, 50, generator=g, dtype=torch.float64); b = (b / b.norm(dim=0)).requires_grad_()\n"
        "x = torch.randn(70, 20, generator=g, dtype=torch.float64)\n"
        "for rows in (1, 70):\n"
        "    diffsc.sparse_code(x[:rows], b, prior='l1', strength=0.1).square().sum().backward()\n"
        "print('compiled:', compiled)\n"
    )
    out = subprocess.run([sys.executable, "-c", check], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "compiled: []"
