"""The compiled runtime (features/runtime.py): the same vectors as torch, a cache keyed by the
weights that is rebuilt when damaged, a fallback when the runtime is missing, and the store's
record that `assign` compares."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from conftest import make_image
from stylecluster.config import Config
from stylecluster.data.decode import load_image
from stylecluster.errors import ConfigError, InputError
from stylecluster.features import runtime
from stylecluster.features.embedder import build_branches, embed_images
from stylecluster.store import load_store

pytest.importorskip("openvino")
pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    folder = tmp_path_factory.mktemp("runtime-cache")
    old = os.environ.get("STYLECLUSTER_CACHE")
    os.environ["STYLECLUSTER_CACHE"] = str(folder)
    yield folder / "runtime"
    if old is None:
        os.environ.pop("STYLECLUSTER_CACHE")
    else:
        os.environ["STYLECLUSTER_CACHE"] = old


def config(runtime_name: str, precision: str = "fp32") -> Config:
    config = Config()
    config.embed.runtime, config.embed.precision = runtime_name, precision
    config.embed.workers, config.embed.batch_size = 0, 4
    return config


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("runtime-images")
    return [make_image(folder / f"{i}.png", size=(160 + 24 * i, 128), noise_seed=i) for i in range(5)]


@pytest.fixture(scope="module")
def compiled(cache):
    return build_branches(config("onnx"), torch.device("cpu"))


def vectors(branch, images, compiled_on: bool = True):
    batch = default_collate([branch.preprocess(load_image(f), seed=i) for i, f in enumerate(images)])
    held, branch.runtime = branch.runtime, branch.runtime if compiled_on else None
    try:
        return branch.encode(batch)
    finally:
        branch.runtime = held


def test_the_compiled_branches_give_torchs_vectors(compiled, images):
    assert [b.name for b in compiled] == ["global", "local"]
    for branch in compiled:
        assert branch.runtime is not None and branch.runtime.record.engine == "openvino"
        fast, reference = vectors(branch, images), vectors(branch, images, compiled_on=False)
        cosine = (fast * reference).sum(1) / np.linalg.norm(fast, axis=1) / np.linalg.norm(reference, axis=1)
        assert fast.shape == reference.shape == (5, branch.dim)
        assert cosine.min() > 0.9999, (branch.name, cosine)
        assert branch.runtime.record.min_cosine >= runtime.MIN_COSINE


def test_the_export_is_cached_and_a_damaged_one_rebuilt(compiled, cache, images, monkeypatch, caplog):
    files = sorted(cache.glob("global-*.onnx"))
    assert len(files) == 1
    calls = []
    real_export = runtime.export_onnx
    monkeypatch.setattr(runtime, "export_onnx", lambda *a: calls.append(a) or real_export(*a))
    module, example = compiled[0].network()
    identity = json.dumps(compiled[0].provenance(), sort_keys=True, default=str)
    runtime.compile_network(module, example, "global", "fp32", 1, identity)
    assert calls == []  # reused
    files[0].write_bytes(b"\x08\x07 not a protobuf")
    again = runtime.compile_network(module, example, "global", "fp32", 1, identity)
    assert len(calls) == 1 and "exporting it again" in caplog.text
    held, compiled[0].runtime = compiled[0].runtime, again
    try:
        assert np.allclose(vectors(compiled[0], images[:2]), vectors(compiled[0], images[:2], compiled_on=False), atol=1e-3)
    finally:
        compiled[0].runtime = held


def test_the_key_follows_the_weights():
    module = torch.nn.Linear(3, 2)
    example = torch.zeros(1, 3)
    before = runtime.network_key(module, example)
    assert runtime.network_key(module, example) == before
    with torch.no_grad():
        module.weight[0, 0] += 1e-3
    assert runtime.network_key(module, example) != before
    assert runtime.network_key(module, torch.zeros(1, 4)) != runtime.network_key(module, example)
    assert runtime.network_key(module, example, "gram_levels [1, 2]") != runtime.network_key(module, example, "gram_levels [1]")


def test_missing_runtime_falls_back_for_auto_and_is_one_line_for_onnx(monkeypatch):
    monkeypatch.setattr(runtime, "_openvino", lambda: None)

    class Branch:
        name, runtime = "global", None

    records = runtime.use_runtime([Branch()], "auto", "auto", torch.device("cpu"))
    assert records == {"global": runtime.TORCH}
    with pytest.raises(InputError, match="pip install openvino onnx"):
        runtime.use_runtime([Branch()], "onnx", "auto", torch.device("cpu"))
    with pytest.raises(ConfigError, match="embed.runtime"):
        runtime.use_runtime([Branch()], "tensorrt", "auto", torch.device("cpu"))


def test_auto_is_torch_for_small_runs():
    small = runtime.resolve_runtime(config("auto"), runtime.AUTO_MIN_IMAGES - 1)
    assert small.embed.runtime == "torch"
    assert runtime.resolve_runtime(config("auto"), runtime.AUTO_MIN_IMAGES).embed.runtime == "auto"
    assert runtime.resolve_runtime(config("onnx"), 3).embed.runtime == "onnx"
    assert config("auto").embed.runtime == "auto"  # a copy: the caller's config is not changed


def test_stores_record_the_runtime_and_assign_refuses_vectors_beyond_tolerance(cache, images, tmp_path):
    root = images[0].parent
    embed_images(images, root, tmp_path / "fast.store", config("onnx"), quiet=True)
    record = load_store(tmp_path / "fast.store").metadata["runtime"]
    assert record["global"]["engine"] == "openvino" and record["global"]["precision"] == "fp32"
    assert record["global"]["min_cosine"] >= runtime.MIN_COSINE

    torch_record = {"global": {"engine": "torch", "precision": "fp32", "min_cosine": 1.0}}
    runtime.check_compatible(torch_record, record, "s.store")  # both within tolerance: they mix
    runtime.check_compatible(None, record, "s.store")  # a clustering saved before runtimes were recorded
    loose = {"global": {"engine": "openvino", "precision": "bf16", "min_cosine": 0.95}}
    with pytest.raises(InputError, match="cosine 0.950"):
        runtime.check_compatible(torch_record, loose, "s.store")
    runtime.check_compatible(loose, loose, "s.store")  # the same runtime on both sides


def test_the_accuracy_check_encodes_one_image_at_a_time():
    # so that a batch's activations are not left in the heap for the whole run (RESULTS.md, issue 23)
    class Doubling:
        """Its 'runtime' doubles the second coordinate: cosine between (i, 1) and (i, 2)."""

        runtime = "compiled"
        batch_sizes: list[int] = []

        def preprocess(self, image, seed):
            return np.array([float(image), 1.0], np.float32)

        def encode(self, batch):
            self.batch_sizes.append(len(batch))
            x = np.asarray(batch, np.float32)
            return x * np.array([1.0, 2.0 if self.runtime else 1.0], np.float32)

    branch = Doubling()
    got = runtime.min_cosine(branch, [0, 1, 3])
    # image 0: (0, 1) against (0, 2), cosine 1; image 1: (1, 1)·(1, 2) / (sqrt 2 sqrt 5) = 3 / sqrt 10;
    # image 3: (3, 1)·(3, 2) / (sqrt 10 sqrt 13) = 11 / sqrt 130 = 0.965
    assert got == pytest.approx(3 / np.sqrt(10), abs=1e-6)
    assert branch.batch_sizes == [1] * 6 and branch.runtime == "compiled"
