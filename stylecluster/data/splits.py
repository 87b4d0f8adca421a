"""Artist-disjoint splits of a labels table.

A style model trained on some of an artist's paintings has seen that artist's hand; evaluating on
the artist's other paintings measures recognition, not style. Splits are therefore made over
*artists*: every artist's images fall on one side. Images without an artist count as an artist
of their own (they cannot leak).
"""
from __future__ import annotations

import re
import unicodedata

import numpy as np
import pandas as pd
from ..errors import ConfigError, InputError


def artist_key(name: str) -> str:
    """One spelling of an artist's name across collections: ASCII, lower case, words joined by
    ``-`` — WikiArt's slugs ("pierre-auguste-renoir") and museum names ("Pierre-Auguste Renoir")
    then name the same hand."""
    ascii_name = unicodedata.normalize("NFKD", str(name)).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")


def artist_groups(labels: pd.DataFrame, column: str = "artist") -> pd.Series:
    """One group name per row: the artist's :func:`artist_key`, or a unique name for rows without one."""
    if column not in labels.columns:
        raise InputError(f"the labels have no {column!r} column (columns: {', '.join(labels.columns)})")
    names = labels[column].astype("string").str.strip()
    missing = names.isna() | (names == "")
    keys = names.where(missing, names.fillna("").map(artist_key))
    missing |= keys == ""
    return keys.where(~missing, "\0row" + labels.index.astype(str))


def split_by_artist(
    labels: pd.DataFrame, validation_fraction: float = 0.3, seed: int = 0, column: str = "artist"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, validation) rows, with about ``validation_fraction`` of the *artists* in validation.

    The same table and seed always give the same split; the artists are shuffled, not the images.
    """
    if not 0.0 < validation_fraction < 1.0:
        raise ConfigError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
    groups = artist_groups(labels, column)
    artists = np.array(sorted(groups.unique()))
    if len(artists) < 2:
        raise InputError(f"need at least 2 artists to split, found {len(artists)}")
    rng = np.random.default_rng(seed)
    rng.shuffle(artists)
    n_val = min(len(artists) - 1, max(1, round(validation_fraction * len(artists))))
    in_val = groups.isin(set(artists[:n_val]))
    return labels[~in_val], labels[in_val]
