"""The OTLP receiver of the tests (``tests/otlp.py``) against the official exporter.

Each test builds its own ``TracerProvider`` (never the global one) exporting
through the real ``OTLPSpanExporter`` over HTTP to an ``OtlpReceiver`` on
127.0.0.1, and checks that what the receiver decodes is exactly what was
recorded: names, kinds, ids, the parent link, attributes, events, status,
resource and scope. The failure modes (500, a receiver that never answers, a
refused connection) make the exporter fail, and fast.
"""

from __future__ import annotations

import gzip
import http.client
import time
from collections.abc import Iterator

import pytest
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    ArrayValue,
    KeyValue,
    KeyValueList,
)
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans
from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.trace import SpanKind, Status, StatusCode, set_span_in_context

from tests.otlp import OtlpReceiver, Span, SpanEvent, decode_spans, refused_endpoint

RESOURCE = {"service.name": "otlp-receiver-test"}
SCOPE = "tests.otlp"
T0 = 1_700_000_000_000_000_000  # fixed timestamps (ns) make times exact


@pytest.fixture
def rx() -> Iterator[OtlpReceiver]:
    """A receiver in "ok" mode."""
    with OtlpReceiver() as receiver:
        yield receiver


def hexids(span: ReadableSpan) -> tuple[str, str]:
    """(trace id, span id) of an SDK span as the receiver spells them."""
    context = span.get_span_context()
    assert context is not None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def record(*exporters: OTLPSpanExporter) -> tuple[ReadableSpan, ReadableSpan]:
    """A SERVER span with attributes and an event, and an INTERNAL child with
    an error status, exported through ``exporters``; (server, child)."""
    provider = TracerProvider(resource=Resource(RESOURCE))
    for exporter in exporters:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer(SCOPE)
    server = tracer.start_span(
        "GET /items",
        kind=SpanKind.SERVER,
        start_time=T0,
        attributes={
            "http.route": "/items",
            "http.response.status_code": 200,
            "hookkit.keepalive": True,
            "hookkit.ratio": 0.25,
            "hookkit.workers": ["a", "b"],
        },
    )
    server.add_event("request.accepted", {"queue": 3}, timestamp=T0 + 1_000)
    child = tracer.start_span("render", context=set_span_in_context(server), start_time=T0 + 2_000)
    child.set_status(Status(StatusCode.ERROR, "template missing"))
    child.end(end_time=T0 + 3_000)
    server.end(end_time=T0 + 1_500_000_000)
    provider.shutdown()
    assert isinstance(server, ReadableSpan)
    assert isinstance(child, ReadableSpan)
    return server, child


def test_decodes_what_the_official_exporter_sends(rx: OtlpReceiver) -> None:
    """Both spans arrive with their ids, link, kinds, attributes, event,
    status, times, resource and scope."""
    server, child = record(OTLPSpanExporter(endpoint=rx.traces_endpoint))

    received = rx.wait_for(count=2)

    trace_id, server_id = hexids(server)
    _, child_id = hexids(child)
    assert [
        Span(
            name="render",
            kind="INTERNAL",
            trace_id=trace_id,
            span_id=child_id,
            parent_span_id=server_id,
            start_ns=T0 + 2_000,
            end_ns=T0 + 3_000,
            attributes={},
            status_code="ERROR",
            status_message="template missing",
            events=(),
            resource=RESOURCE,
            scope_name=SCOPE,
        ),
        Span(
            name="GET /items",
            kind="SERVER",
            trace_id=trace_id,
            span_id=server_id,
            parent_span_id="",
            start_ns=T0,
            end_ns=T0 + 1_500_000_000,
            attributes={
                "http.route": "/items",
                "http.response.status_code": 200,
                "hookkit.keepalive": True,
                "hookkit.ratio": 0.25,
                "hookkit.workers": ["a", "b"],
            },
            status_code="UNSET",
            status_message="",
            events=(SpanEvent("request.accepted", {"queue": 3}, T0 + 1_000),),
            resource=RESOURCE,
            scope_name=SCOPE,
        ),
    ] == received
    assert 1.5 == received[1].duration
    assert 32 == len(trace_id)
    # SimpleSpanProcessor exports each span as it ends: one request each.
    assert 2 == rx.requests
    assert [] == rx.errors


@pytest.mark.parametrize("compression", [Compression.Gzip, Compression.Deflate])
def test_compressed_exports_decode_the_same(compression: Compression) -> None:
    """The same spans sent plain and compressed decode to equal spans, from
    byte-identical (decompressed) bodies."""
    with OtlpReceiver() as plain, OtlpReceiver() as packed:
        record(
            OTLPSpanExporter(endpoint=plain.traces_endpoint),
            OTLPSpanExporter(endpoint=packed.traces_endpoint, compression=compression),
        )
        plain.wait_for(count=2)
        packed.wait_for(count=2)

        assert [compression.value] * 2 == [h.get("content-encoding") for h in packed.headers]
        assert [None] * 2 == [h.get("content-encoding") for h in plain.headers]
        assert plain.raw_bodies == packed.raw_bodies
        assert plain.spans == packed.spans


