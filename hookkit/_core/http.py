"""HTTP knowledge every sink shares: methods (``method_label``), the bound on
route labels (``RouteLimit``), ``Content-Length``, header text, query
redaction, and OpenTelemetry's stable HTTP server attributes, read from
gunicorn's request.

Everything here is on every traced request's path, so the work done per
request is small: the request headers are read once, query parameter names
are matched against the sensitive list through a cache, and header capture
costs nothing unless asked for.

Privacy by default:

- ``url.query`` keeps its shape but the values of sensitive parameters
  become ``REDACTED`` (semantic conventions: ``url.query``);
- request and response headers are captured only when named in
  ``OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST`` /
  ``..._RESPONSE``; ``Authorization``, ``Proxy-Authorization``, ``Cookie``
  and ``Set-Cookie`` are redacted unless named literally (a pattern such as
  ``.*`` never lets them through).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

REDACTED = "REDACTED"  # url.query values, as the semantic conventions spell it
HEADER_REDACTED = "[REDACTED]"  # header values, as the contrib instrumentations spell it

# Query parameters whose values are redacted: the semantic conventions' list
# (AWSAccessKeyId, Signature, sig, X-Goog-Signature) and the usual carriers of
# credentials. A parameter is sensitive when its name, in lower case,
# contains one of these anywhere: ``authorization``, ``PHPSESSID``,
# ``api_keys`` and ``token2`` included. That over-redacts a few harmless names
# (``keyword``, ``zipcode``): the safe side.
DEFAULT_SENSITIVE_QUERY = (
    "auth",
    "bearer",
    "code",
    "credential",
    "jwt",
    "key",
    "otp",
    "pass",
    "pwd",
    "secret",
    "sess",
    "sig",
    "token",
)

SENSITIVE_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})

KNOWN_METHODS = frozenset(
    {"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE"}
)
OTHER_METHOD = "_OTHER"

_CACHE_LIMIT = 1024


def request_headers(req: object) -> list[tuple[str, str]]:
    """The request's headers as (lower-case name, value) pairs.

    gunicorn's ASGI request keeps the raw bytes (``headers_bytes``, names
    already lower case) and builds its str copy only when something reads
    ``headers``; the WSGI request has ``headers`` with upper-case names.
    """
    raw = getattr(req, "headers_bytes", None)
    if raw is not None:
        return header_pairs(raw)
    return [(name.lower(), value) for name, value in getattr(req, "headers", None) or ()]


def split_host(host: str) -> tuple[str, int | None]:
    """``server.address`` and ``server.port`` from a Host header value:
    ``example.com:8080``, ``[::1]:8080``, ``[::1]``, ``example.com``."""
    host = host.strip()
    if host.startswith("["):
        end = host.find("]")
        if end == -1:
            return host, None
        address, rest = host[1:end], host[end + 1 :]
        port = rest[1:] if rest.startswith(":") else ""
    elif host.count(":") == 1:
        address, _, port = host.partition(":")
    else:  # a bare name, or an IPv6 address without brackets
        return host, None
    return address, _port(port)


def ascii_int(text: str) -> int | None:
    """A whole number written in ASCII digits, else None (``str.isdigit``
    also takes ``²``, which ``int`` refuses); no surrounding spaces."""
    if text.isascii() and text.isdigit():
        return int(text)
    return None


def _port(text: str) -> int | None:
    """A TCP port, 1 to 65535."""
    if len(text) > 5:
        return None
    port = ascii_int(text)
    return port if port is not None and 0 < port < 65536 else None


def text(value: object) -> str:
    """A header name or value as text (gunicorn's are str, ASGI's bytes)."""
    return value.decode("latin-1") if isinstance(value, bytes) else str(value)


def header_pairs(headers: object) -> list[tuple[str, str]]:
    """(name, value) pairs as text, from str or bytes pairs."""
    return [(text(name), text(value)) for name, value in headers or ()]  # type: ignore[attr-defined]


def content_length(req: object, environ: object = None) -> int | None:
    """The request body's size, from its Content-Length header (the WSGI
    environ has it at hand; otherwise the request's headers are read).
    Only ASCII digits count: ``Content-Length: ²`` is no length."""
    if isinstance(environ, dict) and "wsgi.input" in environ:
        raw = environ.get("CONTENT_LENGTH")
        if not raw or not isinstance(raw, str):
            return None
        # ascii_int inlined: this runs on every request.
        raw = raw.strip()
        return int(raw) if raw.isascii() and raw.isdigit() else None
    for name, value in getattr(req, "headers", None) or ():
        if text(name).upper() == "CONTENT-LENGTH":
            return ascii_int(text(value).strip())
    return None


def method_label(method: object) -> str:
    """The method, or ``_OTHER`` for anything outside the standard set."""
    return method if isinstance(method, str) and method in KNOWN_METHODS else OTHER_METHOD


# The schemes an HTTP server's request can have (a WebSocket session is not
# a request here): anything else is a bug upstream, kept out of the labels.
_SCHEMES = frozenset(("http", "https"))


def scheme_label(scheme: object) -> str:
    """``url.scheme``: ``http`` or ``https``; anything else ``_OTHER``."""
    return scheme if isinstance(scheme, str) and scheme in _SCHEMES else OTHER_METHOD


class RouteLimit:
    """At most ``limit`` distinct routes per process; the rest are ``_OTHER``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.seen: set[str] = set()

    def label(self, route: object) -> str:
        """The route label: empty when the app gave none."""
        if not isinstance(route, str) or not route:
            return ""
        if route in self.seen:
            return route
        if len(self.seen) < self.limit:
            self.seen.add(route)
            return route
        return OTHER_METHOD


