"""The WSGI app the benchmark serves: as small as an app with routes can be,
so what is measured is gunicorn and its hooks, not the application.

Two routes, ``/`` and ``/items/<id>`` (the id a whole number), and the
Kubernetes probes ``/healthz``, ``/readyz`` and ``/livez``; anything else is a
404. A plain WSGI app tells hookkit the route template it matched in
``environ["hookkit.route"]`` (README, "Route templates": "any other"), so
hookkit labels ``http_route`` and names the span ``GET /items/<id>``; bare
gunicorn and the hand-rolled peer serve the same app and ignore the key.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

BODY = b"Hello, world!\n"
HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))]
ITEM_ROUTE = "/items/<id>"
_ITEM_PREFIX = "/items/"
_PROBES = frozenset(("/healthz", "/readyz", "/livez"))
_OK = b"ok\n"
_NOT_FOUND = b"not found\n"


def _text(start_response: Callable[..., Any], status: str, body: bytes) -> list[bytes]:
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """``/``: a fixed body; ``/items/<id>``: the item's id; the probes: ok."""
    path = environ.get("PATH_INFO", "")
    if path == "/":
        environ["hookkit.route"] = "/"
        start_response("200 OK", HEADERS)
        return [BODY]
    item = path[len(_ITEM_PREFIX) :] if path.startswith(_ITEM_PREFIX) else ""
    if item.isdigit():
        environ["hookkit.route"] = ITEM_ROUTE
        return _text(start_response, "200 OK", b"item " + item.encode() + b"\n")
    if path in _PROBES:
        environ["hookkit.route"] = path
        return _text(start_response, "200 OK", _OK)
    return _text(start_response, "404 Not Found", _NOT_FOUND)
