"""Requests kept out: probes and health checks.

Kubernetes probes and load-balancer health checks hit ``/healthz`` every
few seconds; counted, they flood the access lines and skew the request rate
and latency. ``HOOKKIT_EXCLUDED_URLS`` and OpenTelemetry's
``OTEL_PYTHON_EXCLUDED_URLS`` are comma-separated regular expressions, each
*searched* (not matched) in the request's path and in its URL
``scheme://host/path`` (no query), so that both ``^/healthz$`` and the
contrib's URL-style patterns work.

An excluded request still runs the app, still counts towards
``requests_served`` and ``max_requests``, is still watched by the
slow-request watchdog and still makes its worker busy; it only stays out
of the request metrics, the access lines and the spans
(``Sink.request_excluded``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from hookkit._core.http import AnyPattern, parse_list
from hookkit._core.settings import ConfigError

OTEL_EXCLUDED_URLS = "OTEL_PYTHON_EXCLUDED_URLS"
SETTING = "HOOKKIT_EXCLUDED_URLS"


def compile_patterns(sources: list[tuple[str, str | None]]) -> AnyPattern | None:
    """The patterns of every (source, value), each compiled on its own (a
    pattern may start with a global flag such as ``(?i)``); a bad one is a
    ConfigError that names its source."""
    patterns: list[str] = []
    for source, value in sources:
        for pattern in parse_list(value):
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ConfigError(
                    f"{source}: {pattern!r} is not a valid regular expression ({exc})"
                ) from None
            patterns.append(pattern)
    return AnyPattern(patterns) if patterns else None


class ExcludedUrls:
    """The requests whose path or URL a configured pattern finds.

    A pattern that starts with ``^/`` and has no ``|`` (nor ``(?m)``) can
    only be found in the path: the URL starts with its scheme. Those (the
    usual probe set) are searched in the path alone, so no URL is built for
    them on every request."""

    __slots__ = ("anywhere", "path_only")

    def __init__(self, pattern: AnyPattern) -> None:
        path_only = [p for p in pattern.sources if _only_in_a_path(p)]
        anywhere = [p for p in pattern.sources if not _only_in_a_path(p)]
        self.path_only = AnyPattern(path_only) if path_only else None
        self.anywhere = AnyPattern(anywhere) if anywhere else None

    @classmethod
    def load(cls, setting: str | None, environ: Mapping[str, str]) -> ExcludedUrls | None:
        """From ``HOOKKIT_EXCLUDED_URLS``'s value and the environment's
        ``OTEL_PYTHON_EXCLUDED_URLS``; None when neither names a pattern."""
        pattern = compile_patterns(
            [(SETTING, setting), (OTEL_EXCLUDED_URLS, environ.get(OTEL_EXCLUDED_URLS))]
        )
        return None if pattern is None else cls(pattern)

    def excludes(self, req: Any) -> bool:
        """Whether gunicorn's request ``req`` is kept out."""
        path = getattr(req, "path", None) or ""
        path_only = self.path_only
        if path_only is not None and path_only.search(path):
            return True
        anywhere = self.anywhere
        if anywhere is None:
            return False
        if anywhere.search(path):
            return True
        scheme = getattr(req, "scheme", None) or "http"
        return anywhere.search(f"{scheme}://{_host(req)}{path}")


# Global flags a pattern may start with that keep ``^`` at the text's start.
_LEADING_FLAGS = re.compile(r"\(\?[aiLsux]+\)")


def _only_in_a_path(pattern: str) -> bool:
    """Whether ``pattern`` can be found only in a text starting with "/"."""
    flags = _LEADING_FLAGS.match(pattern)
    body = pattern[flags.end() :] if flags else pattern
    return body.startswith("^/") and "|" not in body


def _host(req: Any) -> str:
    """The request's Host header ("" without one)."""
    raw = getattr(req, "headers_bytes", None)  # gunicorn's ASGI request
    if raw is not None:
        for name, value in raw:
            if name == b"host":
                return str(value.decode("latin-1"))
        return ""
    for name, value in getattr(req, "headers", None) or ():
        if name == "HOST":
            return str(value)
    return ""
