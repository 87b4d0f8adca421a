"""Training the local branch's InfoVAE on the top-scoring DoG patches of a collection.

Every image contributes all of its candidate patches (the top ``top_fraction`` by gradient score,
never fewer than ``n_patches``; see :mod:`stylecluster.features.patches`), so the encoder sees
the same kind of patch the branch later draws from. Patches are extracted once, in worker
processes, and cached next to the checkpoint (``<out>.patches.npz``, keyed by the image files
and patch parameters) so that a resumed run does not extract them again.

With artist labels (``train-local --labels``) and ``artist_weight`` > 0 the objective gains a
supervised contrastive term over artists on the normalised posterior means (Khosla et al. 2020,
eq. 2; the CSD recipe's loss), and batches draw ``patches_per_artist`` patches of an artist
together: codes of one hand are pulled together, while the reconstruction and MMD prior terms
keep it an InfoVAE. Patches of images without an artist label are then left out.

Training runs in the shared loop (:mod:`.loop`): a checkpoint after every epoch, exact resume
(each epoch's shuffling and sampling noise come from generators seeded by (seed, epoch)), and
mixed precision on CUDA. The checkpoint keeps the InfoVAE layout
(:func:`~stylecluster.features.infovae.save_checkpoint`) that ``embed --local-model`` and
:func:`~stylecluster.features.infovae.export_encoder` read.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ..config import LocalConfig, load_dataclass_yaml
from ..data.decode import BadImage, load_image
from ..data.labels import read_labels
from ..data.splits import artist_key
from ..data.discovery import discover_images
from ..device import resolve_device
from ..io import save_atomic
from ..features.infovae import (
    InfoVAE, InfoVAEArch, InfoVAELossWeights, arch_from_checkpoint, infovae_loss, load_checkpoint, save_checkpoint,
)
from ..features.patches import candidate_patches, patch_params
from ..errors import ConfigError, InputError
from .csd import multilabel_contrastive_loss
from .loop import Hooks, fit, grouped_batches


@dataclass
class InfoVAETrainConfig:
    """One ``train-local`` run (``configs/train_local.yaml``; ``--set key=value`` overrides a field)."""

    epochs: int = 5
    batch_size: int = 128  # patches per step; the ragged last batch is dropped (BatchNorm, MMD)
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0
    workers: int = 2  # processes extracting patches (0 = in this process)
    # patch-scale modes whose candidates form the training set (None: local.patch_scale only);
    # giving both makes one encoder serve both modes
    train_scales: tuple[str, ...] | None = None
    loss: InfoVAELossWeights = InfoVAELossWeights()
    # the artist term (needs labels): weight of the supervised contrastive loss over artists
    # (0 = off: the plain InfoVAE), its temperature, and how many patches of one artist a batch
    # draws together
    artist_weight: float = 0.0
    artist_temperature: float = 0.1
    patches_per_artist: int = 8
    arch: InfoVAEArch = InfoVAEArch()
    local: LocalConfig = field(default_factory=LocalConfig)  # the patches: the embed config's local section

    def patch_configs(self) -> list[LocalConfig]:
        return [replace(self.local, patch_scale=s) for s in (self.train_scales or [self.local.patch_scale])]

    def __post_init__(self) -> None:
        if self.artist_weight < 0:
            raise ConfigError(f"train-local: artist_weight must be 0 or more, got {self.artist_weight!r}")
        if self.artist_temperature <= 0:
            raise ConfigError(f"train-local: artist_temperature must be positive, got {self.artist_temperature!r}")
        if self.patches_per_artist < 2:
            raise ConfigError(f"train-local: patches_per_artist must be at least 2, got {self.patches_per_artist!r}")


def load_infovae_train_config(path: str | Path | None = None, **overrides) -> InfoVAETrainConfig:
    """A YAML file's settings over the defaults, then ``overrides`` (dotted keys; None values ignored)."""
    return load_dataclass_yaml(InfoVAETrainConfig, path, "train-local config", **overrides)


# ----------------------------------------------------------------------------- patches


def _image_candidates(task: tuple[Path, LocalConfig, int]) -> tuple[np.ndarray | None, str | None]:
    path, config, max_pixels = task
    try:
        image = load_image(path, max_pixels=max_pixels, min_side=1)
    except BadImage as exc:
        return None, f"{path}: {exc}"
    return np.round(candidate_patches(image, config).dog).astype(np.uint8), None


