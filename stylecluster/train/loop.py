"""The one checkpointed training loop: the global recipes, the local InfoVAE and the classifier.

* The checkpoint is rewritten atomically after every epoch (model, optimiser, AMP scaler, loss
  history, metadata and whatever state the trainer's :class:`Hooks` add); running again with
  ``resume`` continues from the last finished epoch.
* Each epoch's batches and random draws come from a generator seeded by (seed, epoch), and the
  learning rate is a function of the step or of the state the checkpoint holds, so an
  interrupted and resumed run trains exactly like an uninterrupted one.
* Mixed precision (fp16 autocast + gradient scaling) on CUDA; full precision elsewhere.

What differs between trainers — learning-rate schedule, validation, early stopping, extra state,
the checkpoint's layout — is a :class:`Hooks` subclass, so none of them copies the loop.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..device import autocast
from ..io import save_atomic
from ..errors import InputError

#: computes the loss terms of one batch (a tensor of row indices) with the epoch's generator
LossFn = Callable[[torch.Tensor, torch.Generator], dict[str, torch.Tensor]]
#: the batches (row-index tensors) of one epoch, drawn with the epoch's generator
BatchFn = Callable[[torch.Generator], list[torch.Tensor]]


@dataclass
class Schedule:
    epochs: int = 10
    lr: float = 5e-4
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    seed: int = 0


def grouped_batches(groups, per_group: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """An epoch's batches with the members of a group drawn together: each group's rows, shuffled,
    cut into runs of ``per_group``; the runs shuffled and packed into batches of ``batch_size``
    (the ragged last one dropped). Every row is used once per epoch and most rows have positives
    of their own group in the batch, as a supervised contrastive loss needs (Khosla et al. 2020)."""
    labels = np.asarray(groups).tolist()  # a tensor read element by element costs ~1 µs each (66k patches: 0.08 s)
    order = torch.randperm(len(labels), generator=generator).tolist()
    by_group: dict[int, list[int]] = {}
    for i in order:
        by_group.setdefault(int(labels[i]), []).append(i)
    runs = [members[j : j + per_group] for members in by_group.values() for j in range(0, len(members), per_group)]
    flat = [i for r in torch.randperm(len(runs), generator=generator).tolist() for i in runs[r]]
    size = min(batch_size, len(flat))
    return [torch.tensor(flat[i : i + size]) for i in range(0, len(flat) - size + 1, size)]


def learning_rate(step: int, steps_per_epoch: int, schedule: Schedule) -> float:
    """Linear warm-up, then cosine decay to zero over the remaining steps."""
    total = max(1, schedule.epochs * steps_per_epoch)
    warmup = schedule.warmup_epochs * steps_per_epoch
    if step < warmup:
        return schedule.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1.0, total - warmup)
    return schedule.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def make_optimizer(module: nn.Module, schedule: Schedule) -> torch.optim.Optimizer:
    params = [p for p in module.parameters() if p.requires_grad]
    # no weight decay on biases, norms, tokens and position embeddings (1-D or token tensors)
    decay = [p for p in params if p.ndim >= 2 and p.shape[0] != 1]
    rest = [p for p in params if not (p.ndim >= 2 and p.shape[0] != 1)]
    return torch.optim.AdamW([{"params": decay}, {"params": rest, "weight_decay": 0.0}], lr=schedule.lr, weight_decay=schedule.weight_decay)


def train_step(
    module: nn.Module, loss_fn: LossFn, index: torch.Tensor, generator: torch.Generator,
    optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, device: torch.device,
) -> dict[str, float]:
    """One optimisation step on one batch; returns the loss terms."""
    with autocast(device):
        terms = loss_fn(index, generator)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(terms["loss"]).backward()
    scaler.step(optimizer)
    scaler.update()
    return {k: float(v.detach()) for k, v in terms.items()}


class Hooks:
    """A trainer's additions to :func:`fit`; every default does nothing."""

    def learning_rate(self, step: int, steps_per_epoch: int) -> float | None:
        """The learning rate of global ``step``; None leaves the optimiser's (a scheduler's) own."""
        return None

    def start_epoch(self, epoch: int, generator: torch.Generator) -> None:
        """Called before the epoch's batches are drawn (e.g. to seed dropout or noise generators)."""

    def end_epoch(self, epoch: int) -> dict[str, float]:
        """Called after the epoch's steps (validation, scheduler, early stopping); returns extra
        fields of the epoch's history record."""
        return {}

    def stop(self) -> bool:
        """True ends training before the next epoch (early stopping)."""
        return False

    def state_dict(self) -> dict[str, Any]:
        """Extra entries of the checkpoint."""
        return {}

    def load_state_dict(self, checkpoint: dict[str, Any]) -> None:
        """Restores the extra state from a checkpoint being resumed."""

    def write(self, path: Path, checkpoint: dict[str, Any]) -> None:
        """Writes a checkpoint atomically (another layout: override together with :meth:`read`)."""
        save_atomic(path, lambda tmp: torch.save(checkpoint, tmp))

    def read(self, path: Path, device: torch.device) -> dict[str, Any]:
        """Reads a checkpoint back in the layout :func:`fit` writes."""
        return torch.load(path, map_location=device, weights_only=True)


