"""Joining a Ray cluster, one way for every engine that runs per-row work on Ray.

``embed --engine ray`` (features/ray_engine.py) and ``cluster`` / ``assign --engine ray``
(cluster/ray_assign.py) enter a :class:`RaySession` before they make any output: ``--address`` is
checked for form and for an answer first (:func:`check_address`), so a cluster that cannot be
joined costs one line and leaves nothing behind. Ray is imported here alone: the local engines
never need it (``pip install "stylecluster[ray]"``).
"""
from __future__ import annotations

import logging
import re
import socket

from .errors import InputError

#: Seconds to wait for a cluster's address to answer. ``ray.init`` itself retries an address
#: where nothing listens for minutes (still retrying after 300 s, with an empty store made).
CONNECT_SECONDS = 10.0
#: A host name, an IPv4 address or a bracketed IPv6 address.
_HOST = re.compile(r"[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\]")


def check_address(address: str | None, timeout: float = CONNECT_SECONDS) -> None:
    """InputError (one line) unless ``address`` is None, ``auto``, or a ``[ray://]host:port``
    that accepts a connection within ``timeout`` seconds — checked before any output is made."""
    if address is None or address == "auto":
        return
    rest = address[len("ray://"):] if address.startswith("ray://") else address
    host, colon, port = rest.rpartition(":")
    if not colon or not _HOST.fullmatch(host) or not port.isdigit() or not 0 < int(port) < 65536:
        raise InputError(f"--address {address!r}: expected HOST:PORT of a running Ray cluster (e.g. 10.0.0.5:6379), ray://HOST:PORT or 'auto'")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        reason = "no answer" if isinstance(exc, TimeoutError) else exc.strerror or str(exc)
        raise InputError(f"--address {address}: no Ray cluster answers there ({reason} within {timeout:.0f} s); "
                         "start one with `ray start --head`, or leave --address out to run Ray on this machine") from None


def import_ray():
    """Ray with Ray Data, or one line saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401  (Ray Data is the engine; `ray` alone lacks it)
    except ImportError:
        raise InputError('--engine ray needs Ray Data: pip install "stylecluster[ray]"') from None
    return ray


class RaySession:
    """A context manager that joins the cluster at ``address`` (None: starts Ray on this machine
    for the run and stops it afterwards; an already initialised Ray is used as it is)."""

    def __init__(self, address: str | None = None, quiet: bool = False):
        check_address(address)
        self.address, self.quiet = address, quiet
        self._ray, self._started = None, False

    def __enter__(self):
        self._ray = ray = import_ray()
        self._started = not ray.is_initialized()
        if self._started:
            try:
                ray.init(address=self.address, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=not self.quiet)
            except (ConnectionError, RuntimeError, ValueError) as exc:  # an address that answered but is not Ray's
                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise InputError(f"--address {self.address}: cannot join a Ray cluster there ({reason})") from None
        return self

    def __exit__(self, *exc_info) -> None:
        if self._started:
            self._ray.shutdown()
            self._started = False

    @property
    def ray(self):
        if self._ray is None:
            raise RuntimeError(f"{type(self).__name__} used outside `with`")
        return self._ray
