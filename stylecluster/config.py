"""Typed configuration: dataclasses whose defaults are the project's defaults.

``configs/default.yaml`` spells the same values out for users to copy and edit; a test keeps
the two identical. A YAML file may set any subset of fields; unknown keys are an error so a
typo never silently falls back to a default, and every value is checked against its field's
annotation (``batch_size: "32"`` or ``gram_levels: "12"`` is one line naming the key and the
type it takes, not a string that fails — or is iterated — later). Values are checked, never
converted (an ``int`` where a ``float`` is annotated stays as written), so a config means what
it did before the check existed.

Command-line flags are overrides of the same fields: ``--set section.key=value`` (the value is
YAML), and each named flag is a shorthand for one dotted key (:func:`apply_overrides`).
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from .errors import ConfigError


@dataclass
class IngestConfig:
    """How images are found and decoded."""

    max_pixels: int = 200_000_000  # decompression-bomb guard (width x height)
    min_side: int = 32  # images with a shorter side are skipped
    follow_symlinks: bool = True


@dataclass
class GlobalConfig:
    """The global (whole-image) style branch."""

    backbone: str = "efficientnet_lite0"
    weights: str | None = None  # file path or hub name; None = the backbone's offline default
    # Gram statistics of these intermediate feature levels are appended to the pooled vector
    # (see features/global_.py for why and how they were chosen).
    gram_levels: tuple[int, ...] = (1, 2, 3, 4)
    gram_channels: int = 64  # channels kept per Gram level (fixed projection) before the Gram product
    image_size: int | None = None  # None = the weights' own input size (timm data config)
    # Learned projection of the vector (features/style_head.py): "auto" = the head shipped for the
    # default backbone when it fits the backbone, weights and Gram layout; a file; or None.
    style_head: str | None = "auto"


@dataclass
class LocalConfig:
    """The local (brush-stroke) branch: gradient-scored DoG patches encoded by an InfoVAE."""

    enabled: bool = True
    model: str | None = None  # InfoVAE checkpoint; None = the encoder shipped with the package
    patch_size: int = 64
    stride: int = 32
    top_fraction: float = 0.10
    n_patches: int = 5
    sigma1: float = 3.0
    sigma2: float = 5.0
    patch_scale: str = "pixels"  # "pixels" (fixed side) or "relative" (fraction of the shorter side)
    relative_size: float = 0.25  # patch side / shorter image side, with patch_scale "relative"
    aggregate: str = "mean"  # "mean" or "mean+std" of the patch codes
    # Artist-discriminant head on the aggregated codes (features/style_head.py): a file from
    # `train-style-head --branch local`, "auto" (a head shipped for the encoder, if any), or None.
    # None by default: on unseen artists it raises local-only NMI (0.021 -> 0.030) but not the
    # fused result (benchmarks/local_branch.py, RESULTS.md).
    style_head: str | None = None


@dataclass
class EmbedConfig:
    """Running the embedder."""

    device: str = "auto"
    batch_size: int = 32
    workers: int = 2
    chunk_size: int = 512  # rows per store chunk once a run ends (the chunks it saved are merged)
    # A run saves its rows at least this often, so a crash or kill loses at most this much work.
    checkpoint_rows: int = 64
    checkpoint_seconds: float = 30.0
    seed: int = 0
    # auto: on a CPU, runs of 500+ images use the networks exported to ONNX and run by OpenVINO
    # (fp32) if their vectors pass the accuracy check (cosine >= 0.99 to torch's), else torch;
    # torch: the reference; onnx: OpenVINO whatever the check says (features/runtime.py)
    runtime: str = "auto"
    precision: str = "auto"  # auto (fp32), fp32 or bf16 (measured: bf16 moved clusters, RESULTS.md)
    # how the store keeps the vectors: float32, float16 (half the disk and reading time; measured
    # in benchmarks/scale.py) or auto: float16 from a million images (store.FLOAT16_FROM_ROWS)
    dtype: str = "auto"

    def __post_init__(self):
        # checked here, not where they are used: --batch-size 0 made DataLoader raise a traceback
        for key, least in (("batch_size", 1), ("workers", 0), ("chunk_size", 1), ("checkpoint_rows", 1)):
            value = getattr(self, key)
            if isinstance(value, int) and value < least:
                raise ConfigError(f"embed.{key}: must be at least {least}, got {value}")
        if self.dtype not in ("auto", "float32", "float16"):
            raise ConfigError(f"embed.dtype: auto, float32 or float16, got {self.dtype!r}")
        if isinstance(self.checkpoint_seconds, (int, float)) and not self.checkpoint_seconds > 0:
            raise ConfigError(f"embed.checkpoint_seconds: must be above 0, got {self.checkpoint_seconds}")


@dataclass
class FuseConfig:
    """Turning the stored branch vectors into one clustering space."""

    # 0: the clusters use the global branch alone. Measured (benchmarks/local_branch.py, RESULTS.md)
    # beside the 256-direction head, 3 seeds: no local weight (0.1, 0.25, 0.5; packaged encoder or
    # one retrained on all three sets) is at or above global-only in every mean — at 0.5, unseen
    # artists' movements +0.002 k-means / +0.001 BGMM NMI, but AIC periods -0.018 k-means (+0.030
    # BGMM). The local vectors are still embedded: reports draw their strokes, and a weight set here
    # (e.g. 0.5 for high-resolution collections clustered with BGMM) needs no new embedding.
    local_weight: float = 0.0
    pca_components: int = 64  # 0 = no reduction
    whiten: bool = True
    max_fit_samples: int = 100_000  # PCA fitted on a seeded subsample of this many images (0: all); see cluster/fuse.py


@dataclass
class ClusterConfig:
    method: str = "bgmm"
    k: int | str | None = None  # number of clusters, its upper bound (bgmm), or "auto" (model selection)
    seed: int = 0
    params: dict[str, Any] = field(default_factory=dict)  # method-specific parameters


@dataclass
class Config:
    ingest: IngestConfig = field(default_factory=IngestConfig)
    global_: GlobalConfig = field(default_factory=GlobalConfig)
    local: LocalConfig = field(default_factory=LocalConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    fuse: FuseConfig = field(default_factory=FuseConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(self)


# YAML section names; ``global`` is a Python keyword, hence the attribute ``global_``.
_SECTION_ATTRS = {"global": "global_"}


def _to_plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        out = {}
        for f in dataclasses.fields(obj):
            key = {v: k for k, v in _SECTION_ATTRS.items()}.get(f.name, f.name)
            out[key] = _to_plain(getattr(obj, f.name))
        return out
    if isinstance(obj, tuple):
        return [_to_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _to_plain(v) for k, v in obj.items()}
    return obj


def _type_name(annotation: Any) -> str:
    if annotation is type(None):
        return "null"
    if isinstance(annotation, type):
        return annotation.__name__
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args)
    if origin is tuple:
        inner = f"{_type_name(args[0])}s" if len(args) == 2 and args[1] is Ellipsis else f"{len(args)} numbers"
        return f"a list of {inner}"
    if origin is dict:
        return "a mapping"
    return str(annotation)


def _check(value: Any, annotation: Any) -> tuple[bool, Any]:
    """Whether ``value`` fits ``annotation``, and the value to store (YAML lists become tuples)."""
    if annotation is Any:
        return True, value
    if annotation is type(None):
        return value is None, value
    if annotation is bool:
        return isinstance(value, bool), value
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool), value
    if annotation is str:
        return isinstance(value, str), value
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        for option in args:
            ok, checked = _check(value, option)
            if ok:
                return True, checked
        return False, value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            return False, value
        items = args[:1] * len(value) if len(args) == 2 and args[1] is Ellipsis else args
        if len(items) != len(value) or not all(_check(v, a)[0] for v, a in zip(value, items)):
            return False, value
        return True, tuple(value)
    if origin is dict:
        return isinstance(value, Mapping), dict(value) if isinstance(value, Mapping) else value
    return isinstance(value, annotation), value


def _build(cls: type, values: Mapping[str, Any], where: str, section: str = "") -> Any:
    if not isinstance(values, Mapping):
        raise ConfigError(f"{where}: {section or 'the config'}: expected a mapping, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        attr = _SECTION_ATTRS.get(key, key)
        if attr not in fields:
            raise ConfigError(f"{where}: unknown key {key!r}{' in ' + section[:-1] if section else ''} (known: {', '.join(sorted(fields))})")
        if dataclasses.is_dataclass(hints[attr]):
            value = _build(hints[attr], value or {}, where, f"{section}{key}.")
        else:
            ok, value = _check(value, hints[attr])
            if not ok:
                raise ConfigError(f"{where}: {section}{key}: expected {_type_name(hints[attr])}, got {value!r}")
        kwargs[attr] = value
    return cls(**kwargs)


def apply_overrides(values: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` (a config as nested mappings) with each dotted key of ``overrides`` set, e.g.
    ``{"embed.batch_size": 16}``; the result is checked when it is built, like a file."""
    values = {k: dict(v) if isinstance(v, Mapping) else v for k, v in values.items()}
    for dotted, value in overrides.items():
        *sections, key = dotted.split(".")
        where = values
        for section in sections:
            where = where.setdefault(section, {})
            if not isinstance(where, dict):
                raise ConfigError(f"{dotted}: {section!r} is not a section")
        where[key] = value
    return values


def read_yaml(path: str | Path) -> Any:
    """A YAML file's contents ({} when empty); unreadable files raise ValueError naming the file."""
    try:
        return yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read config: {exc}") from exc


def load_dataclass_yaml(cls: type, path: str | Path | None = None, where: str = "config", **overrides) -> Any:
    """A ``cls`` dataclass from a YAML file's settings over the defaults, then ``overrides``
    (keys, dotted for nested sections; None values ignored)."""
    values = read_yaml(path) if path is not None else {}
    if not isinstance(values, Mapping):
        raise ConfigError(f"{path}: expected a mapping, got {type(values).__name__}")
    values = apply_overrides(values, {k: v for k, v in overrides.items() if v is not None})
    return _build(cls, values, str(path or where))


def config_from_dict(values: Mapping[str, Any] | None) -> Config:
    return _build(Config, values or {}, "config")


def load_config(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> Config:
    """Load a YAML config, then ``overrides`` (dotted keys, e.g. ``{"cluster.k": 8}``); fields
    neither sets keep their defaults."""
    return load_dataclass_yaml(Config, path, "config", **(overrides or {}))
