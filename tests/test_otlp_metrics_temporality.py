"""Delta temporality from the cumulative aggregate
(``hookkit._sinks.otlp_metrics.temporality``): the SDK's mapping per
instrument kind, and deltas that add up to the cumulative values whatever
exports fail."""

from __future__ import annotations

import pytest
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics import (
    Counter,
    Exemplar,
    Histogram,
    ObservableCounter,
    ObservableGauge,
    ObservableUpDownCounter,
    UpDownCounter,
)
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    HistogramDataPoint,
    MetricsData,
    NumberDataPoint,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from hookkit._sinks.otlp_metrics.convert import convert
from hookkit._sinks.otlp_metrics.temporality import (
    COUNTER,
    DELTA_KINDS,
    HISTOGRAM,
    OBSERVABLE_COUNTER,
    PREFERENCE,
    PREFERENCES,
    Deltas,
)

START = 1_000
DELTA = AggregationTemporality.DELTA
CUMULATIVE = AggregationTemporality.CUMULATIVE


@pytest.mark.parametrize("preference", PREFERENCES)
def test_the_mapping_is_the_sdks(monkeypatch: pytest.MonkeyPatch, preference: str) -> None:
    """For each preference, the kinds sent as deltas are those the official
    exporter's own mapping (what an SDK reader would apply) makes delta."""
    monkeypatch.setenv(PREFERENCE, preference)
    sdk = OTLPMetricExporter()._preferred_temporality
    kinds = {
        COUNTER: Counter,
        OBSERVABLE_COUNTER: ObservableCounter,
        HISTOGRAM: Histogram,
        "updown": UpDownCounter,
        "observable_updown": ObservableUpDownCounter,
        "gauge": ObservableGauge,
    }
    assert DELTA_KINDS[preference] == {
        kind for kind, instrument in kinds.items() if sdk[instrument] == DELTA
    }


def families(
    requests: float, buckets: list[tuple[str, float]], active: float, cpu: float
) -> list[Metric]:
    """A counter and a histogram from the files, a livesum gauge (an up-down
    count in OTLP), the master's observed counter and a plain gauge."""
    spawns = CounterMetricFamily("gunicorn_worker_spawns", "Spawns.", value=requests)
    duration = HistogramMetricFamily(
        "http_server_request_duration_seconds", "Durations.", labels=["http_request_method"]
    )
    duration.add_metric(["GET"], buckets, sum_value=buckets[-1][1] * 0.1)
    in_flight = GaugeMetricFamily(
        "http_server_active_requests", "In flight.", labels=["http_request_method"]
    )
    in_flight.add_metric(["GET"], active)
    workers_cpu = CounterMetricFamily("gunicorn_workers_cpu_seconds", "CPU.", value=cpu)
    workers = GaugeMetricFamily("gunicorn_workers", "Workers.", value=2)
    return [spawns, duration, in_flight, workers_cpu, workers]


def cumulative(requests: float, at: int, cpu: float = 1.0) -> MetricsData:
    buckets = [("0.1", requests / 2), ("1.0", requests), ("+Inf", requests)]
    return convert(families(requests, buckets, 1, cpu), Resource({}), START, at).data


def by_name(data: MetricsData) -> dict[str, object]:
    (resource_metrics,) = data.resource_metrics
    (scope,) = resource_metrics.scope_metrics
    return {metric.name: metric.data for metric in scope.metrics}


def test_cumulative_changes_nothing() -> None:
    data = cumulative(4, 2_000)
    assert data is Deltas("cumulative", START).apply(data, 2_000)


