r"""Supervised fine-tuning through the codes (SPEC §3, the paper's "backprop").

A linear head on the standardised codes, ``y_hat = V (w - mu) / sigma + c``:
a maxent (multinomial logistic regression) classifier, or least squares for
regression. Training has two phases:

1. the head alone, on the codes of the fixed basis (a convex problem, solved
   by L-BFGS to optimality);
2. the head **and the basis** (and ``lam``, ``p`` when the coder makes them
   learnable) jointly by Adam on mini-batches, the gradient reaching the
   basis through the implicit derivative of the codes (SPEC §2). Atoms are
   projected back into the unit ball after every step. The epoch with the
   lowest validation loss is kept (early stopping).

The training loss is the mean prediction loss (cross-entropy, or
``1/2 ||y - y_hat||^2`` per example) plus ``l2/2 ||V||^2``.
"""

from __future__ import annotations

import copy
import numbers
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from .module import SparseCodingLayer

TASKS = ("classification", "regression")


class CodePredictor(nn.Module):
    """A :class:`SparseCodingLayer` followed by a linear head on its codes.

    Parameters
    ----------
    coder : SparseCodingLayer
    n_outputs : int
        Classes (classification) or targets (regression).
    task : {"classification", "regression"}

    ``forward(x)`` returns logits ``(N, n_outputs)`` (classification) or
    predictions. The buffers ``code_mean`` and ``code_scale`` standardise the
    codes; :func:`fit_head` sets them from the training codes.
    """

    def __init__(self, coder: SparseCodingLayer, n_outputs: int, task: str = "classification"):
        super().__init__()
        if task not in TASKS:
            raise ValueError(f"task: must be one of {TASKS}, got {task!r}")
        if not isinstance(n_outputs, numbers.Integral) or n_outputs < 1:
            raise ValueError(f"n_outputs: must be a positive integer, got {n_outputs!r}")
        basis = coder.basis
        self.coder = coder
        self.task = task
        self.head = nn.Linear(coder.n_atoms, n_outputs, dtype=basis.dtype, device=basis.device)
        self.register_buffer("code_mean", torch.zeros(coder.n_atoms, dtype=basis.dtype, device=basis.device))
        self.register_buffer("code_scale", torch.ones(coder.n_atoms, dtype=basis.dtype, device=basis.device))

    def config(self) -> dict:
        """Constructor arguments besides the coder (for saving)."""
        return {"n_outputs": self.head.out_features, "task": self.task}

    def predict_codes(self, codes):
        """Head outputs from codes."""
        return self.head((codes - self.code_mean) / self.code_scale)

    def forward(self, x, init=None):
        return self.predict_codes(self.coder(x, init=init))

    def loss(self, outputs, y, l2=0.0):
        """Mean prediction loss plus ``l2/2 ||V||^2``."""
        if self.task == "classification":
            data = nn.functional.cross_entropy(outputs, y)
        else:
            data = 0.5 * (outputs - y.reshape(outputs.shape)).square().sum(-1).mean()
        return data + 0.5 * l2 * self.head.weight.square().sum()


@dataclass
class TrainingResult:
    """What :func:`train_predictor` returns.

    ``history`` has one entry per epoch (epoch 0: the head fitted on the
    fixed basis): ``train_loss`` (mean over the epoch's mini-batches; at
    epoch 0 on all training examples), ``val_loss`` and, for classification,
    ``val_accuracy`` (None without a validation split). ``best_epoch`` is the
    epoch whose parameters the model holds on return.
    """

    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0


@torch.no_grad()
def encode(coder: SparseCodingLayer, x, batch_size=None):
    """Codes of ``x`` without a graph (in chunks of ``batch_size`` if given)."""
    if batch_size is None or x.shape[0] <= batch_size:
        return coder(x)
    return torch.cat([coder(x[i : i + batch_size]) for i in range(0, x.shape[0], batch_size)])


