"""The hand-rolled peer of `make bench`: the gunicorn config someone would
write by hand for metrics, traces and an access log, without hookkit.

- Prometheus: prometheus_client in multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``
  must name a writable directory), a Counter and a Histogram updated in
  ``post_request``, ``mark_process_dead`` in ``child_exit``, and the master
  serving ``/metrics`` on ``HANDROLLED_METRICS_PORT`` (when set), as the
  prometheus_client documentation shows for gunicorn.
- OpenTelemetry: a TracerProvider with a BatchSpanProcessor(OTLPSpanExporter())
  built in ``post_fork``; the exporter reads the usual ``OTEL_EXPORTER_OTLP_*``
  variables. A SERVER span starts in ``pre_request`` with the caller's
  propagated context and ends in ``post_request``, with a few attributes.
- structlog: one JSON access line per request on stderr, from ``post_request``.

    gunicorn -c benchmarks/handrolled.conf.py --pythonpath benchmarks hello:app
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import structlog
from opentelemetry import context, propagate, trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode
from prometheus_client import CollectorRegistry, Counter, Histogram, multiprocess, start_http_server

REQUESTS = Counter("http_requests_total", "HTTP requests served.", ["method", "status"])
DURATION = Histogram("http_request_duration_seconds", "HTTP request duration.", ["method"])

structlog.configure(
    processors=[
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.JSONRenderer(),
    ],
    logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    cache_logger_on_first_use=True,
)
access_log = structlog.get_logger("access")

_provider: TracerProvider | None = None


def when_ready(server: Any) -> None:
    """Serve the workers' metrics, summed, from the master."""
    port = int(os.environ.get("HANDROLLED_METRICS_PORT", "0"))
    if port:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        start_http_server(port, addr="127.0.0.1", registry=registry)


def post_fork(server: Any, worker: Any) -> None:
    """Build this worker's tracer provider, exporting over OTLP/HTTP."""
    global _provider  # noqa: PLW0603 - one provider per worker process
    _provider = TracerProvider(resource=Resource.create({"process.pid": os.getpid()}))
    _provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(_provider)


def pre_request(worker: Any, req: Any) -> None:
    """Start the request's SERVER span, as a child of the caller's."""
    carrier = {name.lower(): value for name, value in req.headers}
    span = trace.get_tracer("handrolled").start_span(
        req.method,
        context=propagate.extract(carrier),
        kind=SpanKind.SERVER,
        attributes={"http.request.method": req.method, "url.path": req.path},
    )
    req.handrolled_span = span
    req.handrolled_token = context.attach(trace.set_span_in_context(span))
    req.handrolled_started = time.perf_counter()


def post_request(worker: Any, req: Any, environ: Any, resp: Any) -> None:
    """Count the request, end its span and log the access line."""
    duration = time.perf_counter() - req.handrolled_started
    status = resp.status_code
    REQUESTS.labels(req.method, str(status)).inc()
    DURATION.labels(req.method).observe(duration)
    span = req.handrolled_span
    span.set_attribute("http.response.status_code", status)
    if status is None or status >= 500:
        span.set_status(Status(StatusCode.ERROR))
    trace_id = format(span.get_span_context().trace_id, "032x")
    span.end()
    context.detach(req.handrolled_token)
    access_log.info(
        "request",
        method=req.method,
        path=req.path,
        status=status,
        duration_ms=round(duration * 1000, 3),
        trace_id=trace_id,
    )


def worker_exit(server: Any, worker: Any) -> None:
    """Send the spans still queued before the worker goes."""
    if _provider is not None:
        _provider.shutdown()


def child_exit(server: Any, worker: Any) -> None:
    """Drop a dead worker's live gauges (prometheus_client's advice)."""
    multiprocess.mark_process_dead(worker.pid)
