"""Clusters back out as IIIF: a Presentation 3.0 Collection with one Manifest per cluster, so the
clusters open in Mirador or the Universal Viewer beside the museum's own records.

Each Manifest is labelled as the report labels its cluster (``3 · Rembrandt 40 % · 1630–1660``,
:mod:`~stylecluster.viz.names`, overridable with the same names file) and lists the cluster's works
most typical first. Each Canvas keeps the museum's canvas id, size and image: its painting
annotation's body is the image ``fetch`` downloaded, with the original Image API service, so a
viewer zooms into the museum's own pixels; ``partOf`` points at the museum's manifest and
``homepage`` at the work's record. It needs the columns ``stylecluster fetch`` writes in
labels.csv (:data:`~stylecluster.data.fetch.LABEL_COLUMNS`).

The Manifests are embedded in the Collection, so one file holds the result. Ids are made under
``base_url``, the address of the folder where the file will be published (by default the
``file:`` URL of the folder it is written to): the Collection is ``<base_url>clusters.json``, its
Manifests ``<base_url>clusters/cluster-3``.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from urllib.parse import quote

import pandas as pd

from ..data.iiif import is_http_url
from ..data.labels import read_labels
from ..errors import InputError
from ..io import printable, save_atomic
from .data import NO_LABEL, default_label_column, read_clusters
from .names import label_of, name_table, read_name_overrides
from .works import work_facts

log = logging.getLogger("stylecluster")

CONTEXT = "http://iiif.io/api/presentation/3/context.json"
#: labels.csv columns the export cannot do without.
REQUIRED = ("manifest", "canvas", "image_url")
OPTIONAL = ("service", "service_type", "service_profile", "width", "height", "rights", "attribution", "homepage", "date")
_FORMATS = {".jpg": "image/jpeg", ".png": "image/png", ".gif": "image/gif", ".tif": "image/tiff", ".bmp": "image/bmp", ".webp": "image/webp"}


def _text(value: str) -> dict:
    return {"none": [value]}


def _entry(label: str, value: str) -> dict:
    return {"label": {"en": [label]}, "value": _text(value)}


def _service(row) -> list[dict]:
    if not is_http_url(row.service):
        return []
    level = row.service_profile or "level0"
    if row.service_type == "ImageService3":
        return [{"id": row.service, "type": "ImageService3", "profile": level}]
    return [{"@id": row.service, "@type": "ImageService2", "profile": f"http://iiif.io/api/image/2/{level}.json"}]


def _size(row, root: Path) -> tuple[int, int] | None:
    """The canvas's size, or the downloaded image's when the manifest gave none."""
    try:
        return int(float(row.width)), int(float(row.height))
    except (TypeError, ValueError):
        pass
    from PIL import Image

    try:
        with Image.open(root / row.path) as image:
            return image.size
    except (OSError, ValueError):
        return None


def _canvas(row, manifest_id: str, number: int, root: Path) -> dict | None:
    size = _size(row, root)
    if size is None or not is_http_url(row.image_url):
        log.warning("%s: left out of the export (%s)", printable(row.path), "no image URL" if size else "no canvas size and no image file")
        return None
    canvas_id = row.canvas if is_http_url(row.canvas) else f"{manifest_id}/canvas/{number}"
    body = {"id": row.image_url, "type": "Image", "format": _FORMATS.get(Path(row.path).suffix.lower(), "image/jpeg")}
    if _service(row):
        body["service"] = _service(row)
    who = ", ".join(v for v in (row.artist, row.date or ("" if pd.isna(row.year) else str(int(row.year)))) if v)
    canvas = {
        "id": canvas_id, "type": "Canvas", "label": _text(row.title or Path(row.path).name), "width": size[0], "height": size[1],
        "metadata": [*([_entry("Artist, date", who)] if who else []), _entry("Probability in the cluster", f"{row.probability:.3f}")],
        "items": [{"id": f"{manifest_id}/page/{number}", "type": "AnnotationPage", "items": [
            {"id": f"{manifest_id}/annotation/{number}", "type": "Annotation", "motivation": "painting", "target": canvas_id, "body": body}]}],
    }
    if row.attribution:
        canvas["requiredStatement"] = _entry("Attribution", row.attribution)
    if is_http_url(row.rights):
        canvas["rights"] = row.rights
    if is_http_url(row.homepage):
        canvas["homepage"] = [{"id": row.homepage, "type": "Text", "label": _text(row.title or "record"), "format": "text/html"}]
    if is_http_url(row.manifest):
        canvas["partOf"] = [{"id": row.manifest, "type": "Manifest"}]
    return canvas


def _points(clusters_csv: str | Path, labels_csv: str | Path, label_column: str | None) -> tuple[pd.DataFrame, str]:
    header = pd.read_csv(labels_csv, nrows=0).columns
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise InputError(f"{printable(labels_csv)}: no {', '.join(map(repr, missing))} column; export-iiif reads the labels.csv of `stylecluster fetch`")
    label_column = label_column or default_label_column(labels_csv)
    keep = [*REQUIRED, *(c for c in OPTIONAL if c in header)]
    labels = read_labels(labels_csv, None, keep=[label_column, *keep]).rename(columns={label_column: "label"})
    points = read_clusters(clusters_csv).merge(labels, on="path", how="inner")
    if points.empty:
        raise InputError(f"{printable(clusters_csv)}: none of its paths is in {printable(labels_csv)}")
    points["label"] = points["label"].astype(object).where(points["label"].notna(), NO_LABEL).astype(str)
    facts, _ = work_facts(labels_csv, points["path"])
    points = points.drop(columns=[c for c in facts.columns if c in points.columns and c != "label"]).join(facts)
    for column in (*REQUIRED, *OPTIONAL):
        points[column] = points[column].map(lambda v: "" if pd.isna(v) else str(v)) if column in points else ""
    return points, label_column


def cluster_collection(clusters_csv: str | Path, labels_csv: str | Path, base_url: str, file_name: str = "clusters.json",
                       label_column: str | None = None, names: str | Path | dict[int, str] | None = None) -> dict:
    """The Collection (a JSON-ready dict) published as ``file_name`` in the folder at ``base_url``."""
    points, label_column = _points(clusters_csv, labels_csv, label_column)
    overrides = read_name_overrides(names) if isinstance(names, (str, Path)) else names
    table = name_table(points, True, overrides)
    titles = label_of(table)
    root = Path(labels_csv).parent
    base_url = base_url.rstrip("/")
    prefix = f"{base_url}/{quote(Path(file_name).stem)}"
    manifests = []
    for cluster in table["cluster"]:
        manifest_id = f"{prefix}/{'outliers' if cluster < 0 else f'cluster-{cluster}'}"
        members = points[points["cluster"] == cluster].sort_values(["probability", "path"], ascending=[False, True])
        canvases = [c for number, row in enumerate(members.itertuples(index=False), 1) if (c := _canvas(row, manifest_id, number, root))]
        if canvases:
            manifests.append({"id": manifest_id, "type": "Manifest", "label": _text(titles[cluster]),
                              "summary": {"en": [f"{len(canvases)} works, most typical first; named from their {label_column} and dates"]},
                              "items": canvases})
    return {"@context": CONTEXT, "id": f"{base_url}/{quote(file_name)}", "type": "Collection",
            "label": {"en": [f"Style clusters ({len(manifests)})"]}, "items": manifests}


def write_cluster_collection(clusters_csv: str | Path, labels_csv: str | Path, out: str | Path, base_url: str | None = None,
                             label_column: str | None = None, names=None) -> dict:
    """Write :func:`cluster_collection` to ``out`` atomically; returns it."""
    out = Path(out)
    if base_url is None:
        base_url = out.resolve().parent.as_uri()
    elif not is_http_url(base_url):
        raise InputError(f"--base-url must be an http(s) URL, got {printable(base_url)}")
    collection = cluster_collection(clusters_csv, labels_csv, base_url, out.name, label_column, names)
    save_atomic(out, json.dumps(collection, ensure_ascii=False, indent=1))
    return collection
