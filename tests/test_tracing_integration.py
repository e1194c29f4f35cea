"""Tracing end to end: real gunicorn (sync worker unless a test says
otherwise) with the drop-in config, the official OTLP/HTTP exporter in each
worker, and ``tests.otlp.OtlpReceiver`` decoding what arrives. Everything
listens and connects on 127.0.0.1.
"""

from __future__ import annotations

import json
import signal
import time
from typing import Any

import pytest

from hookkit._face.gunicorn_process import Gunicorn, match
from tests.otlp import OtlpReceiver, Span
from tests.traced import (
    PARENT_ID,
    TRACE_ID,
    TRACEPARENT,
    request,
    server_spans,
    start_traced,
)

pytestmark = [pytest.mark.integration, pytest.mark.compat]


def ids(body: bytes) -> tuple[str, str]:
    """(trace id, span id) the app saw, from the test app's body."""
    trace_id, span_id = body.split()[:2]
    return trace_id.decode(), span_id.decode()


def one(spans: list[Span]) -> Span:
    assert 1 == len(spans), spans
    return spans[0]


def test_a_request_continues_the_callers_trace_with_the_app_span_nested(serve: Any) -> None:
    """A request with a ``traceparent`` gives one SERVER span in the caller's
    trace, its parent the caller's span, the stable HTTP attributes, and the
    app's own span as its child; the app ran with hookkit's span current."""
    with OtlpReceiver() as rx:
        server = start_traced(serve, rx)
        status, body = request(
            server.port,
            "/?token=abc123&page=2",
            [("traceparent", TRACEPARENT), ("User-Agent", "tests/1.0"), ("Host", "shop.test:8443")],
        )
        assert 200 == status
        server_span = one(server_spans(rx))
        app_span = one(rx.wait_for(lambda span: span.name == "app.work"))

    expected_attributes = {
        "http.request.method": "GET",
        "url.scheme": "http",
        "url.path": "/",
        "url.query": "token=REDACTED&page=2",
        "server.address": "shop.test",
        "server.port": 8443,
        "client.address": "127.0.0.1",
        "network.protocol.version": "1.1",
        "user_agent.original": "tests/1.0",
        "http.response.status_code": 200,
    }
    actual = {key: server_span.attributes.get(key) for key in expected_attributes}
    assert expected_attributes == actual
    assert ("GET", TRACE_ID, PARENT_ID, "UNSET") == (
        server_span.name,
        server_span.trace_id,
        server_span.parent_span_id,
        server_span.status_code,
    )
    assert (TRACE_ID, server_span.span_id, "INTERNAL") == (
        app_span.trace_id,
        app_span.parent_span_id,
        app_span.kind,
    )
    assert (TRACE_ID, server_span.span_id) == ids(body)
    assert "hookkit-tests" == server_span.resource["service.name"]
    assert {"process.pid", "process.parent_pid", "gunicorn.worker.age"} <= set(server_span.resource)
    assert "hookkit" == server_span.scope_name


def test_without_a_traceparent_a_new_trace_starts(serve: Any) -> None:
    """No caller context: the SERVER span is a root of a new trace."""
    with OtlpReceiver() as rx:
        server = start_traced(serve, rx)
        request(server.port, "/status/200")
        span = one(server_spans(rx))
    assert ("", 32) == (span.parent_span_id, len(span.trace_id))


def test_error_status_follows_what_the_client_received(serve: Any) -> None:
    """A 500 from the app and an exception (gunicorn answers 500) give ERROR
    spans with ``error.type``; a 404 is the client's error, not the server's."""
    with OtlpReceiver() as rx:
        server = start_traced(serve, rx)
        statuses = [
            request(server.port, path)[0] for path in ("/status/500", "/raise", "/status/404")
        ]
        spans = {span.attributes["url.path"]: span for span in server_spans(rx, count=3)}

    assert [500, 500, 404] == statuses
    summary = {
        path: (
            span.status_code,
            span.attributes.get("http.response.status_code"),
            span.attributes.get("error.type"),
            [event.name for event in span.events],
        )
        for path, span in spans.items()
    }
    expected = {
        "/status/500": ("ERROR", 500, "500", []),
        "/raise": ("ERROR", 500, "RuntimeError", ["exception"]),
        "/status/404": ("UNSET", 404, None, []),
    }
    assert expected == summary
    (event,) = spans["/raise"].events
    assert "fails before start_response" in event.attributes["exception.message"]


