"""What the labels table says about each work besides its label: year, title, artist.

These feed the named clusters' spans, the timeline, and the map's search box. They are optional:
a table without them gives empty titles and artists and no years.

Years are read from a ``year`` column, else a ``date`` column. Museum dates are free text
("c. 1615", "1885–86", "1890s"): the first three- or four-digit number is taken as the year, so
a range counts from its start. Anything else (empty, "n.d.") has no year.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

#: Columns tried, in order, for each fact.
YEAR_COLUMNS = ("year", "date")
TEXT_COLUMNS = ("title", "artist")

_YEAR = re.compile(r"(?<!\d)(\d{3,4})(?!\d)")


def parse_year(value) -> float:
    """A year from a number or a free-text date; NaN when there is none."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return np.nan
    if isinstance(value, (int, float, np.integer, np.floating)):
        return float(value)
    match = _YEAR.search(str(value))
    return float(match.group(1)) if match else np.nan


def work_facts(labels_csv: str | Path, paths: pd.Series) -> tuple[pd.DataFrame, str | None]:
    """``year`` (float, NaN if unknown), ``title`` and ``artist`` (str, "" if unknown) for ``paths``,
    row for row, and the name of the column the years came from (None without one)."""
    table = pd.read_csv(labels_csv, dtype=object)
    table["path"] = table["path"].astype(str).str.replace("\\", "/", regex=False)
    table = table.drop_duplicates("path").set_index("path")
    rows = table.reindex(paths.to_numpy())
    year_column = next((c for c in YEAR_COLUMNS if c in table.columns and table[c].notna().any()), None)
    facts = pd.DataFrame(index=paths.index)
    facts["year"] = rows[year_column].map(parse_year).to_numpy(dtype=np.float64) if year_column else np.nan
    for column in TEXT_COLUMNS:
        facts[column] = rows[column].fillna("").astype(str).to_numpy() if column in table.columns else ""
    return facts, year_column
