"""OTLP/HTTP export over one kept-alive ``http.client`` connection.

The official OTLP/HTTP exporter sends through a ``requests`` session. Per
export, the session merges its settings with the environment (proxies,
``.netrc``, CA bundle variables), builds a prepared request, goes through
urllib3's pool and retry objects and wraps the response: hundreds of
microseconds of Python, all of it holding the GIL in the worker's export
thread while the worker's requests wait, and the first export alone
touches (and so copies, in a forked worker) some 2 MiB of the master's
pages. ``LeanHTTPTransport`` writes the same POST with ``http.client`` on
one connection kept alive between exports.

Only the transport changes. The official client around it
(``opentelemetry.exporter.otlp.common.http``) still does everything else
as it does for the session: the endpoint, headers, timeout and compression
from the ``OTEL_EXPORTER_OTLP_*`` variables, the retries with backoff on
retryable statuses and on connection errors (a kept-alive connection the
collector closed is one: the client tries again at once, on a new
connection), ``Retry-After``, and the deadline.

``lean_applies`` keeps the session wherever it would send something else:
HTTPS (its CA bundle and client certificates), an HTTP proxy from the
environment for that host, a ``.netrc`` (its credentials), or a credential
provider session (``OTEL_PYTHON_EXPORTER_OTLP_HTTP_*CREDENTIAL_PROVIDER``).
"""

from __future__ import annotations

import http.client
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import urlsplit

from opentelemetry.exporter.http.transport._base import BaseHTTPResult, BaseHTTPTransport

from hookkit._sinks.tracing.otlp_encode import Pieces

CREDENTIAL_PROVIDERS = (
    "OTEL_PYTHON_EXPORTER_OTLP_HTTP_CREDENTIAL_PROVIDER",
    "OTEL_PYTHON_EXPORTER_OTLP_HTTP_TRACES_CREDENTIAL_PROVIDER",
)
_PROXIES = ("http_proxy", "all_proxy")


def _proxy_variables(environ: Mapping[str, str]) -> dict[str, str]:
    """The ``*_proxy`` variables by lower-case name (lower-case names win,
    as in ``urllib.request.getproxies_environment``)."""
    found: dict[str, str] = {}
    for name, value in environ.items():
        if value and name.lower().endswith("_proxy") and name.lower() not in found:
            found[name.lower()] = value
    for name, value in environ.items():
        if value and name.endswith("_proxy"):
            found[name] = value
    return found


def _bypassed(host: str, port: int | None, no_proxy: str) -> bool:
    """Whether ``no_proxy`` names ``host`` (``*``, the host, the host and
    port, or a domain it is in)."""
    for entry in (part.strip().lower() for part in no_proxy.split(",")):
        if not entry:
            continue
        if entry == "*" or entry in (host, f"{host}:{port}"):
            return True
        domain = entry.lstrip(".")
        if domain and host.endswith("." + domain):
            return True
    return False


def _has_netrc(environ: Mapping[str, str]) -> bool:
    """Whether requests would read credentials from a netrc file."""
    named = environ.get("NETRC")
    if named:
        return os.path.exists(os.path.expanduser(named))
    home = environ.get("HOME") or os.path.expanduser("~")
    return any(os.path.exists(os.path.join(home, name)) for name in (".netrc", "_netrc"))


def lean_applies(url: str, environ: Mapping[str, str]) -> bool:
    """Whether ``LeanHTTPTransport`` sends to ``url`` what a requests
    session would, under ``environ`` (see the module docstring)."""
    if any(environ.get(name) for name in CREDENTIAL_PROVIDERS):
        return False
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return False
    host = (parts.hostname or "").lower()
    if parts.scheme.lower() != "http" or not host or parts.username or parts.password:
        return False
    proxies = _proxy_variables(environ)
    if any(proxies.get(name) for name in _PROXIES) and not _bypassed(
        host, port, proxies.get("no_proxy", "")
    ):
        return False
    return not _has_netrc(environ)


@dataclass(frozen=True, slots=True)
class LeanHTTPResult(BaseHTTPResult):
    """A response (or the error met before one)."""

    body: bytes = b""
    header_map: Any = field(default=None, hash=False, compare=False)

    def content(self) -> bytes:
        return self.body

    def headers(self) -> Mapping[str, str]:
        # http.client's HTTPMessage: case-insensitive, as the interface asks.
        return cast(Mapping[str, str], self.header_map if self.header_map is not None else {})


class LeanHTTPTransport(BaseHTTPTransport):
    """Requests over one ``http.client.HTTPConnection``, kept alive between
    them; dropped on any error (the client retries connection errors)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._connection: http.client.HTTPConnection | None = None
        self._target: tuple[str, int] | None = None
        self._pid = os.getpid()

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
        data: bytes | None = None,
    ) -> BaseHTTPResult:
        if self._pid != os.getpid():
            # A forked child (the SDK's batch processor restarts its thread
            # in one): the kept-alive connection and the lock are the
            # parent's. The child closes only its own descriptor.
            self._lock = threading.Lock()
            self._pid = os.getpid()
            self._drop()
        with self._lock:
            try:
                return self._send(method, url, headers or {}, timeout, data)
            except Exception as error:
                self._drop()
                return LeanHTTPResult(error=error)

    def _send(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        timeout: float | None,
        data: bytes | None,
    ) -> LeanHTTPResult:
        parts = urlsplit(url)
        target = (parts.hostname or "", parts.port or http.client.HTTP_PORT)
        connection = self._connection
        if connection is None or self._target != target:
            self._drop()
            connection = http.client.HTTPConnection(*target, timeout=timeout)
            self._connection, self._target = connection, target
        else:
            connection.timeout = timeout
            if connection.sock is not None:
                connection.sock.settimeout(timeout)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        body: Any
        if isinstance(data, Pieces):
            # Sent piece by piece (otlp_encode.Pieces), its length given.
            headers = {**headers, "Content-Length": str(len(data))}
            body = data.chunks
        else:
            # A view, not the bytes: http.client copies bytes bodies into
            # the headers' buffer to send them with one call (TCP_NODELAY
            # is set).
            body = memoryview(data) if data is not None else None
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        content = response.read()
        if response.will_close:
            self._drop()
        return LeanHTTPResult(
            status_code=response.status,
            reason=response.reason,
            body=content,
            header_map=response.headers,
        )

    def _drop(self) -> None:
        connection, self._connection, self._target = self._connection, None, None
        if connection is not None:
            connection.close()

    def is_connection_error(self, exception: Exception | None) -> bool:
        """Refused, reset, timed out, or a response that never came."""
        return isinstance(exception, OSError | http.client.HTTPException)

    def close(self) -> None:
        with self._lock:
            self._drop()

    def __del__(self) -> None:
        # An exporter dropped without shutdown closes its connection, as a
        # requests session's pool does, rather than leave the socket to
        # the garbage collector (a ResourceWarning).
        connection = getattr(self, "_connection", None)
        if connection is not None:
            connection.close()
