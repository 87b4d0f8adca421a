"""The branches' networks compiled for this CPU: exported once to ONNX, run by OpenVINO.

``embed --runtime auto|torch|onnx`` (``embed.runtime``) and ``--precision auto|fp32|bf16``
(``embed.precision``). ``torch`` is the reference. ``onnx`` exports each branch's network — the
global branch whole (backbone, Gram statistics and style head: :meth:`GlobalBranch.vectors
<stylecluster.features.global_.GlobalBranch.vectors>`), the local branch's InfoVAE encoder — to
ONNX and runs it with OpenVINO; ``auto`` does the same on a CPU for runs of
:data:`AUTO_MIN_IMAGES` images or more and keeps it only if it passes the accuracy check, else
torch (one line says why). On CUDA or MPS, and for smaller runs, ``auto`` is torch. End to end on
352 wikiart paintings, both branches, busy machine: 2.56x torch, k-means ARI to torch's clusters
1.000 (``benchmarks/speed.py --runtimes``, RESULTS.md).

Why OpenVINO, and why fp32. The global branch with its head, batch 32, on this 2-core AMD EPYC
(AVX-512 VNNI and BF16), one process each, machine busy with other jobs (first measurement,
``/tmp`` scripts; the end-to-end table is ``benchmarks/speed.py --runtimes``, RESULTS.md):

    ==============================  =====  ===========================================
    runtime                          ms    min cosine to torch fp32
    ==============================  =====  ===========================================
    torch fp32 (channels-last)       136   1
    ONNX Runtime fp32                 51   0.9999999 (8 images)
    OpenVINO fp32                     30   0.9999998 (40 sample paintings)
    OpenVINO bf16                     17   0.981 (40 sample paintings; 0.9998 on 8)
    ONNX Runtime int8 (static, QDQ)   31   0.741 (0.535 with only the convolutions int8)
    ==============================  =====  ===========================================

int8 does not hold the vectors: the Gram statistics multiply activations with each other, and
the quantisation error of each is squared into them; bf16's 8-bit mantissa moved one painting
in 40 below the 0.99 bar (0.940 for one of 352 wikiart paintings, and k-means ARI 0.30 to torch's
clusters). So ``precision: auto`` is fp32, OpenVINO's fp32 kernels being what
gains here; bf16 is there for whoever accepts that (``--precision bf16``).

The accuracy check: the first images of the built-in sample, through torch and through the
compiled network; the runtime is used when every vector's cosine to torch's is at least
:data:`MIN_COSINE`. Its result is the store's ``runtime`` record (engine, precision, min cosine),
which ``assign`` reads (:func:`check_compatible`).

The exported model is cached in the user's cache folder (``$STYLECLUSTER_CACHE``, else
``$XDG_CACHE_HOME/stylecluster``, else ``~/.cache/stylecluster``) under a name made of a sha256 of
the network's weights and buffers, the branch's provenance, its input shape and the versions of
stylecluster, torch and OpenVINO — so a changed model, head, Gram setting or library is exported
again, never reused stale. It is
written atomically; one that cannot be read is exported again. No pickle is involved: ONNX is a
protobuf of tensors and operators.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .._version import __version__
from ..errors import ConfigError, InputError
from ..io import printable, save_atomic
from ..store import MIN_COSINE, check_compatible  # noqa: F401  (the store's rule; imported here for the runtime's callers)

log = logging.getLogger("stylecluster")

RUNTIMES = ("auto", "torch", "onnx")
PRECISIONS = ("auto", "fp32", "bf16")
#: Fewest images for which ``auto`` compiles (:func:`resolve_runtime`): the first export of
#: Lite0 + head takes ~8 s and a compilation ~1-2 s, repaid at ~20 ms an image after ~500 images.
AUTO_MIN_IMAGES = 500
#: Sample images the accuracy check runs.
CHECK_IMAGES = 8
OPSET = 17


@dataclass(frozen=True)
class RuntimeRecord:
    """How a branch's vectors were computed: what the store records and ``assign`` compares."""

    engine: str  # "torch" or "openvino"
    precision: str  # "fp32" or "bf16"
    min_cosine: float = 1.0  # to torch fp32, on the check's images


