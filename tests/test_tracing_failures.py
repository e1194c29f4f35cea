"""Tracing when things go wrong: a worker aborted by gunicorn's timeout, and
a collector that refuses connections, never answers, or answers 500.

What must hold: the stuck request arrives as an ERROR span carrying the
stuck stack; no request waits on the collector (each hello-world request
completes well under a second: the latency difference itself belongs in the
benchmark, not here); a stopping worker leaves within the flush bound; and
hookkit counts the failed exports. Real gunicorn, real OTLP/HTTP, 127.0.0.1.
"""

from __future__ import annotations

import signal
import time
from typing import Any

import pytest

from hookkit._face.gunicorn_process import match
from tests.otlp import OtlpReceiver, refused_endpoint
from tests.scrape import scrape_text, total
from tests.traced import TRACE_ID, TRACEPARENT, request, server_spans, start_traced

pytestmark = pytest.mark.integration


def test_a_request_past_the_timeout_arrives_as_an_error_span_with_its_stack(
    serve: Any,
) -> None:
    """On the sync worker, a request hanging past ``--timeout`` ends, when
    gunicorn aborts the worker, as one ERROR span: ``error.type`` timeout and
    an exception event whose stack names the function the request was stuck
    in. It is exported before the master's SIGKILL, and only once; the
    ``worker_aborted`` line names the same trace and stack."""
    with OtlpReceiver() as rx:
        server = start_traced(serve, rx, "--timeout", "2")
        status, _ = request(server.port, "/sleep?30", [("traceparent", TRACEPARENT)], timeout=20)
        server.wait_for(match(event="worker_exited", reason="timeout"), timeout=20)
        (aborted,) = server.events(match(event="worker_aborted"))
        (span,) = server_spans(rx, **{"url__path": "/sleep"})
        time.sleep(0.5)
        spans = [s for s in rx.spans if s.attributes.get("url.path") == "/sleep"]

    assert 500 == status  # the sync worker answers the aborted request itself
    assert 1 == len(spans)
    assert ("ERROR", "timeout", TRACE_ID) == (
        span.status_code,
        span.attributes["error.type"],
        span.trace_id,
    )
    (event,) = span.events
    assert ("exception", "WorkerTimeout") == (event.name, event.attributes["exception.type"])
    assert "stuck_in_sleep" in event.attributes["exception.stacktrace"]
    assert "handle_abort" not in event.attributes["exception.stacktrace"]
    (in_flight,) = aborted["requests_in_flight"]
    assert (TRACE_ID, span.span_id) == (in_flight["trace_id"], in_flight["span_id"])
    assert "stuck_in_sleep" in in_flight["stack"]


@pytest.mark.parametrize("collector", ["refused", "hang", "error"])
def test_no_request_waits_on_a_failing_collector(serve: Any, collector: str) -> None:
    """With the collector refusing connections, never answering, or
    answering 500, every request still completes well under a second, and
    the failed exports are counted in ``hookkit_sink_errors_total``."""
    with OtlpReceiver(mode="hang" if collector == "hang" else "error") as rx:
        endpoint = refused_endpoint() if collector == "refused" else rx.endpoint
        server = start_traced(
            serve,
            endpoint,
            env={"OTEL_EXPORTER_OTLP_TIMEOUT": "1", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "4"},
        )
        durations = []
        for _ in range(40):
            started = time.monotonic()
            status, _ = request(server.port, "/status/200", timeout=5)
            durations.append((status, time.monotonic() - started))
        assert [] == [(s, d) for s, d in durations if s != 200 or d >= 0.5]
        deadline = time.monotonic() + 10
        errors = 0.0
        while errors == 0 and time.monotonic() < deadline:
            errors = total(
                scrape_text(server.metrics_port), "hookkit_sink_errors_total", sink="tracing"
            )
            time.sleep(0.1)
        assert errors >= 1


@pytest.mark.parametrize("collector", ["refused", "hang"])
def test_a_worker_stops_within_the_flush_bound(serve: Any, collector: str) -> None:
    """A worker with spans buffered for a dead or hanging collector leaves
    within ``HOOKKIT_TRACING_FLUSH_SECONDS`` (1 s here; the exporter alone
    would wait its 10 s timeout, and gunicorn's graceful timeout is 20 s)."""
    with OtlpReceiver(mode="hang") as rx:
        endpoint = refused_endpoint() if collector == "refused" else rx.endpoint
        server = start_traced(
            serve,
            endpoint,
            "--graceful-timeout",
            "20",
            env={"HOOKKIT_TRACING_FLUSH_SECONDS": "1", "OTEL_BSP_SCHEDULE_DELAY": "600000"},
        )
        for _ in range(5):
            assert 200 == request(server.port, "/status/200")[0]
        started = time.monotonic()
        server.signal(signal.SIGTERM)
        server.wait_for(match(event="worker_exited"), timeout=20)
        took = time.monotonic() - started
        assert server.proc is not None
        server.proc.wait(10)
    assert took < 1.0 + 2.0  # the bound, plus slack for a loaded machine