def test_delta_points_start_at_the_last_successful_export() -> None:
    """First export: the whole count, from the master's start. Second: the
    growth since, from the first export's time. Up-down counts and gauges
    stay as they are."""
    deltas = Deltas("delta", START)
    first = by_name(deltas.apply(cumulative(4, 2_000), 2_000))
    deltas.commit()
    second = by_name(deltas.apply(cumulative(10, 3_000, cpu=2.5), 3_000))

    spawns = first["gunicorn.worker.spawns"]
    assert isinstance(spawns, Sum)
    assert (DELTA, True) == (spawns.aggregation_temporality, spawns.is_monotonic)
    assert [(START, 2_000, 4.0)] == [
        (p.start_time_unix_nano, p.time_unix_nano, p.value) for p in spawns.data_points
    ]
    spawns = second["gunicorn.worker.spawns"]
    assert isinstance(spawns, Sum)
    assert [(2_000, 3_000, 6.0)] == [
        (p.start_time_unix_nano, p.time_unix_nano, p.value) for p in spawns.data_points
    ]
    duration = second["http.server.request.duration"]
    assert DELTA == duration.aggregation_temporality  # type: ignore[attr-defined]
    (point,) = duration.data_points  # type: ignore[attr-defined]
    assert isinstance(point, HistogramDataPoint)
    # 10 requests now (5 <= 0.1 s, 5 in (0.1, 1]), 4 before (2 and 2).
    assert (2_000, 6, [3, 3, 0], pytest.approx(0.6)) == (
        point.start_time_unix_nano,
        point.count,
        list(point.bucket_counts),
        point.sum,
    )
    cpu = second["gunicorn.workers.cpu"]
    assert isinstance(cpu, Sum)
    assert (DELTA, 1.5) == (cpu.aggregation_temporality, cpu.data_points[0].value)
    active = second["http.server.active_requests"]
    assert isinstance(active, Sum)
    assert (CUMULATIVE, False, START) == (
        active.aggregation_temporality,
        active.is_monotonic,
        active.data_points[0].start_time_unix_nano,
    )
    assert isinstance(second["gunicorn.workers"], Gauge)


def test_lowmemory_keeps_the_masters_observed_counters_cumulative() -> None:
    deltas = Deltas("lowmemory", START)
    data = by_name(deltas.apply(cumulative(4, 2_000), 2_000))
    assert DELTA == data["gunicorn.worker.spawns"].aggregation_temporality  # type: ignore[attr-defined]
    assert DELTA == data["http.server.request.duration"].aggregation_temporality  # type: ignore[attr-defined]
    assert CUMULATIVE == data["gunicorn.workers.cpu"].aggregation_temporality  # type: ignore[attr-defined]


def test_a_failed_export_loses_nothing() -> None:
    """Without ``commit`` (the export failed) the next delta covers both
    intervals, from the last export that succeeded."""
    deltas = Deltas("delta", START)
    deltas.apply(cumulative(4, 2_000), 2_000)
    deltas.commit()
    deltas.apply(cumulative(7, 3_000), 3_000)  # not committed: failed
    data = by_name(deltas.apply(cumulative(9, 4_000), 4_000))
    (point,) = data["gunicorn.worker.spawns"].data_points  # type: ignore[attr-defined]
    assert (2_000, 5.0) == (point.start_time_unix_nano, point.value)


def test_deltas_add_up_to_the_cumulative_count() -> None:
    """Whatever the exports, committed deltas sum to the last cumulative
    value; a series first seen later counts from 0."""
    deltas = Deltas("delta", START)
    sent = 0.0
    for at, requests in enumerate([0, 3, 3, 8, 20, 21], start=2):
        data = by_name(deltas.apply(cumulative(requests, at * 1_000), at * 1_000))
        deltas.commit()
        (point,) = data["http.server.request.duration"].data_points  # type: ignore[attr-defined]
        sent += point.count
    assert 21 == sent


def test_a_restarted_series_is_sent_whole() -> None:
    """A cumulative value that went down started again: its delta is the new value."""
    deltas = Deltas("delta", START)
    deltas.apply(cumulative(10, 2_000), 2_000)
    deltas.commit()
    data = by_name(deltas.apply(cumulative(3, 3_000), 3_000))
    (spawns,) = data["gunicorn.worker.spawns"].data_points  # type: ignore[attr-defined]
    (duration,) = data["http.server.request.duration"].data_points  # type: ignore[attr-defined]
    assert (3.0, 3) == (spawns.value, duration.count)


def test_exemplars_older_than_the_delta_point_are_left_out() -> None:
    old = Exemplar({}, 0.5, 1_500, 1, 2)
    new = Exemplar({}, 0.7, 2_500, 3, 4)
    point = NumberDataPoint({}, START, 3_000, 5.0, exemplars=[old, new])
    data = cumulative(1, 2_000)
    deltas = Deltas("delta", START)
    deltas.apply(data, 2_000)
    deltas.commit()
    assert [new] == deltas._recent(point.exemplars)