TORCH = RuntimeRecord("torch", "fp32", 1.0)


def cache_folder() -> Path:
    root = os.environ.get("STYLECLUSTER_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "stylecluster"
    return Path(root) / "runtime"


def _openvino():
    try:
        import openvino
    except ImportError:
        return None
    return openvino


def network_key(module: torch.nn.Module, example: torch.Tensor, identity: str = "") -> str:
    """sha256 of what the exported graph depends on: every weight and buffer (names, shapes,
    values), the input shape, the libraries that export and run it, and ``identity`` — the
    branch's provenance, which names what the weights do not (its Gram levels and their
    projections' sizes)."""
    digest = hashlib.sha256()
    openvino = _openvino()
    digest.update(repr((type(module).__qualname__, tuple(example.shape[1:]), __version__, torch.__version__,
                        getattr(openvino, "__version__", None), OPSET, identity)).encode())
    for name, tensor in module.state_dict().items():
        flat = tensor.detach().cpu().reshape(-1)
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update((flat.view(torch.int16) if flat.dtype == torch.bfloat16 else flat).numpy().tobytes())
    return digest.hexdigest()


def export_onnx(module: torch.nn.Module, example: torch.Tensor, file: Path) -> Path:
    """``module`` as ONNX at ``file`` (atomically), batch size dynamic."""
    try:
        import onnx  # noqa: F401  (torch's exporter needs it)
    except ImportError:
        raise InputError('--runtime onnx needs the onnx package: pip install onnx openvino') from None
    module = module.eval()

    def write(tmp: Path) -> None:
        # the tracer's notes (constants in the trace, its own deprecations) are about tracing, not the user's data
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (example.contiguous(),), str(tmp), input_names=["x"], output_names=["y"],
                              dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}}, opset_version=OPSET, dynamo=False)

    return save_atomic(file, write)


class CompiledNetwork:
    """A network compiled by OpenVINO: called with a torch batch, returns float32 numpy rows."""

    def __init__(self, file: Path, precision: str, threads: int):
        openvino = _openvino()
        core = openvino.Core()
        self.file, self.precision = file, precision
        self.compiled = core.compile_model(core.read_model(str(file)), "CPU", {
            "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
            "INFERENCE_NUM_THREADS": max(1, threads),
            "PERFORMANCE_HINT": "LATENCY",  # one batch at a time, all threads on it, as torch runs
        })
        self.request = self.compiled.create_infer_request()
        self.record = RuntimeRecord("openvino", precision)  # its min_cosine once checked

    def __call__(self, x: torch.Tensor) -> np.ndarray:
        x = x.detach().to("cpu", torch.float32).contiguous().numpy()
        result = self.request.infer({0: x})
        return np.asarray(result[self.compiled.output(0)], dtype=np.float32).copy()


def compile_network(module: torch.nn.Module, example: torch.Tensor, name: str, precision: str, threads: int,
                    identity: str = "") -> CompiledNetwork:
    """The cached export of ``module`` (made when missing or unreadable), compiled."""
    file = cache_folder() / f"{name}-{network_key(module, example, identity)[:20]}.onnx"
    if not file.is_file():
        export_onnx(module, example, file)
    try:
        return CompiledNetwork(file, precision, threads)
    except RuntimeError as exc:  # a damaged cache file: OpenVINO cannot read it
        log.warning("%s: cannot read the cached model (%s); exporting it again", printable(file), printable(str(exc).splitlines()[0]))
        file.unlink(missing_ok=True)
        return CompiledNetwork(export_onnx(module, example, file), precision, threads)


