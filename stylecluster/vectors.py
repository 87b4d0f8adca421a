"""Small shared pieces for vector search: unit rows (whole or in batches), and faiss imported quietly."""
from __future__ import annotations

import logging

import numpy as np


def unit_rows(X: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, float32 C-contiguous (zero rows stay zero)."""
    X = np.asarray(X, dtype=np.float32)
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return np.ascontiguousarray(X / np.maximum(norms, 1e-12), dtype=np.float32)


def unit_batches(X: np.ndarray, batch_rows: int):
    """``(start, unit_rows(X[start:start + batch_rows]))`` over ``X`` in order: one batch in memory
    at a time, whether ``X`` is an array or a memory map. Each row is scaled on its own, so the
    batches, concatenated, are :func:`unit_rows` of ``X`` bit for bit."""
    step = max(1, int(batch_rows))
    for start in range(0, len(X), step):
        yield start, unit_rows(X[start : start + step])


def import_faiss():
    """faiss, imported quietly (its loader logs which CPU build it picked at INFO level)."""
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    import faiss

    return faiss
