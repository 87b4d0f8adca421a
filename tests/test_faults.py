"""The command line under faults (issue 13): files that try to run code, outputs that cannot be
written, degenerate collections, hostile file names. Each case ends in one line or a sensible
result, never a traceback, and nothing a file holds is executed."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import MeanColourBranch, make_image
from stylecluster.cli import main
from stylecluster.config import Config
from stylecluster.data.discovery import discover_images
from stylecluster.features.embedder import embed_images
from stylecluster.store import load_store
from stylecluster.viz.umap_map import UmapParams, _cache_key
from test_persist import pickle_payload

ROOT = Path(__file__).resolve().parents[1]


def mean_colour_store(images: Path, out: Path) -> Path:
    config = Config()
    config.embed.workers = 0
    embed_images(discover_images(images), images, out, config, quiet=True, branches=[MeanColourBranch()])
    return out


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.fixture(scope="module")
def clustered(tmp_path_factory):
    """A 30-image store and its k-means clustering (CSV + model)."""
    tmp = tmp_path_factory.mktemp("faults")
    for i in range(30):
        make_image(tmp / "images" / f"img{i:02d}.png", size=(40, 36), color=(8 * i, 255 - 8 * i, 100 + (i % 3) * 50))
    store = mean_colour_store(tmp / "images", tmp / "s.store")
    assert main(["cluster", str(store), "--method", "kmeans", "--k", "3", "--local-weight", "0", "--out", str(tmp / "c.csv"), "-q"]) == 0
    return tmp, store


# --- 1. nothing runs from a file we read ---------------------------------------------------------


def test_a_pickle_at_every_path_the_tool_reads_runs_nothing(clustered, tmp_path, capsys, caplog):
    tmp, store = clustered
    marker = tmp_path / "code-ran"
    work = tmp_path / "w"
    shutil.copytree(tmp, work, ignore=shutil.ignore_patterns("_viz"))
    store, csv = work / "s.store", work / "c.csv"

    # the model beside CLUSTERS.csv, as assign's argument and as plot/report/similar find it
    pickle_payload(work / "c.model.npz", marker)
    for argv in (["assign", str(work / "c.model.npz"), str(store), "--out", str(tmp_path / "a.csv")],
                 ["assign", str(csv), str(store), "--out", str(tmp_path / "a.csv")],
                 ["plot", str(store), "--clusters", str(csv), "--out", str(tmp_path / "m.html"), "--workers", "1"],
                 ["report", str(store), "--clusters", str(csv), "--out", str(tmp_path / "r"), "--workers", "1"],
                 ["similar", str(store), "img00.png", "--clusters", str(csv)]):
        assert main(argv) == 2, argv
        assert "re-run `stylecluster cluster`" in one_line_error(capsys)

    # an old pickled model: refused by assign; plot and report warn and use a fresh fusion
    (work / "c.model.npz").unlink()
    pickle_payload(work / "c.model.joblib", marker)
    assert main(["assign", str(work / "c.model.joblib"), str(store), "--out", str(tmp_path / "a.csv")]) == 2
    assert "never loaded" in one_line_error(capsys)

    # the map-layout cache, under the old and the new name the tool computes for this map
    from stylecluster.store import load_store
    from stylecluster.viz import load_explorer

    explorer = load_explorer(load_store(store), csv)
    key = _cache_key(explorer.fused, UmapParams(seed=0))
    pickle_payload(store / "_viz" / f"umap-{key}.joblib", marker)
    pickle_payload(store / "_viz" / f"umap-{key}.npy", marker)
    caplog.clear()
    assert main(["plot", str(store), "--clusters", str(csv), "--out", str(tmp_path / "m.html"), "--workers", "1", "-q"]) == 0
    err = caplog.text
    assert "c.model.joblib: a model pickled by an earlier stylecluster is never loaded" in err
    assert "ignoring unreadable UMAP cache" in err
    assert (tmp_path / "m.html").stat().st_size > 1_000_000

    # checkpoints given to embed
    payload = pickle_payload(tmp_path / "payload.pt", marker)
    for flag in ("--local-model", "--weights"):
        assert main(["embed", str(work / "images"), "--out", str(tmp_path / f"e{flag}.store"), flag, str(payload), "-q"]) == 2
        assert "payload.pt" in one_line_error(capsys)
    assert not marker.exists()
