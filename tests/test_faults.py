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


# --- 6. degenerate collections ------------------------------------------------------------------

DEGENERATE = {
    "one image": np.random.default_rng(0).normal(size=(1, 16)),
    "two images": np.random.default_rng(1).normal(size=(2, 16)),
    "20 identical": np.repeat(np.random.default_rng(2).normal(size=(1, 16)), 20, axis=0),
    "5 images, --k 10": np.random.default_rng(3).normal(size=(5, 16)),
}
DEGENERATE_SCRIPT = """
import sys
from stylecluster.cli import main
for argv in {argvs!r}:
    print("=== " + " ".join(argv), file=sys.stderr, flush=True)
    print("rc", main(argv), file=sys.stderr, flush=True)
"""


def synthetic_store(path: Path, X: np.ndarray, tag: str = "synthetic") -> Path:
    from stylecluster.store import StoreWriter

    writer = StoreWriter(path, {"global": {"backbone": tag}}, {"global": X.shape[1]}, {"global": {"pooled": (0, 8), "gram": (8, 16)}})
    for i, row in enumerate(X.astype(np.float32)):
        writer.add(f"img{i:02d}.png", f"sha{i}", 64, 64, {"global": row})
    writer.close()
    return path


def test_degenerate_collections_give_one_line_or_a_sensible_result(tmp_path):
    """Every method on 1, 2, 20 identical and 5 images (--k 10), in one process with its real stderr."""
    argvs, outs = [], {}
    for case, X in DEGENERATE.items():
        store = synthetic_store(tmp_path / f"{case}.store", X)
        for method in ("bgmm", "kmeans", "hdbscan", "agglomerative", "dec"):
            out = tmp_path / f"{case}-{method}.csv"
            argv = ["cluster", str(store), "--method", method, "--out", str(out)]
            argv += ["--k", "10"] if "--k" in case and method != "hdbscan" else []
            argv += ["--param", "pretrain_steps=50", "--param", "max_steps=50"] if method == "dec" else []
            argvs.append(argv)
            outs[case, method] = out
    script = tmp_path / "run.py"
    script.write_text(DEGENERATE_SCRIPT.format(argvs=argvs))
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=600)
    assert result.returncode == 0, result.stderr
    blocks = result.stderr.split("=== ")[1:]
    printed = dict(zip(outs, blocks))
    stdout = iter(result.stdout.splitlines())
    for (case, method), out in outs.items():
        text = printed[case, method]
        assert "Traceback" not in text and "Warning" not in text and "sklearn" not in text and "numpy" not in text, text
        *messages, status = text.strip().splitlines()[1:]
        if case == "one image":
            assert status == "rc 2" and messages == ["stylecluster: error: clustering needs at least 2 images; the store has 1"]
            continue
        if case == "two images" and method == "hdbscan":
            assert status == "rc 2" and len(messages) == 1 and "min_cluster_size=5" in messages[0]
            continue
        assert status == "rc 0", text
        summary, wrote = next(stdout), next(stdout)
        assert wrote.startswith("wrote") and str(out) in wrote, (case, method, wrote)
        frame = pd.read_csv(out)
        n_clusters = frame.loc[frame["cluster"] >= 0, "cluster"].nunique()
        assert summary.startswith(f"{method}: {n_clusters} cluster"), (case, method, summary)
        if case == "20 identical":
            assert n_clusters == 1 and (frame["probability"] == 1).all()
            assert messages == ["all 20 images have the same vectors (identical images): one cluster"]
        if case == "5 images, --k 10" and method in ("kmeans", "agglomerative", "dec"):
            assert n_clusters == 5 and messages == [f"{method}: the collection has 5 distinct images, so 5 clusters instead of 10"]


def test_assign_refuses_a_store_embedded_with_another_model(clustered, tmp_path, capsys):
    tmp, store = clustered
    other = tmp_path / "other.store"
    config = Config()
    config.embed.workers = 0
    embed_images(discover_images(tmp / "images"), tmp / "images", other, config, quiet=True, branches=[MeanColourBranch(tag="v2")])
    assert main(["assign", str(tmp / "c.model.npz"), str(other), "--out", str(tmp_path / "a.csv")]) == 2
    err = one_line_error(capsys)
    assert "embedded differently" in err and "branches.global.tag: the clustering's store has 'v1', this store has 'v2'" in err
    assert main(["assign", str(tmp / "c.csv"), str(store), "--out", str(tmp_path / "a.csv"), "-q"]) == 0
    assert (pd.read_csv(tmp_path / "a.csv")["cluster"] == pd.read_csv(tmp / "c.csv")["cluster"]).all()


def test_local_model_that_is_not_a_checkpoint_is_one_line(clustered, tmp_path, capsys):
    tmp, _ = clustered
    (tmp_path / "notes.pt").write_text("not a checkpoint")
    assert main(["embed", str(tmp / "images"), "--out", str(tmp_path / "s.store"), "--local-model", str(tmp_path / "notes.pt")]) == 2
    assert one_line_error(capsys).startswith(f"stylecluster: error: {tmp_path}/notes.pt: not a stylecluster InfoVAE checkpoint")


# --- 7. log lines ------------------------------------------------------------------------------


def test_hostile_file_names_stay_on_one_inert_line_beside_the_progress_bar(tmp_path):
    images = tmp_path / "images"
    for i in range(3):
        make_image(images / f"ok{i}.png", size=(64, 64), noise_seed=i)
    hostile = "bad\nname\x1b[2J\r.png"
    (images / hostile).write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 50)
    result = subprocess.run([sys.executable, "-m", "stylecluster", "embed", str(images), "--out", str(tmp_path / "s.store"),
                             "--workers", "0", "--batch-size", "2", "--no-local"],
                            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stderr
    segments = [s for line in result.stderr.split("\n") for s in line.split("\r")]
    skipped = [s for s in segments if "skipped" in s]
    assert skipped == [f"skipped {images}/bad\\nname\\x1b[2J\\r.png: corrupt image: broken data stream when reading image file"] or \
        (len(skipped) == 1 and skipped[0].startswith(f"skipped {images}/bad\\nname\\x1b[2J\\r.png: ")), segments
    assert "skipped: 1 (" in result.stdout
