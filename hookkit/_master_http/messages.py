"""HTTP/1.x messages of the master's HTTP server: a request head parsed into
a plain value, a response rendered to bytes.

Only what scrapers, browsers and ``curl`` send is understood: a request line
``METHOD TARGET HTTP/1.x`` and header lines up to an empty line. Anything
else is a ``HeadError``, answered with 400. Every response closes its
connection (``Connection: close``): one request per connection keeps the
server's states to "reading a head, answering, writing", and Prometheus,
which would keep a connection alive, simply opens the next one per scrape.

These are the values the routing API hands to a route's handler
(``MetricsEndpoint.route``): a handler sees a ``Request`` and returns a
``Response``, and never touches a socket.
"""

from __future__ import annotations

import email.utils
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from types import MappingProxyType
from urllib.parse import parse_qs, urlsplit

VERSIONS = ("HTTP/1.0", "HTTP/1.1")


@dataclass(frozen=True)
class Request:
    """One request head. ``headers`` has lower-case names; a header sent
    twice has its values joined with ``", "``. ``query`` is the query string
    as ``urllib.parse.parse_qs`` reads it (``name[]`` filtering uses it)."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: Mapping[str, str]


@dataclass(frozen=True)
class Response:
    """What a handler answers. ``Content-Type``, ``Content-Length`` and
    ``Connection`` are set by the server; ``headers`` adds others."""

    status: int
    body: bytes
    content_type: str
    headers: tuple[tuple[str, str], ...] = ()


Handler = Callable[[Request], Response]


class HeadError(ValueError):
    """A request head that is not HTTP/1.x: answered with 400."""


def head_end(buffer: bytes | bytearray) -> int:
    """Where the head in ``buffer`` ends (just past its empty line), or -1
    while it is incomplete. Bare ``\\n`` line ends count, as http.server
    accepts them; empty lines before the request line are skipped (RFC 9112
    2.2)."""
    start = 0
    while buffer.startswith(b"\r\n", start) or buffer.startswith(b"\n", start):
        start += 2 if buffer.startswith(b"\r\n", start) else 1
    ends = [
        at + len(mark) for mark in (b"\r\n\r\n", b"\n\n") if (at := buffer.find(mark, start)) >= 0
    ]
    return min(ends) if ends else -1


def parse_head(raw: bytes) -> Request:
    """The ``Request`` of one complete head; ``HeadError`` if it is not one."""
    lines = raw.decode("latin-1").replace("\r\n", "\n").split("\n")
    while lines and not lines[0]:
        lines.pop(0)
    if not lines:
        raise HeadError("no request line")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        raise HeadError("the request line is not METHOD TARGET VERSION")
    method, target, version = parts
    if not method.isascii() or not method.isalpha() or not method.isupper():
        raise HeadError("the method is not a token")
    if version not in VERSIONS:
        raise HeadError("the version is not HTTP/1.0 or HTTP/1.1")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            break
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip() or not name.isascii():
            raise HeadError("a header line is not NAME: VALUE")
        name, value = name.lower(), value.strip(" \t")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    path, query = _target(target)
    return Request(method, path, parse_qs(query), MappingProxyType(headers))


def _target(target: str) -> tuple[str, str]:
    """(path, query string) of a request target, origin or absolute form."""
    if target.startswith("/"):
        path, _, query = target.partition("?")
        return path, query.partition("#")[0]
    if "://" in target:
        split = urlsplit(target)
        return split.path or "/", split.query
    raise HeadError("the target is not a path")


def render(
    response: Response, *, head_only: bool = False, extra: Iterable[tuple[str, str]] = ()
) -> bytes:
    """The bytes of ``response`` (its head alone for ``HEAD``, with the
    ``Content-Length`` of the body it would have had). ``extra`` headers come
    first (the web config's), then the response's own. A header that would
    split the response (a CR or LF in it) raises ValueError."""
    try:
        reason = HTTPStatus(response.status).phrase
    except ValueError:
        reason = ""
    lines = [
        f"HTTP/1.1 {response.status} {reason}",
        f"Date: {email.utils.formatdate(usegmt=True)}",
        "Connection: close",
        f"Content-Type: {response.content_type}",
        f"Content-Length: {len(response.body)}",
    ]
    for name, value in (("Content-Type", response.content_type), *extra, *response.headers):
        if any(c in name or c in value for c in "\r\n") or ":" in name:
            raise ValueError(f"header {name!r} cannot be sent")
        if name != "Content-Type":
            lines.append(f"{name}: {value}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if head_only else head + response.body
