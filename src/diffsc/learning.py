r"""Unsupervised basis learning (SPEC §3): alternate MAP codes and basis updates.

Minimises the mean objective over the ``N`` examples

.. math::

    J(B, W) = \frac1N \sum_n D_L(x_n \| f(B w_n)) + \sum_k \lambda_k R(w_{nk}),
    \qquad \|B_{:,k}\|_2 \le 1 \text{ for every atom } k,

by block-coordinate descent: MAP codes for the current basis (warm-started
from the previous codes), then a basis step for the current codes. The norm
bound keeps the prior meaningful: without it ``B`` grows and the codes shrink.

Basis step:

- gaussian: each atom in turn exactly minimises ``J`` with the others fixed,
  from the sufficient statistics ``A = W^T W / N`` and ``C = X^T W / N``
  (Mairal et al., *Online dictionary learning*, JMLR 2010, Algorithm 2):
  ``u = b_k + (c_k - B a_k) / A_kk``, then ``b_k = u / max(1, ||u||)``.
- other families: projected gradient steps on ``B`` with a backtracking line
  search, ``grad_B = (R - X)^T W / N`` (softmax atoms are also centred:
  ``softmax`` ignores a constant shift, so centring only frees norm).

``method="batch"`` uses all examples each iteration and never increases
``J``: a code or basis step that would increase it (only possible by
rounding) is not taken. ``method="online"`` streams shuffled mini-batches and
keeps running statistics (gaussian) or takes projected gradient steps on
each mini-batch (other families), for data that does not fit in memory. The
statistics are Mairal et al.'s scaled sums: the past is scaled by about
``1 - 1/t`` before mini-batch ``t`` is added, so batch ``j`` weighs about
``j / t`` and codes from an early, poorer basis fade; for data of known size
the statistics of the previous period and of the current one are kept (as
Mairal's SPAMS does with passes), a period being a pass or ``MEMORY``
examples if fewer, and the scaling stops at ``1 - 1/(batches per period)``.
"""

from __future__ import annotations

import numbers
import warnings
from dataclasses import dataclass, field

import numba
import numpy as np
import torch
from tqdm.auto import tqdm

from .coding import ConvergenceWarning
from .gram_cholesky import use_torch_threads
from .problem import Problem
from .solvers import solve
from .validation import as_tensor, check_basis, check_finite, check_parameter

METHODS = ("batch", "online")


@dataclass
class LearningResult:
    """What :func:`learn_basis` returns.

    Attributes
    ----------
    basis : (D, K) tensor, every column of norm <= 1
    codes : (N, K) tensor or None
        MAP codes of the training data for ``basis`` (batch method; None for
        online learning, whose data need not fit in memory).
    objective : list of float
        ``J`` after each iteration (batch) or the mean mini-batch objective of
        each pass (online).
    n_iter : int
    converged : bool
        Whether the relative decrease of ``J`` fell below ``tol``.
    """

    basis: torch.Tensor
    codes: torch.Tensor | None
    objective: list[float] = field(default_factory=list)
    n_iter: int = 0
    converged: bool = False


