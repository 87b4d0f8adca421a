"""IIIF Presentation documents (API 2.1 and 3.0) read into what a fetch needs: the collections
to follow, and one :class:`CanvasRecord` per canvas — its painting image, its Image API service,
and the work's title, artist, date, rights, attribution and homepage.

Only the parts of the two specifications that describe a painting are read; everything else is
ignored. A document that is not a Collection or a Manifest of either version raises
:class:`NotIIIF` (a web page, a search result, an ``info.json``): the caller skips it with a line.

Museums write metadata as free text in many shapes (a string, a list, ``{"@value": ...}``
objects, 3.0 language maps, HTML such as ``<a href="...">Rembrandt</a>``). :func:`text_of`
flattens each to one plain line; the artist and the date are the first ``metadata`` entries
whose label names them (:data:`ARTIST_WORDS`, :data:`DATE_WORDS`), in the manifest's order.
"""
from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from .labels import parse_year

#: Words of a metadata label that make it the artist's (e.g. "Artist / Maker", "Creator").
ARTIST_WORDS = frozenset({"artist", "artists", "creator", "creators", "author", "maker", "makers", "painter", "attributed"})
#: Words of a metadata label that make it the date (e.g. "Date", "Date made", "Creation date").
DATE_WORDS = frozenset({"date", "dates", "dated", "created"})
#: Languages preferred, in order, when a 3.0 language map has several (then its first).
LANGUAGES = ("en", "none", "@none")

_TAG = re.compile(r"</?[A-Za-z][^>]*>")  # markup, not a "<" in a title
# Control characters and lone surrogates (valid in JSON as \u escapes, not in a UTF-8 file).
_UNWANTED = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_SPACE = re.compile(r"\s+")
_WORD = re.compile(r"[a-z]+")


class NotIIIF(ValueError):
    """A JSON document that is not a IIIF Presentation Collection or Manifest (2.1 or 3.0)."""


@dataclass
class CanvasRecord:
    """One canvas of a manifest: where its image is, and what the manifest says of the work."""

    manifest: str
    canvas: str
    title: str = ""
    artist: str = ""
    date: str = ""
    year: int | None = None
    rights: str = ""
    attribution: str = ""
    homepage: str = ""
    width: int | None = None
    height: int | None = None
    image_url: str = ""  # the painting annotation's own body, the fallback without a service
    service: str = ""  # the Image API service's id (no trailing slash)
    service_type: str = ""  # "ImageService2" or "ImageService3"
    service_profile: str = ""  # "level0", "level1", "level2" or "" when unknown


@dataclass
class Document:
    """What one document holds: ``children`` (collection members to fetch: (url, kind)) and ``canvases``."""

    kind: str  # "Collection" or "Manifest"
    version: int  # 2 or 3
    children: list[tuple[str, str]] = field(default_factory=list)
    canvases: list[CanvasRecord] = field(default_factory=list)


def is_http_url(value: object) -> bool:
    """Whether ``value`` is an absolute http(s) URL with a host: the only links stylecluster follows or shows."""
    if not isinstance(value, str):
        return False
    try:
        parts = urlsplit(value.strip())
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def text_of(value: Any) -> str:
    """Plain one-line text of a label or metadata value in any of the shapes 2.1 and 3.0 allow."""
    if value is None:
        return ""
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return _SPACE.sub(" ", _UNWANTED.sub(" ", html.unescape(_TAG.sub(" ", value)))).strip()
    if isinstance(value, list):
        return "; ".join(t for t in (text_of(v) for v in value) if t)
    if isinstance(value, dict):
        if "@value" in value:
            return text_of(value["@value"])
        for language in (*LANGUAGES, *value):
            if language in value:
                return text_of(value[language])
    return ""


def _id(resource: Any) -> str:
    if isinstance(resource, str):
        return resource
    if isinstance(resource, dict):
        value = resource.get("id", resource.get("@id", ""))
        return value if isinstance(value, str) else ""
    return ""


def _type(resource: dict) -> str:
    value = resource.get("type", resource.get("@type", ""))
    value = value[0] if isinstance(value, list) and value else value
    return value.split(":")[-1] if isinstance(value, str) else ""


