"""FastAPI on gunicorn: the same request metrics, spans and log lines under
uvicorn-worker's ``UvicornWorker`` (and ``UvicornH11Worker``), which never
call gunicorn's ``pre_request``/``post_request``, as under gunicorn's own
ASGI worker, which does. Every check runs unchanged on all three.

Real gunicorn with the drop-in config, real uvicorn, a FastAPI app
(``apps.fastapi_app``), real scrapes of /metrics and real OTLP/HTTP to an
``OtlpReceiver``. Everything listens and connects on 127.0.0.1.
"""

from __future__ import annotations

import json
import socket
import time
from collections import Counter
from typing import Any

import pytest

from hookkit._face.gunicorn_process import Gunicorn, match
from tests.otlp import OtlpReceiver
from tests.scrape import samples, total
from tests.scrape import settled_count as wait_count
from tests.test_tracing_worker_classes import websocket_echo
from tests.traced import request, server_spans, start_traced, traceparent

pytestmark = pytest.mark.integration

APP = "apps.fastapi_app:app"
COUNT = "http_server_request_duration_seconds_count"
ACTIVE = "http_server_active_requests"

WORKERS = {
    "uvicorn": "uvicorn_worker.UvicornWorker",
    "uvicorn-h11": "uvicorn_worker.UvicornH11Worker",
    "asgi": "asgi",
}
ALL = pytest.mark.parametrize("worker", list(WORKERS))


def start(serve: Any, rx: OtlpReceiver, worker: str, *args: str, **env: str) -> Gunicorn:
    """One worker of class ``worker`` serving the FastAPI app, exporting to ``rx``."""
    return start_traced(serve, rx, "-k", WORKERS[worker], *args, app=APP, env=env)


@ALL
def test_n_requests_are_counted_exactly_with_the_status_the_client_got(
    serve: Any, worker: str
) -> None:
    """12 requests give exactly 12 in the duration count, each under the
    status the client received: 200s, a 404 from an unknown path, the 500
    the server sends for an exception, an app's 503, and a response that
    broke mid-body (its 200 had gone out; ``error_type`` names the
    exception). The in-flight gauge is back to 0."""
    paths = (
        ["/items/1"] * 5 + ["/nope"] * 2 + ["/raise"] * 2 + ["/status/503", "/raise-mid-body"]
    ) + ["/stream?chunks=1"]
    with OtlpReceiver() as rx:
        server = start(serve, rx, worker)
        statuses = [request(server.port, path)[0] for path in paths]
        text = wait_count(server, len(paths))

    counted: Counter[tuple[str, str]] = Counter()
    for s in samples(text):
        if s.name == COUNT and s.value:
            counted[(s.labels["http_response_status_code"], s.labels["error_type"])] += int(s.value)
    expected = Counter(
        {
            ("200", ""): 6,
            ("404", ""): 2,
            ("500", "RuntimeError"): 2,
            ("503", "503"): 1,
            ("200", "RuntimeError"): 1,
        }
    )
    assert expected == counted
    assert [200] * 5 + [404] * 2 + [500] * 2 + [503] == statuses[:10]
    assert 0 == total(text, ACTIVE)


@ALL
def test_one_server_span_per_request_with_the_route_template(serve: Any, worker: str) -> None:
    """Each request gives exactly one SERVER span continuing its
    ``traceparent``, named from FastAPI's route template (``GET
    /items/{item_id}``, never the raw path), with the app's span as its
    child; the app ran under that span. A 404 has no route; an exception is
    an ERROR span."""
    with OtlpReceiver() as rx:
        server = start(serve, rx, worker)
        bodies = [
            request(server.port, f"/items/{n}", [("traceparent", traceparent(n)[0])])[1]
            for n in range(3)
        ]
        request(server.port, "/nope")
        request(server.port, "/raise")
        spans = server_spans(rx, count=5)
        rx.wait_for(lambda span: span.name == "load_item", count=3)
        time.sleep(0.5)
        every = rx.spans

    servers = [span for span in every if span.kind == "SERVER"]
    assert 5 == len(servers)
    for n, body in enumerate(bodies):
        (span,) = [s for s in spans if s.trace_id == traceparent(n)[1]]
        (child,) = [s for s in every if s.name == "load_item" and s.trace_id == span.trace_id]
        assert ("GET /items/{item_id}", "/items/{item_id}", f"/items/{n}", 200) == (
            span.name,
            span.attributes["http.route"],
            span.attributes["url.path"],
            span.attributes["http.response.status_code"],
        )
        assert traceparent(n)[0].split("-")[2] == span.parent_span_id
        assert span.span_id == child.parent_span_id
        assert f"{span.trace_id} {span.span_id}" == json.loads(body)["ids"]
    by_path = {s.attributes["url.path"]: s for s in servers}
    assert ("GET", None, 404, "UNSET") == (
        by_path["/nope"].name,
        by_path["/nope"].attributes.get("http.route"),
        by_path["/nope"].attributes["http.response.status_code"],
        by_path["/nope"].status_code,
    )
    assert ("GET /raise", "ERROR", "RuntimeError", 500) == (
        by_path["/raise"].name,
        by_path["/raise"].status_code,
        by_path["/raise"].attributes["error.type"],
        by_path["/raise"].attributes["http.response.status_code"],
    )


@ALL
def test_a_streamed_response_span_lasts_until_its_last_chunk(serve: Any, worker: str) -> None:
    """Five chunks 0.1 s apart: the span covers them all."""
    with OtlpReceiver() as rx:
        server = start(serve, rx, worker)
        status, body = request(server.port, "/stream?chunks=5")
        (span,) = server_spans(rx)
    assert (200, 5) == (status, body.count(b"chunk"))
    assert span.duration >= 0.5
    assert f"{span.trace_id} {span.span_id}" == body.split(b"\n")[0].decode()


