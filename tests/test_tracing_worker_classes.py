"""Tracing under each of gunicorn's worker classes, with real gunicorn
processes exporting over OTLP/HTTP to an ``OtlpReceiver``.

Worker classes: ``sync``, ``gthread`` (4 threads), ``gevent`` and gunicorn's
own ASGI worker (``asgi``, serving ``apps.traced_asgi``), one worker each.
hookkit attaches the request's SERVER span as the current OpenTelemetry
context in ``pre_request`` and detaches it in ``post_request``; the context
lives in a context variable, which is per thread (gthread), per greenlet
(gevent) and per asyncio task (asgi). Requests sent at the same time, each
with its own ``traceparent``, must therefore each get their own span: in
the caller's trace, seen by the app as the current span, parent of the
app's own span, with the status the client received.

Also per class: a streamed response's span lasts until its last chunk; and
the slow-request watchdog adds a ``request_slow`` event to the span of a
request stuck past the threshold, with the stack it is stuck in. Everything
listens and connects on 127.0.0.1 only.
"""

from __future__ import annotations

import base64
import importlib.util
import os
import re
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from hookkit._face.gunicorn_process import Gunicorn
from tests.otlp import OtlpReceiver, Span
from tests.scrape import scrape_text, total
from tests.traced import ASGI_APP, WSGI_APP, request, server_spans, start_traced, traceparent

pytestmark = pytest.mark.integration

# How to run each worker class: its app and gunicorn arguments.
WORKER_CLASSES: dict[str, tuple[str, tuple[str, ...]]] = {
    "sync": (WSGI_APP, ("-k", "sync")),
    "gthread": (WSGI_APP, ("-k", "gthread", "--threads", "4")),
    "gevent": (WSGI_APP, ("-k", "gevent")),
    "asgi": (ASGI_APP, ("-k", "asgi")),
}

_NO_GEVENT = pytest.mark.skipif(
    importlib.util.find_spec("gevent") is None, reason="gevent is not installed"
)


def classes(*names: str) -> list[Any]:
    """``names`` as pytest parameters, gevent skipped when not installed."""
    return [
        pytest.param(name, id=name, marks=[_NO_GEVENT] if name == "gevent" else [])
        for name in names
    ]


ALL_CLASSES = classes(*WORKER_CLASSES)

# The requests sent at once, each with traceparent(n) for its index n.
PATHS = ["/", "/sleep?0.2", "/status/404", "/raise"] * 3

# Per path: the status the client gets, and the span's status code, error
# type and ``http.response.status_code``.
EXPECTED_BY_PATH = {
    "/": (200, "UNSET", None, 200),
    "/sleep?0.2": (200, "UNSET", None, 200),
    "/status/404": (404, "UNSET", None, 404),
    "/raise": (500, "ERROR", "RuntimeError", 500),
}


def start(serve: Any, rx: OtlpReceiver, worker_class: str, **env: str) -> Gunicorn:
    """One worker of ``worker_class`` exporting to ``rx``; returns once it booted."""
    app, args = WORKER_CLASSES[worker_class]
    return start_traced(serve, rx, *args, app=app, env=env)


def ids(body: bytes) -> tuple[str, str]:
    """(trace id, span id) the app saw, from the test app's body."""
    trace_id, span_id = body.split()[:2]
    return trace_id.decode(), span_id.decode()


def sent_parent(n: int) -> str:
    """The parent span id in ``traceparent(n)``."""
    return traceparent(n)[0].split("-")[2]


def all_server_spans(rx: OtlpReceiver, count: int) -> list[Span]:
    """Wait for ``count`` SERVER spans, then a little longer, so that an
    extra span would have arrived too; every SERVER span received."""
    server_spans(rx, count=count)
    time.sleep(0.5)
    return [span for span in rx.spans if span.kind == "SERVER"]


