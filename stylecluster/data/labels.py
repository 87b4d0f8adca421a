"""The one reader of labels CSVs: a ``path`` column (relative to an images folder) and label columns."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

from ..errors import InputError


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
