"""Time: when each cluster's works were made, and each cluster's share of every decade
(named ``chronology`` so that ``viz.timeline`` is the function, not this module).

Two plotly figures, for collections whose labels have a year or date (see :mod:`.works`):

* :func:`timeline_figure` — year against cluster, one ``Scattergl`` trace per cluster, each work
  a point (jittered vertically within its cluster's band so equal years stay visible); hovering
  names the work;
* :func:`decade_figure` — each cluster's share of the dated works of every decade, stacked to
  100 %: the evolution of styles across the collection. Shares, not counts, because collections
  are dated unevenly (wikiart has ten times more works per decade after 1850 than before), and
  counts would show the collecting, not the styles.

Clusters keep the map's colours (:func:`cluster_colours`). Works without a year are left out and
counted in the title. All hover and legend text is escaped (plotly renders a subset of HTML).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError
from ..io import check_writable, save_atomic
from .html import esc, page
from .names import cluster_names, label_of

GREY = "#9a9a9a"


def cluster_colours(table: pd.DataFrame) -> dict[int, str]:
    """The map's colours: the palette in order of size, outliers grey."""
    from .umap_map import _palette

    palette = _palette()
    real = [int(c) for c in table["cluster"] if c >= 0]
    colours = {c: palette[i % len(palette)] for i, c in enumerate(real)}
    colours[-1] = GREY
    return colours


def _dated(points: pd.DataFrame) -> pd.DataFrame:
    dated = points[points["year"].notna()]
    if dated.empty:
        raise InputError("no work has a year: the labels table needs a 'year' or 'date' column with values")
    return dated


def _untitled(n_undated: int) -> str:
    return f" ({n_undated} works without a year left out)" if n_undated else ""


#: Most works the timeline draws: each carries its hover text (~100 bytes in the page), so a
#: million dated works would make a 100 MB page; above this a seeded sample is drawn (the decade
#: shares always count every work).
TIMELINE_LIMIT = 20_000


def timeline_figure(points: pd.DataFrame, table: pd.DataFrame, seed: int = 0, limit: int = TIMELINE_LIMIT):
    """Year (x) against cluster (y), one trace per cluster; ``customdata`` is the point's position.

    At most ``limit`` works are drawn (a seeded sample of the dated ones, said in the title).
    """
    import plotly.graph_objects as go

    dated = _dated(points)
    n_dated = len(dated)
    present = set(dated["cluster"].unique())
    order = [int(c) for c in table["cluster"] if c in present]
    if n_dated > limit:
        dated = dated.sample(n=limit, random_state=seed).sort_index()
    labels, colours = label_of(table), cluster_colours(table)
    rng = np.random.default_rng(seed)
    fig = go.Figure()
    for row, cluster in enumerate(order):
        members = dated[dated["cluster"] == cluster]
        hover = [
            esc(f"{title or path} — {artist + ', ' if artist else ''}{int(year)}")
            for path, title, artist, year in zip(members["path"], members["title"], members["artist"], members["year"])
        ]
        fig.add_trace(go.Scattergl(
            x=members["year"].to_numpy(),
            y=row + rng.uniform(-0.3, 0.3, len(members)),
            mode="markers",
            name=f"{esc(labels[cluster])} ({len(members)})",
            customdata=members.index.to_numpy(),
            hovertext=hover,
            hoverinfo="text",
            marker={"size": 5, "opacity": 0.7, "color": colours[cluster], "line": {"width": 0}},
        ))
    fig.update_layout(
        title={"text": esc(f"When: {n_dated} dated works by cluster{_untitled(len(points) - n_dated)}"
                           + (f", a sample of {len(dated)} drawn" if len(dated) < n_dated else "")), "x": 0.01},
        template="plotly_white",
        height=max(320, 60 + 34 * len(order)),
        margin={"l": 10, "r": 10, "t": 50, "b": 40},
        hovermode="closest",
        showlegend=False,  # the y axis names the clusters
        xaxis={"title": "year"},
        yaxis={"tickvals": list(range(len(order))), "ticktext": [esc(labels[c]) for c in order], "autorange": "reversed", "zeroline": False},
    )
    return fig


def decade_shares(points: pd.DataFrame) -> pd.DataFrame:
    """Decades (rows, only those with dated works) × clusters (columns): share of the decade's works."""
    dated = _dated(points)
    decade = (dated["year"] // 10 * 10).astype(int)
    counts = pd.crosstab(decade, dated["cluster"])
    return counts.div(counts.sum(axis=1), axis=0)


def decade_figure(points: pd.DataFrame, table: pd.DataFrame):
    """Each cluster's share of every decade's dated works, stacked to 100 % (one trace per cluster)."""
    import plotly.graph_objects as go

    shares = decade_shares(points)
    labels, colours = label_of(table), cluster_colours(table)
    fig = go.Figure()
    for cluster in [int(c) for c in table["cluster"] if c in shares.columns]:
        fig.add_trace(go.Scatter(
            x=shares.index.to_numpy(),
            y=(100 * shares[cluster]).round(2).to_numpy(),
            mode="lines",
            stackgroup="shares",
            line={"width": 0.5, "color": colours[cluster]},
            name=esc(labels[cluster]),
            # the trace's (escaped) name labels the value; a name inside a template could hold "%{...}"
            hovertemplate="%{y:.0f} %",
        ))
    fig.update_layout(
        title={"text": "Each cluster's share of the dated works of every decade", "x": 0.01},
        template="plotly_white",
        height=460,
        margin={"l": 10, "r": 10, "t": 50, "b": 40},
        hovermode="x unified",
        xaxis={"title": "decade"},
        yaxis={"title": "share of the decade's works (%)", "range": [0, 100]},
        legend={"title": {"text": "cluster"}},
    )
    return fig


def timeline(explorer, names=None, seed: int = 0):
    """The timeline figure of an explorer (``names``: overrides, see :func:`~.names.cluster_names`)."""
    return timeline_figure(explorer.points, cluster_names(explorer, names), seed)


def decades(explorer, names=None):
    """The decade-shares figure of an explorer."""
    return decade_figure(explorer.points, cluster_names(explorer, names))


def time_fragment(points: pd.DataFrame, table: pd.DataFrame, include_plotlyjs: bool) -> str:
    """Both figures as HTML; plotly.js is inlined only with ``include_plotlyjs`` (once per page)."""
    import plotly.io as pio

    config = {"displaylogo": False, "responsive": True}
    parts = []
    for div_id, fig in (("sc-timeline", timeline_figure(points, table)), ("sc-decades", decade_figure(points, table))):
        parts.append(pio.to_html(fig, include_plotlyjs=include_plotlyjs, full_html=False, div_id=div_id, config=config))
        include_plotlyjs = False
    return "\n".join(parts)


def write_timeline(explorer, out: str | Path, names=None) -> Path:
    """A self-contained HTML page with the timeline and the decade shares (plotly.js inlined)."""
    out = check_writable(out)
    table = cluster_names(explorer, names)
    title = f"Time in {Path(explorer.store.path).name}"
    return save_atomic(out, page(title, f"<h1>{esc(title)}</h1>" + time_fragment(explorer.points, table, True)))