@ALL
def test_the_access_line_carries_the_trace(serve: Any, worker: str) -> None:
    """The JSON access line (``request_finished``) has the request span's
    trace and span ids, the route and the status."""
    with OtlpReceiver() as rx:
        server = start(serve, rx, worker, HOOKKIT_ACCESS_LOG="on")
        request(server.port, "/items/7", [("traceparent", traceparent(7)[0])])
        (span,) = server_spans(rx)
        (line,) = server.wait_for(match(event="request_finished"))
    assert (traceparent(7)[1], span.span_id, "/items/{item_id}", 200) == (
        line["trace_id"],
        line["span_id"],
        line["route"],
        line["status"],
    )


@ALL
def test_lifespan_and_websockets_are_not_requests(serve: Any, worker: str) -> None:
    """The app's lifespan (at boot) and a WebSocket connection make no
    request event, no hookkit span and no count; the one HTTP request does."""
    with OtlpReceiver() as rx:
        server = start(serve, rx, worker)
        assert "ping" == websocket_echo(server.port, "ping")
        request(server.port, "/items/1")
        server_spans(rx)
        text = wait_count(server, 1)
        spans = rx.spans
    # FastAPI's own telemetry makes a span for the WebSocket connection,
    # which hookkit leaves alone: hookkit's spans are the request's only.
    hookkit_spans = [s for s in spans if s.scope_name == "hookkit"]
    assert ["/items/1"] == [s.attributes["url.path"] for s in hookkit_spans]
    assert 1 == total(text, COUNT)


@ALL
def test_a_client_that_goes_away_is_counted_once(serve: Any, worker: str) -> None:
    """A client that closes its connection in the middle of a streamed
    response: the request is counted once, nothing stays in flight, and the
    next request is served."""
    with OtlpReceiver() as rx:
        server = start(serve, rx, worker)
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(b"GET /stream?chunks=20 HTTP/1.1\r\nHost: t\r\n\r\n")
            assert sock.recv(64).startswith(b"HTTP/1.1 200")
        assert 200 == request(server.port, "/items/1")[0]
        text = wait_count(server, 2, timeout=15)
    assert 2 == total(text, COUNT)
    assert 0 == total(text, ACTIVE)


@ALL
def test_start_up_says_how_request_events_are_made(serve: Any, worker: str) -> None:
    """``server_ready`` says once whether the worker class calls the request
    hooks; each worker's ``worker_booted`` says which path it took."""
    with OtlpReceiver() as rx:
        server = start(serve, rx, worker)
    (ready,) = server.events(match(event="server_ready"))
    (booted,) = server.events(match(event="worker_booted"))
    if worker == "asgi":
        expected = ("called by the worker class", "hooks")
    else:
        name = WORKERS[worker].rsplit(".", 1)[1]
        expected = (
            f"not called by {name}: hookkit wraps the worker's ASGI app and makes the "
            "request events itself",
            "asgi",
        )
    assert expected == (ready["request_hooks"], booted["request_events"])


@ALL
def test_a_blocked_event_loop_is_a_timeout(serve: Any, worker: str) -> None:
    """A request that blocks the event loop past ``--timeout``: the master
    times the worker out, ``worker_exited`` says so, and a new worker serves."""
    with OtlpReceiver() as rx:
        server = start(serve, rx, worker, "--timeout", "2")
        request(server.port, "/block?seconds=30", timeout=20)
        (exited,) = server.wait_for(match(event="worker_exited"), timeout=20)
        server.wait_for(match(event="worker_booted"), count=2, timeout=20)
        assert 200 == request(server.port, "/items/1")[0]
    assert "timeout" == exited["reason"]


@ALL
def test_a_stopping_worker_says_so_and_flushes_its_spans(serve: Any, worker: str) -> None:
    """With a batch delay far longer than the test, the spans of a stopped
    server still arrive, and each worker logs ``worker_exiting``. (uvicorn's
    server re-raises the stop signal after its graceful shutdown, so gunicorn's
    worker_exit never runs: hookkit does its work in the signal's handler.)"""
    with OtlpReceiver() as rx:
        server = start(serve, rx, worker, OTEL_BSP_SCHEDULE_DELAY="600000")
        for n in range(3):
            request(server.port, f"/items/{n}")
        time.sleep(0.3)
        assert [] == rx.spans
        server.stop()
        spans = server_spans(rx, count=3, timeout=5)
    (exiting,) = server.events(match(event="worker_exiting"))
    (exited,) = server.events(match(event="worker_exited"))
    assert (3, 3, "shutdown") == (len(spans), exiting["requests_served"], exited["reason"])


@ALL
def test_max_requests_recycles_are_named(serve: Any, worker: str) -> None:
    """A worker recycled after ``--max-requests`` requests exits with the
    reason ``max_requests``, and every request before it was counted."""
    with OtlpReceiver() as rx:
        server = start(serve, rx, worker, "--max-requests", "3")
        for n in range(3):
            assert 200 == request(server.port, f"/items/{n}")[0]
        (exited,) = server.wait_for(match(event="worker_exited"), timeout=20)
        server.wait_for(match(event="worker_booted"), count=2, timeout=20)
        text = wait_count(server, 3)
    assert ("max_requests", 3) == (exited["reason"], exited["requests_served"])
    assert 3 == total(text, COUNT)
