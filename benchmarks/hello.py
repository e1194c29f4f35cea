"""The hello-world WSGI app the benchmark serves: the smallest possible app,
so what is measured is gunicorn and its hooks, not the application."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

BODY = b"Hello, world!\n"
HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))]


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """Answer every request with 200 and a fixed body."""
    start_response("200 OK", HEADERS)
    return [BODY]
