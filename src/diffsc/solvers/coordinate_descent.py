"""Cyclic coordinate descent on a batch of small L1 problems (prox_newton's models).

Each row ``i`` minimises ``1/2 z^T h_i z - c_i^T z + lam_i |z|_1`` over
its first coordinates (``v`` marks them; the rest stay 0), one coordinate at
a time, each step a soft threshold (non-negative codes: a one-sided one).
A row stops where no coordinate of a sweep moved by more than ``accuracy``
times its largest coefficient, or after ``max_sweeps`` sweeps.

On the CPU the sweeps are one numba kernel, parallel over rows, each row
stopping on its own. Elsewhere (a GPU) they are torch operators over all rows
at once, a few per coordinate and sweep; the rows stop together.
"""

from __future__ import annotations

import numba
import torch

from ..gram_cholesky import use_torch_threads


def coordinate_descent(prior, h, c, lam, z, v, accuracy, max_sweeps, compiled=None):
    """The models' approximate minimisers, from ``z`` (not overwritten);
    ``compiled`` (default: on the CPU) picks the numba kernel."""
    z = z.clone(memory_format=torch.contiguous_format)
    if compiled is None:
        compiled = z.device.type == "cpu"
    if compiled:
        use_torch_threads()
        _sweeps(h.contiguous().numpy(), c.contiguous().numpy(), lam.contiguous().numpy(), z.numpy(),
                v.contiguous().numpy(), accuracy.contiguous().numpy(), prior.nonnegative, max_sweeps)
        return z
    hz = (h @ z.unsqueeze(-1)).squeeze(-1)
    diag = h.diagonal(dim1=-2, dim2=-1)
    for _ in range(max_sweeps):
        moved = torch.zeros_like(accuracy)
        for j in range(z.shape[1]):
            u = c[:, j] - hz[:, j] + diag[:, j] * z[:, j]  # c_j - sum_{l != j} h_jl z_l
            new = prior.prox(u, lam[:, j]) / diag[:, j] * v[:, j]
            change = new - z[:, j]
            hz += h[:, :, j] * change.unsqueeze(-1)
            z[:, j] = new
            moved = torch.maximum(moved, change.abs())
        if bool((moved <= accuracy * z.abs().amax(-1)).all()):
            break
    return z


@numba.njit(parallel=True, cache=True)
def _sweeps(h, c, lam, z, v, accuracy, nonnegative, max_sweeps):
    n, s = z.shape
    for i in numba.prange(n):
        hz = h[i] @ z[i]  # kept equal to h z as coordinates move
        for _ in range(max_sweeps):
            moved, largest = 0.0, 0.0
            for j in range(s):
                if v[i, j] == 0:
                    continue
                u = c[i, j] - hz[j] + h[i, j, j] * z[i, j]  # c_j - sum_{l != j} h_jl z_l
                shrunk = max(u - lam[i, j], 0.0)
                if not nonnegative:
                    shrunk -= max(-u - lam[i, j], 0.0)
                change = shrunk / h[i, j, j] - z[i, j]
                if change != 0:
                    z[i, j] += change
                    for l in range(s):  # h is symmetric: its row j is its column j
                        hz[l] += h[i, j, l] * change
                moved = max(moved, abs(change))
                largest = max(largest, abs(z[i, j]))
            if moved <= accuracy[i] * largest:
                break
