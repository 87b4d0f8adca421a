"""Saving a fitted clustering as data only: a zip of ``.npy`` arrays and one JSON document.

``stylecluster cluster`` writes ``CLUSTERS.model.npz``; ``assign``, ``plot``, ``report`` and
``similar`` read it. Such files are shared along with the CSVs, so reading one must never run
code — which rules out pickle (joblib), whose loader calls whatever the file names. The layout::

    state.json             the object tree in JSON: plain values as themselves; arrays as
                           {"__array__": NAME}; tuples as {"__tuple__": [...]}; dicts with
                           non-string keys as {"__items__": [[key, value], ...]}; objects as
                           {"__object__": TYPE, "state": {attribute: value}}
    NAME.npy               one array each, numpy's own format, read with allow_pickle=False

Loading builds only the classes listed in :func:`saved_types` — by name, with ``cls.__new__``
and their attribute dict, never ``__init__``, ``__reduce__`` or ``__setstate__`` — so nothing a
file holds can name a function to call. ``unzip -p CLUSTERS.model.npz state.json`` shows all of
it. Objects that are not plain attributes over arrays save themselves as such
(``_saved_state`` / ``_restore_state``): DEC's encoder as its layer sizes and weight arrays,
HDBSCAN's fitted tree as the coordinates it was fitted on (refitted, deterministically, when an
assignment first needs it).

Why not skops: its loader is just as code-free with an explicit trusted-type list, but that list
must also name every numpy and scikit-learn type and function the file mentions, DEC's torch
module and HDBSCAN's and UMAP's compiled trees would need code of our own anyway, and this format
is one file of ~200 lines that can be read in one sitting.
"""
from __future__ import annotations

import io
import json
import time
import zipfile
import zlib
from importlib.metadata import version
from pathlib import Path
from typing import Any, Collection, Iterator

import numpy as np

from .._version import __version__
from ..errors import InputError
from ..io import printable, save_atomic

FORMAT = "stylecluster.clustering"
FORMAT_VERSION = 1
STATE_FILE = "state.json"
#: Suffix of the model file written beside CLUSTERS.csv.
MODEL_SUFFIX = ".model.npz"
#: What earlier versions wrote there: a pickle, which is never loaded.
OLD_MODEL_SUFFIX = ".model.joblib"
#: What every refusal of a model file advises.
RERUN = "re-run `stylecluster cluster` to write it again"
#: Largest model file, its arrays unpacked: a few MB of zeros deflate to GBs (a zip bomb), and
#: numpy allocates what an array's header says. Real models are far smaller (BGMM on 64
#: dimensions, HDBSCAN's fitted coordinates: tens of MB).
MAX_MODEL_BYTES = 4 << 30
#: Above this many bytes an entry may not unpack to more than MAX_RATIO times its packed size
#: (measured float data deflates by ~1.1x; only constant arrays pack smaller).
RATIO_FROM_BYTES, MAX_RATIO = 64 << 20, 200


class ModelFileError(InputError):
    """A model file that cannot be read; ``str(exc)`` says what to do, in one line."""


def model_path_for(clusters_csv: str | Path) -> Path:
    """Where the fitted clustering of CLUSTERS.csv is saved: ``CLUSTERS.model.npz``."""
    clusters_csv = Path(clusters_csv)
    return clusters_csv.with_name(clusters_csv.stem + MODEL_SUFFIX)


def saved_types() -> dict[str, type]:
    """Every class a model file may contain, by the name the file uses for it."""
    from sklearn.decomposition import PCA
    from sklearn.mixture import BayesianGaussianMixture
    from sklearn.pipeline import Pipeline

    from ..config import ClusterConfig, FuseConfig
    from .base import OneCluster, available_methods, method_class
    from .fuse import Block, Fuser
    from .pipeline import StyleClustering
    from .reduce import IsotropicScaler
    from .selection import KSelection

    types = {
        "StyleClustering": StyleClustering,
        "ClusterConfig": ClusterConfig,
        "FuseConfig": FuseConfig,
        "KSelection": KSelection,
        "Fuser": Fuser,
        "Block": Block,
        "IsotropicScaler": IsotropicScaler,
        "OneCluster": OneCluster,
        "sklearn.PCA": PCA,
        "sklearn.Pipeline": Pipeline,
        "sklearn.BayesianGaussianMixture": BayesianGaussianMixture,
    }
    types.update({f"method.{name}": method_class(name) for name in available_methods()})
    return types


