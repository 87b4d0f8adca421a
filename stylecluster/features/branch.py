"""The interface every embedding branch implements, so the embedder never branches on a kind.

A branch is split in two halves because they run in different processes:

* ``preprocess`` runs inside DataLoader workers on one decoded RGB image and returns something
  ``torch.utils.data.default_collate`` can batch (a tensor or an ndarray of fixed shape);
* ``encode`` runs in the main process on a collated batch, under ``torch.inference_mode()``,
  and returns a float32 array of shape (batch, dim).

The vector a branch writes may be made of named *parts* (e.g. a pooled vector and Gram
statistics); ``parts`` gives their column slices so that fusion can balance them.

Parts named in ``METRIC_PARTS`` come out of a head trained so that their distances mean style
similarity (a CSD style projection, the artist-discriminant head). Fusion keeps their geometry:
whitening would give every direction equal variance and so erase what the head learned (on
held-out wikiart-styles artists: k-means NMI 0.57 unwhitened, 0.49 whitened).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..store import METRIC_PARTS  # noqa: F401  (defined beside the stored vectors, which clustering reads without torch)


class Branch(ABC):
    #: store column that receives this branch's vectors
    name: str

    @property
    @abstractmethod
    def dim(self) -> int:
        """Length of the vector :meth:`encode` returns per image."""

    @property
    def parts(self) -> dict[str, tuple[int, int]]:
        """Named column ranges ``[start, stop)`` of the vector; one part by default."""
        return {self.name: (0, self.dim)}

    @abstractmethod
    def preprocess(self, image: Image.Image, seed: int) -> Any:
        """Turn one RGB image into model input (runs in a DataLoader worker)."""

    @abstractmethod
    def encode(self, batch: Any) -> np.ndarray:
        """Encode a collated batch into float32 vectors of shape (batch, dim)."""

    @abstractmethod
    def provenance(self) -> dict[str, Any]:
        """What determines the vectors (model name, weights hash, parameters).

        Two stores are compatible exactly when their branches' provenance is equal.
        """

    def to(self, device: torch.device) -> "Branch":
        """Move any model to ``device``; returns self."""
        return self

    #: Shorter side, in pixels, that :meth:`preprocess` needs at least; None: full resolution.
    #: Decoding stops at the smallest size every branch of a run can use; a JPEG decoded smaller
    #: than full resolution carries ``image.info["native"]`` (data/decode.py: NativeJpeg), from
    #: which the brush-stroke branch reads its patches' native pixels.
    decode_side: int | None = None

    #: A compiled form of :meth:`network` that :meth:`encode` runs instead of torch
    #: (:func:`stylecluster.features.runtime.use_runtime`), or None.
    runtime: Any = None

    def network(self) -> tuple[torch.nn.Module, torch.Tensor] | None:
        """(the module a runtime may compile, an example input), or None when the branch has no
        network to compile."""
        return None


class HeadedBranch(Branch):
    """A branch whose raw vector may be projected by a style head (``style_head``, or None): its
    provenance is the raw vector's plus the head file's identity."""

    style_head: Any = None

    @abstractmethod
    def _raw_provenance(self) -> dict[str, Any]:
        """What determines the vector before the head (a head must have been fitted on it)."""

    def provenance(self) -> dict[str, Any]:
        provenance = self._raw_provenance()
        if self.style_head is not None:
            provenance["style_head"] = self.style_head.file_id
        return provenance
