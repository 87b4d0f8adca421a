"""Fusion: blocks of very different width end with the variance their weights say."""
from __future__ import annotations

import numpy as np
import pytest

from stylecluster.cluster.fuse import Block, Fuser, blocks_for_store


def _two_blocks(n: int = 1000, seed: int = 0) -> np.ndarray:
    """A 1000-dim block with large raw values beside a 10-dim block with small ones."""
    rng = np.random.default_rng(seed)
    wide = rng.normal(size=(n, 1000)) * 50.0 + rng.normal(size=(1, 1000))
    narrow = rng.normal(size=(n, 10)) * 0.01 + 0.02
    return np.hstack([wide, narrow]).astype(np.float32)


def _block_variances(fuser: Fuser, Z: np.ndarray) -> list[float]:
    edges = np.cumsum([0, *(pca.n_components_ for pca in fuser.pcas_)])
    return [float(Z[:, a:b].var(axis=0).sum()) for a, b in zip(edges[:-1], edges[1:])]


@pytest.mark.parametrize("whiten", [True, False])
def test_equal_weights_give_equal_total_variance(whiten):
    X = _two_blocks()
    fuser = Fuser([Block("global", "wide", 0, 1000, 1.0), Block("global", "narrow", 1000, 1010, 1.0)], pca_components=64, whiten=whiten)
    Z = fuser.fit_transform(X)
    assert Z.shape == (1000, 64 + 10) and fuser.n_features_out_ == 74
    wide, narrow = _block_variances(fuser, Z)
    assert wide == pytest.approx(1.0, rel=1e-3)
    assert narrow == pytest.approx(1.0, rel=1e-3)


@pytest.mark.parametrize("weights", [(2.0, 1.0), (0.5, 1.5)])
def test_variance_scales_as_weight_squared(weights):
    X = _two_blocks(seed=1)
    fuser = Fuser([Block("global", "wide", 0, 1000, weights[0]), Block("local", "narrow", 1000, 1010, weights[1])], pca_components=64)
    wide, narrow = _block_variances(fuser, fuser.fit_transform(X))
    assert wide == pytest.approx(weights[0] ** 2, rel=1e-3)
    assert narrow == pytest.approx(weights[1] ** 2, rel=1e-3)
    assert wide / narrow == pytest.approx((weights[0] / weights[1]) ** 2, rel=1e-3)


def test_rows_are_l2_normalised_before_reduction():
    X = _two_blocks(n=200)
    fuser = Fuser([Block("global", "wide", 0, 1000, 1.0), Block("global", "narrow", 1000, 1010, 1.0)]).fit(X)
    scaled = X.copy()
    scaled[:, :1000] *= 7.0  # image-level magnitude of one block: must not matter
    np.testing.assert_allclose(fuser.transform(scaled), fuser.transform(X), atol=1e-5)


class _FakeStore:
    def __init__(self, vectors: dict[str, np.ndarray], parts: dict[str, dict[str, tuple[int, int]]]):
        self._vectors, self._parts = vectors, parts

    def vectors(self, column):
        return self._vectors.get(column)

    def parts(self, column):
        return self._parts.get(column, {})


def test_branch_weight_is_split_over_its_parts():
    rng = np.random.default_rng(2)
    store = _FakeStore(
        {"global": rng.normal(size=(300, 30)).astype(np.float32), "local": rng.normal(size=(300, 8)).astype(np.float32)},
        {"global": {"pooled": (0, 10), "gram1": (10, 20), "gram2": (20, 30)}, "local": {"vae": (0, 8)}},
    )
    X, blocks = blocks_for_store(store, local_weight=2.0, global_weight=1.0)
    assert X.shape == (300, 38)
    assert [(b.column, b.part, b.start, b.stop) for b in blocks] == [
        ("global", "pooled", 0, 10), ("global", "gram1", 10, 20), ("global", "gram2", 20, 30), ("local", "vae", 30, 38)
    ]
    fuser = Fuser(blocks, pca_components=0)
    variances = _block_variances(fuser, fuser.fit_transform(X))
    # the global branch as a whole counts 1² however many parts it has; the local branch 2²
    assert sum(variances[:3]) == pytest.approx(1.0, rel=1e-3)
    assert variances[3] == pytest.approx(4.0, rel=1e-3)


def test_zero_weight_drops_a_branch():
    rng = np.random.default_rng(3)
    store = _FakeStore(
        {"global": rng.normal(size=(50, 6)).astype(np.float32), "local": rng.normal(size=(50, 4)).astype(np.float32)},
        {"global": {"pooled": (0, 6)}, "local": {"vae": (0, 4)}},
    )
    X, blocks = blocks_for_store(store, local_weight=0.0)
    assert X.shape == (50, 6) and [b.column for b in blocks] == ["global"]


def test_a_constant_part_gives_zeros_not_nan():
    rng = np.random.default_rng(0)
    X = np.hstack([rng.normal(size=(60, 5)), np.full((60, 3), 0.5)])
    blocks = [Block("global", "varied", 0, 5, 1.0), Block("global", "flat", 5, 8, 1.0)]
    out = Fuser(blocks, pca_components=4).fit_transform(X)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out[:, -1], 0.0, atol=1e-6)


def test_a_constant_part_weighs_nothing_instead_of_blowing_up_its_noise():
    # issue 13.6: identical images (or a part constant on the collection) were scaled to unit
    # variance: their rounding noise became coordinates of ~1e6
    rng = np.random.default_rng(0)
    X = np.hstack([rng.normal(size=(50, 4)), np.ones((50, 4)) + rng.normal(scale=1e-12, size=(50, 4))])
    fuser = Fuser([Block("global", "varied", 0, 4, 1.0), Block("global", "constant", 4, 8, 1.0)])
    Z = fuser.fit_transform(X)
    assert fuser.scales_[1] == 0.0 and np.abs(Z).max() < 10
    assert np.allclose(Z[:, fuser.pcas_[0].n_components_:], 0.0)
