"""hookkit._sinks.otlp_metrics.convert: the master's aggregate (real
multiprocess files, read by hookkit's collectors) as OTLP ``MetricsData``,
point by point, and as the protobuf the official exporter sends."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.common._internal.metrics_encoder import encode_metrics
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricExportResult,
    NumberDataPoint,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from prometheus_client import Counter, Summary
from prometheus_client import Gauge as PromGauge
from prometheus_client import Histogram as PromHistogram
from prometheus_client.metrics_core import Metric as Family

from hookkit._aggregate.directory import ENV_DIR
from hookkit._sinks.otlp_metrics.convert import SCOPE, Conversion, convert
from hookkit._sinks.prometheus.metrics import duration_buckets
from tests.aggregate_sample import ROUTE, collected, slot, write_hookkit_series
from tests.otlp_metrics_receiver import MetricsReceiver

START = 1_700_000_000_000_000_000
NOW = START + 60_000_000_000
RESOURCE = Resource({"service.name": "shop", "service.instance.id": "m1"})
APP_BUCKETS = (0.1, 1.0)


def write_app_series() -> None:
    """The application's own prometheus_client metrics, as it would create
    them in its workers (multiprocess, typed by the files they land in)."""
    slot(0)
    orders = Counter("shop_orders", "Orders taken.", ["kind"], registry=None)
    carts = PromGauge("shop_carts", "Open carts.", multiprocess_mode="livesum", registry=None)
    seen = PromGauge("shop_seen", "Last seen.", multiprocess_mode="all", registry=None)
    payments = PromHistogram(
        "shop_payment_seconds", "Payment time.", buckets=APP_BUCKETS, registry=None
    )
    sizes = Summary("shop_basket_items", "Items per basket.", registry=None)
    orders.labels("book").inc(2)
    carts.inc(3)
    seen.set(7)
    payments.observe(0.05)
    payments.observe(0.5)
    sizes.observe(4)
    slot(1)
    orders.labels("book").inc()
    orders.labels("pen").inc()
    carts.inc(1)
    seen.set(9)
    payments.observe(5)
    sizes.observe(2)


@pytest.fixture
def conversion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Conversion:
    """hookkit's series and the app's, from two slots, converted."""
    monkeypatch.setenv(ENV_DIR, str(tmp_path))
    write_hookkit_series(timeout=30)
    write_app_series()
    return convert(collected(tmp_path), RESOURCE, START, NOW)


def metrics(conversion: Conversion) -> dict[str, Metric]:
    ((resource_metrics,),) = [conversion.data.resource_metrics]
    ((scope_metrics,),) = [resource_metrics.scope_metrics]
    return {metric.name: metric for metric in scope_metrics.metrics}


def points(metric: Metric) -> dict[frozenset[tuple[str, Any]], Any]:
    """A metric's points by their attributes."""
    return {frozenset((p.attributes or {}).items()): p for p in metric.data.data_points}


def key(**attributes: Any) -> frozenset[tuple[str, Any]]:
    return frozenset(attributes.items())


def per_bucket(cumulative: dict[float, int], bounds: tuple[float, ...]) -> list[int]:
    """Observations by bucket, from {bound: count of observations <= bound}."""
    counts, below = [], 0
    for bound in (*bounds, math.inf):
        total = sum(n for b, n in cumulative.items() if b <= bound)
        counts.append(total - below)
        below = total
    return counts


# -- MetricsData -------------------------------------------------------------------


def test_one_resource_one_scope_and_nothing_skipped(conversion: Conversion) -> None:
    """Everything is under the resource passed in and hookkit's scope."""
    (resource_metrics,) = conversion.data.resource_metrics
    (scope_metrics,) = resource_metrics.scope_metrics
    assert (RESOURCE, SCOPE, ()) == (
        resource_metrics.resource,
        scope_metrics.scope,
        conversion.skipped,
    )


def test_a_counter_is_a_cumulative_monotonic_sum_over_all_files(conversion: Conversion) -> None:
    """Counts from both slots' files are summed, cumulative since the
    master's start; the ``_total`` suffix is the Collector's to add."""
    busy = metrics(conversion)["gunicorn.worker.busy"]
    spawns = metrics(conversion)["gunicorn.worker.spawns"]
    orders = metrics(conversion)["shop_orders"]

    assert isinstance(busy.data, Sum)
    assert (AggregationTemporality.CUMULATIVE, True, "s") == (
        busy.data.aggregation_temporality,
        busy.data.is_monotonic,
        busy.unit,
    )
    assert [NumberDataPoint({}, START, NOW, 0.75)] == list(busy.data.data_points)
    assert [2.0] == [p.value for p in spawns.data.data_points]
    assert {key(kind="book"): 3.0, key(kind="pen"): 1.0} == {
        k: p.value for k, p in points(orders).items()
    }
    assert ("", "Orders taken.") == (orders.unit, orders.description)


