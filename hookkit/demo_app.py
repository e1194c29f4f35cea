"""The reference server's bundled apps: a small WSGI app and a dirty app.

- ``/``: hello;
- ``/sleep?SECONDS``: sleeps (to hang a request past the timeout);
- ``/error``: raises before the response starts (the client gets a 500);
- ``/dirty``: calls the dirty app, when one is configured.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """The demo WSGI application."""
    path = environ.get("PATH_INFO", "/")
    if path == "/sleep":
        time.sleep(float(environ.get("QUERY_STRING") or "60"))
    elif path == "/error":
        raise RuntimeError("the demo app fails on purpose")
    elif path == "/dirty":
        from gunicorn.dirty import get_dirty_client

        result = get_dirty_client().execute("hookkit.demo_app:DemoDirtyApp", "square", 7)
        body = f"{result}\n".encode()
        start_response(
            "200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
        )
        return [body]
    body = b"hello from hookkit's reference server\n"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


try:
    from gunicorn.dirty import DirtyApp
except ImportError:  # gunicorn < 25 has no dirty workers
    DirtyApp = object


class DemoDirtyApp(DirtyApp):  # type: ignore[misc]
    """A dirty app (gunicorn 25+): runs in the dirty worker pool."""

    def init(self) -> None:
        """Nothing heavy to load for the demo."""

    def square(self, value: int) -> int:
        """An action HTTP workers can call."""
        return value * value

    def close(self) -> None:
        """Nothing to release."""
