"""Using a trained classifier: predictions for a folder or a labels table, and Grad-CAM overlays."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from ..data.decode import load_image
from ..data.discovery import relative_name
from ..device import autocast
from ..data.preload import load_images, square_pixels
from .data import clean_view
from .gradcam import CamResult, grad_cam, overlay
from .train import TrainedClassifier
from ..errors import InputError


@torch.no_grad()
def predict_proba(trained: TrainedClassifier, images: torch.Tensor, batch_size: int = 64) -> np.ndarray:
    """Class probabilities (N, K) of decoded uint8 images (N, 3, S, S)."""
    model = trained.model.eval()
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(images), batch_size):
        with autocast(device):
            logits = model(clean_view(images[start : start + batch_size].to(device)))
        out.append(torch.softmax(logits.float(), dim=1).cpu())
    return torch.cat(out).numpy()


@dataclass
class Predictions:
    frame: pd.DataFrame  # path, [label,] predicted, probability, p_<class>...
    skipped: list[str]  # "path: reason" of files that could not be decoded


def predict_files(trained: TrainedClassifier, paths: list[Path], root: Path, batch_size: int = 64, workers: int = 2, progress: bool = True) -> Predictions:
    try:
        images, kept, skipped = load_images(paths, trained.config.image_size, workers, progress)
    except ValueError:
        raise InputError(f"none of the {len(paths)} images could be decoded") from None
    probabilities = predict_proba(trained, images, batch_size)
    classes = np.asarray(trained.classes, dtype=object)
    frame = pd.DataFrame({
        "path": [relative_name(paths[i], root) for i in kept],
        "predicted": classes[probabilities.argmax(1)],
        "probability": probabilities.max(1).round(6),
    })
    for j, name in enumerate(trained.classes):
        frame[f"p_{name}"] = probabilities[:, j].round(6)
    return Predictions(frame, skipped)


def display_square(path: str | Path, size: int) -> Image.Image:
    """The image as the classifier sees it (shorter side resized, centre square), at ``size`` px."""
    return Image.fromarray(square_pixels(load_image(path, min_side=1), size))


def explain_image(trained: TrainedClassifier, path: str | Path, target: str | None = None, display_size: int = 448) -> tuple[Image.Image, CamResult]:
    """Grad-CAM overlay of one image for class ``target`` (default: the predicted class)."""
    if target is not None and target not in trained.classes:
        raise InputError(f"unknown class {target!r} (classes: {', '.join(trained.classes)})")
    image = display_square(path, max(display_size, trained.config.image_size))
    x = clean_view(torch.from_numpy(square_pixels(image, trained.config.image_size)).permute(2, 0, 1)[None])
    x = x.to(next(trained.model.parameters()).device)
    result = grad_cam(trained.model, x, None if target is None else trained.classes.index(target))
    return overlay(image, result.cam), result