def check_settings(runtime: str, precision: str) -> None:
    if runtime not in RUNTIMES:
        raise ConfigError(f"embed.runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    if precision not in PRECISIONS:
        raise ConfigError(f"embed.precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)


def check_images() -> list:
    """The accuracy check's images: the first of the built-in sample, decoded."""
    from ..data.decode import load_image
    from ..demo import sample_dir

    files = sorted(sample_dir().glob("images/*.jpg"))[:CHECK_IMAGES]
    return [load_image(f) for f in files]


def min_cosine(branch, images: Sequence) -> float:
    """Least cosine between ``branch``'s vectors with its runtime and with torch, on ``images``.

    One image at a time: a batch's activations would stay in the process's heap for the whole
    run (8 images through torch: ~100 MB of RSS kept, measured in RESULTS.md, issue 23).
    """
    from torch.utils.data import default_collate

    inputs = [default_collate([branch.preprocess(image, seed=i)]) for i, image in enumerate(images)]
    compiled, branch.runtime = branch.runtime, None
    try:
        reference = np.concatenate([branch.encode(x) for x in inputs])
    finally:
        branch.runtime = compiled
    return float(_cosines(np.concatenate([branch.encode(x) for x in inputs]), reference).min())


def use_runtime(branches: Sequence, runtime: str, precision: str, device: torch.device) -> dict[str, RuntimeRecord]:
    """Compile each branch's network as ``runtime`` / ``precision`` ask (module docstring) and
    return {branch name: how its vectors will be computed}. ``auto`` falls back to torch, with
    one line, when the runtime is missing or fails the accuracy check; ``onnx`` asked for
    explicitly is used whatever the check says (and the store records the cosine)."""
    check_settings(runtime, precision)
    records = {b.name: TORCH for b in branches}
    if runtime == "torch" or (runtime == "auto" and device.type != "cpu"):
        return records
    if _openvino() is None:
        message = '--runtime onnx needs OpenVINO and onnx: pip install openvino onnx'
        if runtime == "onnx":
            raise InputError(message)
        log.info("%s; embedding with torch", message)
        return records
    if device.type != "cpu":
        raise InputError(f"--runtime onnx runs on the CPU; this run uses {device.type} (pass --device cpu, or --runtime torch)")
    chosen = "fp32" if precision == "auto" else precision
    images = check_images()
    for branch in branches:
        network = branch.network()
        if network is None:
            continue
        module, example = network
        identity = json.dumps(branch.provenance(), sort_keys=True, default=str)
        branch.runtime = compile_network(module, example, branch.name, chosen, torch.get_num_threads(), identity)
        cosine = min_cosine(branch, images)
        if cosine < MIN_COSINE and runtime == "auto":
            log.warning("%s branch: OpenVINO %s vectors reach cosine %.4f to torch's (< %.2f); embedding it with torch",
                        branch.name, chosen, cosine, MIN_COSINE)
            branch.runtime = None
            continue
        if cosine < MIN_COSINE:
            log.warning("%s branch: OpenVINO %s vectors reach cosine %.4f to torch's (< %.2f); stores from other runtimes will not mix",
                        branch.name, chosen, cosine, MIN_COSINE)
        records[branch.name] = branch.runtime.record = RuntimeRecord("openvino", chosen, round(cosine, 6))
    return records


def resolve_runtime(config, images: int):
    """``config`` with ``embed.runtime: auto`` decided for a run of ``images`` images: torch below
    :data:`AUTO_MIN_IMAGES` (the first export and compilation, ~10 s, would not pay back), else
    onnx-if-it-passes (``auto`` stays, decided per branch by the check). A copy; the caller's
    config is not changed."""
    import dataclasses

    if config.embed.runtime != "auto" or images >= AUTO_MIN_IMAGES:
        return config
    return dataclasses.replace(config, embed=dataclasses.replace(config.embed, runtime="torch"))


def runtime_metadata(branches: Sequence) -> dict[str, dict]:
    """The store's ``runtime`` record: how each branch's vectors are computed."""
    return {b.name: asdict(b.runtime.record if b.runtime is not None else TORCH) for b in branches}
