"""The Ray Data engine: a local Ray (2 CPUs, no dashboard, nothing leaves the machine) writes the
same store as the local engine — same vectors, resume by (path, sha256), duplicates, bad files."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import make_image
from stylecluster.cli import main
from stylecluster.config import Config
from stylecluster.data.discovery import discover_images
from stylecluster.features.embedder import embed_images
from stylecluster.store import load_store

ray = pytest.importorskip("ray")
from stylecluster.features.ray_engine import RayEngine  # noqa: E402


@pytest.fixture(scope="module")
def local_ray():
    # One Ray for the module (~10 s to start); every engine below finds it initialised and uses it.
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Five distinct noisy images (two sizes, two formats), an exact copy and two bad files."""
    root = tmp_path_factory.mktemp("images")
    for i in range(5):
        make_image(root / f"img{i}.{'png' if i % 2 else 'jpg'}", size=(120 + 40 * i, 96), noise_seed=i)
    (root / "copy.png").write_bytes((root / "img1.png").read_bytes())
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    (root / "empty.png").write_bytes(b"")
    return root


def config(local: bool = True) -> Config:
    config = Config()
    config.embed.batch_size = 4
    config.embed.workers = 0
    config.local.enabled = local
    return config


def frame(store) -> pd.DataFrame:
    return load_store(store).to_pandas().set_index("path").sort_index()


def test_ray_writes_the_local_engines_store(local_ray, folder, tmp_path):
    paths = discover_images(folder)
    local = embed_images(paths, folder, tmp_path / "local.store", config(), quiet=True)
    distributed = embed_images(paths, folder, tmp_path / "ray.store", config(), quiet=True, engine=RayEngine(config(), actors=2))
    for report in (local, distributed):
        assert (report.embedded, report.duplicates, report.stored_total) == (5, 1, 6)
        assert sorted((p, k) for p, _, k in report.skipped) == [("broken.jpg", "truncated"), ("empty.png", "empty")]
    a, b = frame(tmp_path / "local.store"), frame(tmp_path / "ray.store")
    assert list(a.index) == list(b.index) and list(a.sha256) == list(b.sha256)
    assert list(a.width) == list(b.width) == [160, 120, 160, 200, 240, 280]
    # batches arrive in any order on Ray: whichever copy was written first is the original
    assert sorted(b.loc[["copy.png", "img1.png"], "duplicate_of"].fillna("-")) == ["-", "copy.png"] or sorted(
        b.loc[["copy.png", "img1.png"], "duplicate_of"].fillna("-")) == ["-", "img1.png"]
    for column in ("global", "local"):
        delta = np.abs(np.stack(a[column]) - np.stack(b[column])).max()
        assert delta < 1e-4, (column, delta)
    # both copies were new: each was encoded (in its own batch), so equal up to float rounding
    assert np.abs(b.loc["copy.png", "global"] - b.loc["img1.png", "global"]).max() < 1e-4
    skipped = pd.read_csv(tmp_path / "ray.store" / "_skipped.csv")
    assert sorted(skipped["path"]) == ["broken.jpg", "empty.png"]  # one line each


def test_ray_resumes_by_path_and_content(local_ray, folder, tmp_path):
    out = tmp_path / "s.store"
    paths = discover_images(folder)
    first = [p for p in paths if p.name in ("img0.jpg", "img1.png")]
    assert embed_images(first, folder, out, config(False), quiet=True, engine=RayEngine(config(False), actors=1)).embedded == 2
    changed = folder.parent / "changed"
    changed.mkdir()
    for p in first:
        (changed / p.name).write_bytes(p.read_bytes())
    make_image(changed / "img0.jpg", size=(120, 96), noise_seed=99)  # same path, new content
    (changed / "img9.png").write_bytes(p.read_bytes())  # new path, content already stored (img1.png)
    report = embed_images(discover_images(changed), changed, out, config(False), quiet=True, engine=RayEngine(config(False), actors=1))
    assert (report.already_stored, report.embedded, report.duplicates, report.stored_total) == (1, 1, 1, 3)
    stored = frame(out)
    assert stored.loc["img9.png", "duplicate_of"] == "img1.png"
    assert np.array_equal(stored.loc["img9.png", "global"], stored.loc["img1.png", "global"])  # copied from the store


def test_cli_engine_ray(local_ray, folder, tmp_path, capsys):
    out = tmp_path / "cli.store"
    assert main(["embed", str(folder), "--out", str(out), "--engine", "ray", "--actors", "1", "--no-local", "--batch-size", "8", "-q"]) == 0
    assert "embedded now: 5" in capsys.readouterr().out
    assert len(load_store(out)) == 6


def test_actors_must_be_positive():
    with pytest.raises(Exception, match="at least 1"):
        RayEngine(Config(), actors=0)


def test_the_local_engine_never_imports_ray(tmp_path):
    make_image(tmp_path / "a.png", noise_seed=1)
    code = (
        "import sys; from stylecluster.cli import main; "
        f"assert main(['embed', {str(tmp_path)!r}, '--out', {str(tmp_path / 's.store')!r}, '--no-local', '--weights', 'random', '--workers', '0', '-q']) == 0; "
        "assert 'ray' not in sys.modules, 'ray imported'"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.parametrize("address, says", [("not a host::", "expected HOST:PORT"), ("127.0.0.1:1", "no Ray cluster answers")])
def test_an_unusable_address_is_one_line_and_makes_no_store(folder, tmp_path, capsys, address, says):
    assert main(["embed", str(folder), "--out", str(tmp_path / "s.store"), "--engine", "ray", "--address", address, "--no-local"]) == 2
    err = capsys.readouterr().err
    assert says in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "s.store").exists()


def test_address_check_by_hand():
    from stylecluster.features.ray_engine import check_address

    check_address(None)
    check_address("auto")
    for bad in ("", "host", "host:", "host:0", "host:65536", "ho st:80", "[::1:80", "a/b:80"):
        with pytest.raises(Exception, match="expected HOST:PORT"):
            check_address(bad, timeout=0.1)


@pytest.mark.slow
def test_interrupting_a_ray_run_exits_cleanly_every_time(tmp_path):
    """Ctrl-C (SIGINT to the whole process group, as a terminal sends it) at a random moment of a
    Ray run, 20 times: each run prints the interrupted line, exits 130 and keeps what it stored."""
    import os
    import random
    import signal
    import time

    images = tmp_path / "images"
    for i in range(1500):  # more than 25 s of encoding on two CPUs: each interrupt lands mid-run
        make_image(images / f"{i:04d}.png", size=(200, 160), noise_seed=i)
    codes = []
    for run in range(20):
        out = tmp_path / f"s{run}.store"
        process = subprocess.Popen([sys.executable, "-m", "stylecluster", "embed", str(images), "--out", str(out), "--engine", "ray"],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                                   preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # a background shell ignores SIGINT
        for line in process.stdout:
            if b"embedding on Ray" in line:
                break
        time.sleep(random.Random(run).uniform(0.5, 25.0))  # before the first batch, and while encoding
        os.killpg(process.pid, signal.SIGINT)
        try:
            rest, _ = process.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            codes.append("hang")
            continue
        codes.append(process.returncode)
        if process.returncode == 130:
            assert b"interrupted" in rest and len(load_store(out)) >= 0
    assert codes == [130] * 20, codes
