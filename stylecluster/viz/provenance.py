"""The configuration a store was embedded with, recovered from its provenance record.

Exploration needs it twice: the report redraws the local branch's DoG patches (same patch
parameters, same per-image seed), and ``similar`` embeds an outside image with the store's own
branches. The store records each branch's provenance (backbone, Gram levels, patch parameters,
...); weights are recorded by content hash only, so a store made with custom weights needs the
user's ``--config`` as the base — :func:`check_branches` then says what differs.
"""
from __future__ import annotations

import copy
import json
from typing import Any

from ..config import Config, config_from_dict
from ..features.style_head import PACKAGED_LOCAL_HEAD, load_style_head, packaged_global_head
from ..store import _describe_difference
from ..errors import InputError


def config_for_store(store, base: Config | None = None) -> Config:
    """``base`` (default: the defaults) with every field the store's provenance records applied."""
    meta = store.metadata
    if isinstance(meta.get("config"), dict):
        config = config_from_dict(meta["config"])
    else:
        config = copy.deepcopy(base) if base is not None else Config()
    branches = meta.get("branches", {})
    glob = branches.get("global")
    if glob:
        config.global_.backbone = glob.get("backbone", config.global_.backbone)
        if "gram_levels" in glob:
            config.global_.gram_levels = tuple(glob["gram_levels"])
        config.global_.gram_channels = glob.get("gram_channels", config.global_.gram_channels)
        config.global_.style_head = _head_setting(glob, packaged_global_head(config.global_.backbone), config.global_.style_head)
        size = (glob.get("input") or {}).get("input_size")
        if size:
            config.global_.image_size = int(size[-1])
    local = branches.get("local")
    config.local.enabled = local is not None
    if local:
        for name, value in (local.get("patches") or {}).items():
            if hasattr(config.local, name):
                setattr(config.local, name, value)
        config.local.aggregate = local.get("aggregate", config.local.aggregate)
        config.local.style_head = _head_setting(local, PACKAGED_LOCAL_HEAD, config.local.style_head)
    seed = (meta.get("embed") or {}).get("seed")
    if seed is not None:
        config.embed.seed = int(seed)
    return config


def _head_setting(branch: dict[str, Any], packaged, current: str | None) -> str | None:
    """A branch's style_head setting from its provenance: None without a head, "auto" for the
    packaged head, else ``current`` (a user's head file is known by hash only)."""
    if branch.get("style_head") is None:
        return None
    if packaged.is_file() and branch["style_head"] == load_style_head(packaged).file_id:
        return "auto"
    return current


def check_branches(store, branches) -> None:
    """Raise ValueError unless ``branches`` are exactly the ones the store was made with."""
    recorded: dict[str, Any] = store.metadata.get("branches", {})
    built = json.loads(json.dumps({b.name: b.provenance() for b in branches}))  # as the store wrote it
    diffs = _describe_difference(recorded, built)
    if diffs:
        raise InputError(
            f"{store.path}: cannot rebuild the store's branches ({'; '.join(diffs)}); "
            "pass --config with the configuration the store was embedded with"
        )
