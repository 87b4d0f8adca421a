"""SimCLR (Chen et al. 2020) with style-preserving views.

Two geometric views of each painting (see :mod:`.augment`: no colour jitter, no grayscale) are
pulled together and pushed from the batch's other paintings by the NT-Xent loss on a projection
head (lightly's ``SimCLRProjectionHead`` and ``NTXentLoss``). The head is discarded after
training; the global branch uses the backbone's pooled features (SimCLR §4.2: the representation
before the head transfers better).
"""
from __future__ import annotations

import torch
from lightly.loss import NTXentLoss
from lightly.models.modules import SimCLRProjectionHead

from .global_style import Recipe, register_recipe


@register_recipe
class SimCLR(Recipe):
    name = "simclr"

    def heads(self, num_features: int):
        return SimCLRProjectionHead(num_features, self.config.hidden_dim, self.config.projection_dim), None

    def ssl_loss(self, net, features: torch.Tensor) -> torch.Tensor:
        first, second = net.ssl_head(features).float().chunk(2)
        return NTXentLoss(temperature=self.config.temperature)(first, second)

    def loss(self, net, features, groups):
        return {"loss": self.ssl_loss(net, features)}
