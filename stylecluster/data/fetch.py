"""``stylecluster fetch``: a IIIF collection or manifest into a folder of images and a labels.csv
that ``embed``, ``evaluate``, ``report`` and ``plot`` read as they are.

Layout of ``DIR/``::

    images/<manifest>-<hash>/<canvas>-<hash>.jpg   one image per canvas; names are made from the
                             manifest and canvas ids (letters, digits and ``-`` only, plus a hash
                             of the whole id): no text from a server reaches a path unfiltered
    labels.csv               path, artist, title, date, year, rights, attribution, homepage, then
                             the ids that ``export-iiif`` needs (:data:`LABEL_COLUMNS`)
    _skipped.csv             item, reason: every collection, manifest or canvas this run skipped
    _fetched.jsonl           one line per completed image (the resume journal)
    _iiif/<sha256>.json      the collections and manifests as read

Resume
------
An image is complete once its file has been renamed into place (:func:`~stylecluster.io.save_atomic`)
and then its line appended to ``_fetched.jsonl``. A rerun skips every canvas whose line is there
and whose file has the recorded size, and reads the collections and manifests from ``_iiif/``
(``--refresh`` reads them from the servers again), so a rerun of a finished fetch sends no
request at all. A killed run loses at most the images in flight: a torn last journal line is
ignored, and a file renamed into place just before the kill is fetched again.
A complete image is kept as it is: a rerun with another ``--size`` fetches only what is missing.

The journal is appended to rather than rewritten: rewriting a table of every completed item
after each image would cost O(n²) writes (1,000 rewrites of a growing 200 KB file for 1,000
canvases); ``labels.csv`` is written, atomically, once at the end (and on Ctrl-C).
"""
from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

from ..errors import InputError, MissingInputError
from ..io import check_writable, printable, save_atomic
from .decode import BadImage, decode_image
from .http import Client, ClientSettings, FetchFailed
from .iiif import CanvasRecord, Document, NotIIIF, image_request, is_http_url, parse_document

log = logging.getLogger("stylecluster")

LABEL_COLUMNS = ("path", "artist", "title", "date", "year", "rights", "attribution", "homepage", "manifest", "canvas",
                 "service", "service_type", "service_profile", "image_url", "width", "height")
JOURNAL = "_fetched.jsonl"
SKIPPED = "_skipped.csv"
DOCUMENTS = "_iiif"
JSON_ACCEPT = 'application/ld+json;profile="http://iiif.io/api/presentation/3/context.json", application/ld+json, application/json;q=0.9, */*;q=0.1'
IMAGE_ACCEPT = "image/jpeg, image/*;q=0.9"

# What the first bytes of each image format embed accepts look like.
_MAGIC = ((b"\xff\xd8\xff", ".jpg"), (b"\x89PNG\r\n\x1a\n", ".png"), (b"GIF87a", ".gif"), (b"GIF89a", ".gif"),
          (b"II*\x00", ".tif"), (b"MM\x00*", ".tif"), (b"BM", ".bmp"))
# save_atomic's temporary files (.NAME.<pid>-<n>.tmp.jpg); a killed run leaves them behind.
_TEMPORARY = re.compile(r"\..+\.\d+-\d+\.tmp.*")


@dataclass
class FetchOptions:
    size: int = 1024  # longer side requested from the Image API
    concurrency: int = 4
    max_depth: int = 5  # collections below the source followed this deep
    max_items: int | None = None  # canvases at most, in the collection's order
    refresh: bool = False  # read collections and manifests from the servers again
    max_image_bytes: int = 50 * 2**20
    max_json_bytes: int = 20 * 2**20
    max_pixels: int = 200_000_000
    min_side: int = 32
    client: ClientSettings = field(default_factory=ClientSettings)