def method_attributes(method: str) -> tuple[str, str | None]:
    """(``http.request.method``, ``http.request.method_original`` or None)."""
    if method in KNOWN_METHODS:
        return method, None
    return OTHER_METHOD, method


class QueryRedactor:
    """Redacts the values of sensitive query parameters, keeping the rest."""

    def __init__(self, names: Iterable[str] = DEFAULT_SENSITIVE_QUERY) -> None:
        self.names = tuple(sorted({name.strip().lower() for name in names if name.strip()}))
        self._known: dict[str, bool] = {}

    def is_sensitive(self, name: str) -> bool:
        """Whether the values of parameter ``name`` are redacted."""
        known = self._known.get(name)
        if known is not None:
            return known
        lowered = name.lower()
        sensitive = any(term in lowered for term in self.names)
        if len(self._known) < _CACHE_LIMIT:
            self._known[name] = sensitive
        return sensitive

    def redact(self, query: str) -> str:
        """``query`` with each sensitive parameter's value replaced by ``REDACTED``."""
        if not query:
            return query
        parts = query.split("&")
        for index, part in enumerate(parts):
            name, sep, value = part.partition("=")
            if sep and value and self.is_sensitive(_unquote_name(name)):
                parts[index] = f"{name}={REDACTED}"
        return "&".join(parts)


def _unquote_name(name: str) -> str:
    if "%" in name or "+" in name:
        from urllib.parse import unquote_plus

        return unquote_plus(name)
    return name


@dataclass(frozen=True)
class HeaderCapture:
    """Which headers become ``http.request.header.<name>`` /
    ``http.response.header.<name>`` attributes, and which are sanitized.

    ``names`` are the configured entries, each a case-insensitive regular
    expression matched against the whole header name, as the contrib
    instrumentations read them; ``sanitize`` likewise for the names whose
    values become ``[REDACTED]``.
    """

    names: tuple[str, ...] = ()
    sanitize: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "_match", _full_match(self.names))
        object.__setattr__(self, "_sanitize", _full_match(self.sanitize))
        literal = {name.lower() for name in self.names}
        object.__setattr__(self, "_allowed_sensitive", SENSITIVE_HEADERS & literal)

    def __bool__(self) -> bool:
        return bool(self.names)

    def attributes(
        self, prefix: str, headers: Iterable[tuple[str, str]]
    ) -> dict[str, tuple[str, ...]]:
        """The captured headers as attributes named ``prefix + name``; a
        repeated header gives one value per line, in order."""
        match: AnyPattern | None = self._match  # type: ignore[attr-defined]
        if match is None:
            return {}
        sanitize: AnyPattern | None = self._sanitize  # type: ignore[attr-defined]
        allowed: frozenset[str] = self._allowed_sensitive  # type: ignore[attr-defined]
        captured: dict[str, list[str]] = {}
        for raw_name, value in headers:
            name = raw_name.lower()
            if not match.fullmatch(name):
                continue
            hidden = (name in SENSITIVE_HEADERS and name not in allowed) or (
                sanitize is not None and sanitize.fullmatch(name)
            )
            captured.setdefault(name, []).append(HEADER_REDACTED if hidden else value)
        return {prefix + name: tuple(values) for name, values in captured.items()}


class AnyPattern:
    """Several regular expressions, searched as few as possible: those that
    can share one expression are folded into one alternation (one search,
    not one per pattern). A pattern with global flags of its own (``(?i)``
    must stay at its start, which ``re`` requires), groups a back-reference
    could name, or a fold ``re`` refuses stays compiled on its own."""

    def __init__(self, patterns: Sequence[str], flags: int = 0) -> None:
        self.sources = tuple(patterns)
        self.patterns = _folded([re.compile(pattern, flags) for pattern in patterns], flags)

    def search(self, text: str) -> bool:
        """Whether any pattern is found in ``text``."""
        patterns = self.patterns
        if len(patterns) == 1:  # folded into one: no generator
            return patterns[0].search(text) is not None
        return any(pattern.search(text) for pattern in patterns)

    def fullmatch(self, text: str) -> bool:
        """Whether any pattern matches all of ``text``."""
        return any(pattern.fullmatch(text) for pattern in self.patterns)


_BACK_REFERENCE = re.compile(r"\\[1-9]|\(\?P=")


def _folded(compiled: list[re.Pattern[str]], flags: int) -> tuple[re.Pattern[str], ...]:
    """``compiled`` with every pattern that can be folded into one."""
    plain = re.compile("", flags).flags
    foldable = [
        p
        for p in compiled
        if p.flags == plain and not p.groupindex and not _BACK_REFERENCE.search(p.pattern)
    ]
    if len(foldable) < 2:
        return tuple(compiled)
    try:
        fold = re.compile("|".join(f"(?:{p.pattern})" for p in foldable), flags)
    except re.error:
        return tuple(compiled)
    return (fold, *(p for p in compiled if p not in foldable))


def _full_match(patterns: Sequence[str]) -> AnyPattern | None:
    if not patterns:
        return None
    return AnyPattern(patterns, re.IGNORECASE)


def parse_list(value: str | None) -> tuple[str, ...]:
    """A comma-separated list, blanks dropped."""
    if not value:
        return ()
    return tuple(item.strip() for item in value.split(",") if item.strip())
