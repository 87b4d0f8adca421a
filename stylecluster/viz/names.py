"""A name for every cluster, made from its data, that an art historian can read and override.

* with labels: the top values and their shares among the cluster's labelled works, e.g.
  ``Baroque 71 % · Rococo 20 %`` — the first always, a second when it holds at least
  :data:`SECOND_SHARE` (below that it is noise, and names get long);
* with years: the span of the middle 80 % of its dated works, e.g. ``1690–1760``. The 10th–90th
  percentiles rather than min–max, because one mis-dated or late copy would otherwise stretch
  every span over centuries (wikiart's years include such works);
* neither: ``cluster 3``.

A small JSON file overrides any of them: ``{"3": "Venetian colour", "-1": "unplaced"}`` (keys
are cluster numbers as JSON strings; values non-empty strings). It is read as JSON only.

:func:`name_table` is the companion table of CLUSTERS.csv (``CLUSTERS.names.csv``): one row per
cluster with its name, the name made from the data, size, composition and span.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError, MissingInputError
from ..io import printable
from .data import NO_LABEL

log = logging.getLogger("stylecluster")

SECOND_SHARE = 0.10
TOP_VALUES = 2
MAX_NAME = 200
OUTLIERS = "outliers"


def _composition(labels: pd.Series) -> str:
    labels = labels[labels != NO_LABEL]
    if labels.empty:
        return ""
    shares = labels.value_counts(normalize=True)
    kept = [(value, share) for i, (value, share) in enumerate(shares.head(TOP_VALUES).items()) if i == 0 or share >= SECOND_SHARE]
    return " · ".join(f"{value} {share:.0%}".replace("%", " %") for value, share in kept)


def _span(years: pd.Series) -> str:
    years = years.dropna()
    if years.empty:
        return ""
    low, high = (int(round(v)) for v in np.percentile(years, [10, 90]))
    return str(low) if low == high else f"{low}–{high}"


def read_name_overrides(path: str | Path) -> dict[int, str]:
    """The overrides JSON as {cluster: name}; :class:`InputError` naming what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"{printable(path)}: no such names file")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{printable(path)}: not JSON ({printable(exc)})") from None
    except RecursionError:  # json nests by recursion: 100k levels of [[[...]]] exhaust the stack
        raise InputError(f"{printable(path)}: nested too deeply to be a names file (an object of cluster → name)") from None
    if not isinstance(raw, dict):
        raise InputError(f'{printable(path)}: must be a JSON object of cluster → name, e.g. {{"3": "Venetian colour"}}')
    names = {}
    for key, value in raw.items():
        try:
            cluster = int(key)
        except ValueError:
            raise InputError(f"{printable(path)}: key {printable(key)!r} is not a cluster number") from None
        if not isinstance(value, str) or not value.strip() or len(value) > MAX_NAME:
            raise InputError(f"{printable(path)}: the name of cluster {cluster} must be a non-empty string of at most {MAX_NAME} characters")
        names[cluster] = value.strip()
    return names


def name_table(points: pd.DataFrame, has_labels: bool, overrides: dict[int, str] | None = None) -> pd.DataFrame:
    """One row per cluster, largest first and outliers last: ``cluster``, ``name``, ``auto_name``,
    ``size``, ``share``, ``composition``, ``span``."""
    overrides = dict(overrides or {})
    sizes = points["cluster"].value_counts()
    unknown = sorted(set(overrides) - set(sizes.index))
    if unknown:
        log.warning("the names file names clusters that have no images: %s", ", ".join(map(str, unknown)))
    rows = []
    for cluster in sorted(sizes.index, key=lambda c: (c < 0, -sizes[c], c)):
        group = points[points["cluster"] == cluster]
        composition = _composition(group["label"]) if has_labels else ""
        span = _span(group["year"]) if "year" in group else ""
        auto = " · ".join(part for part in (composition, span) if part) or (OUTLIERS if cluster < 0 else f"cluster {cluster}")
        if cluster < 0 and auto != OUTLIERS:
            auto = f"{OUTLIERS}: {auto}"
        rows.append({
            "cluster": int(cluster), "name": overrides.get(int(cluster), auto), "auto_name": auto, "size": int(sizes[cluster]),
            "share": round(float(sizes[cluster] / len(points)), 4), "composition": composition, "span": span,
        })
    return pd.DataFrame(rows, columns=["cluster", "name", "auto_name", "size", "share", "composition", "span"])


def cluster_names(explorer, names: str | Path | dict[int, str] | None = None) -> pd.DataFrame:
    """:func:`name_table` of an explorer; ``names`` is an overrides JSON file or a dict."""
    overrides = read_name_overrides(names) if isinstance(names, (str, Path)) else names
    return name_table(explorer.points, explorer.has_labels, overrides)


#: First characters that make a spreadsheet run a cell as a formula (OWASP, CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with each text cell that a spreadsheet would run as a formula given a leading
    apostrophe — the rule the map's own CSV export applies in the browser (viz/map_tools.py):
    names come from labels and the user's names file, which are data, not formulas."""
    def cell(value):
        return "'" + value if isinstance(value, str) and value.startswith(FORMULA_STARTS) else value

    return table.assign(**{c: table[c].map(cell) for c in table.columns if pd.api.types.is_string_dtype(table[c]) or table[c].dtype == object})


def label_of(table: pd.DataFrame) -> dict[int, str]:
    """{cluster: "3 · name"} for legends and titles: the number keeps two equal names apart."""
    return {int(c): (name if c < 0 else f"{c} · {name}") for c, name in zip(table["cluster"], table["name"])}
