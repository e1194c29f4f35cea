"""Spans encoded as they end, on the thread that ends them: the batch
processor's queue holds bytes, and its export thread only joins them and
sends (issue 16: a thread that encodes a whole batch holds the GIL for as
long, and the requests queue behind it)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider

from hookkit._sinks.tracing import otlp_encode
from hookkit._sinks.tracing.otlp_encode import (
    EncodedSpan,
    EncodingBatchSpanProcessor,
    FastOTLPSpanExporter,
    encode_request,
)
from hookkit._sinks.tracing.spans import ServerSpans
from tests.otlp import OtlpReceiver
from tests.test_otlp_encode import varied_spans


def test_an_encoded_span_encodes_as_the_span_itself() -> None:
    """A batch of spans encoded one by one as they ended is the very bytes
    of the same batch encoded at once, and of the official encoder's."""
    spans = varied_spans()
    expected = encode_spans(spans).SerializePartialToString()
    assert expected == encode_request([EncodedSpan(span) for span in spans])
    mixed = [EncodedSpan(span) if n % 2 else span for n, span in enumerate(spans)]
    assert expected == encode_request(mixed)


def test_a_span_the_fast_encoder_cannot_encode_is_encoded_by_the_official_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Encoding never fails where the official encoder would not: a span
    the fast encoder refuses is encoded by the official encoder, to the
    same bytes."""
    spans = varied_spans()
    expected = encode_spans(spans).SerializePartialToString()

    def refuse(span: ReadableSpan) -> bytes:
        raise TypeError("refused")

    monkeypatch.setattr(otlp_encode, "_span", refuse)
    assert expected == encode_request([EncodedSpan(span) for span in spans])


def _provider_with(processor: Any) -> tuple[TracerProvider, ServerSpans]:
    provider = TracerProvider(resource=Resource({"service.name": "s"}), shutdown_on_exit=False)
    provider.add_span_processor(processor)
    return provider, ServerSpans(provider, [processor], "9.9")


def test_the_export_thread_never_encodes_a_span(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every span, hookkit's and the app's, is encoded on the thread that
    ends it; the processor's export thread encodes none, and what reaches
    the collector is what the official encoder makes of the same spans."""
    threads: list[str] = []
    real_span = otlp_encode._span

    def recording(span: ReadableSpan) -> bytes:
        threads.append(threading.current_thread().name)
        return real_span(span)

    monkeypatch.setattr(otlp_encode, "_span", recording)
    with OtlpReceiver() as rx:
        exporter = FastOTLPSpanExporter(endpoint=rx.traces_endpoint)
        processor = EncodingBatchSpanProcessor(exporter, schedule_delay_millis=60_000)
        provider, maker = _provider_with(processor)
        ended: list[ReadableSpan] = []
        for n in range(5):
            server = maker.start("GET", otlp_encode_context(), {"n": n})
            with provider.get_tracer("app").start_as_current_span("child") as child:
                pass
            assert isinstance(child, ReadableSpan)
            server.end()
            ended += [child, server]  # type: ignore[list-item]
        assert [threading.current_thread().name] * 10 == threads
        assert processor.force_flush()
        rx.wait_for_requests(1)
        bodies = rx.raw_bodies
        provider.shutdown()
    assert 10 == len(threads)
    assert [encode_spans(ended).SerializePartialToString()] == bodies


def otlp_encode_context() -> Any:
    from opentelemetry.context import Context

    return Context()


def test_an_unsampled_span_is_not_queued() -> None:
    """As the SDK's batch processor: only sampled spans are exported."""
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

    exported: list[int] = []

    class Counting(FastOTLPSpanExporter):
        def export(self, spans: Any) -> Any:
            exported.append(len(spans))
            return super().export(spans)

    with OtlpReceiver() as rx:
        processor = EncodingBatchSpanProcessor(
            Counting(endpoint=rx.traces_endpoint), schedule_delay_millis=60_000
        )
        provider = TracerProvider(sampler=ALWAYS_OFF, shutdown_on_exit=False)
        provider.add_span_processor(processor)
        with provider.get_tracer("app").start_as_current_span("dropped"):
            pass
        processor.force_flush()
        provider.shutdown()
    assert [] == exported