def test_series_created_at_zero_are_sent_at_zero(conversion: Conversion) -> None:
    """``start_series`` makes every exit reason and sink at 0: sent at 0, so
    a backend sees the first increase."""
    errors = points(metrics(conversion)["hookkit.sink.errors"])
    assert {key(sink="logs"): 1.0, key(sink="metrics"): 0.0, key(sink="tracing"): 0.0} == {
        k: p.value for k, p in errors.items()
    }


def test_gauges_are_gauges_each_with_its_multiprocess_mode(conversion: Conversion) -> None:
    """livesum: one point summed over the files; all: one point per file,
    under its identity (prometheus_client's ``pid`` label). Gauges carry no
    start time (the encoder sends none)."""
    m = metrics(conversion)

    assert [4.0] == [p.value for p in m["shop_carts"].data.data_points]
    assert isinstance(m["shop_carts"].data, Gauge)
    assert {key(pid="w4242s0"): 7.0, key(pid="w4242s1"): 9.0} == {
        k: p.value for k, p in points(m["shop_seen"]).items()
    }


def test_requests_in_flight_are_a_non_monotonic_sum(conversion: Conversion) -> None:
    """``http.server.active_requests`` is an UpDownCounter in the semantic
    conventions: a cumulative non-monotonic sum from the master's start,
    summed over the live workers' files (as the livesum gauge is); so are
    the WebSocket sessions in flight."""
    m = metrics(conversion)
    active = m["http.server.active_requests"]

    assert isinstance(active.data, Sum)
    assert (False, AggregationTemporality.CUMULATIVE) == (
        active.data.is_monotonic,
        active.data.aggregation_temporality,
    )
    assert [NumberDataPoint({"http.request.method": "GET"}, START, NOW, 2.0)] == list(
        active.data.data_points
    )
    websockets = m["http.server.active_websockets"].data
    assert isinstance(websockets, Sum)
    assert not websockets.is_monotonic


def test_the_masters_facts_are_converted(conversion: Conversion) -> None:
    """MasterCollector's gauges and counter, and the build info as a gauge of 1."""
    m = metrics(conversion)
    assert {
        "gunicorn.workers": [({}, 1.0)],
        "gunicorn.workers.desired": [({}, 2.0)],
        "gunicorn.listen.backlog": [({"listener": "127.0.0.1:8000"}, 3.0)],
        "gunicorn.build.info": [
            (
                {"gunicorn_version": "23.0.0", "hookkit_version": "0.0.0", "worker_class": "sync"},
                1.0,
            )
        ],
    } == {
        name: [(dict(p.attributes), p.value) for p in m[name].data.data_points]
        for name in (
            "gunicorn.workers",
            "gunicorn.workers.desired",
            "gunicorn.listen.backlog",
            "gunicorn.build.info",
        )
    }
    (memory,) = m["gunicorn.worker.resident_memory"].data.data_points
    assert ({"slot": "0"}, "By") == (memory.attributes, m["gunicorn.worker.resident_memory"].unit)
    assert memory.value > 0


def test_a_histogram_has_per_bucket_counts_and_no_min_or_max(conversion: Conversion) -> None:
    """Prometheus's cumulative ``le`` buckets become OTLP's per-bucket
    counts (one more than the bounds), summed over both slots; the semantic
    convention attributes replace the labels, the status code as an int, an
    empty label left out; min and max stay unset (None)."""
    duration = metrics(conversion)["http.server.request.duration"]
    bounds = duration_buckets(30)

    assert isinstance(duration.data, Histogram)
    assert AggregationTemporality.CUMULATIVE == duration.data.aggregation_temporality
    by_key = points(duration)
    ok = by_key[
        key(
            **{
                "http.request.method": "GET",
                "http.response.status_code": 200,
                "http.route": ROUTE,
                "url.scheme": "http",
            }
        )
    ]
    assert (
        HistogramDataPoint(
            attributes=ok.attributes,
            start_time_unix_nano=START,
            time_unix_nano=NOW,
            count=3,
            sum=pytest.approx(0.403),
            bucket_counts=per_bucket({0.005: 1, 0.25: 2}, bounds),
            explicit_bounds=list(bounds),
            min=None,  # type: ignore[arg-type]
            max=None,  # type: ignore[arg-type]
        )
        == ok
    )
    failed = by_key[
        key(
            **{
                "http.request.method": "POST",
                "http.response.status_code": 500,
                "http.route": "_OTHER",
                "error.type": "ValueError",
                "url.scheme": "https",
            }
        )
    ]
    aborted = by_key[
        key(**{"http.request.method": "GET", "error.type": "aborted", "url.scheme": "http"})
    ]
    assert (per_bucket({15: 1}, bounds), 1) == (list(failed.bucket_counts), failed.count)
    assert len(bounds) + 1 == len(aborted.bucket_counts)