def _list(value: Any) -> list:
    return value if isinstance(value, list) else [] if value is None else [value]


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < 2**31 else None


def version_of(document: Any) -> int:
    """2 or 3; :class:`NotIIIF` when the document is not a Presentation Collection or Manifest."""
    if not isinstance(document, dict):
        raise NotIIIF("not a JSON object")
    contexts = " ".join(c for c in _list(document.get("@context")) if isinstance(c, str))
    kind = _type(document)
    if kind not in ("Collection", "Manifest"):
        raise NotIIIF(f"not a IIIF Collection or Manifest (type {kind or 'missing'!r})")
    if "presentation/3" in contexts or isinstance(document.get("type"), str) and "@type" not in document:
        return 3
    if "presentation/2" in contexts or "@type" in document:
        return 2
    raise NotIIIF("no IIIF Presentation context")


def _metadata(document: dict, words: frozenset[str]) -> str:
    for entry in _list(document.get("metadata")):
        if isinstance(entry, dict) and set(_WORD.findall(text_of(entry.get("label")).lower())) & words:
            value = text_of(entry.get("value"))
            if value:
                return value
    return ""


def _homepage(document: dict, version: int) -> str:
    links = _list(document.get("homepage") if version == 3 else document.get("related"))
    return next((_id(link).strip() for link in links if is_http_url(_id(link))), "")


def _attribution(document: dict, version: int) -> str:
    if version == 3:
        return text_of((document.get("requiredStatement") or {}).get("value") if isinstance(document.get("requiredStatement"), dict) else "")
    return text_of(document.get("attribution"))


def _rights(document: dict, version: int) -> str:
    value = document.get("rights") if version == 3 else document.get("license")
    return text_of(_id(value) if isinstance(value, dict) else value)


def _service(body: dict) -> tuple[str, str, str]:
    """(id, type, profile level) of the first Image API service of an image body."""
    for service in _list(body.get("service")):
        if not isinstance(service, dict):
            continue
        profile = " ".join(p if isinstance(p, str) else "" for p in _list(service.get("profile")))
        kind = _type(service)
        context = " ".join(c for c in _list(service.get("@context")) if isinstance(c, str))
        if kind.startswith("ImageService") or "api/image" in profile or "api/image" in context:
            version = "ImageService3" if kind == "ImageService3" or "image/3" in context else "ImageService2"
            level = re.search(r"level([012])", profile)
            service_id = _id(service).rstrip("/")
            if service_id:
                return service_id, version, f"level{level.group(1)}" if level else ""
    return "", "", ""


def _painting_body(canvas: dict, version: int) -> dict | None:
    """The image painted on a canvas: 3.0 items → AnnotationPage → painting Annotation → body
    (the first of a Choice); 2.1 images → resource."""
    if version == 3:
        annotations = [a for page in _list(canvas.get("items")) if isinstance(page, dict) for a in _list(page.get("items"))]
        bodies = [a.get("body") for a in annotations if isinstance(a, dict) and a.get("motivation", "painting") in ("painting", ["painting"])]
    else:
        bodies = [a.get("resource") for a in _list(canvas.get("images")) if isinstance(a, dict)]
    for body in bodies:
        for candidate in _list(body):
            if isinstance(candidate, dict) and _type(candidate) == "Choice":
                candidate = next((item for item in _list(candidate.get("items", candidate.get("item"))) if isinstance(item, dict)), None)
            if isinstance(candidate, dict) and _type(candidate) in ("Image", "dctypes:Image", ""):
                return candidate
    return None


def _canvases(document: dict, version: int) -> list[dict]:
    if version == 3:
        return [c for c in _list(document.get("items")) if isinstance(c, dict) and _type(c) == "Canvas"]
    sequences = [s for s in _list(document.get("sequences")) if isinstance(s, dict)]
    return [c for c in _list(sequences[0].get("canvases")) if isinstance(c, dict)] if sequences else []


def _children(document: dict, version: int) -> list[tuple[str, str]]:
    if version == 3:
        members = _list(document.get("items"))
    else:
        members = [*_list(document.get("collections")), *_list(document.get("manifests")), *_list(document.get("members"))]
    children = []
    for member in members:
        if isinstance(member, dict) and _type(member) in ("Collection", "Manifest") and _id(member):
            children.append((_id(member), _type(member)))
    return children