def test_endpoint_is_the_base_url_for_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """With OTEL_EXPORTER_OTLP_ENDPOINT set to ``rx.endpoint``, an exporter
    configured from the environment alone posts to ``rx.traces_endpoint``."""
    with OtlpReceiver() as receiver:
        assert f"http://127.0.0.1:{receiver.port}" == receiver.endpoint
        assert receiver.endpoint + "/v1/traces" == receiver.traces_endpoint
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
        monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)

        server, _ = record(OTLPSpanExporter())

        (span,) = receiver.wait_for(lambda span: span.kind == "SERVER")
        assert hexids(server) == (span.trace_id, span.span_id)


def test_raw_bodies_decode_on_their_own(rx: OtlpReceiver) -> None:
    """``decode_spans`` on the kept bodies gives back the received spans."""
    record(OTLPSpanExporter(endpoint=rx.traces_endpoint))
    rx.wait_for(count=2)

    assert rx.spans == [span for body in rx.raw_bodies for span in decode_spans(body)]


def test_decode_spans_maps_every_value_type() -> None:
    """Strings, bools, ints, doubles, bytes, arrays, key-value lists and
    unset values; absent ids read as "", unknown-to-the-span fields default."""
    attributes = [
        KeyValue(key="s", value=AnyValue(string_value="x")),
        KeyValue(key="b", value=AnyValue(bool_value=False)),
        KeyValue(key="i", value=AnyValue(int_value=-7)),
        KeyValue(key="d", value=AnyValue(double_value=2.5)),
        KeyValue(key="raw", value=AnyValue(bytes_value=b"\x00\xff")),
        KeyValue(
            key="a",
            value=AnyValue(
                array_value=ArrayValue(values=[AnyValue(int_value=1), AnyValue(string_value="2")])
            ),
        ),
        KeyValue(
            key="kv",
            value=AnyValue(
                kvlist_value=KeyValueList(
                    values=[KeyValue(key="k", value=AnyValue(bool_value=True))]
                )
            ),
        ),
        KeyValue(key="unset", value=AnyValue()),
    ]
    request = ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                scope_spans=[
                    ScopeSpans(
                        spans=[
                            ProtoSpan(
                                name="bare",
                                kind=ProtoSpan.SpanKind.SPAN_KIND_CLIENT,
                                trace_id=bytes(range(16)),
                                span_id=b"\xab" * 8,
                                start_time_unix_nano=5,
                                end_time_unix_nano=5,
                                attributes=attributes,
                            )
                        ]
                    )
                ]
            )
        ]
    )

    (span,) = decode_spans(request.SerializeToString())

    assert (
        Span(
            name="bare",
            kind="CLIENT",
            trace_id="000102030405060708090a0b0c0d0e0f",
            span_id="abababababababab",
            parent_span_id="",
            start_ns=5,
            end_ns=5,
            attributes={
                "s": "x",
                "b": False,
                "i": -7,
                "d": 2.5,
                "raw": b"\x00\xff",
                "a": [1, "2"],
                "kv": {"k": True},
                "unset": None,
            },
            status_code="UNSET",
            status_message="",
            events=(),
            resource={},
            scope_name="",
        )
        == span
    )
    assert 0.0 == span.duration


def test_error_mode_counts_requests_and_stores_no_spans() -> None:
    """A 500 fails the export at once (not retried); the request is counted
    and its body kept, but no span is stored."""
    with OtlpReceiver(mode="error") as receiver:
        exporter = OTLPSpanExporter(endpoint=receiver.traces_endpoint, timeout=5)
        provider = TracerProvider(resource=Resource(RESOURCE))
        span = provider.get_tracer(SCOPE).start_span("failing")
        span.end()
        assert isinstance(span, ReadableSpan)

        assert SpanExportResult.FAILURE == exporter.export([span])
        exporter.shutdown()
        provider.shutdown()

        assert 1 == receiver.wait_for_requests(1)
        assert [] == receiver.spans
        assert ["failing"] == [s.name for s in decode_spans(receiver.raw_bodies[0])]
        with pytest.raises(AssertionError, match="mode 'error', received 1 request"):
            receiver.wait_for(timeout=0.1)


