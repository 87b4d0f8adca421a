"""A IIIF site on 127.0.0.1 (an ephemeral port) for the fetch tests and benchmark: static
Presentation documents, Image API ``info.json`` files and sized JPEGs, plus the ways a real
server fails — slow answers, 404, 429 with ``Retry-After``, truncated bodies, HTML where an
image should be, redirects to ``file:``. Every request is counted by path."""
from __future__ import annotations

import io
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from PIL import Image

CONTEXT3 = "http://iiif.io/api/presentation/3/context.json"
CONTEXT2 = "http://iiif.io/api/presentation/2/context.json"


@dataclass
class Route:
    body: bytes
    content_type: str = "application/json"
    status: int = 200
    delay: float = 0.0
    truncate: int | None = None  # send only this many bytes of the announced body, then close
    throttle: int = 0  # the first N requests get 429 with Retry-After: 1
    location: str | None = None


def jpeg(width: int, height: int, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(max(1, height // 8), max(1, width // 8), 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels, "RGB").resize((width, height)).save(out, "JPEG", quality=80)
    return out.getvalue()


class Site:
    def __init__(self):
        self.routes: dict[str, Route] = {}
        self.hits: Counter = Counter()
        self.agents: set[str] = set()
        self._lock = threading.Lock()
        site = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                path = self.path.split("?")[0]
                with site._lock:
                    site.hits[path] += 1
                    site.agents.add(self.headers.get("User-Agent", ""))
                    hit = site.hits[path]
                route = site.routes.get(path)
                if route is None:
                    return self._send(404, b"not found", "text/plain")
                if hit <= route.throttle:
                    return self._send(429, b"slow down", "text/plain", {"Retry-After": "1"})
                if route.delay:
                    time.sleep(route.delay)
                if route.location:
                    return self._send(route.status, b"", "text/plain", {"Location": route.location})
                self._send(route.status, route.body, route.content_type, truncate=route.truncate)

            def _send(self, status, body, content_type, headers=None, truncate=None):
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body if truncate is None else body[:truncate])
                if truncate is not None:
                    self.close_connection = True

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):
                pass  # a client that hangs up (a kill, a refused body) is part of the tests

        self.server = Server(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "Site":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def url(self, path: str) -> str:
        return self.base + path

    def add(self, path: str, body, **kwargs) -> str:
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        self.routes[path] = Route(body, **kwargs)
        return self.url(path)

    def image_hits(self) -> int:
        return sum(n for path, n in self.hits.items() if path.endswith(".jpg"))

    # ---------------------------------------------------------------- IIIF documents

    def level2_service(self, name: str, size: int, version: int = 3, seed: int = 0, width: int = 4000, height: int = 3000) -> str:
        """A level-2 service as static files: info.json and the one ``!size,size`` image fetch asks for."""
        service = f"/iiif/{name}"
        info = ({"@context": "http://iiif.io/api/image/3/context.json", "id": self.url(service), "type": "ImageService3", "profile": "level2"}
                if version == 3 else
                {"@context": "http://iiif.io/api/image/2/context.json", "@id": self.url(service), "profile": ["http://iiif.io/api/image/2/level2.json"]})
        self.add(f"{service}/info.json", {**info, "protocol": "http://iiif.io/api/image", "width": width, "height": height})
        scale = size / max(width, height)
        self.add(f"{service}/full/!{size},{size}/0/default.jpg", jpeg(round(width * scale), round(height * scale), seed), content_type="image/jpeg")
        return self.url(service)

    def level0_service(self, name: str, version: int = 3, seed: int = 0, sizes=((100, 75), (300, 225), (600, 450))) -> str:
        """A level-0 service: info.json listing ``sizes``, a file for each."""
        service = f"/iiif/{name}"
        info = ({"@context": "http://iiif.io/api/image/3/context.json", "id": self.url(service), "type": "ImageService3", "profile": "level0"}
                if version == 3 else
                {"@context": "http://iiif.io/api/image/2/context.json", "@id": self.url(service), "profile": ["http://iiif.io/api/image/2/level0.json"]})
        self.add(f"{service}/info.json", {**info, "width": 4000, "height": 3000, "sizes": [{"width": w, "height": h} for w, h in sizes]})
        for w, h in sizes:
            self.add(f"{service}/full/{w},{h if version == 3 else ''}/0/default.jpg", jpeg(w, h, seed), content_type="image/jpeg")
        return self.url(service)


def _canvas3(canvas_id: str, canvas: dict, number: int) -> dict:
    body = {"id": canvas["image"], "type": "Image", "format": "image/jpeg"}
    if canvas.get("service"):
        body["service"] = [dict(zip(("id", "type", "profile"), canvas["service"]))]
    annotation = {"id": f"{canvas_id}/page/a", "type": "Annotation", "motivation": "painting", "body": body, "target": canvas_id}
    return {"id": canvas_id, "type": "Canvas", "label": {"none": [canvas.get("label", f"p. {number}")]}, "width": canvas.get("width", 4000),
            "height": canvas.get("height", 3000), "items": [{"id": f"{canvas_id}/page", "type": "AnnotationPage", "items": [annotation]}]}


def _canvas2(canvas_id: str, canvas: dict, number: int) -> dict:
    resource = {"@id": canvas["image"], "@type": "dctypes:Image", "format": "image/jpeg"}
    if canvas.get("service"):
        resource["service"] = {"@context": "http://iiif.io/api/image/2/context.json", "@id": canvas["service"][0], "profile": canvas["service"][1]}
    return {"@id": canvas_id, "@type": "sc:Canvas", "label": canvas.get("label", f"p. {number}"), "width": 4000, "height": 3000,
            "images": [{"@type": "oa:Annotation", "motivation": "sc:painting", "resource": resource, "on": canvas_id}]}


def manifest(site: Site, path: str, label: str, canvases: list[dict], metadata=(), version: int = 3, **extra) -> str:
    """A manifest of Presentation ``version`` 3 or 2 (2.1) at ``path``; each canvas dict has ``image``
    (the body URL) and optionally ``service``: (id, type, profile) in 3.0, (id, profile URI) in 2.1."""
    manifest_id = site.url(path)
    items = [(_canvas3 if version == 3 else _canvas2)(f"{manifest_id}/canvas/{i}", canvas, i) for i, canvas in enumerate(canvases, 1)]
    if version == 3:
        document = {"@context": CONTEXT3, "id": manifest_id, "type": "Manifest", "label": {"en": [label]},
                    "metadata": [{"label": {"en": [k]}, "value": {"none": [v]}} for k, v in metadata], "items": items}
    else:
        document = {"@context": CONTEXT2, "@id": manifest_id, "@type": "sc:Manifest", "label": label,
                    "metadata": [{"label": k, "value": v} for k, v in metadata], "sequences": [{"@type": "sc:Sequence", "canvases": items}]}
    return site.add(path, {**document, **extra})


def collection3(site: Site, path: str, members: list[tuple[str, str]]) -> str:
    return site.add(path, {"@context": CONTEXT3, "id": site.url(path), "type": "Collection", "label": {"en": [path]},
                           "items": [{"id": url, "type": kind, "label": {"en": [url]}} for url, kind in members]})


def collection2(site: Site, path: str, manifests: list[str]) -> str:
    return site.add(path, {"@context": CONTEXT2, "@id": site.url(path), "@type": "sc:Collection", "label": path,
                           "manifests": [{"@id": url, "@type": "sc:Manifest", "label": url} for url in manifests]})


def flat_collection(site: Site, n: int, delay: float = 0.0, size: tuple[int, int] = (64, 48)) -> str:
    """One 3.0 collection of ``n`` one-canvas manifests whose images have no service (one request each)."""
    members = []
    for i in range(n):
        image = site.add(f"/flat/{i}.jpg", jpeg(*size, seed=i), content_type="image/jpeg", delay=delay)
        members.append((manifest(site, f"/flat/m{i}.json", f"work {i}", [{"image": image}], metadata=[("Artist", f"artist {i % 5}"), ("Date", str(1600 + i % 200))]), "Manifest"))
    return collection3(site, "/flat/collection.json", members)
