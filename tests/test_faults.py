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


# --- 5. outputs: unwritable, a file in the way, a full disk ----------------------------------------


def can_mount() -> bool:
    if shutil.which("unshare") is None or os.geteuid() != 0:
        return False
    return subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode == 0


needs_mounts = pytest.mark.skipif(not can_mount(), reason="needs root and unshare -m for a private read-only or full filesystem")


def in_namespace(tmp_path: Path, *steps: str | list[str]) -> list[subprocess.CompletedProcess]:
    """Run ``steps`` in a private mount namespace: shell commands (e.g. mounting a 1 MB tmpfs, which
    must succeed) and stylecluster commands (argv lists, whose exit status and stderr are
    returned). A real read-only folder or full disk, invisible to everything else."""
    import shlex

    script, results = ["set -e"], []
    for i, step in enumerate(steps):
        if isinstance(step, str):
            script.append(step)
            continue
        err = tmp_path / f"step{i}.err"
        command = " ".join(shlex.quote(str(a)) for a in [sys.executable, "-m", "stylecluster", *step])
        script.append(f"{command} 2> {shlex.quote(str(err))} && echo 0 > {err}.rc || echo $? > {err}.rc")
        results.append((step, err))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(["unshare", "-m", "sh", "-c", "\n".join(script)], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    return [subprocess.CompletedProcess(argv, int(Path(f"{err}.rc").read_text()), "", err.read_text()) for argv, err in results]


def test_a_file_where_a_folder_should_be_is_one_line_before_any_work(clustered, tmp_path, capsys, monkeypatch):
    tmp, store = clustered
    (tmp_path / "file").write_text("in the way")
    from stylecluster.cluster import StyleClustering

    monkeypatch.setattr(StyleClustering, "fit", lambda *a: pytest.fail("clustered before checking the output"))
    assert main(["cluster", str(store), "--out", str(tmp_path / "file" / "c.csv")]) == 2
    assert one_line_error(capsys) == f"stylecluster: error: cannot write {tmp_path}/file/c.csv: {tmp_path}/file is a file, not a folder"
    for argv in (["plot", str(store), "--clusters", str(tmp / "c.csv"), "--out", str(tmp_path / "file" / "m.html")],
                 ["report", str(store), "--clusters", str(tmp / "c.csv"), "--out", str(tmp_path / "file" / "r")],
                 ["evaluate", str(tmp / "c.csv"), "--labels", str(tmp / "c.csv"), "--label-column", "cluster", "--json", str(tmp_path / "file" / "e.json")],
                 ["embed", str(tmp / "images"), "--out", str(tmp_path / "file" / "s.store")]):
        assert main(argv) == 2, argv
        assert "file" in one_line_error(capsys)


@needs_mounts
def test_a_read_only_folder_is_one_line_before_any_work(clustered, tmp_path):
    tmp, store = clustered
    ro = tmp_path / "ro"
    ro.mkdir()
    results = in_namespace(tmp_path, f"mount --bind {ro} {ro} && mount -o remount,bind,ro {ro}",
                           ["cluster", str(store), "--out", str(ro / "c.csv")],
                           ["report", str(store), "--clusters", str(tmp / "c.csv"), "--out", str(ro / "r")],
                           ["embed", str(tmp / "images"), "--out", str(ro / "s.store"), "--no-local"])
    for result, name in zip(results, ("c.csv", "r", "s.store")):
        assert result.returncode == 2 and result.stderr.strip().splitlines() == [
            f"stylecluster: error: cannot write {ro / name}: Read-only file system"], result.stderr


@needs_mounts
def test_a_full_disk_leaves_no_partial_output_and_the_rerun_works(clustered, tmp_path):
    # issue 13.5: a truncated 2.3 MB map.html was left on a full disk and refused the rerun
    tmp, store = clustered
    disk = tmp_path / "disk"
    disk.mkdir()
    plot = ["plot", str(store), "--clusters", str(tmp / "c.csv"), "--out", str(disk / "map.html"), "--workers", "1", "-q"]
    report = ["report", str(store), "--clusters", str(tmp / "c.csv"), "--out", str(disk / "report"), "--workers", "1", "-q"]
    left = tmp_path / "left.txt"
    results = in_namespace(tmp_path, f"mount -t tmpfs -o size=1m tmpfs {disk}", plot, report,
                           f"ls -A {disk} > {left}", f"mount -o remount,size=64m {disk}", plot, report)
    for result, name in zip(results[:2], ("map.html", "report")):
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip().splitlines() == [f"stylecluster: error: cannot write {disk / name}: no space left on the device"]
    assert left.read_text() == ""  # no partial file, no temporary one
    # the same commands, once there is room, need no --overwrite
    assert [r.returncode for r in results[2:]] == [0, 0], [r.stderr for r in results[2:]]
