"""Training the local branch's InfoVAE on the top-scoring DoG patches of a collection.

Every image contributes all of its candidate patches (the top ``top_fraction`` by gradient score,
never fewer than ``n_patches``; see :mod:`stylecluster.features.patches`), so the encoder sees
the same kind of patch the branch later draws from. Patches are extracted once, in worker
processes, and cached next to the checkpoint (``<out>.patches.npz``, keyed by the image files
and patch parameters) so that a resumed run does not extract them again.

Resuming: the checkpoint is rewritten atomically after every epoch with the optimiser state and
loss history; running the same command again continues from the last finished epoch. Each
epoch's shuffling and sampling noise come from generators seeded by (seed, epoch), so an
interrupted and resumed run trains exactly like an uninterrupted one.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ..config import LocalConfig
from ..data.decode import BadImage, load_image
from ..data.discovery import discover_images
from ..device import resolve_device
from ..io import save_atomic
from ..features.infovae import InfoVAE, InfoVAEArch, InfoVAELossWeights, infovae_loss, load_checkpoint, load_infovae, save_checkpoint
from ..features.patches import candidate_patches, patch_params
from ..errors import InputError


@dataclass
class TrainSettings:
    epochs: int = 5
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0
    loss: InfoVAELossWeights = InfoVAELossWeights()
    arch: InfoVAEArch = InfoVAEArch()


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
) -> tuple[np.ndarray, list[str]]:
    """Candidate DoG patches of every image under every config, (N, s, s) uint8, and skipped files."""
    tasks = [(p, c, max_pixels) for c in configs for p in paths]
    chunks, skipped = [], []
    pool = multiprocessing.get_context("spawn").Pool(workers) if workers > 0 else None
    try:
        results = pool.imap(_image_candidates, tasks, chunksize=8) if pool else map(_image_candidates, tasks)
        for patches, error in tqdm(results, total=len(tasks), desc="patches", unit="img", disable=not progress):
            if error:
                skipped.append(error)
            else:
                chunks.append(patches)
    finally:
        if pool:
            pool.terminate()
    size = configs[0].patch_size
    return (np.concatenate(chunks) if chunks else np.zeros((0, size, size), np.uint8)), skipped


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
) -> tuple[np.ndarray, str]:
    """:func:`collect_patches`, reusing ``cache`` when it was made from the same data."""
    fingerprint = data_fingerprint(paths, configs)
    if cache is not None and cache.is_file():
        with np.load(cache) as stored:
            if str(stored["fingerprint"]) == fingerprint:
                return stored["patches"], fingerprint
    patches, skipped = collect_patches(paths, configs, workers=workers, progress=progress)
    for line in skipped:
        tqdm.write(f"skipped {line}")
    if cache is not None:
        save_atomic(cache, lambda tmp: np.savez(tmp, patches=patches, fingerprint=np.array(fingerprint)))
    return patches, fingerprint


# ----------------------------------------------------------------------------- training


def _epoch_generators(seed: int, epoch: int, device: torch.device) -> tuple[torch.Generator, torch.Generator]:
    key = seed * 1_000_003 + epoch
    return torch.Generator().manual_seed(key), torch.Generator(device=device).manual_seed(key + 1)


def fit_infovae(
    patches: np.ndarray,
    out: str | Path,
    settings: TrainSettings = TrainSettings(),
    device: str | torch.device = "auto",
    resume: bool = True,
    progress: bool = True,
    metadata: dict[str, Any] | None = None,
) -> list[dict[str, float]]:
    """Train (or continue training) an InfoVAE on uint8 patches (N, s, s); returns the loss history.

    ``metadata`` is stored in the checkpoint; its ``data`` entry identifies the training set, and a
    checkpoint made from another training set is not resumed (ValueError).
    """
    out = Path(out)
    device = resolve_device(device) if isinstance(device, str) else device
    metadata = dict(metadata or {})
    if len(patches) < 2:
        raise InputError(f"need at least 2 training patches, got {len(patches)}")
    torch.manual_seed(settings.seed)
    model, history, start = InfoVAE(settings.arch), [], 0
    optimizer_state = None
    if resume and out.is_file():
        previous = load_checkpoint(out)
        if previous.get("data") != metadata.get("data"):
            raise InputError(f"{out}: checkpoint was trained on other data or patch parameters; use another --out or --no-resume")
        model, previous = load_infovae(out)
        optimizer_state, history, start = previous["optimizer"], list(previous["history"]), int(previous["epoch"])
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)

    data = torch.from_numpy(np.ascontiguousarray(patches)).unsqueeze(1)  # uint8 (N, 1, s, s), 4 KB a patch
    n_batches = max(1, len(data) // settings.batch_size)  # the ragged last batch is dropped (BN, MMD)
    for epoch in range(start, settings.epochs):
        shuffle, noise = _epoch_generators(settings.seed, epoch, device)
        order = torch.randperm(len(data), generator=shuffle)
        model.train()
        sums = dict.fromkeys(("loss", "recon", "kl", "mmd"), 0.0)
        started = time.perf_counter()
        bar = tqdm(range(n_batches), desc=f"epoch {epoch + 1}/{settings.epochs}", unit="batch", disable=not progress)
        for step in bar:
            index = order[step * settings.batch_size : (step + 1) * settings.batch_size]
            x = data[index].to(device, non_blocking=True).float().div_(255.0)
            terms = infovae_loss(model(x, generator=noise), x, settings.loss, generator=noise)
            optimizer.zero_grad(set_to_none=True)
            terms["loss"].backward()
            optimizer.step()
            for k in sums:
                sums[k] += float(terms[k].detach())
            bar.set_postfix({k: f"{v / (step + 1):.4g}" for k, v in sums.items()})
        bar.close()
        record = {"epoch": epoch + 1, **{k: v / n_batches for k, v in sums.items()}, "seconds": time.perf_counter() - started}
        history.append(record)
        save_checkpoint(
            out,
            model,
            optimizer=optimizer.state_dict(),
            epoch=epoch + 1,
            history=history,
            settings={k: v for k, v in asdict(settings).items() if k not in ("loss", "arch")},
            loss_weights=asdict(settings.loss),
            n_patches_trained=len(data),
            **metadata,
        )
    return history


def train_local(
    images_dir: str | Path | Sequence[str | Path],
    out: str | Path,
    epochs: int = 5,
    device: str = "auto",
    config: LocalConfig | None = None,
    patch_scales: Sequence[str] | None = None,
    batch_size: int = 128,
    seed: int = 0,
    workers: int = 2,
    resume: bool = True,
    cache: bool = True,
    progress: bool = True,
) -> list[dict[str, float]]:
    """Train the local-branch encoder on every image below ``images_dir`` (one folder or several).

    ``patch_scales`` lists the patch-scale modes whose candidates form the training set (default:
    ``config.patch_scale`` only); giving both makes one encoder serve both modes. Returns the
    per-epoch loss history; the checkpoint at ``out`` is updated after every epoch.
    """
    config = config or LocalConfig()
    folders = [images_dir] if isinstance(images_dir, (str, Path)) else list(images_dir)
    paths = [p for folder in folders for p in discover_images(folder)]
    if not paths:
        raise InputError(f"no images found in {', '.join(map(str, folders))}")
    configs = [replace(config, patch_scale=s) for s in (patch_scales or [config.patch_scale])]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    patches, fingerprint = cached_patches(
        paths, configs, out.with_name(out.name + ".patches.npz") if cache else None, workers=workers, progress=progress
    )
    metadata = {
        "data": fingerprint,
        "patch": {**patch_params(config), "patch_scale": [c.patch_scale for c in configs]},
        "images": {"folders": [str(f) for f in folders], "count": len(paths)},
    }
    settings = TrainSettings(epochs=epochs, batch_size=batch_size, seed=seed)
    return fit_infovae(patches, out, settings, device=device, resume=resume, progress=progress, metadata=metadata)
