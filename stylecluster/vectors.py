"""Small shared pieces for vector search: unit rows, and faiss imported quietly."""
from __future__ import annotations

import logging

import numpy as np


def unit_rows(X: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, float32 C-contiguous (zero rows stay zero)."""
    X = np.asarray(X, dtype=np.float32)
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return np.ascontiguousarray(X / np.maximum(norms, 1e-12), dtype=np.float32)


def import_faiss():
    """faiss, imported quietly (its loader logs which CPU build it picked at INFO level)."""
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    import faiss

    return faiss
