"""Compiled solvers run on torch's thread count and leave it as the user set it.

Launching numba's OpenMP layer (the first parallel loop in a process) sets
OpenMP's thread count, which is torch's: a user's ``torch.set_num_threads(1)``
became 2. Each entry point into a parallel numba loop therefore sets numba's
count from torch's first (:func:`diffsc.gram_cholesky.use_torch_threads`).
Each case runs in a fresh process, whose first parallel loop it is.
"""

import subprocess
import sys

import pytest

SETUP = ("import numba, torch, diffsc; torch.set_num_threads(1); g = torch.Generator().manual_seed(0); "
         "x = torch.randn(600, 16, generator=g, dtype=torch.float64); "
         "b = torch.randn(16, 40, generator=g, dtype=torch.float64); b = (b / b.norm(dim=0)).requires_grad_(); "
         "kw = dict(prior='kl', strength=0.1, prior_mean=0.01); ")
CASES = {
    "fused loop (few rows)": "diffsc.sparse_code(x[:2], b, **kw)",
    "chunk loop": "diffsc.sparse_code(x, b, **kw)",
    # the forward by torch's factored Newton steps: the backward's CG is the first compiled loop
    "fused backward CG (few rows)": "diffsc.sparse_code(x[:2], b, solver='newton', **kw).sum().backward()",
    "backward CG": "diffsc.sparse_code(x[:100], b, solver='newton', **kw).sum().backward()",
    "L1 codes": "diffsc.sparse_code(x, b, prior='l1', strength=0.1)",
}


@pytest.mark.parametrize("case", CASES)
def test_compiled_loops_keep_torchs_thread_count(case):
    script = SETUP + CASES[case] + "; print(torch.get_num_threads(), numba.get_num_threads())"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.split()[-2:] == ["1", "1"], f"torch's and numba's threads after the {case}: {out.split()[-2:]}"
