"""The README's first command: `stylecluster demo` on the built-in sample, through the real entry point."""
from __future__ import annotations

import json
import shutil
import subprocess

import pandas as pd
import pytest

from stylecluster.demo import sample_dir


def test_sample_ships_with_the_package():
    sample = sample_dir()
    labels = pd.read_csv(sample / "labels.csv")
    assert len(labels) == 267 and labels["period"].nunique() == 8
    assert all((sample / p).is_file() for p in labels["path"])
    assert sum(f.stat().st_size for f in (sample / "images").iterdir()) < 15e6


@pytest.mark.skipif(shutil.which("stylecluster") is None, reason="console script not installed (pip install -e .)")
def test_demo_runs_end_to_end_and_reruns(tmp_path):
    out = tmp_path / "demo"
    first = subprocess.run(["stylecluster", "demo", "--out", str(out), "-q"], capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    assert "embedded now: 267" in first.stdout and "NMI" in first.stdout
    evaluation = json.loads((out / "evaluation.json").read_text())
    assert evaluation["n_images"] == 267
    assert evaluation["n_clusters"] >= 2  # BGMM must infer structure, not collapse to one cluster
    clusters = pd.read_csv(out / "clusters.csv")
    assert len(clusters) == 267 and clusters["probability"].between(0, 1).all()
    assert (out / "clusters.model.npz").is_file()

    again = subprocess.run(["stylecluster", "demo", "--out", str(out), "-q"], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert "embedded now: 0" in again.stdout and "already in the store (resumed): 267" in again.stdout
    assert json.loads((out / "evaluation.json").read_text())["nmi"] == pytest.approx(evaluation["nmi"])


def test_demo_refuses_a_folder_it_did_not_make(tmp_path):
    (tmp_path / "mine.txt").write_text("keep")
    result = subprocess.run(["stylecluster", "demo", "--out", str(tmp_path), "-q"], capture_output=True, text=True)
    assert result.returncode == 2 and "was not made by the demo" in result.stderr
    assert (tmp_path / "mine.txt").read_text() == "keep"
