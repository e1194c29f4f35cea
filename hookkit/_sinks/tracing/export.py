"""Span exporters as hookkit runs them: failures counted, calls bounded.

The SDK's ``force_flush`` and ``shutdown`` do not honour their timeouts
against a hanging collector (opentelemetry-python #4568), so hookkit runs
them in a daemon thread and waits for it at most the bound
(``run_bounded``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult


class ExportFailed(Exception):
    """An exporter reported that a batch of spans was not delivered."""


class ReportingExporter(SpanExporter):
    """An exporter whose failures are counted and reported by hookkit
    (``hookkit_sink_errors_total{sink="tracing"}`` and a rate-limited line)."""

    def __init__(self, exporter: SpanExporter, name: str, report: Callable[[Exception], None]):
        self.exporter = exporter
        self.name = name
        self.report = report

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self.exporter.export(spans)
        except Exception as exc:
            self.report(exc)
            return SpanExportResult.FAILURE
        if result is not SpanExportResult.SUCCESS:
            self.report(ExportFailed(f"{self.name} exporter dropped {len(spans)} spans"))
        return result

    def shutdown(self) -> None:
        self.exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.exporter.force_flush(timeout_millis)


def run_bounded(target: Callable[[], object], seconds: float, name: str) -> bool:
    """Run ``target`` in a daemon thread and wait for it at most ``seconds``;
    True when it finished in time."""
    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    thread.join(seconds)
    return not thread.is_alive()


def installed(provider: object) -> bool:
    """Whether someone installed a real tracer provider (not the API's
    proxy placeholder, nor a deliberate no-op)."""
    if isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
        return False
    return provider is not None


def make_exporter(name: str) -> SpanExporter:
    if name == "otlp":
        from hookkit._sinks.tracing.otlp_encode import FastOTLPSpanExporter

        return FastOTLPSpanExporter()
    if name == "otlp_grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # type: ignore[import-not-found]
            OTLPSpanExporter as GrpcSpanExporter,
        )

        exporter: SpanExporter = GrpcSpanExporter()
        return exporter
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    from importlib import metadata

    for entry in metadata.entry_points(group="opentelemetry_traces_exporter"):
        if entry.name == name:
            made: SpanExporter = entry.load()()
            return made
    raise LookupError(f"no span exporter named {name!r}")