def test_the_bsp_variables_keep_their_meaning(monkeypatch: pytest.MonkeyPatch) -> None:
    """OTEL_BSP_* configure the encoding processor as they do the SDK's."""
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "1234")
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "7")
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "70")
    monkeypatch.setenv("OTEL_BSP_EXPORT_TIMEOUT", "4321")
    with OtlpReceiver() as rx:
        processor = EncodingBatchSpanProcessor(FastOTLPSpanExporter(endpoint=rx.traces_endpoint))
        batch = processor._batch_processor
        assert (1234, 7, 70, 4321) == (
            batch._schedule_delay_millis,
            batch._max_export_batch_size,
            batch._max_queue_size,
            batch._export_timeout_millis,
        )
        processor.shutdown()


def test_hookkits_provider_encodes_as_spans_end() -> None:
    """The provider hookkit builds to export over OTLP/HTTP queues encoded
    spans; another exporter beside it keeps the SDK's processor."""
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from hookkit._core.settings import Settings
    from hookkit._sinks.tracing.sink import TracingSink

    def processors(environ: dict[str, str]) -> list[type[Any]]:
        sink = TracingSink(Settings.load(environ), environ)
        sink.preload()
        provider = sink._build_provider({"process.pid": 1}, None)
        try:
            return [type(p) for p in provider._active_span_processor._span_processors]
        finally:
            provider.shutdown()

    with OtlpReceiver() as rx:
        endpoint = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": rx.traces_endpoint}
        assert [EncodingBatchSpanProcessor] == processors(endpoint)
        both = {**endpoint, "OTEL_TRACES_EXPORTER": "otlp,console"}
        assert [EncodingBatchSpanProcessor, BatchSpanProcessor] == processors(both)


def test_a_value_of_each_connection_is_not_kept_encoded() -> None:
    """The encoder keeps encoded attributes that repeat from span to span;
    the client's port, new with each connection, is not kept (it would
    fill the cache with entries never used again)."""
    from opentelemetry.sdk.trace import TracerProvider

    otlp_encode._ENCODED.clear()
    provider = TracerProvider(shutdown_on_exit=False)
    tracer = provider.get_tracer("t")
    for port in range(40000, 40100):
        attributes = {"network.peer.port": port, "http.request.method": "GET"}
        with tracer.start_as_current_span("GET", attributes=attributes) as span:
            pass
        otlp_encode.encode_request([span])  # type: ignore[list-item]
    keys = {key for _, key, _, _ in otlp_encode._ENCODED}
    assert "http.request.method" in keys
    assert "network.peer.port" not in keys
    assert otlp_encode._ENCODED_LIMIT <= 1024


def test_a_span_no_encoder_can_encode_is_dropped_and_reported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ending a span never raises into the app: a span neither encoder can
    encode is dropped and counted as the exporter's error."""
    from hookkit._sinks.tracing.export import ReportingExporter

    def refuse(span: ReadableSpan) -> bytes:
        raise TypeError("refused")

    reported: list[Exception] = []
    with OtlpReceiver() as rx:
        exporter = ReportingExporter(
            FastOTLPSpanExporter(endpoint=rx.traces_endpoint), "otlp", reported.append
        )
        processor = EncodingBatchSpanProcessor(exporter, schedule_delay_millis=60_000)
        provider, _ = _provider_with(processor)
        monkeypatch.setattr(otlp_encode, "_span", refuse)
        monkeypatch.setattr(otlp_encode, "_official_span", refuse)
        with provider.get_tracer("app").start_as_current_span("unencodable"):
            pass
        monkeypatch.undo()
        with provider.get_tracer("app").start_as_current_span("fine"):
            pass
        processor.force_flush()
        rx.wait_for_requests(1)
        provider.shutdown()
        assert ["fine"] == [span.name for span in rx.spans]
    assert ["refused"] == [str(exc) for exc in reported]
