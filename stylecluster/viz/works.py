"""What the labels table says about each work besides its label: year, title, artist, date, and
the link to its record.

These feed the named clusters' spans, the timeline, the map's search box and hover panel, and the
report's cards. They are optional: a table without them gives empty texts and no years.

Years are read from a ``year`` column, else a ``date`` column. Museum dates are free text
("c. 1615", "1885–86", "1890s"): the first three- or four-digit number is taken as the year, so
a range counts from its start. Anything else (empty, "n.d.") has no year.

The record's link is the ``homepage`` column (``stylecluster fetch`` writes the museum's page of
the work there); only an absolute http(s) URL is kept — a ``javascript:`` or ``data:`` value from
a labels table never becomes a link.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..data.iiif import is_http_url
from ..data.labels import parse_year

#: Columns tried, in order, for each fact.
YEAR_COLUMNS = ("year", "date")
TEXT_COLUMNS = ("title", "artist", "date")
#: The column holding the URL of each work's record; it becomes the fact ``link``.
LINK_COLUMN = "homepage"

def record_link(value) -> str:
    """``value`` when it is an absolute http(s) URL, else ""."""
    return value.strip() if is_http_url(value) else ""


def when(year: float, date: str = "") -> str:
    """The date as the museum wrote it, else the year, else ""."""
    return date or ("" if year is None or np.isnan(year) else str(int(year)))


def no_facts(index: pd.Index) -> pd.DataFrame:
    """The facts of works the labels say nothing about."""
    return pd.DataFrame({"year": np.nan, **{column: "" for column in (*TEXT_COLUMNS, "link")}}, index=index)


def work_facts(labels_csv: str | Path, paths: pd.Series) -> tuple[pd.DataFrame, str | None]:
    """``year`` (float, NaN if unknown), ``title``, ``artist``, ``date`` and ``link`` (str, "" if
    unknown) for ``paths``, row for row, and the name of the column the years came from (None without one)."""
    table = pd.read_csv(labels_csv, dtype=object)
    table["path"] = table["path"].astype(str).str.replace("\\", "/", regex=False)
    table = table.drop_duplicates("path").set_index("path")
    rows = table.reindex(paths.to_numpy())
    year_column = next((c for c in YEAR_COLUMNS if c in table.columns and table[c].notna().any()), None)
    facts = pd.DataFrame(index=paths.index)
    facts["year"] = rows[year_column].map(parse_year).to_numpy(dtype=np.float64) if year_column else np.nan
    for column in TEXT_COLUMNS:
        facts[column] = rows[column].fillna("").astype(str).to_numpy() if column in table.columns else ""
    facts["link"] = rows[LINK_COLUMN].map(record_link).to_numpy() if LINK_COLUMN in table.columns else ""
    return facts, year_column
