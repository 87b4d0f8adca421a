"""Training a style classifier: weighted cross-entropy, Adam with L2 on the FC layer only,
ReduceLROnPlateau and early stopping on the validation loss, a checkpoint after every epoch.

Resuming is exact: each epoch's batch order, augmentations, view choices and dropout masks come
from generators seeded by (seed, epoch), and the checkpoint holds the optimiser, scheduler,
early-stopping and best-model state. With ``freeze: backbone`` the frozen parts run once per
cached view (:func:`.data.encode_views`) and only the rest is trained, which is what makes CPU
training affordable.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..data.discovery import relative_name
from ..data.labels import read_labels
from ..data.preload import load_images
from ..device import autocast, resolve_device
from ..io import save_atomic
from ..train.loop import Hooks, fit
from .config import ClassifierConfig, load_classifier_config
from .data import FeatureCache, augmented_view, class_weights, clean_view, encode_views, split_three_ways
from .models import StyleClassifier, create_classifier
from ..errors import InputError, MissingInputError


@dataclass
class LabelledImages:
    """Decoded images (uint8, N × 3 × S × S) with integer targets and their split side."""

    images: torch.Tensor
    targets: torch.Tensor  # (N,) long, indices into classes
    split: np.ndarray  # (N,) "train" / "val" / "test"
    classes: list[str]
    names: list[str] = field(default_factory=list)  # stored paths, for the data fingerprint

    def rows(self, side: str) -> np.ndarray:
        return np.flatnonzero(self.split == side)

    def data_id(self, image_size: int) -> str:
        digest = hashlib.sha256(f"{image_size}\n".encode())
        for name, target, side in zip(self.names, self.targets.tolist(), self.split):
            digest.update(f"{name}\t{self.classes[target]}\t{side}\n".encode())
        return digest.hexdigest()


class Inputs:
    """A batch of rows as the model takes it: cached frozen features, or pixels."""

    def __init__(self, data: LabelledImages, config: ClassifierConfig, device: torch.device, cache: FeatureCache | None):
        self.data, self.config, self.device, self.cache = data, config, device, cache

    def train_batch(self, index: torch.Tensor, generator: torch.Generator):
        if self.cache is not None:
            view = (torch.rand(len(index), generator=generator) * self.cache.views_of(index)).long()
            return self._to_device(self.cache.take(index, view))
        return augmented_view(self.data.images[index].to(self.device), self.config, generator)

    def eval_batch(self, index: torch.Tensor):
        if self.cache is not None:
            return self._to_device(self.cache.take(index, torch.zeros_like(index)))
        return clean_view(self.data.images[index].to(self.device))

    def _to_device(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v.to(self.device, non_blocking=True) for k, v in features.items()}


def logits_of(model: StyleClassifier, inputs) -> torch.Tensor:
    return model.classify(inputs) if isinstance(inputs, dict) else model(inputs)


def make_optimizer(model: StyleClassifier, config: ClassifierConfig) -> torch.optim.Adam:
    """Adam; L2 (Adam's coupled weight decay) on the FC layer(s) only."""
    fc = {id(p) for layer in model.fc_layers() for p in layer.parameters()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in trainable if id(p) in fc], "weight_decay": config.fc_weight_decay},
        {"params": [p for p in trainable if id(p) not in fc], "weight_decay": 0.0},
    ]
    return torch.optim.Adam([g for g in groups if g["params"]], lr=config.lr)


@torch.no_grad()
def predict_rows(model: StyleClassifier, inputs: Inputs, rows: np.ndarray, batch_size: int) -> torch.Tensor:
    """Logits (float32, on the CPU) of ``rows``, model in eval mode."""
    model.eval()
    out = []
    for start in range(0, len(rows), batch_size):
        index = torch.as_tensor(rows[start : start + batch_size])
        with autocast(inputs.device):
            out.append(logits_of(model, inputs.eval_batch(index)).float().cpu())
    return torch.cat(out) if out else torch.empty(0, len(inputs.data.classes))


def _resume_key(config: ClassifierConfig) -> dict[str, Any]:
    return {k: v for k, v in config.to_dict().items() if k not in ("epochs", "early_stopping")}


class Validation(Hooks):
    """The classifier's part of the loop: dropout masks seeded per epoch; after each epoch the
    validation loss, which steps ReduceLROnPlateau, keeps the best weights and counts the epochs
    without improvement for early stopping."""

    def __init__(self, model: StyleClassifier, inputs: Inputs, rows: np.ndarray, weight: torch.Tensor,
                 scheduler: torch.optim.lr_scheduler.ReduceLROnPlateau, config: ClassifierConfig):
        self.model, self.inputs, self.rows, self.weight, self.scheduler, self.config = model, inputs, rows, weight, scheduler, config
        self.best_loss, self.best_epoch, self.stale, self.best = float("inf"), 0, 0, model.trained_state_dict()

    def start_epoch(self, epoch: int, generator: torch.Generator) -> None:
        torch.manual_seed(generator.initial_seed())  # dropout masks

    def end_epoch(self, epoch: int) -> dict[str, float]:
        logits = predict_rows(self.model, self.inputs, self.rows, self.config.batch_size)
        targets = self.inputs.data.targets[self.rows]
        loss = float(nn.functional.cross_entropy(logits, targets, weight=self.weight))
        self.scheduler.step(loss)
        if loss < self.best_loss:
            self.best_loss, self.best_epoch, self.stale, self.best = loss, epoch + 1, 0, self.model.trained_state_dict()
        else:
            self.stale += 1
        return {"val_loss": loss, "val_accuracy": float((logits.argmax(1) == targets).float().mean()),
                "lr": self.scheduler.optimizer.param_groups[0]["lr"]}

    def stop(self) -> bool:
        return self.stale >= self.config.early_stopping

    def state_dict(self) -> dict[str, Any]:
        return {"scheduler": self.scheduler.state_dict(), "best_loss": self.best_loss, "best_epoch": self.best_epoch,
                "stale": self.stale, "best": self.best}

    def load_state_dict(self, checkpoint: dict[str, Any]) -> None:
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.best_loss, self.best_epoch, self.stale, self.best = (checkpoint[k] for k in ("best_loss", "best_epoch", "stale", "best"))