@dataclass
class FetchReport:
    out: Path
    canvases: int = 0  # canvases found (within --max-items)
    downloaded: int = 0
    resumed: int = 0  # complete before this run
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (item, reason)
    not_followed: int = 0  # collections or manifests deeper than --max-depth
    beyond_limit: bool = False  # more canvases than --max-items

    @property
    def complete(self) -> int:
        return self.downloaded + self.resumed

    def summary_lines(self) -> list[str]:
        lines = [f"{self.complete} of {self.canvases} canvases in {printable(self.out / 'images')}: "
                 f"{self.downloaded} downloaded, {self.resumed} already complete, {len(self.skipped)} skipped"]
        if self.skipped:
            lines.append(f"skipped items and reasons: {printable(self.out / SKIPPED)}")
        if self.not_followed:
            lines.append(f"{self.not_followed} collections or manifests deeper than --max-depth were not followed")
        if self.beyond_limit:
            lines.append("the source has more canvases than --max-items: rerun with a larger limit to fetch more")
        lines.append(f"labels: {printable(self.out / 'labels.csv')}")
        return lines


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _slug(identifier: str, limit: int = 40) -> str:
    path = urlsplit(identifier).path if is_http_url(identifier) else identifier
    return re.sub(r"[^A-Za-z0-9]+", "-", path).strip("-")[-limit:].strip("-") or "item"


def image_stem(record: CanvasRecord) -> str:
    """``images/<manifest>-<hash>/<canvas>-<hash>``: only ASCII letters, digits and ``-`` from
    the ids (no ``..``, no separator, no hidden name), and a hash of each whole id."""
    return f"images/{_slug(record.manifest)}-{_digest(record.manifest)[:10]}/{_slug(record.canvas)}-{_digest(record.canvas)[:10]}"


def item_key(record: CanvasRecord) -> str:
    return _digest(f"{record.manifest}\n{record.canvas}")


def image_suffix(body: bytes, content_type: str) -> str:
    """The file suffix of an image body; :class:`FetchFailed` when the body is not an image."""
    mime = content_type.split(";")[0].strip().lower()
    if mime and not mime.startswith("image/") and mime not in ("application/octet-stream", "binary/octet-stream"):
        raise FetchFailed(f"not an image (Content-Type {mime[:60]})")
    if body[:4] == b"RIFF" and body[8:12] == b"WEBP":
        return ".webp"
    suffix = next((suffix for magic, suffix in _MAGIC if body.startswith(magic)), None)
    if suffix is None:
        raise FetchFailed("not an image (content not recognised as an image format)")
    return suffix


def load_json(body: bytes) -> object:
    try:
        return json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise FetchFailed("not JSON") from None
    except RecursionError:
        raise FetchFailed("JSON nested too deeply") from None


class _Journal:
    """The completed images, one JSON line each, appended under a lock."""

    def __init__(self, out: Path):
        self.path = out / JOURNAL
        self._lock = threading.Lock()

    def completed(self, out: Path) -> dict[str, dict]:
        done = {}
        if not self.path.is_file():
            return done
        for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                entry = json.loads(line)
                file = out / entry["path"]
                if file.is_file() and file.stat().st_size == entry["bytes"]:
                    done[entry["key"]] = entry
            except (ValueError, KeyError, TypeError, OSError):
                continue  # the torn last line of a killed run
        return done

    def add(self, entry: dict) -> None:
        line = json.dumps(entry, ensure_ascii=True) + "\n"
        with self._lock, open(self.path, "a", encoding="utf-8") as f:
            f.write(line)


class _Documents:
    """Collections and manifests by URL: from ``_iiif/`` when read before, else from the server."""

    def __init__(self, client: Client, folder: Path, options: FetchOptions):
        self.client, self.folder, self.options = client, folder, options

    def load(self, url: str) -> Document:
        cached = self.folder / f"{_digest(url)}.json"
        if not self.options.refresh and cached.is_file():
            document = load_json(cached.read_bytes())
        else:
            body = self.client.get(url, self.options.max_json_bytes, JSON_ACCEPT).content
            document = load_json(body)
            save_atomic(cached, body)
        try:
            return parse_document(document, fallback_id=url)
        except NotIIIF as exc:
            raise FetchFailed(str(exc)) from None


def local_source(source: str) -> Path | None:
    """The local file a source names (a path or a ``file:`` URL); None for an http(s) URL;
    :class:`InputError` for any other scheme."""
    if is_http_url(source):
        return None
    parts = urlsplit(source)
    if parts.scheme == "file":
        return Path(url2pathname(parts.path))
    if len(parts.scheme) > 1:  # one letter: a Windows drive
        raise InputError(f"{printable(source)}: only http(s) URLs and local files are read")
    return Path(source)