def test_an_observation_past_the_last_bound_is_in_the_overflow_bucket(
    conversion: Conversion,
) -> None:
    """The app's histogram: 0.05, 0.5 and 5 against bounds 0.1 and 1."""
    (point,) = metrics(conversion)["shop_payment_seconds"].data.data_points
    assert ([0.1, 1.0], [1, 1, 1], 3, 5.55) == (
        list(point.explicit_bounds),
        list(point.bucket_counts),
        point.count,
        pytest.approx(point.sum),
    )


def test_a_summary_is_a_histogram_of_one_bucket(conversion: Conversion) -> None:
    """A multiprocess summary has a count and a sum only: one bucket, no bounds."""
    (point,) = metrics(conversion)["shop_basket_items"].data.data_points
    assert ([], [2], 2, 6.0) == (
        list(point.explicit_bounds),
        list(point.bucket_counts),
        point.count,
        point.sum,
    )


def test_untyped_and_stateset_families_are_gauges_others_are_skipped() -> None:
    """Untyped (a custom collector's) and stateset families become gauges;
    a gaugehistogram is skipped and named; a family without samples gives
    no metric (a metric without points is not valid OTLP)."""
    untyped = Family("queue_depth", "Depth.", "unknown")
    untyped.add_sample("queue_depth", {"queue": "mail"}, 5)
    states = Family("breaker", "Breaker state.", "stateset")
    states.add_sample("breaker", {"breaker": "open"}, 1)
    states.add_sample("breaker", {"breaker": "closed"}, 0)
    odd = Family("odd", "A gauge histogram.", "gaugehistogram")
    odd.add_sample("odd_bucket", {"le": "+Inf"}, 1)
    empty = Family("nothing", "No samples.", "gauge")

    conversion = convert([untyped, states, odd, empty], RESOURCE, START, NOW)

    assert (("odd (gaugehistogram)",), {"queue_depth", "breaker"}) == (
        conversion.skipped,
        set(metrics(conversion)),
    )
    assert [NumberDataPoint({"queue": "mail"}, 0, NOW, 5.0)] == list(
        metrics(conversion)["queue_depth"].data.data_points
    )
    assert {key(breaker="open"): 1.0, key(breaker="closed"): 0.0} == {
        k: p.value for k, p in points(metrics(conversion)["breaker"]).items()
    }


def test_a_status_code_that_is_not_digits_stays_a_string() -> None:
    """Never raised over a label hookkit did not write: kept as it is."""
    family = Family("http_server_active_requests", "", "gauge")
    family.add_sample(family.name, {"http_response_status_code": "abc"}, 1)
    (point,) = metrics(convert([family], RESOURCE, START, NOW))[
        "http.server.active_requests"
    ].data.data_points
    assert {"http.response.status_code": "abc"} == point.attributes


def test_histogram_buckets_are_never_negative_and_series_are_kept_apart() -> None:
    """Buckets that go down (files of two masters with other bounds merged)
    give 0, never a negative count, and the point's count is its buckets'
    sum; label order does not split a series; a sample of another name or
    ``_created`` is not read."""
    family = Family("job_seconds", "", "histogram")
    for le, value in (("1.0", 4), ("2.0", 3), ("+Inf", 6)):
        family.add_sample("job_seconds_bucket", {"a": "1", "b": "2", "le": le}, value)
    family.add_sample("job_seconds_sum", {"b": "2", "a": "1"}, 9.5)
    family.add_sample("job_seconds_count", {"b": "2", "a": "1"}, 6)
    family.add_sample("job_seconds_created", {"a": "1", "b": "2"}, 1e9)
    family.add_sample("other_sum", {"a": "1", "b": "2"}, 99)

    (point,) = metrics(convert([family], RESOURCE, START, NOW))["job_seconds"].data.data_points

    assert ({"a": "1", "b": "2"}, [1.0, 2.0], [4, 0, 2], 6, 9.5) == (
        point.attributes,
        list(point.explicit_bounds),
        list(point.bucket_counts),
        point.count,
        point.sum,
    )


# -- the protobuf the official exporter sends ---------------------------------------