def most_at_once(spans: list[Span]) -> int:
    """The most spans open at the same moment (by their start and end times)."""
    edges = sorted([(s.start_ns, 1) for s in spans] + [(s.end_ns, -1) for s in spans])
    most = current = 0
    for _, step in edges:
        current += step
        most = max(most, current)
    return most


def one(spans: list[Span]) -> Span:
    assert 1 == len(spans), spans
    return spans[0]


@pytest.mark.parametrize("worker_class", ALL_CLASSES)
def test_concurrent_requests_each_get_their_own_span(serve: Any, worker_class: str) -> None:
    """Twelve requests at once, each with its own ``traceparent``: exactly
    twelve SERVER spans, each in the trace its request sent and child of the
    sent parent; the ids the app saw are those of its own request's span;
    the ``app.work`` span of each ``/`` is a child of that request's span;
    an exception is an ERROR span with its type, a 404 is UNSET. The
    requests did run at once (spans overlap), except on ``sync``, which
    serves one at a time."""
    with OtlpReceiver() as rx:
        server = start(serve, rx, worker_class)

        def send(n: int) -> tuple[int, bytes]:
            return request(server.port, PATHS[n], [("traceparent", traceparent(n)[0])])

        with ThreadPoolExecutor(len(PATHS)) as pool:
            answers = list(pool.map(send, range(len(PATHS))))
        spans = all_server_spans(rx, len(PATHS))
        app_spans = rx.wait_for(lambda span: span.name == "app.work", count=PATHS.count("/"))

    assert [EXPECTED_BY_PATH[path][0] for path in PATHS] == [status for status, _ in answers]
    assert len(PATHS) == len(spans)
    if worker_class == "sync":
        assert 1 == most_at_once(spans)
    else:
        assert most_at_once(spans) >= 2
    by_trace = {span.trace_id: span for span in spans}
    mine = [by_trace.get(traceparent(n)[1]) for n in range(len(PATHS))]

    expected = [
        (traceparent(n)[1], sent_parent(n), path.split("?")[0], *EXPECTED_BY_PATH[path][1:])
        for n, path in enumerate(PATHS)
    ]
    actual = [
        (
            span.trace_id,
            span.parent_span_id,
            span.attributes.get("url.path"),
            span.status_code,
            span.attributes.get("error.type"),
            span.attributes.get("http.response.status_code"),
        )
        if span is not None
        else None
        for span in mine
    ]
    assert expected == actual

    # What the app saw as the current span: its own request's SERVER span
    # (an exception's 500 body is gunicorn's, with no ids in it).
    answered = [n for n, path in enumerate(PATHS) if path != "/raise"]
    assert {n: (mine[n].trace_id, mine[n].span_id) for n in answered if mine[n]} == {
        n: ids(answers[n][1]) for n in answered
    }

    roots = [n for n, path in enumerate(PATHS) if path == "/"]
    assert {traceparent(n)[1]: (mine[n].span_id, "INTERNAL") for n in roots if mine[n]} == {
        span.trace_id: (span.parent_span_id, span.kind) for span in app_spans
    }
    assert len(roots) == len(app_spans)


@pytest.mark.parametrize("worker_class", ALL_CLASSES)
def test_a_streamed_response_span_lasts_until_the_last_chunk(serve: Any, worker_class: str) -> None:
    """Five chunks 0.1 s apart: the span ends after the last one (at least
    half a second), in the caller's trace, under the span the app saw."""
    header, trace_id = traceparent(7)
    with OtlpReceiver() as rx:
        server = start(serve, rx, worker_class)
        status, body = request(server.port, "/stream?5", [("traceparent", header)])
        span = one(all_server_spans(rx, 1))
    assert (200, 5) == (status, body.count(b"chunk"))
    assert (trace_id, sent_parent(7), 200) == (
        span.trace_id,
        span.parent_span_id,
        span.attributes.get("http.response.status_code"),
    )
    assert (span.trace_id, span.span_id) == ids(body)
    assert span.duration >= 0.5


