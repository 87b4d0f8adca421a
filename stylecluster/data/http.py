"""A polite, bounded HTTP client for museum servers: what ``stylecluster fetch`` downloads with.

* **Polite**: a small pool (one keep-alive connection per worker thread; the fetch runs 4 by
  default), a ``User-Agent`` naming the tool and its version, and on 429 / 503 the wait the
  server asks for in ``Retry-After`` (capped at :attr:`ClientSettings.max_retry_after`).
* **Patient**: connection errors, timeouts, bodies cut short and 429 / 5xx answers are retried
  :attr:`ClientSettings.retries` times with exponential backoff and full jitter (so that the
  workers do not come back in step).
* **Bounded**: connect and read timeouts; a body larger than its limit is refused while it
  streams (before it is held in memory), and so is a ``Content-Length`` that announces one.
* **Only http(s)**: redirects are followed by hand, each hop checked, so that a server cannot
  send the client to ``file:``, ``ftp:`` or any other scheme.

A proxy named by ``HTTP_PROXY`` / ``HTTPS_PROXY`` (and ``NO_PROXY``) is used, as pip and
requests do.

Failures that are the item's — a 404, an oversized body, a redirect elsewhere — raise
:class:`FetchFailed` with a one-line reason; the caller skips the item and goes on.
"""
from __future__ import annotations

import email.utils
import random
import threading
import time
from dataclasses import dataclass
from urllib.parse import urljoin

import requests
from requests.adapters import HTTPAdapter

from .._version import __version__
from .iiif import is_http_url

USER_AGENT = f"stylecluster/{__version__} (+IIIF fetch)"
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
#: Answers whose Retry-After header is honoured.
RETRY_AFTER_STATUS = frozenset({429, 503})
REDIRECT_STATUS = frozenset({301, 302, 303, 307, 308})


class FetchFailed(Exception):
    """One URL could not be fetched; ``str(exc)`` is the one-line reason."""


@dataclass
class ClientSettings:
    retries: int = 4
    backoff: float = 0.5  # seconds before the first retry; doubled each time, with full jitter
    max_backoff: float = 30.0
    max_retry_after: float = 120.0
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    max_redirects: int = 5


@dataclass
class Response:
    url: str  # after redirects
    content: bytes
    content_type: str


def retry_after(value: str | None, cap: float) -> float | None:
    """Seconds a ``Retry-After`` header asks for (delta-seconds or an HTTP date), at most ``cap``."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), cap)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return min(max(0.0, when.timestamp() - time.time()), cap)


class Client:
    """GETs with retries, limits and scheme checks; safe to share between threads (one
    ``requests.Session`` per thread)."""

    def __init__(self, settings: ClientSettings | None = None):
        self.settings = settings or ClientSettings()
        self._local = threading.local()

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.headers["User-Agent"] = USER_AGENT
            adapter = HTTPAdapter(pool_connections=1, pool_maxsize=1, max_retries=0)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            self._local.session = session
        return session

    def _delay(self, attempt: int) -> float:
        return random.uniform(0, min(self.settings.max_backoff, self.settings.backoff * 2**attempt))

    def get(self, url: str, max_bytes: int, accept: str = "*/*") -> Response:
        """The body of ``url`` (at most ``max_bytes``), retried as the module says."""
        last = "no attempt"
        for attempt in range(self.settings.retries + 1):
            if attempt:
                time.sleep(wait)
            try:
                return self._get_once(url, max_bytes, accept)
            except _Retryable as exc:
                last = str(exc)
                wait = exc.wait if exc.wait is not None else self._delay(attempt)
        raise FetchFailed(f"{last} (after {self.settings.retries + 1} attempts)")

    def _get_once(self, url: str, max_bytes: int, accept: str) -> Response:
        s = self.settings
        for _ in range(s.max_redirects + 1):
            if not is_http_url(url):
                raise FetchFailed(f"refused: not an http(s) URL ({url[:200]})")
            try:
                answer = self._session().get(url, stream=True, allow_redirects=False, timeout=(s.connect_timeout, s.read_timeout),
                                             headers={"Accept": accept})
            except requests.Timeout:
                raise _Retryable("timed out") from None
            except requests.ConnectionError as exc:
                raise _Retryable(f"connection failed ({type(exc).__name__})") from None
            except (requests.RequestException, ValueError) as exc:  # a URL requests cannot use (port 99999, ...)
                raise FetchFailed(f"unusable URL ({type(exc).__name__}: {url[:200]})") from None
            with answer:
                if answer.status_code in REDIRECT_STATUS:
                    try:
                        url = urljoin(url, answer.headers.get("Location", ""))
                    except ValueError:
                        raise FetchFailed("unusable redirect") from None
                    continue
                if answer.status_code in RETRY_STATUS:
                    wait = retry_after(answer.headers.get("Retry-After"), s.max_retry_after) if answer.status_code in RETRY_AFTER_STATUS else None
                    raise _Retryable(f"HTTP {answer.status_code}", wait)
                if answer.status_code != 200:
                    raise FetchFailed(f"HTTP {answer.status_code}")
                return Response(answer.url, _read_body(answer, max_bytes), answer.headers.get("Content-Type", ""))
        raise FetchFailed(f"more than {s.max_redirects} redirects")


class _Retryable(Exception):
    def __init__(self, reason: str, wait: float | None = None):
        super().__init__(reason)
        self.wait = wait


def _read_body(answer: requests.Response, max_bytes: int) -> bytes:
    announced = answer.headers.get("Content-Length", "")
    if announced.isdigit() and int(announced) > max_bytes:
        raise FetchFailed(f"too large ({int(announced):,} bytes > {max_bytes:,})")
    parts, size = [], 0
    try:
        for part in answer.iter_content(64 * 1024):
            size += len(part)
            if size > max_bytes:
                raise FetchFailed(f"too large (more than {max_bytes:,} bytes)")
            parts.append(part)
    except (requests.exceptions.ChunkedEncodingError, requests.ConnectionError):
        # urllib3 checks the body against Content-Length: a connection closed early lands here
        raise _Retryable(f"truncated body (connection closed after {size:,} bytes)") from None
    except requests.Timeout:
        raise _Retryable("timed out while reading the body") from None
    except requests.RequestException as exc:  # e.g. a gzip body that does not decompress
        raise FetchFailed(f"unreadable body ({type(exc).__name__})") from None
    return b"".join(parts)