def _check_folder(out: Path) -> None:
    """Refuse an output that cannot be written or is a folder holding something other than an earlier fetch."""
    check_writable(out, folder=True)
    if out.is_dir() and any(out.iterdir()) and not (out / JOURNAL).exists():
        raise InputError(f"{printable(out)}: exists and was not made by `stylecluster fetch`; choose a new or empty folder")


def _remove_temporary_files(out: Path) -> None:
    """The temporary files of writes a killed run left behind (called under the fetch's lock)."""
    for folder, _, files in os.walk(out):
        for name in files:
            if _TEMPORARY.fullmatch(name):
                Path(folder, name).unlink(missing_ok=True)


class Fetcher:
    """One fetch into ``out``: crawl the documents, then download the missing images."""

    def __init__(self, out: Path, options: FetchOptions, quiet: bool = False):
        self.out, self.options, self.quiet = out, options, quiet
        self.client = Client(options.client)
        self.documents = _Documents(self.client, out / DOCUMENTS, options)
        self.journal = _Journal(out)
        self.report = FetchReport(out)

    def skip(self, item: str, reason: object) -> None:
        log.warning("skipped %s: %s", printable(item), printable(reason))
        self.report.skipped.append((item, str(reason)))

    def crawl(self, root_id: str, root: Document, pool: ThreadPoolExecutor) -> list[CanvasRecord]:
        """Canvases in the collection's order (breadth first), each (manifest, canvas) once,
        at most ``max_items``; documents are read ``concurrency`` × 4 at a time."""
        limit, depth = self.options.max_items, 0
        records: dict[str, CanvasRecord] = {}
        level: list[tuple[str, Document | None]] = [(root_id, root)]
        visited = {root_id}
        batch_size = 4 * self.options.concurrency
        while level:
            children = []
            for start in range(0, len(level), batch_size):
                batch = level[start : start + batch_size]
                loaded = [pool.submit(self.documents.load, url) if document is None else None for url, document in batch]
                for (url, document), future in zip(batch, loaded):
                    try:
                        document = document or future.result()
                    except FetchFailed as exc:
                        self.skip(url, exc)
                        continue
                    for child, _kind in document.children:
                        if child in visited:
                            continue
                        visited.add(child)
                        if depth >= self.options.max_depth:
                            self.report.not_followed += 1
                        else:
                            children.append((child, None))
                    for record in document.canvases:
                        records.setdefault(item_key(record), record)
                if limit is not None and len(records) >= limit:
                    self.report.beyond_limit = len(records) > limit or start + batch_size < len(level) or bool(children)
                    return list(records.values())[:limit]
            level, depth = children, depth + 1
        return list(records.values())

    def download(self, record: CanvasRecord) -> dict:
        """Fetch one canvas's image into its file; the journal entry. :class:`FetchFailed` says why not."""
        info = None
        if record.service:
            try:
                info = load_json(self.client.get(f"{record.service}/info.json", self.options.max_json_bytes, JSON_ACCEPT).content)
            except FetchFailed as exc:
                if not record.image_url:
                    raise FetchFailed(f"image service info.json: {exc}") from None
                log.debug("%s: info.json: %s; using the image's own URL", printable(record.canvas), printable(exc))
            info = info if isinstance(info, dict) else None
        url = image_request(record, info, self.options.size)
        if not url:
            raise FetchFailed("the canvas has no image URL and no image service")
        response = self.client.get(url, self.options.max_image_bytes, IMAGE_ACCEPT)
        suffix = image_suffix(response.content, response.content_type)
        try:
            decode_image(response.content, self.options.max_pixels, self.options.min_side)
        except BadImage as exc:
            raise FetchFailed(str(exc)) from None
        path = image_stem(record) + suffix
        save_atomic(self.out / path, response.content)
        entry = {"key": item_key(record), "path": path, "bytes": len(response.content), "image_url": url}
        self.journal.add(entry)
        return entry

    def run(self, source: str) -> FetchReport:
        root_id, root = self.read_root(source)
        done = self.journal.completed(self.out)
        rows: dict[str, dict] = {}
        with ThreadPoolExecutor(self.options.concurrency, thread_name_prefix="fetch") as pool:
            records = self.crawl(root_id, root, pool)
            self.report.canvases = len(records)
            pending = []
            for record in records:
                entry = done.get(item_key(record))
                if entry is None:
                    pending.append(record)
                else:
                    rows[item_key(record)] = label_row(record, entry)
                    self.report.resumed += 1
            log.info("%d canvases found, %d already complete, %d to fetch", len(records), self.report.resumed, len(pending))
            try:
                self._download_all(pending, pool, rows)
            finally:
                self._write_tables(records, rows)
        return self.report

    def read_root(self, source: str) -> tuple[str, Document]:
        """The source document: a URL through the document cache, a local file as it is now."""
        path = local_source(source)
        try:
            if path is None:
                return source, self.documents.load(source)
            if not path.is_file():
                raise MissingInputError(f"{printable(source)}: no such file")
            if path.stat().st_size > self.options.max_json_bytes:
                raise FetchFailed(f"larger than {self.options.max_json_bytes:,} bytes")
            root_id = path.resolve().as_uri()
            return root_id, parse_document(load_json(path.read_bytes()), fallback_id=root_id)
        except (FetchFailed, NotIIIF) as exc:
            raise InputError(f"{printable(source)}: {exc}") from None

    def _download_all(self, pending: list[CanvasRecord], pool: ThreadPoolExecutor, rows: dict[str, dict]) -> None:
        from tqdm.auto import tqdm

        futures = {pool.submit(self.download, record): record for record in pending}
        try:
            with tqdm(total=len(pending), unit="image", desc="fetch", disable=self.quiet or not pending) as bar:
                for future in as_completed(futures):
                    record = futures[future]
                    try:
                        rows[item_key(record)] = label_row(record, future.result())
                        self.report.downloaded += 1
                    except FetchFailed as exc:
                        self.skip(record.canvas, exc)
                    bar.update()
        except BaseException:
            for future in futures:
                future.cancel()
            raise

    def _write_tables(self, records: list[CanvasRecord], rows: dict[str, dict]) -> None:
        ordered = [rows[key] for key in (item_key(r) for r in records) if key in rows]
        write_csv(self.out / "labels.csv", LABEL_COLUMNS, ordered)
        write_csv(self.out / SKIPPED, ("item", "reason"), [{"item": item, "reason": reason} for item, reason in self.report.skipped])


