"""One process's logs pipeline: the SDK's provider, batch processor and
OTLP/HTTP exporter, with failures counted and every wait bounded.

- ``LoggerProvider(shutdown_on_exit=False)``: the SDK's own atexit shutdown
  waits without bound on a hanging collector; hookkit's is bounded.
- ``BatchLogRecordProcessor``: emitting appends to a deque (safe from a
  signal handler, as ``worker_abort`` needs); the export runs in the
  processor's thread, never in a request (``OTEL_BLRP_*`` tune it).
- the official ``OTLPLogExporter`` (http/protobuf), which reads the
  endpoint, headers, compression and certificates from
  ``OTEL_EXPORTER_OTLP_LOGS_*`` / ``OTEL_EXPORTER_OTLP_*``; wrapped so that
  a failed export is counted in ``hookkit_sink_errors_total{sink="otlp_logs"}``.

The SDK's ``force_flush`` and ``shutdown`` do not honour their timeouts
against a hanging collector (opentelemetry-python #4568), so hookkit runs
them in a daemon thread and waits for it at most the bound (``run_bounded``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry.sdk._logs import LoggerProvider, ReadableLogRecord
from opentelemetry.sdk._logs.export import (
    BatchLogRecordProcessor,
    LogRecordExporter,
    LogRecordExportResult,
)
from opentelemetry.sdk.resources import Resource


class ExportFailed(Exception):
    """The exporter said a batch of records was not delivered (it logs why)."""


class ReportingExporter(LogRecordExporter):
    """An exporter whose failures are counted and reported by hookkit."""

    def __init__(self, exporter: LogRecordExporter, report: Callable[[Exception], None]) -> None:
        self.exporter = exporter
        self.report = report

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        try:
            result = self.exporter.export(batch)
        except Exception as exc:
            self.report(exc)
            return LogRecordExportResult.FAILURE
        if result is not LogRecordExportResult.SUCCESS:
            self.report(ExportFailed(f"the OTLP logs export dropped {len(batch)} records"))
        return result

    def shutdown(self) -> None:
        self.exporter.shutdown()  # type: ignore[no-untyped-call]

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.exporter.force_flush(timeout_millis)


def otlp_exporter(timeout: float) -> LogRecordExporter:
    """The official OTLP/HTTP log exporter; it reads the ``OTEL_*`` variables."""
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter

    return OTLPLogExporter(timeout=timeout)


def build_provider(
    resource: Resource,
    exporter: LogRecordExporter,
    report: Callable[[Exception], None],
) -> LoggerProvider:
    """A provider that batches into ``exporter``, its failures reported."""
    provider = LoggerProvider(resource=resource, shutdown_on_exit=False)
    provider.add_log_record_processor(BatchLogRecordProcessor(ReportingExporter(exporter, report)))
    return provider


def run_bounded(target: Callable[[], object], seconds: float, name: str) -> bool:
    """Run ``target`` in a daemon thread and wait for it at most ``seconds``;
    True when it finished in time."""
    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    thread.join(seconds)
    return not thread.is_alive()


def process_resource(base: Resource | None, identity: dict[str, Any]) -> Resource:
    """``base`` (the ``OTEL_*`` resource variables, read once in the master)
    with this process's identity (``process.pid``...), which wins: every
    process has its own."""
    return (base or Resource.create()).merge(Resource(identity))


def base_resource(service_name: str | None) -> Resource:
    """``Resource.create()`` (``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``),
    read once in the master (resource detectors are slow, and give every
    worker the same answer), named after gunicorn's ``proc_name`` when
    nothing named the service, as the spans are."""
    from opentelemetry.sdk.resources import SERVICE_NAME

    resource = Resource.create()
    named = str(resource.attributes.get(SERVICE_NAME, ""))
    if service_name and (not named or named.startswith("unknown_service")):
        resource = resource.merge(Resource({SERVICE_NAME: service_name}))
    return resource