def test_secrets_never_leave_the_worker(serve: Any) -> None:
    """Under the defaults, a sensitive query value and the Authorization and
    Cookie headers appear nowhere in what is exported, byte for byte; with
    header capture asked for everything (``.*``), they are redacted."""
    env = {
        "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST": ".*",
        "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE": "content-type",
    }
    secrets = [b"abc123", b"s3cr3t-bearer", b"sessionid-42", b"hunter2"]
    with OtlpReceiver() as rx:
        server = start_traced(serve, rx, env=env)
        request(
            server.port,
            "/?token=abc123&page=2&Password=hunter2",
            [
                ("Authorization", "Bearer s3cr3t-bearer"),
                ("Cookie", "session=sessionid-42"),
                ("X-Request-Id", "r-1"),
            ],
        )
        span = one(server_spans(rx))
        bodies = rx.raw_bodies

    assert [] == [secret for secret in secrets for body in bodies if secret in body]
    expected = {
        "url.query": "token=REDACTED&page=2&Password=REDACTED",
        "http.request.header.authorization": ("[REDACTED]",),
        "http.request.header.cookie": ("[REDACTED]",),
        "http.request.header.x-request-id": ("r-1",),
        "http.response.header.content-type": ("text/plain",),
    }
    assert expected == {key: _tuple(span.attributes.get(key)) for key in expected}


def _tuple(value: object) -> object:
    return tuple(value) if isinstance(value, list) else value


def test_route_names_the_span_and_excluded_urls_get_none(serve: Any) -> None:
    """The app's route template names the span (``GET /users/{id}``) and is
    ``http.route``; URLs excluded by ``OTEL_PYTHON_EXCLUDED_URLS`` or
    ``HOOKKIT_TRACING_EXCLUDED_URLS`` make no span."""
    env = {
        "OTEL_PYTHON_EXCLUDED_URLS": "/healthz",
        "HOOKKIT_TRACING_EXCLUDED_URLS": "^http://[^/]*/status/2",
    }
    with OtlpReceiver() as rx:
        server = start_traced(serve, rx, env=env)
        for path in ("/healthz", "/status/204", "/users/42", "/status/404"):
            request(server.port, path)
        spans = server_spans(rx, count=2)
        time.sleep(0.5)  # a span for an excluded URL would have arrived by now
        spans = [span for span in rx.spans if span.kind == "SERVER"]

    expected = [("GET /users/{id}", "/users/{id}", "/users/42"), ("GET", None, "/status/404")]
    actual = [(s.name, s.attributes.get("http.route"), s.attributes["url.path"]) for s in spans]
    assert expected == actual


def test_a_streamed_response_span_lasts_until_the_last_chunk(serve: Any) -> None:
    """The span ends in ``post_request``, after the body: five chunks 0.1 s
    apart make a span of at least half a second."""
    with OtlpReceiver() as rx:
        server = start_traced(serve, rx)
        status, body = request(server.port, "/stream?5")
        span = one(server_spans(rx))
    assert (200, 5) == (status, body.count(b"chunk"))
    assert span.duration >= 0.5


def test_repeated_and_malformed_propagation_headers(serve: Any) -> None:
    """Two differing ``traceparent`` lines, or a malformed one, start a new
    trace (no error); repeated ``baggage`` lines are one list."""
    with OtlpReceiver() as rx:
        server = start_traced(serve, rx)
        other = "00-11111111111111111111111111111111-2222222222222222-01"
        answers = [
            request(
                server.port, "/status/201", [("traceparent", TRACEPARENT), ("traceparent", other)]
            ),
            request(server.port, "/status/202", [("traceparent", "00-zz-not-a-trace-01")]),
            request(
                server.port,
                "/status/203",
                [("traceparent", TRACEPARENT), ("traceparent", TRACEPARENT)],
            ),
        ]
        spans = {s.attributes["url.path"]: s for s in server_spans(rx, count=3)}

    assert [201, 202, 203] == [status for status, _ in answers]
    assert spans["/status/201"].trace_id not in (TRACE_ID, "11111111111111111111111111111111")
    assert "" == spans["/status/202"].parent_span_id
    assert (TRACE_ID, PARENT_ID) == (
        spans["/status/203"].trace_id,
        spans["/status/203"].parent_span_id,
    )


def test_the_access_log_line_carries_the_trace(serve: Any) -> None:
    """With ``HOOKKIT_ACCESS_LOG`` on, the ``request_finished`` line carries
    the request span's ``trace_id`` and ``span_id``."""
    with OtlpReceiver() as rx:
        server = start_traced(serve, rx, env={"HOOKKIT_ACCESS_LOG": "on"})
        request(server.port, "/status/200", [("traceparent", TRACEPARENT)])
        span = one(server_spans(rx))
        (line,) = server.wait_for(match(event="request_finished"))
    assert (TRACE_ID, span.span_id) == (line.get("trace_id"), line.get("span_id"))