class _Encoder:
    def __init__(self):
        self.names = {cls: name for name, cls in saved_types().items()}
        self.arrays: dict[str, np.ndarray] = {}
        self._seen: dict[int, str] = {}  # the same array object is stored once

    def __call__(self, value: Any, where: str) -> Any:
        if value is None or type(value) in (bool, int, float, str):
            return value
        if isinstance(value, (np.ndarray, np.generic)):
            return {"__array__": self._array(np.asarray(value), value, where)}
        if isinstance(value, tuple):
            return {"__tuple__": [self(v, f"{where}.{i}") for i, v in enumerate(value)]}
        if isinstance(value, list):
            return [self(v, f"{where}.{i}") for i, v in enumerate(value)]
        if isinstance(value, dict):
            if all(type(k) is str and not k.startswith("__") for k in value):
                return {k: self(v, f"{where}.{k}") for k, v in value.items()}
            return {"__items__": [[self(k, f"{where}.key{i}"), self(v, f"{where}.{i}")] for i, (k, v) in enumerate(value.items())]}
        name = self.names.get(type(value))
        if name is None:
            raise TypeError(f"cannot save a {type(value).__module__}.{type(value).__qualname__} ({where}) in a model file")
        state = value._saved_state() if hasattr(value, "_saved_state") else dict(vars(value))
        return {"__object__": name, "state": self(state, where)}

    def _array(self, array: np.ndarray, original: Any, where: str) -> str:
        if array.dtype.hasobject:
            raise TypeError(f"cannot save an array of Python objects ({where}) in a model file")
        key = id(original)
        if isinstance(original, np.ndarray) and key in self._seen:
            return self._seen[key]
        name = where.strip(".") or "value"
        self.arrays[name] = array
        if isinstance(original, np.ndarray):
            self._seen[key] = name
        return name


class _Decoder:
    def __init__(self, arrays: dict[str, np.ndarray]):
        self.types = saved_types()
        self.arrays = arrays

    def __call__(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self(v) for v in value]
        if not isinstance(value, dict):
            return value
        if "__array__" in value:
            array = self.arrays[value["__array__"]]
            return array[()] if array.ndim == 0 else array
        if "__tuple__" in value:
            return tuple(self(v) for v in value["__tuple__"])
        if "__items__" in value:
            return {self(k): self(v) for k, v in value["__items__"]}
        if "__object__" in value:
            cls = self.types.get(value["__object__"])
            if cls is None:
                raise ModelFileError(f"unknown type {printable(value['__object__'])!r}")
            obj = cls.__new__(cls)
            state = self(value["state"])
            if hasattr(obj, "_restore_state"):
                obj._restore_state(state)
            else:
                obj.__dict__.update(state)
            return obj
        return {k: self(v) for k, v in value.items()}


def _array_names(value: Any) -> Iterator[str]:
    """The arrays an encoded document refers to."""
    if isinstance(value, list):
        for item in value:
            yield from _array_names(item)
    elif isinstance(value, dict):
        if isinstance(value.get("__array__"), str):
            yield value["__array__"]
        else:
            for item in value.values():
                yield from _array_names(item)


def _write_model(obj: Any, target) -> None:
    """The model file's bytes, into ``target`` (a path or a binary file object)."""
    encode = _Encoder()
    document = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "versions": {"stylecluster": __version__, **{name: version(name) for name in ("scikit-learn", "numpy", "hdbscan")}},
        "root": encode(obj, ""),
    }
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(STATE_FILE, json.dumps(document, indent=1))
        for name, array in encode.arrays.items():
            array = np.ascontiguousarray(array)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=time.localtime(time.time())[:6])
            info.compress_type = _compression(array)
            # streamed into the archive: a copy of the .npy bytes and another of their DEFLATE
            # made the model's write the peak of `cluster` at ten million images
            with archive.open(info, "w", force_zip64=array.nbytes > 1 << 30) as entry:
                np.lib.format.write_array(entry, array, allow_pickle=False)


def _compression(array: np.ndarray, piece_bytes: int = 16 << 20) -> int:
    """DEFLATE, except for an array so repetitive that it would unpack more than ``MAX_RATIO``-fold,
    which is stored as it is: the loader refuses such entries as zip bombs (:func:`_read_array`),
    and ten million probabilities of 1.0 deflate 685-fold. Measured by deflating the array a
    piece at a time, and only until it is clearly not that repetitive."""
    if array.nbytes <= RATIO_FROM_BYTES:
        return zipfile.ZIP_DEFLATED
    data, packer, packed = array.reshape(-1).view(np.uint8), zlib.compressobj(), 0
    for start in range(0, len(data), piece_bytes):
        packed += len(packer.compress(data[start : start + piece_bytes]))
        if MAX_RATIO * packed >= len(data):
            return zipfile.ZIP_DEFLATED
    packed += len(packer.flush())
    return zipfile.ZIP_STORED if MAX_RATIO * packed < len(data) else zipfile.ZIP_DEFLATED