def encoded(conversion: Conversion) -> dict[str, metrics_pb2.Metric]:
    """Encoded by the exporter's own encoder, serialized, parsed back."""
    request = ExportMetricsServiceRequest.FromString(
        encode_metrics(conversion.data).SerializeToString()
    )
    ((resource_metrics,),) = [request.resource_metrics]
    ((scope_metrics,),) = [resource_metrics.scope_metrics]
    assert ("hookkit", "shop") == (
        scope_metrics.scope.name,
        {kv.key: kv.value.string_value for kv in resource_metrics.resource.attributes}[
            "service.name"
        ],
    )
    return {metric.name: metric for metric in scope_metrics.metrics}


def attribute_types(point: Any) -> dict[str, str]:
    return {kv.key: kv.value.WhichOneof("value") for kv in point.attributes}


def test_the_protobuf_histogram_has_no_min_or_max(conversion: Conversion) -> None:
    """min and max are absent from the wire (HasField), count and sum are
    there, the status code is an int attribute, buckets are per bucket."""
    duration = encoded(conversion)["http.server.request.duration"]
    assert ("histogram", "s") == (duration.WhichOneof("data"), duration.unit)
    assert (
        metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE == duration.histogram.aggregation_temporality
    )
    for point in duration.histogram.data_points:
        assert (False, False, True) == (
            point.HasField("min"),
            point.HasField("max"),
            point.HasField("sum"),
        )
        assert len(point.explicit_bounds) + 1 == len(point.bucket_counts)
        assert point.count == sum(point.bucket_counts)
        assert (START, NOW) == (point.start_time_unix_nano, point.time_unix_nano)
    types = [attribute_types(point) for point in duration.histogram.data_points]
    assert {"http.request.method": "string_value", "http.route": "string_value"}.items() <= (
        types[0].items()
    )
    assert all(t.get("http.response.status_code", "int_value") == "int_value" for t in types)
    assert any("http.response.status_code" in t for t in types)


def test_the_protobuf_sum_and_gauge(conversion: Conversion) -> None:
    """A counter is a cumulative monotonic sum of doubles; a gauge a gauge;
    requests in flight a cumulative non-monotonic sum."""
    m = encoded(conversion)
    busy, workers = m["gunicorn.worker.busy"], m["gunicorn.workers"]
    active = m["http.server.active_requests"]
    assert ("sum", True, metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE, 0.75) == (
        busy.WhichOneof("data"),
        busy.sum.is_monotonic,
        busy.sum.aggregation_temporality,
        busy.sum.data_points[0].as_double,
    )
    assert ("gauge", "{worker}", 1.0, 0) == (
        workers.WhichOneof("data"),
        workers.unit,
        workers.gauge.data_points[0].as_double,
        workers.gauge.data_points[0].start_time_unix_nano,
    )
    assert ("sum", False, metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE, 2.0, START) == (
        active.WhichOneof("data"),
        active.sum.is_monotonic,
        active.sum.aggregation_temporality,
        active.sum.data_points[0].as_double,
        active.sum.data_points[0].start_time_unix_nano,
    )


# -- through the official exporter, over HTTP ----------------------------------------


def test_the_official_exporter_sends_it(conversion: Conversion) -> None:
    """``OTLPMetricExporter.export()`` sends the MetricsData as is: the
    receiver decodes the very message the encoder makes."""
    with MetricsReceiver() as rx:
        exporter = OTLPMetricExporter(endpoint=rx.metrics_endpoint, timeout=5)
        try:
            result = exporter.export(conversion.data)
            (request,) = rx.wait_for_requests(1)
        finally:
            exporter.shutdown()
    assert (MetricExportResult.SUCCESS, encode_metrics(conversion.data)) == (result, request)


def test_the_exporters_own_timeout_bounds_an_export_timeout_millis_does_not() -> None:
    """Against a receiver that never answers, ``export(timeout_millis=...)``
    is ignored (SDK 1.45): only the exporter's ``timeout`` ends the call. The
    sink must bound its exports with ``timeout``."""
    family = Family("queue_depth", "Depth.", "gauge")
    family.add_sample("queue_depth", {}, 5)
    data = convert([family], RESOURCE, START, NOW).data
    with MetricsReceiver(mode="hang") as rx:
        exporter = OTLPMetricExporter(endpoint=rx.metrics_endpoint, timeout=1.5)
        try:
            began = time.monotonic()
            result = exporter.export(data, timeout_millis=100)
            took = time.monotonic() - began
        finally:
            exporter.shutdown()
    assert MetricExportResult.FAILURE == result
    assert 1.0 < took < 10.0, took
