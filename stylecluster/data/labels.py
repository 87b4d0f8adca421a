"""The one reader of labels CSVs: a ``path`` column (relative to an images folder) and label columns;
and the one reading of a year from a label (:func:`parse_year`)."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..errors import InputError

_YEAR = re.compile(r"(?<!\d)(\d{3,4})(?!\d)")


def parse_year(value) -> float:
    """A year from a number or a free-text date; NaN when there is none."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return np.nan
    if isinstance(value, (int, float, np.integer, np.floating)):
        return float(value)
    match = _YEAR.search(str(value))
    return float(match.group(1)) if match else np.nan


def read_labels(path: str | Path, column: str | None, keep: Sequence[str] = ()) -> pd.DataFrame:
    """A labels table with a ``path`` column, the requested label ``column`` (rows without a label
    dropped; None: no label column required) and the ``keep`` columns as they are (a row without
    one stays, e.g. an image of an unknown artist). Each path appears once, with ``/`` separators."""
    table = pd.read_csv(path)
    columns = ["path", *([column] if column else []), *[c for c in keep if c != column]]
    for needed in columns:
        if needed not in table.columns:
            raise InputError(f"{path}: no {needed!r} column (columns: {', '.join(table.columns)})")
    table = table[columns].dropna(subset=columns[: 2 if column else 1])
    table["path"] = table["path"].astype(str).str.replace("\\", "/", regex=False)
    return table.drop_duplicates("path")