def fit_head(model: CodePredictor, codes, y, l2=1e-4, max_iter=500) -> float:
    """Phase 1: standardise the codes and fit the head by L-BFGS; returns the loss."""
    codes = codes.detach()
    model.code_mean.copy_(codes.mean(0))
    model.code_scale.copy_(codes.std(0).clamp_min(1e-12) if codes.shape[0] > 1 else torch.ones_like(model.code_scale))
    features = (codes - model.code_mean) / model.code_scale
    params = list(model.head.parameters())
    optimiser = torch.optim.LBFGS(
        params, lr=1, max_iter=max_iter, tolerance_grad=1e-10, tolerance_change=1e-14,
        history_size=20, line_search_fn="strong_wolfe",
    )

    def closure():
        optimiser.zero_grad()
        loss = model.loss(model.head(features), y, l2)
        loss.backward()
        return loss

    optimiser.step(closure)
    with torch.no_grad():
        return float(model.loss(model.head(features), y, l2))


def _split(n, fraction, generator):
    order = torch.randperm(n, generator=generator)
    n_val = int(round(fraction * n))
    if n_val < 1 or n_val >= n:
        raise ValueError(f"validation_fraction: {fraction} of {n} examples leaves no validation or training set")
    return order[n_val:], order[:n_val]


def train_predictor(
    model: CodePredictor,
    x,
    y,
    *,
    fine_tune=True,
    x_val=None,
    y_val=None,
    validation_fraction=0.1,
    epochs=20,
    batch_size=128,
    lr=1e-3,
    l2=1e-4,
    patience=5,
    seed=0,
    progress=False,
) -> TrainingResult:
    """Train ``model``'s head, then fine-tune head and basis jointly (module docs).

    Parameters
    ----------
    model : CodePredictor
    x : (N, D) tensor
        Inputs in the coder's dtype and device.
    y : (N,) int64 tensor of class indices, or (N,) / (N, T) float targets
    fine_tune : bool
        Run phase 2; without it only the head is trained.
    x_val, y_val : tensors, optional
        Validation data for early stopping; otherwise ``validation_fraction``
        of ``(x, y)`` is held out (set it to 0 to train on everything and
        keep the last epoch).
    epochs, batch_size, lr, patience
        Phase 2: at most ``epochs`` passes of Adam with step ``lr``; stop
        after ``patience`` epochs without a lower validation loss.
    l2 : float
        Weight of ``l2/2 ||V||^2`` on the head's weights.
    seed : int
        Seeds the validation split and the mini-batch order.
    """
    generator = torch.Generator().manual_seed(seed)
    if x_val is None and fine_tune and validation_fraction > 0:
        train, val = _split(x.shape[0], validation_fraction, generator)
        x, y, x_val, y_val = x[train], y[train], x[val], y[val]
    coder = model.coder
    codes = encode(coder, x)  # warm starts for phase 2
    loss = fit_head(model, codes, y, l2)
    result = TrainingResult()
    result.history.append({"epoch": 0, "train_loss": loss, **_validate(model, x_val, y_val)})
    if not fine_tune:
        return result

    best = (result.history[0]["val_loss"], copy.deepcopy(model.state_dict()))
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    n = x.shape[0]
    bar = tqdm(range(1, epochs + 1), desc="fine-tuning", disable=not progress, leave=False)
    for epoch in bar:
        total = 0.0
        for index in torch.randperm(n, generator=generator).to(x.device).split(batch_size):
            optimiser.zero_grad()
            w = coder(x[index], init=codes[index])
            batch_loss = model.loss(model.predict_codes(w), y[index], l2)
            batch_loss.backward()
            optimiser.step()
            coder.project_()
            codes[index] = w.detach()
            total += batch_loss.item() * len(index)
        entry = {"epoch": epoch, "train_loss": total / n, **_validate(model, x_val, y_val)}
        result.history.append(entry)
        bar.set_postfix(train_loss=f"{entry['train_loss']:.4g}", val_loss=f"{entry['val_loss']:.4g}")
        if x_val is None:  # nothing to stop on: keep the last epoch
            continue
        if entry["val_loss"] < best[0]:
            best = (entry["val_loss"], copy.deepcopy(model.state_dict()))
            result.best_epoch = epoch
        elif epoch - result.best_epoch >= patience:
            break
    if x_val is not None:
        model.load_state_dict(best[1])
    else:
        result.best_epoch = result.history[-1]["epoch"]
    return result


@torch.no_grad()
def _validate(model, x_val, y_val) -> dict:
    if x_val is None:
        return {"val_loss": float("nan"), "val_accuracy": None}
    outputs = model(x_val)
    accuracy = None
    if model.task == "classification":
        accuracy = float((outputs.argmax(-1) == y_val).double().mean())
    return {"val_loss": float(model.loss(outputs, y_val)), "val_accuracy": accuracy}
