"""The store and the embed loop: chunked writing, resume after interruption, refusal on mismatch,
duplicates, and bad files reported while the run goes on."""
from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest

from conftest import MeanColourBranch, make_image
from stylecluster.config import Config
from stylecluster.data.discovery import discover_images
from stylecluster.features.embedder import embed_images
from stylecluster.store import META_FILE, StoreError, StoreMismatchError, load_store


def run(root, out, branch=None, chunk_size=4, batch_size=2, overwrite=False):
    config = Config()
    config.embed.chunk_size = chunk_size
    config.embed.batch_size = batch_size
    config.embed.workers = 0
    return embed_images(discover_images(root), root, out, config, overwrite=overwrite, quiet=True, branches=[branch or MeanColourBranch()])


def test_store_rows_and_one_line_read(image_folder, tmp_path):
    out = tmp_path / "s.store"
    report = run(image_folder, out)
    assert report.embedded == 12 and report.stored_total == 12 and not report.skipped
    store = load_store(out)
    assert len(store) == 12
    assert store.paths[0] == "group0/img00.png"  # relative, POSIX
    assert store.global_.shape == (12, 6) and store.global_.dtype == np.float32
    assert store.local is None
    assert store.parts("global") == {"mean": (0, 3), "std": (3, 6)}
    meta = store.metadata
    assert meta["branches"]["global"]["backbone"] == "mean-colour"
    assert meta["stylecluster_version"] and meta["created"]
    # pandas reads the folder in one line; files starting with "_" are ignored
    frame = pd.read_parquet(out)
    assert len(frame) == 12 and set(frame.columns) >= {"path", "sha256", "width", "height", "global"}
    assert np.allclose(np.stack(frame["global"].to_numpy()), store.global_)
    # written in chunks of 4
    assert len(sorted(out.glob("part-*.parquet"))) == 3
    # width/height are the decoded image's
    widths = dict(zip(store.paths, store.to_pandas()["width"]))
    assert widths["group2/img11.png"] == 51


def test_resume_after_interruption_gives_the_same_store(image_folder, tmp_path):
    clean = tmp_path / "clean.store"
    run(image_folder, clean)

    out = tmp_path / "s.store"
    with pytest.raises(KeyboardInterrupt):
        run(image_folder, out, branch=MeanColourBranch(fail_after=3))  # Ctrl-C during the 4th batch
    interrupted = load_store(out)
    assert len(interrupted) == 6  # 3 batches of 2 were kept (flushed on interrupt)

    resumed_branch = MeanColourBranch()
    report = run(image_folder, out, branch=resumed_branch)
    assert report.already_stored == 6 and report.embedded == 6 and report.stored_total == 12
    assert resumed_branch.calls == 3  # only the missing images were encoded
    a, b = load_store(clean), load_store(out)
    order = np.argsort(b.paths)
    assert sorted(a.paths) == sorted(b.paths)
    assert np.allclose(a.global_[np.argsort(a.paths)], b.global_[order])

    # a third run has nothing to do
    again = run(image_folder, out)
    assert again.embedded == 0 and again.already_stored == 12


def test_crash_without_flush_loses_at_most_the_current_chunk(image_folder, tmp_path):
    out = tmp_path / "s.store"
    run(image_folder, out, chunk_size=4)
    # a crash while writing chunk 3 leaves only a temporary file behind
    last = sorted(out.glob("part-*.parquet"))[-1]
    os.replace(last, out / f".{last.name}.tmp")
    assert len(load_store(out)) == 8
    report = run(image_folder, out)
    assert report.embedded == 4 and report.stored_total == 12


def test_changed_file_is_re_embedded_and_supersedes(image_folder, tmp_path):
    out = tmp_path / "s.store"
    run(image_folder, out)
    make_image(image_folder / "group0" / "img00.png", size=(40, 36), color=(0, 0, 0))
    report = run(image_folder, out)
    assert report.embedded == 1
    store = load_store(out)
    assert len(store) == 12
    row = store.paths.index("group0/img00.png")
    assert np.allclose(store.global_[row], 0.0)


