"""hookkit._sinks.tracing.otlp_encode: what the fast encoder sends decodes to exactly the
message the official OTLP encoder makes, for spans of every shape."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState

from hookkit._sinks.tracing.otlp_encode import encode_request
from tests.otlp import OtlpReceiver


def provider(resource: Resource) -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    return tracer_provider, exporter


def official(spans: list[ReadableSpan]) -> ExportTraceServiceRequest:
    return encode_spans(spans)


def decoded(data: bytes) -> ExportTraceServiceRequest:
    message = ExportTraceServiceRequest()
    message.ParseFromString(data)
    return message


def varied_spans() -> list[ReadableSpan]:
    """Spans of every shape: each attribute type, events, links, every kind,
    status with and without a description, a remote parent with a trace
    state, two resources, two scopes, schema URLs."""
    first, first_spans = provider(
        Resource.create({"service.name": "shop", "n": 3, "ok": True, "ratio": 0.5}, "https://s/1")
    )
    second, second_spans = provider(Resource({"service.name": "other"}))
    remote = SpanContext(
        trace_id=0x0AF7651916CD43DD8448EB211C80319C,
        span_id=0xB7AD6B7169203331,
        is_remote=True,
        trace_flags=TraceFlags(1),
        trace_state=TraceState([("vendor", "x1"), ("other", "y")]),
    )
    parent_context = trace.set_span_in_context(trace.NonRecordingSpan(remote))
    tracer = first.get_tracer("hookkit", "1.2.3", schema_url="https://s/scope")
    other_tracer = first.get_tracer("app")
    attributes = {
        "text": "héllo",
        "empty": "",
        "int": 42,
        "negative": -7,
        "big": 2**62,
        "zero": 0,
        "float": 1.25,
        "false": False,
        "true": True,
        "texts": ("a", "b"),
        "ints": [1, 2, 3],
        "floats": (0.5,),
        "bools": [True, False],
        "empty list": (),
    }
    with tracer.start_as_current_span(
        "GET /users/{id}", context=parent_context, kind=SpanKind.SERVER, attributes=attributes
    ) as span:
        span.add_event("exception", {"exception.type": "E", "exception.stacktrace": "x\ny"})
        span.add_event("bare")
        span.set_status(Status(StatusCode.ERROR, "broke"))
        with other_tracer.start_as_current_span(
            "child",
            links=[Link(remote, {"why": "batch"}), Link(span.get_span_context())],
        ) as child:
            child.set_status(Status(StatusCode.OK))
    for kind in SpanKind:
        with tracer.start_as_current_span(f"kind {kind.name}", kind=kind):
            pass
    with second.get_tracer("hookkit").start_as_current_span("elsewhere") as span:
        span.set_status(Status(StatusCode.ERROR))
    spans = [*first_spans.get_finished_spans(), *second_spans.get_finished_spans()]
    # Interleave resources and scopes, as a batch would.
    return spans[1::2] + spans[::2]


def test_every_shape_decodes_to_the_official_message() -> None:
    """The fast encoding of a batch with every shape of span decodes to a
    message equal to the official encoder's."""
    spans = varied_spans()
    assert official(spans) == decoded(encode_request(spans))


def test_the_bytes_are_the_official_bytes() -> None:
    """Field for field in the same order: the very same bytes."""
    spans = varied_spans()
    assert official(spans).SerializeToString() == encode_request(spans)


@pytest.mark.parametrize("count", [0, 1, 600])
def test_batches_of_any_size(count: int) -> None:
    """An empty batch, one span, and a batch larger than the default batch size."""
    tracer_provider, exporter = provider(Resource.create({}))
    tracer = tracer_provider.get_tracer("hookkit")
    for n in range(count):
        with tracer.start_as_current_span(f"span {n}", attributes={"n": n}):
            pass
    spans = list(exporter.get_finished_spans())
    assert official(spans).SerializeToString() == encode_request(spans)


def test_the_fast_exporter_sends_what_the_official_one_sends() -> None:
    """Over real OTLP/HTTP, the fast exporter's request body equals the
    official exporter's for the same spans, and both are accepted."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    from hookkit._sinks.tracing.otlp_encode import FastOTLPSpanExporter

    spans = varied_spans()
    with OtlpReceiver() as rx:
        results = [
            exporter_class(endpoint=rx.traces_endpoint).export(spans)
            for exporter_class in (OTLPSpanExporter, FastOTLPSpanExporter)
        ]
        rx.wait_for_requests(2)
        bodies = rx.raw_bodies
    assert [result.name for result in results] == ["SUCCESS", "SUCCESS"]
    assert bodies[0] == bodies[1]


def test_the_fast_encoding_never_goes_through_the_official_encoder(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The fast path stays one: with the official encoder and the protobuf
    message class made to fail, ``encode_request`` still gives the very bytes
    the official encoder gives (checked first). How much faster it is is the
    benchmarks' business (a timing comparison here failed under load)."""
    import opentelemetry.exporter.otlp.proto.common._internal.trace_encoder as internal
    import opentelemetry.exporter.otlp.proto.common.trace_encoder as public

    spans = varied_spans()
    expected = official(spans).SerializeToString()

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the fast encoder used the official one")

    monkeypatch.setattr(internal, "encode_spans", refuse)
    monkeypatch.setattr(public, "encode_spans", refuse)
    monkeypatch.setattr(ExportTraceServiceRequest, "SerializeToString", refuse)
    assert expected == encode_request(spans)