def test_buffered_spans_are_flushed_when_the_worker_stops(serve: Any) -> None:
    """With a batch delay far longer than the test, the spans still arrive:
    the stopping worker flushes them in ``worker_exit``."""
    with OtlpReceiver() as rx:
        server = start_traced(serve, rx, env={"OTEL_BSP_SCHEDULE_DELAY": "600000"})
        for _ in range(3):
            request(server.port, "/status/200")
        time.sleep(0.3)
        assert [] == rx.spans
        server.stop()
        assert 3 == len(server_spans(rx, count=3, timeout=5))


def test_tracing_off_makes_no_spans_and_says_so(serve: Any) -> None:
    """``HOOKKIT_TRACING=off`` or ``OTEL_SDK_DISABLED=true`` (either wins):
    nothing is exported; the master says once which setting turned it off
    and each worker that its tracing is off."""
    with OtlpReceiver() as rx:
        servers = [
            start_traced(serve, rx, env={"HOOKKIT_TRACING": "off"}),
            start_traced(serve, rx, env={"OTEL_SDK_DISABLED": "true"}),
        ]
        for server in servers:
            request(server.port, "/")
        time.sleep(0.5)
        assert [] == rx.spans
    said = [
        (
            server.events(match(event="master_starting"))[0]["tracing"],
            server.events(match(event="worker_booted"))[0]["tracing"],
        )
        for server in servers
    ]
    assert [
        ({"tracing": "off", "disabled_by": "HOOKKIT_TRACING"}, "off"),
        ({"tracing": "off", "disabled_by": "OTEL_SDK_DISABLED"}, "off"),
    ] == said


def test_without_an_exporter_nothing_is_sent_and_the_master_says_so(serve: Any) -> None:
    """Neither ``OTEL_TRACES_EXPORTER`` nor an OTLP endpoint: hookkit makes
    no provider, so nothing tries the default localhost:4318 collector; the
    master's start-up line says how to turn export on."""
    server: Gunicorn = serve("apps.traced_wsgi:app")
    server.wait_for(match(event="worker_booted"))
    status, body = request(server.port, "/")
    (starting,) = server.events(match(event="master_starting"))
    (booted,) = server.events(match(event="worker_booted"))
    assert (200, "0" * 32) == (status, ids(body)[0])
    assert ("none", "OTEL_EXPORTER_OTLP_ENDPOINT") == (
        booted["tracing"],
        "OTEL_EXPORTER_OTLP_ENDPOINT"
        if "OTEL_EXPORTER_OTLP_ENDPOINT" in starting["tracing"]["note"]
        else "",
    )


def test_an_app_provider_is_used_rather_than_a_second_one(serve: Any) -> None:
    """An app that installed its own SDK tracer provider (as
    ``opentelemetry-instrument`` does) gets hookkit's span in it, with the
    app's resource; hookkit builds no second provider."""
    with OtlpReceiver() as rx:
        server: Gunicorn = serve(
            "apps.own_provider:app", env={"APP_OTLP_ENDPOINT": rx.traces_endpoint}
        )
        server.wait_for(match(event="worker_booted"))
        request(server.port, "/", [("traceparent", TRACEPARENT)])
        span = one(server_spans(rx))
        (booted,) = server.events(match(event="worker_booted"))
    assert ("app", "own-provider-app", TRACE_ID) == (
        booted["tracing"],
        span.resource["service.name"],
        span.trace_id,
    )
    assert isinstance(span.attributes.get("process.pid"), int)


def test_a_bad_otel_variable_stops_gunicorn_at_start_naming_it(serve: Any) -> None:
    """An unknown exporter name stops gunicorn before any worker starts,
    with a message that names the variable."""
    server: Gunicorn = serve(
        "apps.traced_wsgi:app", env={"OTEL_TRACES_EXPORTER": "zipkin_nope"}, wait=False
    )
    assert server.proc is not None
    assert server.proc.wait(20) != 0
    text = json.dumps(server.events())
    assert "OTEL_TRACES_EXPORTER" in text
    assert [] == server.events(match(event="worker_booted"))


def test_sigterm_with_requests_done_exits_promptly(serve: Any) -> None:
    """A stopping worker with a live collector exits at once, well inside
    the flush bound."""
    with OtlpReceiver() as rx:
        server = start_traced(serve, rx)
        request(server.port, "/")
        server_spans(rx)
        started = time.monotonic()
        server.signal(signal.SIGTERM)
        assert server.proc is not None
        server.proc.wait(10)
        assert time.monotonic() - started < 2.0