# Per class: the frame the stack of a request stuck in /sleep must show.
# The WSGI app sleeps in ``stuck_in_sleep``; the ASGI app awaits
# ``asyncio.sleep`` right in its ``app`` coroutine (the stack of a suspended
# task is its await chain, read by hookkit from ``cr_await``).
SLOW_FRAME = {
    "sync": ("traced_wsgi.py", "stuck_in_sleep"),
    "gthread": ("traced_wsgi.py", "stuck_in_sleep"),
    "gevent": ("traced_wsgi.py", "stuck_in_sleep"),
    "asgi": ("traced_asgi.py", "app"),
}


@pytest.mark.parametrize("worker_class", classes(*SLOW_FRAME))
def test_the_watchdog_adds_a_request_slow_event_with_the_stack(
    serve: Any, worker_class: str
) -> None:
    """A request running past ``HOOKKIT_SLOW_REQUEST_SECONDS`` gets exactly
    one ``request_slow`` event on its span, with the elapsed time, the
    threshold and the stack of the code it is stuck in."""
    header, trace_id = traceparent(3)
    with OtlpReceiver() as rx:
        server = start(serve, rx, worker_class, HOOKKIT_SLOW_REQUEST_SECONDS="0.3")
        # The request outlives the threshold by seconds, not milliseconds:
        # on a loaded CI machine the watchdog thread may wait its turn.
        status, _ = request(server.port, "/sleep?3.0", [("traceparent", header)])
        span = one(all_server_spans(rx, 1))
        # What the worker said about it, for the failure message.
        lines = server.events(
            lambda line: (
                line.get("event") == "request_slow"
                or str(line.get("raw", "")).startswith("hookkit:")
            )
        )

    assert (200, trace_id) == (status, span.trace_id)
    slow = [event for event in span.events if event.name == "request_slow"]
    assert 1 == len(slow), (span.events, lines)
    (event,) = slow
    assert 0.3 == event.attributes["hookkit.threshold_seconds"]
    assert 0.3 <= event.attributes["hookkit.elapsed_seconds"] < 3.0
    assert span.start_ns < event.time_ns < span.end_ns
    file_name, function = SLOW_FRAME[worker_class]
    frame = rf'File "[^"\n]*/{re.escape(file_name)}", line \d+, in {function}\n'
    assert re.search(frame, event.attributes["code.stacktrace"]), event.attributes


def websocket_echo(port: int, text: str) -> str:
    """Open a WebSocket to 127.0.0.1:``port`` (RFC 6455, by hand: the tests
    have no WebSocket client), send ``text``, return the echo, close."""
    key = base64.b64encode(os.urandom(16)).decode()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(
            (
                f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(1)
        assert head.startswith(b"HTTP/1.1 101"), head
        sock.sendall(_masked_frame(0x1, text.encode()))
        first, length = sock.recv(2)
        assert 0x81 == first
        payload = b""
        while len(payload) < length:
            payload += sock.recv(length - len(payload))
        sock.sendall(_masked_frame(0x8, b"\x03\xe8"))  # close, 1000
        return payload.decode()


def _masked_frame(opcode: int, payload: bytes) -> bytes:
    mask = os.urandom(4)
    masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked


def test_a_websocket_connection_is_not_an_http_request(serve: Any) -> None:
    """gunicorn 27's ASGI worker never calls the request hooks for a
    WebSocket connection, and hookkit's ASGI middleware passes it through:
    no span and no request counted, as the README says; the HTTP request
    after it is seen as usual."""
    with OtlpReceiver() as rx:
        server = start_traced(serve, rx, "-k", "asgi", app=ASGI_APP)
        assert "hello" == websocket_echo(server.port, "hello")
        assert 200 == request(server.port, "/status/200")[0]
        server_spans(rx)
        time.sleep(0.5)
        spans = rx.spans
        text = scrape_text(server.metrics_port)
    assert ["/status/200"] == [span.attributes.get("url.path") for span in spans]
    assert 1 == total(text, "http_server_request_duration_seconds_count")
