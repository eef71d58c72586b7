"""Compile the numba solvers ahead of their first call: ``diffsc compile``.

The compiled solvers (gaussian codes on the CPU, their backward, online
learning's sums) are compiled by numba at their first call in each dtype
and cached on disk, beside the package or under ``NUMBA_CACHE_DIR``: once
per install, but a first call waits for it. In an empty cache a first
KL code of one input took 30-40 s, a first batch of them 25 s more, the
first L1 codes 10-14 s (2-core CPU). :func:`precompile` makes those first
calls on small problems, in worker processes side by side, so that a
Docker image's build, a cluster job's setup or a user's install pays for
it once, not each process's first request.

The groups compile functions of separate modules (smooth priors:
``solvers/newton_cg*.py`` and ``hessian_cg.py``; L1: ``solvers/gram.py``,
``gram_cholesky.py``, ``solvers/coordinate_descent.py``, ``solvers/polish.py``, ``learning.py``),
and within a group the calls run in turn: numba's cache is not safe for two
processes that add entries to one function's index at once (each numbers
its data file from the index it read, so one entry can end up naming the
other's code). The fused loop and the chunk loop share two functions
(``_rise``, ``_stall_update``, in different signatures), so they are one
group. Run it while no other process compiles diffsc's solvers.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed

import torch

DTYPES = ("float64", "float32")
SMOOTH = ("kl", "signed_kl", "l2")


def _problem(rows, dtype, d=64, k=256, seed=0):
    """``rows`` inputs of a planted ``d x k`` gaussian problem (5% of unit-norm atoms, noise)."""
    g = torch.Generator().manual_seed(seed)
    basis = torch.randn(d, k, generator=g, dtype=torch.float64)
    basis /= basis.norm(dim=0)
    codes = torch.randn(rows, k, generator=g, dtype=torch.float64) * (torch.rand(rows, k, generator=g) < 0.05)
    x = codes @ basis.T
    x += 0.1 * x.std() * torch.randn(x.shape, generator=g, dtype=torch.float64)
    return x.to(dtype), basis.to(dtype)


def _codes_and_gradient(x, basis, strength=0.19, **options):
    """Codes of ``x`` and the basis gradient of a loss on them: a layer's forward and backward."""
    from .coding import sparse_code

    basis = basis.clone().requires_grad_()
    codes = sparse_code(x, basis, strength=strength, prior_mean=0.01, **options)
    codes.square().sum().backward()


def _few_rows(dtype):
    """The fused Newton-CG loop and its backward's fused CG (batches of a few rows)."""
    x, basis = _problem(2, dtype)
    for prior in SMOOTH:
        _codes_and_gradient(x, basis, prior=prior)


def _chunks(dtype):
    """The chunk loop (float64 codes: its float32 phase too) and the backward's CG, in
    float64 (below ``REFINE_ROWS`` rows) and by float32 refinement (from them)."""
    from .hessian_cg import REFINE_ROWS

    x, basis = _problem(REFINE_ROWS + 36, dtype)
    for prior in SMOOTH:
        for rows in (REFINE_ROWS // 2, REFINE_ROWS + 36):
            _codes_and_gradient(x[:rows], basis, prior=prior)
    # a weaker prior on an overcomplete basis: KL's line search falls back to
    # straight lines there (its own kernels)
    x, basis = _problem(300, dtype, d=30, k=60, seed=1)
    _codes_and_gradient(x, basis, strength=0.01, prior="kl")


def _l1(dtype):
    """Gaussian L1 codes (one input, and a batch over the threads) and their backward,
    proximal Newton's coordinate descent and polish (the other families), online learning's sums."""
    from .coding import sparse_code
    from .learning import learn_basis

    x, basis = _problem(100, dtype)
    for rows in (1, 100):
        _codes_and_gradient(x[:rows], basis, prior="l1")
    sparse_code(x.abs().round(), basis, family="poisson", prior="l1", strength=0.19)
    # codes sparse enough (at most learning.SPARSE_SHARE non-zeros) for its compiled sums
    learn_basis(x, 32, prior="l1", strength=1.0, method="online", max_iter=1, batch_size=50, progress=False)


#: name: (what it compiles, its calls)
GROUPS = {
    "smooth": ("Newton-CG for KL, signed KL and L2 (few rows and chunks) and the backward's CG",
               (_few_rows, _chunks)),
    "l1": ("L1 codes, their backward, proximal Newton's kernels, online learning", (_l1,)),
}


def _run_group(name, dtypes):
    """``(name, seconds)`` of a group's calls in each dtype (in a worker process)."""
    start = time.perf_counter()
    for dtype in dtypes:
        for calls in GROUPS[name][1]:
            calls(getattr(torch, dtype))
    return name, time.perf_counter() - start


def cache_folder() -> str:
    """Where numba caches the solvers (one of their cache files' folder), as far
    as numba tells (its dispatchers' ``_cache`` is not public API)."""
    from .solvers import gram

    path = getattr(getattr(gram._solve_one, "_cache", None), "_cache_path", None)
    return str(path) if path else "numba's cache folder"


def precompile(dtypes=DTYPES, groups=None, jobs=None, report=print) -> dict:
    """Compile the solvers for ``dtypes`` (names, e.g. ``"float32"``); ``groups``
    of :data:`GROUPS` (default all) run ``jobs`` at a time (default: as many as
    there are groups and CPUs), each in a process of its own. Returns each
    group's seconds; ``report`` (None: quiet) is told each as it ends."""
    groups = list(GROUPS) if groups is None else list(groups)
    unknown = [g for g in groups if g not in GROUPS] + [d for d in dtypes if d not in DTYPES]
    if unknown:
        raise ValueError(f"precompile: unknown {unknown}; groups are {list(GROUPS)}, dtypes {list(DTYPES)}")
    if jobs is None:
        jobs = os.cpu_count() or 1
    if not (isinstance(jobs, int) and jobs >= 1):
        raise ValueError(f"jobs: must be a positive integer, got {jobs!r}")
    say = report or (lambda _message: None)
    say(f"compiling diffsc's solvers for {', '.join(dtypes)} into numba's cache (e.g. {cache_folder()}; "
        f"{len(groups)} groups, {min(jobs, len(groups))} at a time; about 2 minutes on 2 cores)")
    seconds = {}
    start = time.perf_counter()
    # spawn: a forked child of a process whose torch started its threads can hang in OpenMP
    with ProcessPoolExecutor(min(jobs, len(groups)), mp_context=multiprocessing.get_context("spawn"),
                             initializer=torch.set_num_threads, initargs=(1,)) as pool:  # (the calls are small)
        for done in as_completed([pool.submit(_run_group, name, tuple(dtypes)) for name in groups]):
            name, seconds[name] = done.result()
            say(f"  {name}: {GROUPS[name][0]}: {seconds[name]:.1f} s")
    say(f"done in {time.perf_counter() - start:.1f} s; later processes load them from the cache")
    return seconds
