"""OTLP metrics end to end: a real gunicorn master with two workers,
``HOOKKIT_OTLP_METRICS=on``, pushing to ``tests.otlp_metrics_receiver``.
The resource carries ``process.pid`` (the SDK's ``process`` detector), so
each export tells which process sent it.
"""

from __future__ import annotations

import signal
import time
from typing import Any

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)

from hookkit._face.gunicorn_process import Gunicorn, free_port, http_get, match
from tests.otlp_metrics_receiver import METRICS_PATH, MetricsReceiver
from tests.scrape import scrape_text, total

pytestmark = [pytest.mark.integration]

APP = "apps.wsgi:app"
DURATION = "http.server.request.duration"


def start(serve: Any, endpoint: str, interval_ms: int, **extra: str) -> Gunicorn:
    env = {
        **extra,
        "HOOKKIT_OTLP_METRICS": "on",
        "HOOKKIT_TRACING": "off",  # spans would go to the same endpoint
        "OTEL_METRIC_EXPORT_INTERVAL": str(interval_ms),
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_SERVICE_NAME": "shop",
        "OTEL_EXPERIMENTAL_RESOURCE_DETECTORS": "process",
    }
    return serve(APP, "-w", "2", env=env)  # type: ignore[no-any-return]


def base(rx: MetricsReceiver) -> str:
    """The receiver as ``OTEL_EXPORTER_OTLP_ENDPOINT`` (the exporter adds /v1/metrics)."""
    return rx.metrics_endpoint.removesuffix(METRICS_PATH)


def sink_errors(server: Gunicorn) -> float:
    text = scrape_text(server.metrics_port)  # type: ignore[attr-defined]
    return total(text, "hookkit_sink_errors_total", sink="otlp_metrics")


def resource(request: ExportMetricsServiceRequest) -> dict[str, Any]:
    """The one resource of an export, as {key: value}."""
    (resource_metrics,) = request.resource_metrics
    return {
        attribute.key: getattr(attribute.value, attribute.value.WhichOneof("value"))
        for attribute in resource_metrics.resource.attributes
    }


def request_count(request: ExportMetricsServiceRequest) -> int:
    """Requests the export counts: ``http.server.request.duration``'s counts, summed."""
    return sum(
        point.count
        for resource_metrics in request.resource_metrics
        for scope_metrics in resource_metrics.scope_metrics
        for metric in scope_metrics.metrics
        if metric.name == DURATION
        for point in metric.histogram.data_points
    )


def all_requests(rx: MetricsReceiver) -> list[ExportMetricsServiceRequest]:
    with rx._lock:
        return list(rx._requests)


def wait_for_count(rx: MetricsReceiver, count: int, timeout: float = 10.0) -> int:
    """Wait for an export counting ``count`` requests; the number of exports then."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        exports = all_requests(rx)
        if exports and request_count(exports[-1]) == count:
            return len(exports)
        time.sleep(0.05)
    counts = [request_count(one) for one in all_requests(rx)]
    raise AssertionError(f"no export counted {count} requests: {counts}; errors {rx.errors}")


def test_the_master_alone_exports_the_aggregate_with_one_identity(serve: Any) -> None:
    """Every 500 ms, one stream: only the master's pid, one service.instance.id,
    kept across a SIGHUP; the latest export counts every request the two
    workers served."""
    requests = 7
    with MetricsReceiver() as rx:
        server = start(serve, base(rx), interval_ms=500)
        started = time.monotonic()
        for _ in range(requests):
            assert 200 == http_get(server.port, "/")[0]
        wait_for_count(rx, requests)
        before = len(all_requests(rx))
        assert 2 == len(server.live_workers())

        server.signal(signal.SIGHUP)
        server.wait_for(match(event="worker_exited", reason="reload"), count=2)
        rx.wait_for_requests(before + 3, timeout=10)
        # Counts carry on across the reload (the workers' slots are reused).
        assert requests == request_count(all_requests(rx)[-1])
        assert 200 == http_get(server.port, "/")[0]
        wait_for_count(rx, requests + 1)
        elapsed = time.monotonic() - started
        exports = all_requests(rx)

        resources = [resource(one) for one in exports]
        assert {server.pid} == {one["process.pid"] for one in resources}
        instance_ids = {one["service.instance.id"] for one in resources}
        assert 1 == len(instance_ids), instance_ids
        assert {"shop"} == {one["service.name"] for one in resources}
        # One stream: at most one export per interval (a second exporter,
        # a worker's or a duplicate thread's, would double the rate).
        assert len(exports) <= elapsed / 0.5 + 2, (len(exports), elapsed)
        assert [] == rx.errors
        # The sink's error series exists from the start, at 0.
        assert 'hookkit_sink_errors_total{sink="otlp_metrics"}' in scrape_text(server.metrics_port)
        assert 0 == sink_errors(server)


def test_stop_sends_the_last_values_and_nothing_before_the_interval(serve: Any) -> None:
    """With a one-minute interval nothing goes out while serving; stopping
    the master sends one export with every request counted."""
    requests = 3
    with MetricsReceiver() as rx:
        server = start(serve, base(rx), interval_ms=60000)
        for _ in range(requests):
            assert 200 == http_get(server.port, "/")[0]
        time.sleep(0.5)
        assert [] == all_requests(rx)
        master = server.pid
        assert 0 == server.stop()
        (last,) = rx.wait_for_requests(1)
        assert requests == request_count(last)
        assert master == resource(last)["process.pid"]
        assert [] == rx.errors


def test_a_failing_export_is_counted_and_gunicorn_serves_on(serve: Any) -> None:
    """Nothing listens at the endpoint: each failed export is counted in
    ``hookkit_sink_errors_total{sink="otlp_metrics"}``; requests are served."""
    # The exporter retries within its timeout before it gives up.
    server = start(
        serve,
        f"http://127.0.0.1:{free_port()}",
        interval_ms=200,
        OTEL_EXPORTER_OTLP_METRICS_TIMEOUT="0.5",
    )
    deadline = time.monotonic() + 10
    while sink_errors(server) < 2:
        assert time.monotonic() < deadline, "no export failure counted"
        time.sleep(0.1)
    assert 200 == http_get(server.port, "/")[0]