class WarmupCosine(Hooks):
    """The :func:`learning_rate` of a :class:`Schedule` at every step."""

    def __init__(self, schedule: Schedule):
        self.schedule = schedule

    def learning_rate(self, step: int, steps_per_epoch: int) -> float:
        return learning_rate(step, steps_per_epoch, self.schedule)


def fit(
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: LossFn,
    batches: BatchFn,
    epochs: int,
    seed: int,
    out: str | Path,
    device: torch.device,
    hooks: Hooks | None = None,
    resume: bool = True,
    progress: bool = True,
    metadata: dict[str, Any] | None = None,
) -> list[dict[str, float]]:
    """Train ``module`` (already on ``device``; ``optimizer`` over its parameters) up to epoch
    ``epochs``, continuing a checkpoint at ``out``.

    ``metadata`` is stored with every checkpoint; its ``data`` and ``config`` entries must match
    a checkpoint's to resume it (ValueError otherwise). Returns the per-epoch history.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    hooks = hooks or Hooks()
    metadata = dict(metadata or {})
    scaler = torch.amp.GradScaler(device.type, enabled=device.type == "cuda")
    history: list[dict[str, float]] = []
    start = 0
    if resume and out.is_file():
        previous = hooks.read(out, device)
        for key in ("data", "config"):
            if previous.get("metadata", {}).get(key) != metadata.get(key):
                raise InputError(f"{out}: checkpoint was trained with other {key}; use another --out or --no-resume")
        module.load_state_dict(previous["model"])
        optimizer.load_state_dict(previous["optimizer"])
        if previous.get("scaler") is not None:  # absent from InfoVAE checkpoints of before mixed precision
            scaler.load_state_dict(previous["scaler"])
        hooks.load_state_dict(previous)
        history, start = list(previous["history"]), int(previous["epoch"])
    for epoch in range(start, epochs):
        if hooks.stop():
            break
        generator = epoch_generator(seed, epoch)
        hooks.start_epoch(epoch, generator)
        epoch_batches = batches(generator)
        module.train()
        sums: dict[str, float] = {}
        started = time.perf_counter()
        bar = tqdm(epoch_batches, desc=f"epoch {epoch + 1}/{epochs}", unit="batch", disable=not progress)
        for i, index in enumerate(bar):
            lr = hooks.learning_rate(epoch * len(epoch_batches) + i, len(epoch_batches))
            if lr is not None:
                for group in optimizer.param_groups:
                    group["lr"] = lr
            terms = train_step(module, loss_fn, index, generator, optimizer, scaler, device)
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v
            bar.set_postfix({k: f"{v / (i + 1):.4g}" for k, v in sums.items()})
        bar.close()
        n = max(1, len(epoch_batches))
        record = {"epoch": epoch + 1, **{k: v / n for k, v in sums.items()}, **hooks.end_epoch(epoch)}
        history.append({**record, "seconds": time.perf_counter() - started})
        checkpoint = {"model": module.state_dict(), "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                      "epoch": epoch + 1, "history": history, "metadata": metadata, **hooks.state_dict()}
        hooks.write(out, checkpoint)
    return history