def test_hang_mode_times_the_exporter_out_and_closes_promptly() -> None:
    """An exporter with a 0.5 s timeout gives up on a receiver that never
    answers, and closing the receiver does not wait for the hung handler."""
    receiver = OtlpReceiver(mode="hang").start()
    try:
        exporter = OTLPSpanExporter(endpoint=receiver.traces_endpoint, timeout=0.5)
        provider = TracerProvider()
        span = provider.get_tracer(SCOPE).start_span("hung")
        span.end()
        assert isinstance(span, ReadableSpan)

        started = time.monotonic()
        result = exporter.export([span])
        elapsed = time.monotonic() - started
        exporter.shutdown()
        provider.shutdown()

        assert SpanExportResult.FAILURE == result
        assert elapsed < 3, elapsed
        assert 1 <= receiver.wait_for_requests(1)
        assert [] == receiver.spans
    finally:
        started = time.monotonic()
        receiver.close()
        closing = time.monotonic() - started
    assert closing < 2, closing


def test_closing_releases_a_request_still_hanging() -> None:
    """A client still waiting on a hung request sees the connection close
    when the receiver closes, instead of waiting forever."""
    receiver = OtlpReceiver(mode="hang").start()
    connection = http.client.HTTPConnection("127.0.0.1", receiver.port, timeout=10)
    try:
        connection.request("POST", "/v1/traces", body=b"", headers={"Content-Length": "0"})
        receiver.wait_for_requests(1, timeout=5)
        started = time.monotonic()
        receiver.close()
        assert time.monotonic() - started < 2
        with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
            connection.getresponse()
    finally:
        connection.close()
        receiver.close()


def test_refused_endpoint_fails_fast() -> None:
    """Nothing listens on ``refused_endpoint()``: the export fails within
    the exporter's timeout, without waiting on a server."""
    endpoint = refused_endpoint()
    assert endpoint.startswith("http://127.0.0.1:")
    exporter = OTLPSpanExporter(endpoint=endpoint + "/v1/traces", timeout=0.5)
    provider = TracerProvider()
    span = provider.get_tracer(SCOPE).start_span("nowhere")
    span.end()
    assert isinstance(span, ReadableSpan)

    started = time.monotonic()
    result = exporter.export([span])
    elapsed = time.monotonic() - started
    exporter.shutdown()
    provider.shutdown()

    assert SpanExportResult.FAILURE == result
    assert elapsed < 2, elapsed


def test_keep_alive_and_unknown_paths(rx: OtlpReceiver) -> None:
    """HTTP/1.1 requests share one connection, every answer has a
    Content-Length, a gzip body is accepted, and a wrong path is a 404 that
    is reported, not counted."""
    body = ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=[ProtoSpan(name="one")])])]
    ).SerializeToString()
    connection = http.client.HTTPConnection("127.0.0.1", rx.port, timeout=5)
    try:
        answers = []
        sockets = []
        for path, payload, encoding in [
            ("/v1/traces", body, None),
            ("/v1/traces", gzip.compress(body), "gzip"),
            ("/v1/metrics", body, None),
        ]:
            headers = {"Content-Type": "application/x-protobuf"}
            if encoding:
                headers["Content-Encoding"] = encoding
            connection.request("POST", path, body=payload, headers=headers)
            response = connection.getresponse()
            answers.append(
                (
                    response.status,
                    response.getheader("Content-Type"),
                    response.getheader("Content-Length"),
                    response.read(),
                )
            )
            sockets.append(connection.sock)
    finally:
        connection.close()

    # One socket throughout: the receiver kept the connection alive.
    assert [sockets[0]] * 3 == sockets
    assert sockets[0] is not None
    assert [
        (200, "application/x-protobuf", "0", b""),
        (200, "application/x-protobuf", "0", b""),
        (404, "text/plain", "10", b"not found\n"),
    ] == answers
    assert ["one", "one"] == [span.name for span in rx.spans]
    assert 2 == rx.requests
    assert ["POST /v1/metrics: not /v1/traces"] == rx.errors


def test_wait_for_reports_what_arrived_and_clear_forgets(rx: OtlpReceiver) -> None:
    """A wait that times out names the spans received; ``clear`` empties
    spans, requests and bodies."""
    record(OTLPSpanExporter(endpoint=rx.traces_endpoint))
    rx.wait_for(count=2)

    with pytest.raises(AssertionError) as raised:
        rx.wait_for(lambda span: span.name == "missing", timeout=0.1)
    message = str(raised.value)
    assert "0 matched" in message
    assert "received 2 request(s) and 2 span(s)" in message
    assert "'GET /items' [SERVER]" in message
    assert "'render' [INTERNAL]" in message
    with pytest.raises(AssertionError, match="at least 3 export request"):
        rx.wait_for_requests(3, timeout=0.1)

    rx.clear()
    assert ([], 0, []) == (rx.spans, rx.requests, rx.raw_bodies)


def test_rejects_unknown_modes() -> None:
    """Only "ok", "error" and "hang" exist."""
    with pytest.raises(ValueError, match="mode must be one of"):
        OtlpReceiver(mode="slow")  # type: ignore[arg-type]