def test_mismatched_store_is_refused_unless_overwrite(image_folder, tmp_path):
    out = tmp_path / "s.store"
    run(image_folder, out)
    with pytest.raises(StoreMismatchError, match="tag: store has 'v1', this run uses 'v2'.*--overwrite"):
        run(image_folder, out, branch=MeanColourBranch(tag="v2"))
    assert len(load_store(out)) == 12  # untouched
    report = run(image_folder, out, branch=MeanColourBranch(tag="v2"), overwrite=True)
    assert report.embedded == 12
    assert json.loads((out / META_FILE).read_text())["branches"]["global"]["tag"] == "v2"


def test_another_seed_is_another_store(image_folder, tmp_path):
    out = tmp_path / "s.store"
    run(image_folder, out)
    config = Config()
    config.embed.workers = 0
    config.embed.seed = 7
    with pytest.raises(StoreMismatchError, match="embed.seed: store has 0, this run uses 7"):
        embed_images(discover_images(image_folder), image_folder, out, config, quiet=True, branches=[MeanColourBranch()])
    assert load_store(out).metadata["embed"] == {"seed": 0}


def test_refuses_to_write_into_a_foreign_folder(image_folder, tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.docx").write_text("precious")
    with pytest.raises(StoreError, match="not a stylecluster store"):
        run(image_folder, foreign, overwrite=True)
    assert (foreign / "thesis.docx").read_text() == "precious"


def test_bad_files_are_reported_and_the_run_goes_on(image_folder, tmp_path, caplog):
    (image_folder / "empty.jpg").write_bytes(b"")
    (image_folder / "text.png").write_text("not an image")
    make_image(image_folder / "tiny.png", size=(8, 8))
    good = make_image(tmp_path / "big.jpg", size=(200, 200), noise_seed=5, fmt="JPEG")
    (image_folder / "cut.jpg").write_bytes(good.read_bytes()[:3000])
    out = tmp_path / "s.store"
    with caplog.at_level("WARNING", logger="stylecluster"):
        report = run(image_folder, out)
    assert report.embedded == 12
    kinds = {p: k for p, _, k in report.skipped}
    assert kinds == {"empty.jpg": "empty", "text.png": "not_image", "tiny.png": "too_small", "cut.jpg": "truncated"}
    assert report.skipped_by_kind == {"empty": 1, "not_image": 1, "too_small": 1, "truncated": 1}
    # one line per file, naming it
    lines = [r.getMessage() for r in caplog.records]
    assert sum("empty.jpg" in line for line in lines) == 1
    assert all("\n" not in line for line in lines)
    skipped = pd.read_csv(out / "_skipped.csv")
    assert set(skipped["path"]) == set(kinds)
    assert any("skipped: 4 (empty 1, not_image 1, too_small 1, truncated 1)" == line for line in report.summary_lines())


def test_exact_duplicates_are_embedded_once(image_folder, tmp_path):
    (image_folder / "copy.png").write_bytes((image_folder / "group1" / "img04.png").read_bytes())
    branch = MeanColourBranch()
    out = tmp_path / "s.store"
    report = run(image_folder, out, branch=branch, batch_size=100)
    assert report.embedded == 12 and report.duplicates == 1 and report.stored_total == 13
    store = load_store(out)
    a, b = store.paths.index("copy.png"), store.paths.index("group1/img04.png")
    assert np.array_equal(store.global_[a], store.global_[b])
    # discovery order is sorted, so "copy.png" comes first and the other file is its duplicate
    assert store.to_pandas()["duplicate_of"][b] == "copy.png"
    assert pd.isna(store.to_pandas()["duplicate_of"][a])
    # a duplicate added later is copied from the store, not recomputed
    (image_folder / "copy2.png").write_bytes((image_folder / "group0" / "img00.png").read_bytes())
    branch2 = MeanColourBranch()
    report2 = run(image_folder, out, branch=branch2)
    assert report2.duplicates == 1 and report2.embedded == 0 and branch2.calls == 0


def test_worker_processes_decode(image_folder, tmp_path):
    config = Config()
    config.embed.workers = 2
    config.embed.batch_size = 4
    report = embed_images(discover_images(image_folder), image_folder, tmp_path / "w.store", config, quiet=True, branches=[MeanColourBranch()])
    assert report.embedded == 12
    serial = tmp_path / "serial.store"
    run(image_folder, serial)
    a, b = load_store(tmp_path / "w.store"), load_store(serial)
    assert np.allclose(a.global_[np.argsort(a.paths)], b.global_[np.argsort(b.paths)])


# --- faults: missing and corrupt chunks, concurrent writers, crashes ------------------------------


def many_images(root, n):
    for i in range(n):
        make_image(root / f"img{i:03d}.png", size=(40, 36), noise_seed=1000 + i)
    return root


def test_a_deleted_chunk_is_re_embedded_exactly(tmp_path):
    # issue 13.3: with chunks numbered from their count, the rerun overwrote the last chunk and
    # the store alternated between two sizes without ever being complete again
    root = many_images(tmp_path / "images", 40)
    out = tmp_path / "s.store"
    run(root, out, chunk_size=8, batch_size=8)
    chunks = sorted(out.glob("part-*.parquet"))
    assert len(chunks) == 5
    chunks[2].unlink()
    assert len(load_store(out)) == 32
    branch = MeanColourBranch()
    report = run(root, out, branch=branch, chunk_size=8, batch_size=8)
    assert report.embedded == 8 and report.already_stored == 32 and report.stored_total == 40
    assert branch.calls == 1
    again = run(root, out, chunk_size=8, batch_size=8)
    assert again.embedded == 0 and again.stored_total == 40 and len(load_store(out)) == 40


def test_a_corrupt_chunk_is_set_aside_and_its_images_embedded_again(tmp_path, caplog):
    root = many_images(tmp_path / "images", 40)
    out = tmp_path / "s.store"
    run(root, out, chunk_size=8, batch_size=8)
    bad = sorted(out.glob("part-*.parquet"))[1]
    bad.write_bytes(bad.read_bytes()[:100])  # truncated
    with caplog.at_level("WARNING", logger="stylecluster"):
        store = load_store(out)
    assert len(store) == 32 and store.unreadable[0][0] == bad
    assert sum(bad.name in r.getMessage() for r in caplog.records) == 1
    report = run(root, out, chunk_size=8, batch_size=8)
    assert report.set_aside == [bad.name] and report.embedded == 8 and report.stored_total == 40
    assert (out / "_corrupt" / bad.name).is_file() and not bad.exists()
    assert any("unreadable chunks set aside" in line for line in report.summary_lines())
    assert len(load_store(out)) == 40 and len(pd.read_parquet(out)) == 40


def test_a_chunk_of_another_shape_counts_as_corrupt(tmp_path):
    root = many_images(tmp_path / "images", 16)
    out = tmp_path / "s.store"
    run(root, out, chunk_size=8, batch_size=8)
    chunk = sorted(out.glob("part-*.parquet"))[0]
    pd.DataFrame({"path": ["x"], "sha256": ["y"]}).to_parquet(chunk)  # no vector column
    store = load_store(out)
    assert len(store) == 8 and "no 'global' column" in store.unreadable[0][1]


def test_rows_are_saved_every_checkpoint_and_merged_at_the_end(tmp_path):
    root = many_images(tmp_path / "images", 40)
    out = tmp_path / "s.store"
    config = Config()
    config.embed.workers, config.embed.batch_size = 0, 4
    config.embed.checkpoint_rows, config.embed.chunk_size = 4, 16
    saved_counts = []

    class Watching(MeanColourBranch):
        def encode(self, batch):
            saved_counts.append(len(list(out.glob("part-*.parquet"))))
            return super().encode(batch)

    embed_images(discover_images(root), root, out, config, quiet=True, branches=[Watching()])
    # before the 10th batch, 9 checkpoints of 4 rows were on disk
    assert saved_counts == list(range(10))
    assert [len(pd.read_parquet(f)) for f in sorted(out.glob("part-*.parquet"))] == [16, 16, 8]
    assert sorted(load_store(out).paths) == sorted(p.name for p in root.iterdir())


def test_rows_are_saved_after_checkpoint_seconds(tmp_path, monkeypatch):
    from stylecluster import store as store_module

    clock = [0.0]
    monkeypatch.setattr(store_module.time, "monotonic", lambda: clock[0])
    writer = store_module.StoreWriter(tmp_path / "s.store", {"global": {"m": 1}}, {"global": 2}, {"global": {"global": (0, 2)}},
                                      checkpoint_rows=64, checkpoint_seconds=30)
    writer.add("a.png", "a", 1, 1, {"global": np.zeros(2)})
    assert not list((tmp_path / "s.store").glob("part-*"))
    clock[0] = 31.0
    writer.add("b.png", "b", 1, 1, {"global": np.ones(2)})
    assert len(pd.read_parquet(tmp_path / "s.store")) == 2
    writer.close()


SLOW_EMBED = """
import sys, time
sys.path[:0] = [{tests!r}]
from pathlib import Path
from conftest import MeanColourBranch
from stylecluster.config import Config
from stylecluster.data.discovery import read_path_list
from stylecluster.features.embedder import embed_images

class Slow(MeanColourBranch):
    def encode(self, batch):
        time.sleep({delay})
        return super().encode(batch)

root, out, listing = map(Path, sys.argv[1:4])
config = Config()
config.embed.workers, config.embed.batch_size, config.embed.checkpoint_rows = 0, 4, 8
report = embed_images(read_path_list(listing, root), root, out, config, quiet=True, branches=[Slow()])
print("rows", report.stored_total)
"""


def slow_embed(tmp_path, root, out, listing, delay=0.05):
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "slow_embed.py"
    script.write_text(SLOW_EMBED.format(tests=str(Path(__file__).parent), delay=delay))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, str(script), str(root), str(out), str(listing)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_writers_into_one_store_keep_every_row(tmp_path):
    # issue 13.2: both runs numbered their chunks from the count they saw at start; 264 of 400 rows survived
    root = many_images(tmp_path / "images", 80)
    names = sorted(p.name for p in root.iterdir())
    (tmp_path / "a.txt").write_text("\n".join(names[:40]))
    (tmp_path / "b.txt").write_text("\n".join(names[40:]))
    out = tmp_path / "s.store"
    # 4 s of encoding each: on a busy machine a first run of 0.5 s was done before the second had imported
    first = slow_embed(tmp_path, root, out, tmp_path / "a.txt", delay=0.4)
    second = slow_embed(tmp_path, root, out, tmp_path / "b.txt", delay=0.4)
    results = [p.communicate(timeout=120) + (p.returncode,) for p in (first, second)]
    assert [code for _, _, code in results] == [0, 0], results
    assert sorted(load_store(out).paths) == names
    waited = [err for _, err, _ in results if "another process is writing this store; waiting" in err]
    assert len(waited) == 1 and len(waited[0].strip().splitlines()) == 1


def test_kill_9_loses_at_most_one_checkpoint(tmp_path):
    # issue 13.4: with 512-row chunks a kill 400 images in kept nothing
    import signal
    import time

    root = many_images(tmp_path / "images", 80)
    (tmp_path / "all.txt").write_text("\n".join(sorted(p.name for p in root.iterdir())))
    out = tmp_path / "s.store"
    proc = slow_embed(tmp_path, root, out, tmp_path / "all.txt", delay=0.1)
    deadline = time.monotonic() + 60
    while len(list(out.glob("part-*.parquet"))) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    kept = len(load_store(out))
    assert kept >= 24 and kept % 8 == 0  # whole checkpoints of 8 rows, nothing half-written
    report = run(root, out)
    assert report.already_stored == kept and report.embedded == 80 - kept and report.stored_total == 80