def parse_document(document: Any, fallback_id: str = "") -> Document:
    """A Collection's children or a Manifest's canvases; :class:`NotIIIF` when it is neither."""
    version = version_of(document)
    kind = _type(document)
    result = Document(kind, version)
    if kind == "Collection":
        result.children = _children(document, version)
        return result
    manifest_id = _id(document) or fallback_id
    title = text_of(document.get("label"))
    date = _metadata(document, DATE_WORDS)
    navdate = document.get("navDate") if isinstance(document.get("navDate"), str) else ""
    year = parse_year(navdate or date)
    work = dict(
        artist=_metadata(document, ARTIST_WORDS), date=date, year=None if year != year else int(year),
        rights=_rights(document, version), attribution=_attribution(document, version), homepage=_homepage(document, version),
    )
    canvases = _canvases(document, version)
    for number, canvas in enumerate(canvases, 1):
        body = _painting_body(canvas, version)
        if body is None:
            continue
        label = text_of(canvas.get("label"))
        service, service_type, profile = _service(body)
        record = CanvasRecord(
            manifest=manifest_id, canvas=_id(canvas) or f"{manifest_id}#canvas-{number}", width=_int(canvas.get("width")), height=_int(canvas.get("height")),
            title=f"{title} — {label}" if title and label and len(canvases) > 1 and label != title else title or label,
            image_url=_id(body), service=service, service_type=service_type, service_profile=profile, **work,
        )
        result.canvases.append(record)
    return result


def _level(value: Any) -> str:
    strings = [p for p in _list(value) if isinstance(p, str)]
    match = re.search(r"level([012])", " ".join(strings))
    return f"level{match.group(1)}" if match else ""


def _level0_sizes(info: dict) -> list[tuple[int, int]]:
    """Whole-image sizes a level-0 server has: its ``sizes``, and each tile scale at which the
    whole image fits in one tile."""
    sizes = [(w, h) for s in _list(info.get("sizes")) if isinstance(s, dict) for w, h in [(_int(s.get("width")), _int(s.get("height")))] if w and h]
    width, height = _int(info.get("width")), _int(info.get("height"))
    if width and height:
        for tile in _list(info.get("tiles")):
            if not isinstance(tile, dict) or not _int(tile.get("width")):
                continue
            tile_w = _int(tile["width"])
            tile_h = _int(tile.get("height")) or tile_w
            for factor in (f for f in _list(tile.get("scaleFactors")) if _int(f)):
                w, h = -(-width // int(factor)), -(-height // int(factor))
                if w <= tile_w and h <= tile_h:
                    sizes.append((w, h))
    return sizes


def image_request(record: CanvasRecord, info: dict | None, size: int) -> str:
    """The URL of a canvas's image at most ``size`` px on its longer side: ``full/!N,N/0/default.jpg``
    from a level 1–2 service; on a level-0 server (which has only the sizes it lists) the smallest
    listed size whose longer side is at least ``size``, else the largest, else the whole image;
    without a service (``info`` None), the painting annotation's own URL."""
    if info is None or not record.service:
        return record.image_url
    contexts = " ".join(c for c in _list(info.get("@context")) if isinstance(c, str))
    version = 3 if "image/3" in contexts or _type(info) == "ImageService3" else 2
    level = _level(info.get("profile")) or record.service_profile
    if level == "level0":
        sizes = _level0_sizes(info)
        big_enough = [s for s in sizes if max(s) >= size]
        if big_enough or sizes:
            w, h = min(big_enough, key=max) if big_enough else max(sizes, key=max)
            return f"{record.service}/full/{w},{h if version == 3 else ''}/0/default.jpg"
        return f"{record.service}/full/{'max' if version == 3 else 'full'}/0/default.jpg"
    limits = [v for v in (_int(info.get("maxWidth")), _int(info.get("maxHeight"))) if v]
    n = min([size, *limits])
    return f"{record.service}/full/!{n},{n}/0/default.jpg"
