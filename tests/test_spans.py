"""hookkit._sinks.tracing.spans: hookkit's own SERVER span behaves as an SDK span where it
matters: sampling, ids, nesting, status, exceptions, and what is exported."""

from __future__ import annotations

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from hookkit._sinks.tracing.otlp_encode import encode_request
from hookkit._sinks.tracing.spans import ServerSpan, ServerSpans

ATTRIBUTES = {"http.request.method": "GET", "url.path": "/", "server.port": 8000}


def spans_of(provider: TracerProvider) -> tuple[ServerSpans, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    processor = SimpleSpanProcessor(exporter)
    provider.add_span_processor(processor)
    return ServerSpans(provider, [processor], "9.9"), exporter


def remote_parent(sampled: bool) -> Context:
    context = SpanContext(
        0x0AF7651916CD43DD8448EB211C80319C,
        0xB7AD6B7169203331,
        is_remote=True,
        trace_flags=TraceFlags(1 if sampled else 0),
    )
    return trace.set_span_in_context(trace.NonRecordingSpan(context), Context())


def test_a_span_continues_its_parent_and_is_exported_on_end() -> None:
    """The span's trace is its parent's, its id new; ending it hands it to
    the provider's processors once, with its attributes."""
    maker, exporter = spans_of(TracerProvider(resource=Resource({"service.name": "s"})))
    span = maker.start("GET", remote_parent(True), dict(ATTRIBUTES))
    assert isinstance(span, ServerSpan)
    span.set_attribute("http.response.status_code", 200)
    span.end()
    span.end()
    (exported,) = exporter.get_finished_spans()
    context = exported.get_span_context()
    assert (0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, True) == (
        context.trace_id,
        exported.parent.span_id,
        context.trace_flags.sampled,
    )
    assert {**ATTRIBUTES, "http.response.status_code": 200} == dict(exported.attributes)
    assert ("hookkit", "9.9", SpanKind.SERVER) == (
        exported.instrumentation_scope.name,
        exported.instrumentation_scope.version,
        exported.kind,
    )


def test_the_providers_sampler_decides() -> None:
    """Always-off, and a parent-based sampler under an unsampled parent,
    give a non-recording span that still carries a context (for nesting),
    and nothing is exported."""
    for sampler, parent in (
        (ALWAYS_OFF, Context()),
        (ParentBased(TraceIdRatioBased(1.0)), remote_parent(False)),
    ):
        maker, exporter = spans_of(TracerProvider(sampler=sampler))
        span = maker.start("GET", parent, dict(ATTRIBUTES))
        span.end()
        assert (False, True, False) == (
            span.is_recording(),
            span.get_span_context().is_valid,
            span.get_span_context().trace_flags.sampled,
        )
        assert () == exporter.get_finished_spans()


def test_the_apps_spans_nest_under_it() -> None:
    """An SDK span made while hookkit's span is current is its child."""
    provider = TracerProvider()
    maker, _exporter = spans_of(provider)
    span = maker.start("GET", Context(), dict(ATTRIBUTES))
    token = otel_context.attach(trace.set_span_in_context(span))
    try:
        with provider.get_tracer("app").start_as_current_span("work") as child:
            pass
    finally:
        otel_context.detach(token)
    span.end()
    assert (span.get_span_context().trace_id, span.get_span_context().span_id) == (
        child.get_span_context().trace_id,
        child.parent.span_id,
    )


def test_status_and_exceptions_as_the_sdk_records_them() -> None:
    """OK is final and UNSET is ignored; an exception event has the same
    attributes an SDK span gives the same exception."""
    provider = TracerProvider()
    maker, _ = spans_of(provider)
    span = maker.start("GET", Context(), {})
    span.set_status(Status(StatusCode.UNSET))
    span.set_status(StatusCode.ERROR, "broke")
    assert ("ERROR", "broke") == (span.status.status_code.name, span.status.description)
    span.set_status(StatusCode.OK)
    span.set_status(StatusCode.ERROR)
    assert StatusCode.OK == span.status.status_code
    try:
        raise ValueError("bad value")
    except ValueError as exc:
        span.record_exception(exc)
        with provider.get_tracer("t").start_as_current_span("sdk") as sdk_span:
            sdk_span.record_exception(exc)
    (ours,) = span.events
    (theirs,) = sdk_span.events
    assert dict(theirs.attributes) == dict(ours.attributes)


def test_app_attributes_are_cleaned_and_nothing_changes_after_end() -> None:
    """A list becomes a tuple, an invalid value is dropped; after end(), no
    attribute, event, name or status changes."""
    maker, _ = spans_of(TracerProvider())
    span = maker.start("GET", Context(), {})
    span.set_attribute("list", [1, 2])
    span.set_attribute("bad", object())
    span.end()
    span.set_attribute("late", 1)
    span.add_event("late")
    span.update_name("late")
    span.set_status(StatusCode.ERROR)
    assert ({"list": (1, 2)}, [], "GET", StatusCode.UNSET) == (
        span.attributes,
        span.events,
        span.name,
        span.status.status_code,
    )


def test_it_encodes_as_an_sdk_span_with_the_same_content() -> None:
    """What the OTLP encoder makes of hookkit's span is what the official
    encoder makes of it (hookkit's span reads as an SDK span does)."""
    maker, exporter = spans_of(TracerProvider(resource=Resource({"service.name": "s"})))
    span = maker.start("GET", remote_parent(True), dict(ATTRIBUTES))
    span.add_event("request_slow", {"code.stacktrace": "x"})
    span.set_status(StatusCode.ERROR)
    span.end()
    spans = list(exporter.get_finished_spans())
    assert encode_spans(spans).SerializeToString() == encode_request(spans)