def collect_patches(
    paths: Sequence[Path], configs: Sequence[LocalConfig], workers: int = 2, max_pixels: int = 200_000_000, progress: bool = True
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Candidate DoG patches of every image under every config, (N, s, s) uint8; for each patch the
    index in ``paths`` of its image, (N,); and the skipped files."""
    tasks = [(p, c, max_pixels) for c in configs for p in paths]
    chunks, owners, skipped = [], [], []
    pool = multiprocessing.get_context("spawn").Pool(workers) if workers > 0 else None
    try:
        results = pool.imap(_image_candidates, tasks, chunksize=8) if pool else map(_image_candidates, tasks)
        for task, (patches, error) in enumerate(tqdm(results, total=len(tasks), desc="patches", unit="img", disable=not progress)):
            if error:
                skipped.append(error)
            else:
                chunks.append(patches)
                owners.append(np.full(len(patches), task % len(paths), dtype=np.int64))
    finally:
        if pool:
            pool.terminate()
    if not chunks:
        size = configs[0].patch_size
        return np.zeros((0, size, size), np.uint8), np.zeros(0, np.int64), skipped
    return np.concatenate(chunks), np.concatenate(owners), skipped


def data_fingerprint(paths: Iterable[Path], configs: Sequence[LocalConfig]) -> str:
    """Identifies a training set: every file (name, size, mtime) and the patch parameters."""
    digest = hashlib.sha256()
    for p in sorted(Path(p) for p in paths):
        st = p.stat()
        digest.update(f"{p.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    digest.update(json.dumps([patch_params(c) for c in configs], sort_keys=True).encode())
    return digest.hexdigest()


def cached_patches(
    paths: Sequence[Path], configs: Sequence[LocalConfig], cache: Path | None, workers: int = 2, progress: bool = True
) -> tuple[np.ndarray, np.ndarray, str]:
    """:func:`collect_patches` (patches and their images' indices), reusing ``cache`` when it was
    made from the same data."""
    fingerprint = data_fingerprint(paths, configs)
    if cache is not None and cache.is_file():
        with np.load(cache) as stored:
            if str(stored["fingerprint"]) == fingerprint and "owners" in stored:
                return stored["patches"], stored["owners"], fingerprint
    patches, owners, skipped = collect_patches(paths, configs, workers=workers, progress=progress)
    for line in skipped:
        tqdm.write(f"skipped {line}")
    if cache is not None:
        save_atomic(cache, lambda tmp: np.savez(tmp, patches=patches, owners=owners, fingerprint=np.array(fingerprint)))
    return patches, owners, fingerprint


# ----------------------------------------------------------------------------- training


class InfoVAEHooks(Hooks):
    """The InfoVAE's part of the loop: a device generator for the sampling noise of each epoch,
    and the checkpoint in the InfoVAE layout."""

    def __init__(self, model: InfoVAE, config: InfoVAETrainConfig, n_patches: int, device: torch.device):
        self.model, self.config, self.n_patches, self.device = model, config, n_patches, device
        self.noise = torch.Generator(device=device)

    def start_epoch(self, epoch: int, generator: torch.Generator) -> None:
        self.noise = torch.Generator(device=self.device).manual_seed(generator.initial_seed() + 1)

    def write(self, path: Path, checkpoint: dict[str, Any]) -> None:
        settings = {k: getattr(self.config, k) for k in ("epochs", "batch_size", "lr", "weight_decay", "seed")}
        save_checkpoint(
            path, self.model, optimizer=checkpoint["optimizer"], scaler=checkpoint["scaler"], epoch=checkpoint["epoch"],
            history=checkpoint["history"], settings=settings, loss_weights=asdict(self.config.loss),
            n_patches_trained=self.n_patches, **checkpoint["metadata"],
        )

    def read(self, path: Path, device: torch.device) -> dict[str, Any]:
        payload = load_checkpoint(path, map_location=device)
        if payload.get("decoder") is None:
            raise InputError(f"{path}: holds an encoder only (an exported model); cannot resume training from it")
        if arch_from_checkpoint(payload) != self.model.encoder.arch:
            raise InputError(f"{path}: checkpoint has another architecture; use another --out or --no-resume")
        state = {f"{part}.{k}": v for part in ("encoder", "decoder") for k, v in payload[part].items()}
        return {**payload, "model": state, "metadata": {"data": payload.get("data")}}


def fit_infovae(
    patches: np.ndarray,
    out: str | Path,
    config: InfoVAETrainConfig = InfoVAETrainConfig(),
    device: str | torch.device = "auto",
    resume: bool = True,
    progress: bool = True,
    metadata: dict[str, Any] | None = None,
    groups: np.ndarray | None = None,
) -> list[dict[str, float]]:
    """Train (or continue training) an InfoVAE on uint8 patches (N, s, s); returns the loss history.

    ``groups`` (N,) are the patches' artists as integers, needed when ``config.artist_weight`` > 0
    (the artist term, module docstring); negative entries mark patches without an artist, which
    are then left out. ``metadata`` is stored in the checkpoint; its ``data`` entry identifies the
    training set, and a checkpoint made from another training set is not resumed (ValueError).
    """
    device = resolve_device(device) if isinstance(device, str) else device
    if config.artist_weight > 0:
        if groups is None or len(groups) != len(patches):
            raise InputError("the artist term (artist_weight > 0) needs an artist for every patch: give --labels with an artist column")
        labelled = np.asarray(groups) >= 0
        patches, groups = patches[labelled], torch.as_tensor(np.asarray(groups)[labelled])
        if len(torch.unique(groups)) < 2:
            raise InputError(f"the artist term needs patches of at least 2 artists, got {len(torch.unique(groups))}")
    if len(patches) < 2:
        raise InputError(f"need at least 2 training patches, got {len(patches)}")
    torch.manual_seed(config.seed)
    model = InfoVAE(config.arch).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    data = torch.from_numpy(np.ascontiguousarray(patches)).unsqueeze(1)  # uint8 (N, 1, s, s), 4 KB a patch
    n_batches = max(1, len(data) // config.batch_size)  # the ragged last batch is dropped (BN, MMD)
    hooks = InfoVAEHooks(model, config, len(data), device)

    def batches(generator: torch.Generator) -> list[torch.Tensor]:
        if config.artist_weight > 0:
            return grouped_batches(groups, config.patches_per_artist, config.batch_size, generator)
        order = torch.randperm(len(data), generator=generator)
        return [order[i * config.batch_size : (i + 1) * config.batch_size] for i in range(n_batches)]

    def loss_fn(index: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        x = data[index].to(device, non_blocking=True).float().div_(255.0)
        out = model(x, generator=hooks.noise)
        terms = infovae_loss(out, x, config.loss, generator=hooks.noise)
        if config.artist_weight > 0:
            codes = torch.nn.functional.normalize(out["mu"].float(), dim=1)
            terms["artist"] = multilabel_contrastive_loss(codes, groups[index].to(device), config.artist_temperature)
            terms["loss"] = terms["loss"] + config.artist_weight * terms["artist"]
        return terms

    return fit(model, optimizer, loss_fn, batches, config.epochs, config.seed, out, device, hooks,
               resume=resume, progress=progress, metadata=metadata)


def patch_artists(paths: Sequence[Path], folders: Sequence[Path], labels: Sequence[str | Path]) -> np.ndarray:
    """Each image's artist as an integer (-1: no artist), from one labels CSV per folder (its
    ``path`` column relative to that folder); names are matched across folders by
    :func:`~stylecluster.data.splits.artist_key`."""
    if len(labels) != len(folders):
        raise InputError(f"give one labels file per images folder: {len(folders)} folder(s), {len(labels)} labels file(s)")
    names: dict[Path, str] = {}
    for folder, csv in zip(folders, labels):
        table = read_labels(csv, "artist")
        for path, artist in zip(table["path"], table["artist"]):
            key = artist_key(artist)
            if key:
                names[(Path(folder) / path).resolve()] = key
    keys = [names.get(Path(p).resolve(), "") for p in paths]
    codes, _ = pd.factorize(pd.Series([key or None for key in keys], dtype=object))
    return codes.astype(np.int64)


def train_local(
    images_dir: str | Path | Sequence[str | Path],
    out: str | Path,
    config: InfoVAETrainConfig = InfoVAETrainConfig(),
    device: str = "auto",
    resume: bool = True,
    cache: bool = True,
    progress: bool = True,
    labels: Sequence[str | Path] | None = None,
) -> list[dict[str, float]]:
    """Train the local-branch encoder on every image below ``images_dir`` (one folder or several).

    The training set is the candidate patches of every image under each of
    ``config.patch_configs()``. ``labels`` (one CSV with ``path`` and ``artist`` columns per
    folder) give the artist term its artists (``config.artist_weight``). Returns the per-epoch
    loss history; the checkpoint at ``out`` is updated after every epoch.
    """
    folders = [images_dir] if isinstance(images_dir, (str, Path)) else list(images_dir)
    paths = [p for folder in folders for p in discover_images(folder)]
    if not paths:
        raise InputError(f"no images found in {', '.join(map(str, folders))}")
    configs = config.patch_configs()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    patches, owners, fingerprint = cached_patches(
        paths, configs, out.with_name(out.name + ".patches.npz") if cache else None, workers=config.workers, progress=progress
    )
    groups = patch_artists(paths, folders, labels)[owners] if labels else None
    if groups is not None:  # other artists make other training data: such a checkpoint is not resumed
        fingerprint += ":artists-" + hashlib.sha256(groups.tobytes()).hexdigest()[:16]
    metadata = {
        "data": fingerprint,
        "patch": {**patch_params(config.local), "patch_scale": [c.patch_scale for c in configs]},
        "images": {"folders": [str(f) for f in folders], "count": len(paths)},
        "artists": None if groups is None else int(len(np.unique(groups[groups >= 0]))),
    }
    return fit_infovae(patches, out, config, device=device, resume=resume, progress=progress, metadata=metadata, groups=groups)
