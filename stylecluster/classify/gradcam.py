"""Grad-CAM (Selvaraju et al. 2017, "Grad-CAM: Visual Explanations from Deep Networks via
Gradient-based Localization"): which regions of the CNN's last feature map drove a class score.

For the score y^c (the logit of class c, before the softmax) and feature maps A^k of size Z = h·w:

    α_k^c = (1/Z) Σ_ij ∂y^c / ∂A^k_ij                 (eq. 1: global-average-pooled gradients)
    L^c   = ReLU(Σ_k α_k^c A^k)                        (eq. 2)

L^c is upsampled to the input size and scaled to [0, 1]. In the fusion model y^c depends on the
map through the transformer tokens and the pooled CNN features alike; the gradient sees both.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .models import StyleClassifier
from ..errors import InputError


@dataclass
class CamResult:
    cam: np.ndarray  # (H, W) float in [0, 1], at the input's size
    target: int  # the explained class
    probabilities: np.ndarray  # (num_classes,)


def grad_cam(model: StyleClassifier, x: torch.Tensor, target: int | None = None) -> CamResult:
    """Grad-CAM of one image ``x`` (1, 3, H, W) in [0, 1] for class ``target`` (default: the
    predicted class)."""
    if not model.has_feature_map:
        raise InputError(f"Grad-CAM needs a CNN feature map; the {model.kind} model has none (use a cnn or fusion model)")
    captured = {}

    def keep_map(module, inputs, output):
        # a fresh leaf, so the map gets a gradient even when the CNN is frozen
        captured["map"] = output.detach().requires_grad_(True)
        return captured["map"]

    model.eval()
    handle = model.cnn.register_forward_hook(keep_map)
    try:
        with torch.enable_grad():
            logits = model(x)
            target = int(logits.argmax(1)) if target is None else int(target)
            logits[0, target].backward()
    finally:
        handle.remove()
    feature_map, gradient = captured["map"].detach(), captured["map"].grad
    alpha = gradient.mean(dim=(2, 3), keepdim=True)  # eq. 1
    cam = F.relu((alpha * feature_map).sum(dim=1, keepdim=True))  # eq. 2
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    peak = float(cam.max())
    cam = cam / peak if peak > 0 else cam
    probabilities = torch.softmax(logits.detach().float(), dim=1)[0].numpy()
    return CamResult(cam.numpy(), target, probabilities)


def heat_colours(values: np.ndarray) -> np.ndarray:
    """[0, 1] → RGB uint8 on a blue–cyan–yellow–red scale (the "jet" colour map)."""
    t = np.clip(values, 0.0, 1.0)[..., None]
    rgb = np.clip(1.5 - np.abs(4.0 * t - np.array([3.0, 2.0, 1.0])), 0.0, 1.0)
    return (rgb * 255).astype(np.uint8)


def overlay(image: Image.Image, cam: np.ndarray, alpha: float = 0.45) -> Image.Image:
    """The heat map of ``cam`` blended over ``image`` (resized to the image)."""
    heat = Image.fromarray(heat_colours(cam)).resize(image.size, Image.BILINEAR)
    return Image.blend(image.convert("RGB"), heat, alpha)