def prepare_data(x, dtype=None) -> torch.Tensor:
    """``x`` as a finite, non-empty ``(N, D)`` float tensor (float64 unless given)."""
    x = as_tensor(x, "x")
    if x.dim() != 2:
        raise ValueError(f"x: expected shape (N, D), got {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError("x: empty batch (N = 0)")
    if x.shape[1] == 0:
        raise ValueError("x: has no features (D = 0)")
    if dtype is None:
        dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float64
    x = x.to(dtype)
    check_finite(x, "x")
    return x


def initial_basis(x, n_atoms: int, family, generator: torch.Generator) -> torch.Tensor:
    """``n_atoms`` distinct training examples as unit-norm atoms, ``(D, K)``.

    ``x`` is the family's prepared target. Non-gaussian families get the
    centred log of the (smoothed) example, the natural parameter that
    reproduces it. Repeats (``K > N``) and zero rows get a small random
    perturbation so that no two atoms coincide.
    """
    n, d = x.shape
    index = torch.randperm(n, generator=generator)[: min(n, n_atoms)]
    if n_atoms > n:
        extra = torch.randint(n, (n_atoms - n,), generator=generator)
        index = torch.cat([index, extra])
    atoms = x[index.to(x.device)]
    if family.name != "gaussian":
        atoms = torch.log(atoms.clamp(0, 1) + 1.0 / d)
        atoms = atoms - atoms.mean(-1, keepdim=True)
    noise = torch.randn(atoms.shape, generator=generator, dtype=atoms.dtype).to(x.device)
    scale = atoms.norm(dim=1, keepdim=True)
    atoms = atoms + 1e-2 * noise * torch.where(scale > 0, scale, 1) / d**0.5
    return _project(atoms.T.contiguous(), family)


def _project(basis: torch.Tensor, family) -> torch.Tensor:
    """Atoms onto the unit ball (centred first where the family ignores shifts)."""
    if family.shift_invariant:
        basis = basis - basis.mean(0, keepdim=True)
    return basis / basis.norm(dim=0).clamp_min(1.0)


def project_atoms(basis: torch.Tensor, family="gaussian") -> torch.Tensor:
    """A copy of ``basis`` whose every column has norm ``<= 1`` (see module docs)."""
    from .families import get_family

    return _project(basis, get_family(family))


def mean_objective(problem: Problem, x, basis, lam, p, w) -> float:
    """``J(B, W)``: the mean of the per-example objectives."""
    return float(problem.objective(x, basis, lam, p, w).mean())


class BasisLearner:
    """The state of basis learning: problem, basis, and online statistics.

    Parameters are already checked tensors; ``x`` passed to the methods is
    the family's prepared target. Used by :func:`learn_basis` and by the
    scikit-learn estimators' ``partial_fit``.
    """

    def __init__(self, problem, basis, lam, p, *, code_tol=None, code_max_iter=None, solver=None):
        self.problem = problem
        self.basis = basis
        self.lam = lam
        self.p = p
        if code_tol is None:
            code_tol = 1e-6 if basis.dtype == torch.float64 else 1e-4
        self.code_options = {"solver": solver, "tol": code_tol, "max_iter": code_max_iter}
        self.step_size = 1.0  # projected-gradient step, adapted by backtracking
        self.stats = None  # online gaussian: (A, C)
        self.n_batches = 0
        self.window = None  # online, data of known size: batches in a period (online_window)
        self.passes = None  # ... then: statistics of the previous period and of this one
        self.sweeps = 1  # online: passes over the atoms per mini-batch
        self.unconverged = 0  # codes that missed code_tol in the last coding pass

    def codes(self, x, init=None) -> torch.Tensor:
        """MAP codes for the current basis; never worse than ``init``."""
        with torch.no_grad():
            result = solve(self.problem, x, self.basis, self.lam, self.p, init=init, **self.code_options)
            w = result.codes
            self.unconverged = int((~result.converged).sum())
            if init is not None:  # keep a warm start the solver failed to improve on
                start = self.problem.prior.project(init)
                new = self.problem.objective(x, self.basis, self.lam, self.p, w)
                old = self.problem.objective(x, self.basis, self.lam, self.p, start)
                w = torch.where((new <= old)[:, None], w, start)
        return w

    def objective(self, x, w) -> float:
        return mean_objective(self.problem, x, self.basis, self.lam, self.p, w)

    # -- basis steps -------------------------------------------------------

    def batch_step(self, x, w, steps: int = 10) -> None:
        """Decrease ``J`` in ``B`` for fixed codes (the basis step of batch learning)."""
        if self.problem.family.name == "gaussian":
            n = x.shape[0]
            self._coordinate_step(w.T @ w / n, x.T @ w / n, sweeps=steps)
        else:
            for _ in range(steps):
                if not self._gradient_step(x, w):
                    break

    def online_step(self, x) -> float:
        """One mini-batch of online learning; returns its objective before the step."""
        w = self.codes(x)
        n = x.shape[0]
        self.n_batches += 1
        if self.problem.family.name == "gaussian":
            half_error, a, c = gaussian_moments(x, w, self.basis)
            value = float((half_error + (self.lam * self.problem.prior.value(w, self.p)).sum(-1)).mean())
            # Mairal et al. (2010, §3.4): the past statistics are scaled by
            # beta_t ~ 1 - 1/t and the new batch added with weight 1, so batch
            # j weighs ~ j/t: codes from an early, poorer basis fade. The atom
            # step is invariant to the sums' scale.
            t, size = self.n_batches, n
            if self.window is None:  # a stream of unknown length
                theta = t * size if t < size else size**2 + t - size
                beta = (theta + 1 - size) / (theta + 1)
                self.stats = (a, c) if self.stats is None else (beta * self.stats[0] + a, beta * self.stats[1] + c)
            else:
                # Data of known size: like Mairal's SPAMS, the statistics of the
                # previous period and of this one, older ones dropped; a period
                # is a pass, or MEMORY examples if fewer (online_window).
                beta = 1.0 - 1.0 / min(t, self.window)
                if self.passes is None or (t - 1) % self.window == 0:
                    self.passes = (None if self.passes is None else self.passes[1], (0 * a, 0 * c))
                previous, current = self.passes
                current = (beta * current[0] + a, beta * current[1] + c)
                if previous is not None:
                    previous = (beta * previous[0], beta * previous[1])
                self.passes = (previous, current)
                self.stats = current if previous is None else (previous[0] + current[0], previous[1] + current[1])
            self._coordinate_step(*self.stats, sweeps=self.sweeps)
        else:
            value = self.objective(x, w)
            for _ in range(3):
                if not self._gradient_step(x, w):
                    break
        return value

    def _coordinate_step(self, a, c, sweeps: int) -> None:
        """Exact minimisation over one atom at a time (module docstring)."""
        if self.basis.device.type == "cpu":
            # Compiled: a Python loop over atoms costs more than their arithmetic.
            self.basis = atom_sweeps_blocked(self.basis, a, c, sweeps)
        else:
            self.basis = atom_sweeps_torch(self.basis, a, c, sweeps)

    def _gradient_step(self, x, w) -> bool:
        """One projected gradient step with backtracking; False if none decreased ``J``."""
        family = self.problem.family
        n = x.shape[0]
        loss = family.loss(x, w @ self.basis.T).mean()
        grad = (family.transfer(w @ self.basis.T) - x).T @ w / n
        step = 2 * self.step_size
        for _ in range(40):
            candidate = _project(self.basis - step * grad, family)
            delta = candidate - self.basis
            bound = loss + (grad * delta).sum() + delta.square().sum() / (2 * step)
            new = family.loss(x, w @ candidate.T).mean()
            if bool(new <= bound) and bool(new <= loss):
                self.basis, self.step_size = candidate, step
                return bool(new < loss)
            step /= 2
        return False


#: Codes with at most this share of non-zeros (L1's, typically) take the
#: compiled :func:`gaussian_moments` on the CPU; denser ones matrix products.
SPARSE_SHARE = 0.1


def gaussian_moments(x, w, basis):
    """``(1/2 ||x_n - B w_n||^2 per row, W^T W / N, X^T W / N)`` of a mini-batch.

    Sparse codes on the CPU skip their zeros (a compiled loop over each
    row's non-zeros and each atom's rows) instead of three dense products:
    MNIST's L1 codes (8% non-zeros, N = 256, K = 256, D = 784, float32) took
    0.64 ms a mini-batch against 1.49 ms in online learning.
    """
    n, k = w.shape
    if x.device.type != "cpu" or int(torch.count_nonzero(w)) > SPARSE_SHARE * w.numel():
        return 0.5 * (x - w @ basis.T).square().sum(-1), w.T @ w / n, x.T @ w / n
    half_error = torch.empty(n, dtype=x.dtype)
    a = torch.empty(k, k, dtype=x.dtype)
    ct = torch.empty(k, x.shape[1], dtype=x.dtype)
    use_torch_threads()
    _sparse_moments(x.contiguous().numpy(), w.contiguous().numpy(), basis.T.contiguous().numpy(),
                    half_error.numpy(), a.numpy(), ct.numpy())
    return half_error, a / n, ct.T / n


@numba.njit(parallel=True, cache=True, fastmath=True)
def _sparse_moments(x, w, atoms, half_error, a, ct):
    """:func:`gaussian_moments`'s sums over the non-zero codes; ``atoms = B^T``, ``ct = C^T``."""
    n, k = w.shape
    d = x.shape[1]
    for i in numba.prange(n):  # the rows' errors x_i - sum_j w_ij b_j
        r = x[i].copy()
        for j in range(k):
            if w[i, j] != 0.0:
                for m in range(d):
                    r[m] -= w[i, j] * atoms[j, m]
        total = 0.0
        for m in range(d):
            total += r[m] * r[m]
        half_error[i] = 0.5 * total
    for j in numba.prange(k):  # the atoms' rows of W^T W and W^T X
        a[j] = 0.0
        ct[j] = 0.0
        for i in range(n):
            if w[i, j] != 0.0:
                for m in range(k):
                    a[j, m] += w[i, j] * w[i, m]
                for m in range(d):
                    ct[j, m] += w[i, j] * x[i, m]


def atom_sweeps_torch(basis, a, c, sweeps: int) -> torch.Tensor:
    """The atom sweeps in torch (any device): ``u = b_k + (c_k - B a_k) / A_kk``,
    ``b_k = u / max(1, ||u||)`` for each atom in turn; returns a new basis."""
    basis = basis.clone()
    tiny = torch.finfo(basis.dtype).tiny
    for _ in range(sweeps):
        for k in range(basis.shape[1]):
            if a[k, k] <= tiny:  # an unused atom: the objective does not depend on it
                continue
            u = basis[:, k] + (c[:, k] - basis @ a[:, k]) / a[k, k]
            basis[:, k] = u / u.norm().clamp_min(1.0)
    return basis


#: Atoms a block of :func:`atom_sweeps_blocked` updates one at a time.
SWEEP_BLOCK = 32


def atom_sweeps_blocked(basis, a, c, sweeps: int) -> torch.Tensor:
    """:func:`atom_sweeps_torch` on the CPU, its products blocked; a new basis.

    Atom ``k`` needs ``B a_k`` with the atoms before it already updated.
    The atoms are taken in blocks ``J`` of ``SWEEP_BLOCK``: for a block that
    is ``A_J B^T`` with the atoms before the block updated (one matrix
    product), plus ``sum a_ik (b_i' - b_i)`` over the block's atoms before
    ``k``, which alone run one atom at a time (:func:`_atom_block`). On
    MNIST (K = 256, D = 784, float32) the sweep had been a third of online
    learning's time, one atom at a time on one core; the blocks' products
    run on all of them.
    """
    atoms = basis.T.contiguous()  # (K, D): an atom a row
    a, ct = a.contiguous(), c.T.contiguous()
    k = atoms.shape[0]
    tiny = torch.finfo(atoms.dtype).tiny
    delta = torch.zeros_like(atoms)  # b_k' - b_k within a block
    for _ in range(sweeps):
        for start in range(0, k, SWEEP_BLOCK):
            stop = min(start + SWEEP_BLOCK, k)
            r = a[start:stop] @ atoms  # row k: (B a_k)^T, the atoms before the block updated
            _atom_block(atoms.numpy(), delta.numpy(), a.numpy(), ct.numpy(), r.numpy(), start, stop, tiny)
    return atoms.T.contiguous()


@numba.njit(cache=True, fastmath=True)
def _atom_block(atoms, delta, a, ct, r, start, stop, tiny):
    """Atoms ``start..stop`` in turn, in place: ``b_k <- u / max(1, ||u||)``,
    ``u = b_k + (c_k - B a_k) / A_kk``, ``B a_k`` being ``r_k`` plus the
    block's earlier updates; ``delta_k = b_k' - b_k``."""
    d = atoms.shape[1]
    u = np.empty(d, dtype=atoms.dtype)
    for j in range(start, stop):
        if a[j, j] <= tiny:  # an unused atom: the objective does not depend on it
            delta[j] = 0.0
            continue
        for m in range(d):
            u[m] = ct[j, m] - r[j - start, m]
        for i in range(start, j):
            weight = a[j, i]  # A is symmetric: row j is column j
            if weight != 0.0:
                for m in range(d):
                    u[m] -= weight * delta[i, m]
        inverse = 1.0 / a[j, j]
        norm = 0.0
        for m in range(d):
            u[m] = atoms[j, m] + u[m] * inverse
            norm += u[m] * u[m]
        scale = 1.0 / max(np.sqrt(norm), 1.0)
        for m in range(d):
            new = u[m] * scale
            delta[j, m] = new - atoms[j, m]
            atoms[j, m] = new


#: Examples in a period of the online statistics (at most a pass), which keep
#: the previous period's and the current one's. ``benchmarks/online_memory.py``
#: (MNIST, 60,000 images, K=256, batches of 256): J after two passes 11.093,
#: 11.084, 11.096, 11.123, 11.159 for periods of 20, 39, 80, 118 and 235 (a
#: pass) mini-batches; SPAMS trainDL reached 11.157 in two epochs.
MEMORY = 10_000


def online_window(n: int, batch_size: int) -> int:
    """Mini-batches per period of the online statistics (see ``BasisLearner.online_step``)."""
    return max(1, min(-(-n // batch_size), round(MEMORY / batch_size)))


def learn_basis(
    x,
    n_atoms: int,
    *,
    family="gaussian",
    prior="kl",
    strength=0.1,
    prior_mean=0.01,
    method="batch",
    max_iter: int = 30,
    tol: float = 1e-4,
    batch_size: int = 256,
    init=None,
    seed: int | None = 0,
    code_tol=None,
    solver=None,
    progress: bool = False,
) -> LearningResult:
    r"""Learn a basis whose MAP codes reconstruct ``x`` (SPEC §3).

    Parameters
    ----------
    x : (N, D) tensor or array
        Training examples (counts for softmax). float64 unless a float32
        tensor is given.
    n_atoms : int
        ``K``, the number of atoms.
    family, prior, strength, prior_mean
        As in :func:`diffsc.sparse_code`.
    method : {"batch", "online"}
        ``"batch"``: all examples each iteration, ``J`` never increases.
        ``"online"``: shuffled mini-batches of ``batch_size``; ``max_iter``
        counts passes over the data.
    max_iter : int
        Iterations (batch) or passes (online).
    tol : float
        Stop when ``(J_prev - J) / |J| < tol``.
    init : (D, K) array, optional
        Starting basis (its columns are projected onto the unit ball);
        default: ``K`` random training examples (:func:`initial_basis`).
    seed : int or None
        Seeds the initial atoms and the mini-batch order.
    code_tol : float, optional
        Residual of the inner MAP solves (default 1e-6 in float64).
    progress : bool
        Show a progress bar with the current objective.

    Returns
    -------
    LearningResult

    Examples
    --------
    >>> import torch, diffsc
    >>> x = torch.randn(200, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    >>> result = diffsc.learn_basis(x, 12, prior="kl", strength=0.1, max_iter=5)
    >>> result.basis.shape, bool((result.basis.norm(dim=0) <= 1 + 1e-12).all())
    (torch.Size([8, 12]), True)
    >>> all(b <= a for a, b in zip(result.objective, result.objective[1:]))
    True
    """
    problem = Problem.of(family, prior)
    x = prepare_data(x, None if init is None or not isinstance(init, torch.Tensor) else init.dtype)
    if not isinstance(n_atoms, numbers.Integral) or isinstance(n_atoms, bool) or n_atoms < 1:
        raise ValueError(f"n_atoms: must be a positive integer, got {n_atoms!r}")
    if method not in METHODS:
        raise ValueError(f"method: must be one of {METHODS}, got {method!r}")
    for name, value in (("max_iter", max_iter), ("batch_size", batch_size)):
        if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name}: must be a positive integer, got {value!r}")
    if not (isinstance(tol, numbers.Real) and tol >= 0):
        raise ValueError(f"tol: must be a number >= 0, got {tol!r}")
    if code_tol is not None and not (isinstance(code_tol, numbers.Real) and 0 < code_tol < 1):
        raise ValueError(f"code_tol: must be a number in (0, 1), got {code_tol!r}")
    target = problem.family.prepare(x)
    generator = torch.Generator().manual_seed(seed) if seed is not None else torch.Generator()
    if seed is None:
        generator.seed()
    if init is None:
        basis = initial_basis(target, n_atoms, problem.family, generator)
    else:
        basis = check_basis(as_tensor(init, "init").to(x.dtype))
        if tuple(basis.shape) != (x.shape[1], n_atoms):
            raise ValueError(f"init: expected shape ({x.shape[1]}, {n_atoms}), got {tuple(basis.shape)}")
        basis = _project(basis.to(x.device), problem.family)
    lam = check_parameter(strength, "strength", basis)
    p = check_parameter(prior_mean, "prior_mean", basis)
    learner = BasisLearner(problem, basis, lam, p, code_tol=code_tol, solver=solver)
    if method == "batch":
        return _learn_batch(learner, target, max_iter, tol, progress)
    learner.window = online_window(x.shape[0], batch_size)
    return _learn_online(learner, target, max_iter, tol, batch_size, generator, progress)


def _learn_batch(learner, x, max_iter, tol, progress) -> LearningResult:
    w = learner.codes(x)
    history = [learner.objective(x, w)]
    converged = False
    bar = tqdm(total=max_iter, desc="basis learning", disable=not progress, leave=False)
    for _ in range(max_iter):
        before = learner.basis
        learner.batch_step(x, w)
        if learner.objective(x, w) > history[-1]:  # rounding only: keep the old basis
            learner.basis = before
        w = learner.codes(x, init=w)
        history.append(learner.objective(x, w))
        bar.update()
        bar.set_postfix(objective=f"{history[-1]:.6g}")
        if history[-2] - history[-1] <= tol * abs(history[-1]):
            converged = True
            break
    bar.close()
    _warn_unconverged(learner, x.shape[0])
    return LearningResult(learner.basis, w, history, len(history) - 1, converged)


def _learn_online(learner, x, max_iter, tol, batch_size, generator, progress) -> LearningResult:
    n = x.shape[0]
    history = []
    converged = False
    batches = -(-n // batch_size)
    bar = tqdm(total=max_iter * batches, desc="basis learning (online)", disable=not progress, leave=False)
    for _ in range(max_iter):
        order = torch.randperm(n, generator=generator).to(x.device)
        total, unconverged = 0.0, 0
        for start in range(0, n, batch_size):
            index = order[start : start + batch_size]
            total += learner.online_step(x[index]) * len(index)
            unconverged += learner.unconverged
            bar.update()
        history.append(total / n)
        bar.set_postfix(objective=f"{history[-1]:.6g}")
        if len(history) > 1 and abs(history[-2] - history[-1]) <= tol * abs(history[-1]):
            converged = True
            break
    bar.close()
    learner.unconverged = unconverged  # over the last pass
    _warn_unconverged(learner, n)
    return LearningResult(learner.basis, None, history, len(history), converged)


def _warn_unconverged(learner, n) -> None:
    if learner.unconverged:
        warnings.warn(
            f"{learner.unconverged} of {n} codes did not reach code_tol "
            f"{learner.code_options['tol']:.3g} in the last pass over the data",
            ConvergenceWarning,
            stacklevel=3,
        )
