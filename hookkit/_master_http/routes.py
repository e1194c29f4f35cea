"""What the master's HTTP server answers: basic auth, the paths, ``/metrics``.

``Router.answer`` turns one complete request head into the bytes of its
response. It runs in the worker pool (``pool.py``), never in the selector
thread, because checking a password (bcrypt) and collecting the metrics take
real time, and never raises: a route's handler that fails is a 500 and the
server goes on.

In order:

1. A head that is not HTTP/1.x: 400.
2. Basic auth, when the web config has users: 401 with
   ``WWW-Authenticate: Basic`` for every path and method, before anything
   else says whether a path exists.
3. A method other than GET or HEAD: 501.
4. ``/metrics``: the registry, collected under the master's fork guard (and
   only the collection: a fork never waits on a handler or a client), in
   the format ``Accept`` asks for (``choose_encoder``, so OpenMetrics, and
   with it the exemplars, when the scraper asks), restricted to the
   ``name[]`` of the query if any.
5. A path registered with ``route``: its handler, outside the fork guard.
   A private route answers only where strangers cannot reach it
   (``private_allowed``), else 403 saying why and how.
6. Anything else: 404.

Like prometheus_client's own handler, a 200 is gzipped when the client's
``Accept-Encoding`` names gzip, and ``HEAD`` gets the head of what ``GET``
would get.
"""

from __future__ import annotations

import copy
import gzip
import ipaddress
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder, gzip_accepted
from prometheus_client.metrics_core import Metric

from hookkit._aggregate.fork_guard import ForkGuard
from hookkit._master_http.messages import HeadError, Request, Response, parse_head, render
from hookkit._master_http.webconfig import WebConfig

METRICS_PATH = "/metrics"
TEXT = "text/plain; charset=utf-8"
NOT_FOUND = b"Not Found: the metrics are at /metrics\n"
BAD_REQUEST = Response(400, b"400 - Bad request syntax\n", TEXT)
UNAUTHORIZED = Response(401, b"Unauthorized\n", TEXT, (("WWW-Authenticate", "Basic"),))
NOT_IMPLEMENTED = Response(
    501, b"Not Implemented: only GET and HEAD\n", TEXT, (("Allow", "GET, HEAD"),)
)
# Rendered without a request (the selector's own answers, a failed render).
INTERNAL_ERROR = render(Response(500, b"Internal Server Error\n", TEXT))
HEAD_TOO_LARGE = render(Response(431, b"Request Header Fields Too Large\n", TEXT))


def private_allowed(host: str, web: WebConfig) -> bool:
    """Whether a private route may answer on an endpoint bound to ``host``:
    only a loopback address (reachable from this machine alone) or with
    basic auth configured (only its users get past the 401)."""
    if web.basic_auth_users:
        return True
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def forbidden(path: str) -> Response:
    """The 403 of a private route on an endpoint anyone may reach."""
    return Response(
        403,
        f"Forbidden: {path} shows the master's internals, so it is served only when "
        "the metrics endpoint is bound to a loopback address or asks for basic auth: "
        "set HOOKKIT_METRICS_BIND=127.0.0.1:PORT, or configure basic_auth_users in "
        "the file named by HOOKKIT_METRICS_WEB_CONFIG\n".encode(),
        TEXT,
    )


class _NamesOnly:
    """A registry's metrics with only the samples named in ``name[]``.

    prometheus_client's rule (a sample is kept when its own name, such as
    ``x_bucket``, is asked for), applied to what the registry collects: its
    ``restricted_registry`` finds only collectors that describe their names
    at registration, and hookkit's aggregate is read at scrape time, so it
    would find nothing.
    """

    def __init__(self, registry: CollectorRegistry, names: Iterable[str]) -> None:
        self._registry = registry
        self._names = frozenset(names)

    def collect(self) -> Iterable[Metric]:
        for metric in self._registry.collect():
            samples = [sample for sample in metric.samples if sample.name in self._names]
            if samples:
                kept = copy.copy(metric)
                kept.samples = samples
                yield kept


def _gzipped(response: Response, request: Request) -> Response:
    """``response`` gzipped if it is a 200, not encoded yet, and the client
    accepts gzip (prometheus_client's own handler does the same)."""
    if response.status != 200 or not gzip_accepted(request.headers.get("accept-encoding", "")):
        return response
    if any(name.lower() == "content-encoding" for name, _ in response.headers):
        return response
    return Response(
        200,
        gzip.compress(response.body),
        response.content_type,
        (*response.headers, ("Content-Encoding", "gzip")),
    )


class Router:
    """The paths of one endpoint and how each is answered."""

    def __init__(
        self,
        registry: CollectorRegistry,
        web: WebConfig,
        fork_guard: ForkGuard,
        host: Callable[[], str],
    ) -> None:
        self.registry = registry
        self.web = web
        self.fork_guard = fork_guard
        self._host = host  # the address bound, known once listening
        self._routes: dict[str, tuple[Callable[[Request], Response], bool]] = {}

    def route(self, path: str, handler: Callable[[Request], Response], private: bool) -> None:
        """Answer ``path`` with ``handler`` (replacing an earlier one)."""
        if not path.startswith("/") or path == METRICS_PATH:
            raise ValueError(f"cannot route {path!r}: a path other than {METRICS_PATH}")
        self._routes[path] = (handler, private)

    def answer(self, raw: bytes) -> bytes:
        """The bytes answering the request head ``raw``; never raises."""
        try:
            request = parse_head(raw)
        except HeadError:
            return render(BAD_REQUEST, extra=self.web.headers.items())
        try:
            response = _gzipped(self._respond(request), request)
            return render(
                response, head_only=request.method == "HEAD", extra=self.web.headers.items()
            )
        except Exception:
            return INTERNAL_ERROR

    def _respond(self, request: Request) -> Response:
        if not self.web.authorized(request.headers.get("authorization")):
            return UNAUTHORIZED
        if request.method not in ("GET", "HEAD"):
            return NOT_IMPLEMENTED
        if request.path == METRICS_PATH:
            return self._metrics(request)
        routed = self._routes.get(request.path)
        if routed is None:
            return Response(404, NOT_FOUND, TEXT)
        handler, private = routed
        if private and not private_allowed(self._host(), self.web):
            return forbidden(request.path)
        try:
            return handler(request)
        except Exception as exc:
            return Response(500, f"{request.path} failed: {exc!r}\n".encode(), TEXT)

    def _metrics(self, request: Request) -> Response:
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        names = request.query.get("name[]")
        source: Any = self.registry if names is None else _NamesOnly(self.registry, names)
        try:
            with self.fork_guard.collecting():
                body = encoder(source)
        except Exception as exc:
            return Response(500, f"collecting metrics failed: {exc!r}\n".encode(), TEXT)
        return Response(200, body, content_type)
