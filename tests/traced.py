"""Helpers for the tracing integration tests: a real gunicorn with the
drop-in config exporting over OTLP/HTTP to an ``OtlpReceiver``."""

from __future__ import annotations

import http.client
from typing import Any

from hookkit._face.gunicorn_process import Gunicorn, match
from tests.otlp import OtlpReceiver, Span

WSGI_APP = "apps.traced_wsgi:app"
ASGI_APP = "apps.traced_asgi:app"

# A caller's W3C trace context: trace id, parent span id, sampled.
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


def traceparent(n: int) -> tuple[str, str]:
    """A distinct sampled traceparent per ``n``: (header value, trace id)."""
    trace_id = f"{n + 1:032x}"
    return f"00-{trace_id}-{n + 1:016x}-01", trace_id


def export_env(endpoint: str, **extra: str) -> dict[str, str]:
    """Export to ``endpoint`` with a short batch delay, so spans arrive soon."""
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "50",
        "OTEL_SERVICE_NAME": "hookkit-tests",
        **extra,
    }


def start_traced(
    serve: Any,
    rx: OtlpReceiver | str,
    *args: str,
    app: str = WSGI_APP,
    workers: int = 1,
    env: dict[str, str] | None = None,
) -> Gunicorn:
    """Start gunicorn exporting to ``rx`` (a receiver or a base URL);
    returns once every worker booted."""
    endpoint = rx if isinstance(rx, str) else rx.endpoint
    server: Gunicorn = serve(
        app, "-w", str(workers), *args, env=export_env(endpoint, **(env or {}))
    )
    server.wait_for(match(event="worker_booted"), count=workers)
    return server


def request(
    port: int,
    path: str,
    headers: list[tuple[str, str]] | None = None,
    method: str = "GET",
    timeout: float = 10.0,
) -> tuple[int, bytes]:
    """One request to 127.0.0.1:``port`` with headers as given (repeated
    names allowed): (status, body); (0, b"") when no response came."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        own_host = any(name.lower() == "host" for name, _ in headers or ())
        connection.putrequest(method, path, skip_host=own_host)
        for name, value in headers or ():
            connection.putheader(name, value)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.read()
    except (OSError, http.client.HTTPException):
        return 0, b""
    finally:
        connection.close()


def server_spans(
    rx: OtlpReceiver, count: int = 1, timeout: float = 10.0, **attrs: Any
) -> list[Span]:
    """Wait for ``count`` SERVER spans whose attributes include ``attrs``."""
    return rx.wait_for(
        lambda span: (
            span.kind == "SERVER"
            and all(
                span.attributes.get(key.replace("__", ".")) == value for key, value in attrs.items()
            )
        ),
        count=count,
        timeout=timeout,
    )