@dataclass
class TrainResult:
    history: list[dict[str, float]]
    best_epoch: int
    stopped_early: bool
    model: StyleClassifier  # with the best validation weights


def fit_classifier(
    data: LabelledImages,
    config: ClassifierConfig,
    out: str | Path,
    device: str | torch.device = "auto",
    resume: bool = True,
    progress: bool = True,
    cache: FeatureCache | None = None,
    metadata: dict[str, Any] | None = None,
) -> TrainResult:
    """Train on ``data``'s train rows, select on its val rows; checkpoint to ``out`` every epoch.

    With ``config.freeze == "backbone"`` the frozen features are computed here unless a ``cache``
    (from :func:`.data.encode_views` for the same model settings) is given.
    """
    device = resolve_device(device) if isinstance(device, str) else device
    model = create_classifier(config, len(data.classes)).to(device)
    train_rows, val_rows = data.rows("train"), data.rows("val")
    if len(train_rows) == 0 or len(val_rows) == 0:
        raise InputError(f"need images on both the train and validation side, got {len(train_rows)} and {len(val_rows)}")
    if config.cached and cache is None:
        cache = encode_views(model, data.images, train_rows, config, device, config.batch_size, progress)
    inputs = Inputs(data, config, device, cache if config.cached else None)
    criterion = nn.CrossEntropyLoss(weight=class_weights(data.targets[train_rows], len(data.classes)).to(device))
    optimizer = make_optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=config.plateau_factor, patience=config.plateau_patience)
    metadata = {
        **(metadata or {}), "data": data.data_id(config.image_size), "config": _resume_key(config),
        "settings": config.to_dict(), "classes": list(data.classes),
    }
    hooks = Validation(model, inputs, val_rows, criterion.weight.cpu(), scheduler, config)
    targets = data.targets.to(device)

    def loss_fn(index: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        return {"loss": criterion(logits_of(model, inputs.train_batch(index, generator)), targets[index])}

    def batches(generator: torch.Generator) -> list[torch.Tensor]:
        order = torch.as_tensor(train_rows)[torch.randperm(len(train_rows), generator=generator)]
        return list(order.split(config.batch_size))

    history = fit(model, optimizer, loss_fn, batches, config.epochs, config.seed, out, device, hooks,
                  resume=resume, progress=progress, metadata=metadata)
    model.load_state_dict(hooks.best, strict=False)
    return TrainResult(history, hooks.best_epoch, hooks.stop(), model.eval())


@dataclass
class TrainedClassifier:
    """A classifier read back from a checkpoint, with its best validation weights."""

    model: StyleClassifier
    classes: list[str]
    config: ClassifierConfig
    metadata: dict[str, Any]


def load_classifier(path: str | Path, device: str | torch.device = "cpu") -> TrainedClassifier:
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"{path}: no such classifier checkpoint")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    metadata = checkpoint.get("metadata", {}) if isinstance(checkpoint, dict) else {}
    if "classes" not in metadata or "best" not in checkpoint:
        raise InputError(f"{path}: not a stylecluster classifier checkpoint (from `stylecluster train-classifier`)")
    config = load_classifier_config(**metadata["settings"])
    model = create_classifier(config, len(metadata["classes"]), pretrained=False)
    model.load_state_dict(checkpoint["model"])
    model.load_state_dict(checkpoint["best"], strict=False)
    device = resolve_device(device) if isinstance(device, str) else device
    return TrainedClassifier(model.to(device).eval(), list(metadata["classes"]), config, metadata)


def split_path(out: str | Path) -> Path:
    """Where train-classifier writes the split of its checkpoint ``out``."""
    return Path(out).with_suffix(".split.csv")


def train_classifier(
    images_dir: str | Path,
    labels_csv: str | Path,
    out: str | Path,
    config: ClassifierConfig,
    label_column: str = "style",
    device: str = "auto",
    workers: int = 4,
    resume: bool = True,
    progress: bool = True,
) -> tuple[TrainResult, list[str]]:
    """Decode the labelled images (paths relative to ``images_dir``), split them 7:1:2 by artist,
    train; writes ``out`` and the split beside it. Returns the result and the skipped files' lines."""
    root = Path(images_dir)
    labels = read_labels(labels_csv, label_column, keep=("artist",))  # the split is made by artist
    paths = [root / p for p in labels["path"]]
    if not paths:
        raise InputError(f"{labels_csv}: no labelled rows")
    images, kept, skipped = load_images(paths, config.image_size, workers, progress)
    labels = labels.iloc[kept].reset_index(drop=True)
    split = split_three_ways(labels, config.split, config.seed)
    classes = sorted(labels[label_column].astype(str).unique())
    targets = torch.as_tensor(pd.Categorical(labels[label_column].astype(str), categories=classes).codes.astype(np.int64))
    names = [relative_name(paths[i], root) for i in kept]
    data = LabelledImages(images, targets, split.to_numpy(), classes, names)
    split_table = pd.DataFrame({"path": labels["path"], label_column: labels[label_column], "artist": labels["artist"], "split": split.to_numpy()})
    save_atomic(split_path(out), lambda tmp: split_table.to_csv(tmp, index=False))
    result = fit_classifier(data, config, out, device, resume, progress, metadata={"label_column": label_column})
    return result, skipped