def label_row(record: CanvasRecord, entry: dict) -> dict:
    row = {k: v for k, v in asdict(record).items() if k in LABEL_COLUMNS}
    row.update(path=entry["path"], image_url=entry["image_url"])
    return {k: "" if v is None else v for k, v in row.items()}


def write_csv(path: Path, columns, rows: list[dict]) -> None:
    def write(tmp: Path) -> None:
        # backslashreplace: an id with a lone surrogate (valid JSON) cannot be written as UTF-8
        with open(tmp, "w", newline="", encoding="utf-8", errors="backslashreplace") as f:
            writer = csv.DictWriter(f, columns)
            writer.writeheader()
            writer.writerows(rows)

    save_atomic(path, write)


def fetch_iiif(source: str, out: str | Path, options: FetchOptions | None = None, quiet: bool = False) -> FetchReport:
    """Fetch every canvas of a IIIF collection or manifest into ``out`` (module docstring)."""
    from filelock import FileLock, Timeout

    options = options or FetchOptions()
    for name in ("size", "concurrency"):
        if getattr(options, name) < 1:
            raise InputError(f"--{name} must be at least 1")
    if options.max_depth < 0 or (options.max_items is not None and options.max_items < 1):
        raise InputError("--max-depth must be at least 0 and --max-items at least 1")
    out = Path(out)
    _check_folder(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / JOURNAL).touch()
    lock = FileLock(str(out / ".fetch.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.warning("another fetch is writing %s; waiting for it to finish", printable(out))
        lock.acquire()
    try:
        _remove_temporary_files(out)
        return Fetcher(out, options, quiet).run(source)
    finally:
        lock.release()
