"""CSD-style training (Somepalli et al. 2024, "Measuring Style Similarity in Diffusion Models", §4).

A style projection on the backbone's pooled features is trained with a multi-label contrastive
loss: two images are positives when they share a label. CSD's labels are artist tags; here they
are the *artist* column of a labels CSV — never the style labels the clusters are scored
against, so that styles must emerge from artist similarity on artists not seen in training.
Alongside it the SSL loss (SimCLR's NT-Xent on a separate projection head, over the same two
views) keeps the backbone's features content-invariant; the total is
``L = L_MCL(style) + ssl_weight · L_SSL``. The style vector is the style projection's normalised
output (CSD's ``last_layer_style``).

Batches draw ``images_per_artist`` paintings of each artist together, so that every image has
positives beyond its own second view.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..features.backbones import StyleProjection
from .global_style import register_recipe
from .loop import grouped_batches
from .simclr import SimCLR


def multilabel_contrastive_loss(embeddings: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al. 2020, eq. 2, L_out) with multi-label positives.

    ``embeddings`` (N, D) are L2-normalised; ``labels`` is (N,) integer classes or an (N, L)
    multi-hot matrix (positives share at least one label). Anchors without a positive are skipped.
    """
    labels = F.one_hot(labels).float() if labels.ndim == 1 else labels.float()
    n = len(embeddings)
    self_mask = torch.eye(n, dtype=torch.bool, device=embeddings.device)
    positives = ((labels @ labels.T) > 0) & ~self_mask
    logits = (embeddings @ embeddings.T / temperature).masked_fill(self_mask, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    count = positives.sum(1)
    has = count > 0
    mean_positive = log_prob.masked_fill(~positives, 0.0).sum(1)[has] / count[has]
    return -mean_positive.mean()


@register_recipe
class CSD(SimCLR):
    name = "csd"
    needs_labels = True

    def heads(self, num_features: int):
        ssl_head, _ = super().heads(num_features)
        generator = torch.Generator().manual_seed(self.config.seed)
        # the scale of CLIP's own projection init (width ** -0.5), which CSD starts from
        weight = torch.randn(num_features, self.config.style_dim, generator=generator) * num_features**-0.5
        return ssl_head, StyleProjection(weight)

    def batches(self, groups: np.ndarray, generator: torch.Generator) -> list[torch.Tensor]:
        return grouped_batches(groups, self.config.images_per_artist, self.config.batch_size, generator)

    def loss(self, net, features, groups):
        style = net.style_head(features.float())
        mcl = multilabel_contrastive_loss(style, torch.cat([groups, groups]), self.config.temperature)
        ssl = self.ssl_loss(net, features)
        return {"loss": mcl + self.config.ssl_weight * ssl, "style": mcl, "ssl": ssl}
