"""Style-preserving views for contrastive training, made for a whole batch at once.

Colour and texture *are* style: two views of a painting must keep its palette and its brush marks,
so the views differ only geometrically — a random resized crop over a moderate scale range, a
horizontal flip and a small rotation. No colour jitter, no grayscale, no blur (the AI-ArtBench
study lost accuracy with ColorJitter). Each view is one affine map, so the
crop, flip and rotation of a whole batch are a single ``affine_grid``/``grid_sample`` call.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class ViewParams:
    size: int = 128  # output side in pixels
    scale: tuple[float, float] = (0.35, 1.0)  # crop area as a fraction of the image (> 1 zooms out)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)  # crop aspect ratio range
    max_rotation: float = 10.0  # degrees, either way
    flip: bool = True


def _uniform(u: torch.Tensor, low: float, high: float) -> torch.Tensor:
    return low + (high - low) * u


def view_affines(n: int, params: ViewParams, generator: torch.Generator) -> torch.Tensor:
    """(n, 2, 3) maps from output to input coordinates (``affine_grid`` convention, [-1, 1])."""
    u = torch.rand(n, 6, generator=generator)
    area = _uniform(u[:, 0], *params.scale)
    ratio = torch.exp(_uniform(u[:, 1], math.log(params.ratio[0]), math.log(params.ratio[1])))
    # An area above 1 zooms out: the view holds the whole image and a reflected margin. Sides
    # are capped at the largest requested scale's side so that aspect jitter alone never does.
    side_cap = max(1.0, math.sqrt(params.scale[1]))
    width = torch.sqrt(area * ratio).clamp(max=side_cap)
    height = torch.sqrt(area / ratio).clamp(max=side_cap)
    centre_x = (1 - width) * _uniform(u[:, 2], -1.0, 1.0)
    centre_y = (1 - height) * _uniform(u[:, 3], -1.0, 1.0)
    angle = torch.deg2rad(_uniform(u[:, 4], -params.max_rotation, params.max_rotation))
    mirror = torch.where((u[:, 5] < 0.5) & params.flip, -1.0, 1.0)
    cos, sin = torch.cos(angle), torch.sin(angle)
    # input = centre + R(angle) · diag(mirror · width, height) · output
    return torch.stack(
        [
            torch.stack([cos * width * mirror, -sin * height, centre_x], dim=1),
            torch.stack([sin * width * mirror, cos * height, centre_y], dim=1),
        ],
        dim=1,
    )


def style_views(
    images: torch.Tensor, params: ViewParams, generator: torch.Generator, mean: tuple[float, ...], std: tuple[float, ...]
) -> torch.Tensor:
    """Random views of uint8 images (B, 3, H, W) → normalised float (B, 3, size, size)."""
    x = images.float().div_(255.0)
    theta = view_affines(len(x), params, generator).to(x.device)
    grid = F.affine_grid(theta, [len(x), 3, params.size, params.size], align_corners=False)
    # reflection keeps rotated corners painted (black corners would be a trivial shared cue)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    mean_t = torch.tensor(mean, device=x.device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=x.device).view(1, 3, 1, 1)
    return (out - mean_t) / std_t