def save_model(obj: Any, path: str | Path) -> Path:
    """Write ``obj`` (a fitted :class:`~stylecluster.cluster.StyleClustering`) to ``path`` atomically."""
    return save_atomic(path, lambda tmp: _write_model(obj, tmp))


def model_bytes(obj: Any) -> bytes:
    """What :func:`save_model` writes, as bytes: how a fitted model travels to Ray's actors (as
    data, read back by :func:`load_model`, never as a pickle)."""
    buffer = io.BytesIO()
    _write_model(obj, buffer)
    return buffer.getvalue()


def _read_array(archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path) -> np.ndarray:
    """One ``.npy`` entry, its header checked against the entry's size before numpy allocates
    the array it describes (a 1 KB entry may claim a shape of 10^12 values)."""
    name = printable(info.filename)
    if info.file_size > RATIO_FROM_BYTES and info.file_size > MAX_RATIO * max(1, info.compress_size):
        raise ModelFileError(f"{printable(path)}: array {name} unpacks {info.file_size // max(1, info.compress_size)}-fold (a zip bomb?); {RERUN}")
    with archive.open(info) as f:
        major, _ = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(f)
        if dtype.hasobject:
            raise ModelFileError(f"{printable(path)}: array {name} holds Python objects, which are never loaded; {RERUN}")
        promised = int(np.prod(shape, dtype=object)) * dtype.itemsize
        if promised != info.file_size - f.tell():
            raise ModelFileError(f"{printable(path)}: array {name} claims shape {shape} ({promised:,} bytes) but holds {info.file_size - f.tell():,}; {RERUN}")
    with archive.open(info) as f:
        return np.lib.format.read_array(f, allow_pickle=False)


def load_model(path: str | Path, expected: type | None = None, data: bytes | None = None, leave_out: Collection[str] = ()) -> Any:
    """Read a model file written by :func:`save_model` (or its bytes, ``data``, from
    :func:`model_bytes`; ``path`` then only names it); nothing in it is executed.

    ``leave_out``: attributes of the saved object not to read, nor the arrays only they use
    (a clustering's per-image results when only its model is needed).

    Raises :class:`ModelFileError` (one line naming the file and what to do) for an old pickled
    model, a foreign or damaged file, or one of another format version.
    """
    path = Path(path)
    rerun = RERUN
    if path.name.endswith(OLD_MODEL_SUFFIX) or path.suffix in (".joblib", ".pkl", ".pickle"):
        raise ModelFileError(
            f"{printable(path)}: a model pickled by an earlier stylecluster; pickles are never loaded (they can run code) — {rerun} as {MODEL_SUFFIX}"
        )
    try:
        with zipfile.ZipFile(path if data is None else io.BytesIO(data)) as archive:
            document = json.loads(archive.read(STATE_FILE))
            if not isinstance(document, dict) or document.get("format") != FORMAT:
                raise ModelFileError(f"{printable(path)}: not a stylecluster model file; {rerun}")
            if document.get("format_version") != FORMAT_VERSION:
                raise ModelFileError(f"{printable(path)}: model format {document.get('format_version')!r}, this stylecluster reads {FORMAT_VERSION}; {rerun}")
            state = document["root"].get("state") if isinstance(document.get("root"), dict) else None
            for name in leave_out if isinstance(state, dict) else ():
                state.pop(name, None)
            wanted = set(_array_names(document["root"]))
            arrays = {}
            entries = [info for info in archive.infolist() if info.filename.endswith(".npy")]
            if sum(info.file_size for info in entries) > MAX_MODEL_BYTES:
                raise ModelFileError(f"{printable(path)}: its arrays unpack to more than {MAX_MODEL_BYTES >> 30} GB; not a model this tool wrote; {rerun}")
            for info in entries:
                if info.filename[: -len(".npy")] in wanted:
                    arrays[info.filename[: -len(".npy")]] = _read_array(archive, info, path)
        obj = _Decoder(arrays)(document["root"])
    except ModelFileError:
        raise
    except FileNotFoundError:
        raise ModelFileError(f"{printable(path)}: no such model file; {rerun}") from None
    except (OSError, zipfile.BadZipFile, KeyError, ValueError, TypeError) as exc:
        raise ModelFileError(f"{printable(path)}: not a readable stylecluster model file ({printable(exc)}); {rerun}") from None
    if expected is not None and not isinstance(obj, expected):
        raise ModelFileError(f"{printable(path)}: holds a {type(obj).__name__}, not a {expected.__name__}; {rerun}")
    return obj
