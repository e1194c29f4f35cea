"""hookkit._sinks.otlp_metrics.names: every metric hookkit exports over OTLP
comes back under today's Prometheus name and labels when the OpenTelemetry
Collector translates it to Prometheus (its rules ported in
``tests/prometheus_names.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.common._internal.metrics_encoder import encode_metrics
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.sdk.resources import Resource
from prometheus_client import Counter, Gauge, Histogram, PlatformCollector, ProcessCollector
from prometheus_client.metrics_core import Metric as Family
from prometheus_client.utils import floatToGoString

from hookkit._aggregate.collect import FileCollector
from hookkit._aggregate.directory import ENV_DIR, use_slot_identities
from hookkit._sinks.otlp_metrics import names
from hookkit._sinks.otlp_metrics.convert import convert
from tests import prometheus_names as prom
from tests.aggregate_sample import collected, slot, write_hookkit_series

TRANSLATED_KIND = {
    names.COUNTER: prom.MONOTONIC_SUM,
    names.UPDOWN: prom.NON_MONOTONIC_SUM,
    names.GAUGE: prom.GAUGE,
    names.INFO: prom.GAUGE,
    names.HISTOGRAM: prom.HISTOGRAM,
}
EXPOSED_SUFFIX = {names.COUNTER: "_total", names.INFO: "_info"}


@pytest.fixture
def families(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[Family]:
    """What a scrape of a real aggregate reads: every hookkit series written
    from two slots, and the master's live facts."""
    monkeypatch.setenv(ENV_DIR, str(tmp_path))
    write_hookkit_series()
    return collected(tmp_path)


# -- the port of the Collector's rules ------------------------------------------------


@pytest.mark.parametrize(
    ("name", "unit", "kind", "expected"),
    [
        # otlptranslator's README and MetricNamer's documented examples
        (
            "http.server.request.duration",
            "s",
            prom.HISTOGRAM,
            "http_server_request_duration_seconds",
        ),
        ("http.server.duration", "s", prom.HISTOGRAM, "http_server_duration_seconds"),
        ("requests.count", "1", prom.MONOTONIC_SUM, "requests_count_total"),
        ("memory.usage", "By", prom.GAUGE, "memory_usage_bytes"),
        # opentelemetry-collector-contrib's own normalize_name_test.go
        ("system.filesystem.usage", "By", prom.GAUGE, "system_filesystem_usage_bytes"),
        ("system.io", "By", prom.MONOTONIC_SUM, "system_io_bytes_total"),
        (
            "network_transmitted_bytes_total",
            "By",
            prom.MONOTONIC_SUM,
            "network_transmitted_bytes_total",
        ),
        (
            "\t system.filesystem.usage       ",
            "  By\t",
            prom.GAUGE,
            "system_filesystem_usage_bytes",
        ),
        ("system.network.dropped", "{packets}", prom.MONOTONIC_SUM, "system_network_dropped_total"),
        ("system.network.packets.dropped", "packets", prom.GAUGE, "system_network_packets_dropped"),
        ("hw.fan.speed_ratio", "1", prom.GAUGE, "hw_fan_speed_ratio"),
        ("objects", "1", prom.MONOTONIC_SUM, "objects_total"),
        ("broken.metric.speed", "km/h", prom.GAUGE, "broken_metric_speed_km_per_hour"),
        ("astro.light.speed_limit", "m/s", prom.GAUGE, "astro_light_speed_limit_meters_per_second"),
        ("broken.metric.success_ratio", "%", prom.GAUGE, "broken_metric_success_ratio_percent"),
        ("unsupported.metric.temperature", "°F", prom.GAUGE, "unsupported_metric_temperature_F"),
        (
            "unsupported.metric.redundant",
            "__test $/°C",
            prom.GAUGE,
            "unsupported_metric_redundant_test_per_C",
        ),
        (
            "system.disk.operation_time",
            "s",
            prom.MONOTONIC_SUM,
            "system_disk_operation_time_seconds_total",
        ),
        ("system.cpu.load_average.15m", "1", prom.GAUGE, "system_cpu_load_average_15m_ratio"),
        (
            "mongodbatlas.process.asserts",
            "{assertions}/s",
            prom.GAUGE,
            "mongodbatlas_process_asserts_per_second",
        ),
        (
            "mongodbatlas.process.oplog.rate",
            "GiBy/h",
            prom.GAUGE,
            "mongodbatlas_process_oplog_rate_gibibytes_per_hour",
        ),
        (
            "mongodbatlas.process.db.query_targeting.scanned_per_returned",
            "{scanned}/{returned}",
            prom.GAUGE,
            "mongodbatlas_process_db_query_targeting_scanned_per_returned",
        ),
        ("apache.workers", "connections", prom.GAUGE, "apache_workers_connections"),
        ("redis.latest_fork", "us", prom.GAUGE, "redis_latest_fork_microseconds"),
        ("3.14 digits", "", prom.GAUGE, "_3_14_digits"),
        ("envoy__rule_engine_zlib_buf_error", "", prom.GAUGE, "envoy_rule_engine_zlib_buf_error"),
        # the rules themselves: a unit already among the tokens, an annotation,
        # "total" moved to the end, a "per" unit, "1" on a gauge
        ("process.cpu.seconds", "s", prom.MONOTONIC_SUM, "process_cpu_seconds_total"),
        ("http.server.active_requests", "{request}", prom.GAUGE, "http_server_active_requests"),
        ("total.errors", "", prom.MONOTONIC_SUM, "errors_total"),
        ("net.io", "By/s", prom.GAUGE, "net_io_bytes_per_second"),
        ("cache.hit", "1", prom.GAUGE, "cache_hit_ratio"),
        ("app__odd..name", "", prom.GAUGE, "app_odd_name"),
    ],
)
def test_the_port_translates_names_as_documented(
    name: str, unit: str, kind: str, expected: str
) -> None:
    """The ported normalizeName gives the upstream's documented results."""
    assert expected == prom.metric_name(name, unit, kind)


@pytest.mark.parametrize(
    ("attribute", "expected"),
    [
        ("http.method", "http_method"),  # LabelNamer's documented examples
        ("123invalid", "key_123invalid"),
        ("__reserved__", "__reserved__"),
        ("a..b__c", "a_b_c"),
        ("slot", "slot"),
    ],
)
def test_the_port_translates_labels_as_documented(attribute: str, expected: str) -> None:
    """The ported label namer gives the upstream's documented results."""
    assert expected == prom.label_name(attribute)


# -- the table ----------------------------------------------------------------------


@pytest.mark.parametrize("row", names.NAMES, ids=lambda row: row.prometheus)
def test_each_row_translates_back_to_its_prometheus_name(row: names.Name) -> None:
    """An OTLP name, unit and kind gives back the name a scrape shows."""
    expected = row.prometheus + EXPOSED_SUFFIX.get(row.kind, "")
    assert expected == prom.metric_name(row.otlp, row.unit, TRANSLATED_KIND[row.kind])


def test_each_renamed_label_translates_back() -> None:
    """The semantic-convention attributes become the labels they came from."""
    assert {label: label for label in names.ATTRIBUTES} == {
        label: prom.label_name(attribute) for label, attribute in names.ATTRIBUTES.items()
    }


def test_the_table_has_one_row_per_family_the_collectors_yield(families: list[Family]) -> None:
    """Every hookkit family has a row of the right kind, and every row is a
    family hookkit's collectors yield: a new metric needs its OTLP name."""
    kinds = {"counter": names.COUNTER, "gauge": names.GAUGE, "info": names.INFO}
    yielded = {family.name: kinds.get(family.type, family.type) for family in families}
    # An up-down count is a gauge in Prometheus.
    table = {
        row.prometheus: names.GAUGE if row.kind == names.UPDOWN else row.kind for row in names.NAMES
    }

    assert table == yielded


def test_rows_are_unique() -> None:
    """No two rows share a Prometheus or an OTLP name."""
    assert len(names.NAMES) == len({row.prometheus for row in names.NAMES})
    assert len(names.NAMES) == len({row.otlp for row in names.NAMES})


# -- end to end: collectors -> convert -> protobuf -> Collector's rules -------------------


def scraped_samples(families: list[Family]) -> set[tuple[str, frozenset[tuple[str, str]], float]]:
    """The samples a Prometheus scrape shows (empty labels are no labels)."""
    return {
        (
            sample.name,
            frozenset((k, v) for k, v in sample.labels.items() if v != ""),
            float(sample.value),
        )
        for family in families
        for sample in family.samples
    }


def _labels(attributes: Any, **extra: str) -> frozenset[tuple[str, str]]:
    """Attributes as the labels they become (an int as its digits)."""
    pairs = {prom.label_name(kv.key): _text(kv.value) for kv in attributes}
    return frozenset({**pairs, **extra}.items())


def _text(value: Any) -> str:
    return str(getattr(value, value.WhichOneof("value")))


def _number(point: metrics_pb2.NumberDataPoint) -> float:
    return float(point.as_double if point.HasField("as_double") else point.as_int)


def _le(bound: float) -> str:
    """A bound as prometheus_client writes ``le`` (the exposition the
    Collector writes may spell a number differently; the value is the same)."""
    return floatToGoString(bound)


def translated_samples(
    request: ExportMetricsServiceRequest,
) -> set[tuple[str, frozenset[tuple[str, str]], float]]:
    """What the Collector's Prometheus exporter shows for ``request``:
    translated names and labels, cumulative ``le`` buckets again."""
    samples = set()
    for resource_metrics in request.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                which = metric.WhichOneof("data")
                if which == "sum":
                    kind = prom.MONOTONIC_SUM if metric.sum.is_monotonic else prom.NON_MONOTONIC_SUM
                    points = metric.sum.data_points
                elif which == "gauge":
                    kind, points = prom.GAUGE, metric.gauge.data_points
                else:
                    assert which == "histogram"
                    kind = prom.HISTOGRAM
                name = prom.metric_name(metric.name, metric.unit, kind)
                if kind != prom.HISTOGRAM:
                    samples |= {(name, _labels(p.attributes), _number(p)) for p in points}
                    continue
                for point in metric.histogram.data_points:
                    below = 0
                    bounds = [*point.explicit_bounds, float("inf")]
                    for bound, count in zip(bounds, point.bucket_counts, strict=True):
                        below += count
                        labels = _labels(point.attributes, le=_le(bound))
                        samples.add((name + "_bucket", labels, float(below)))
                    samples.add((name + "_sum", _labels(point.attributes), point.sum))
                    samples.add((name + "_count", _labels(point.attributes), float(point.count)))
    return samples


def test_every_sample_comes_back_from_otlp_as_scraped(families: list[Family]) -> None:
    """Converted, encoded by the official encoder, decoded, and translated
    by the Collector's rules, the aggregate shows the very samples a
    Prometheus scrape of it shows: names, label names and values, values."""
    conversion = convert(families, Resource({"service.name": "shop"}), 1, 2)
    request = ExportMetricsServiceRequest.FromString(
        encode_metrics(conversion.data).SerializeToString()
    )

    assert ((), scraped_samples(families)) == (conversion.skipped, translated_samples(request))


def test_families_without_a_row_come_back_under_their_own_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The application's own metrics (a counter, gauges, a histogram, each
    with labels) and prometheus_client's process and platform collectors
    (the master's ``process_*`` and ``python_info``) have no row: sent under
    their Prometheus names without a unit, they come back unchanged."""
    monkeypatch.setenv(ENV_DIR, str(tmp_path))
    use_slot_identities()
    slot(0)
    Counter("shop_orders", "Orders.", ["kind"], registry=None).labels("book").inc(2)
    Gauge("shop_carts", "Carts.", ["shop"], multiprocess_mode="livesum", registry=None).labels(
        "north"
    ).set(3)
    Histogram("shop_payment_seconds", "Payments.", ["card"], registry=None).labels("visa").observe(
        0.3
    )
    families = [
        *FileCollector(str(tmp_path)).collect(),
        *ProcessCollector(registry=None).collect(),
        *PlatformCollector(registry=None).collect(),
    ]
    conversion = convert(families, Resource({}), 1, 2)
    request = ExportMetricsServiceRequest.FromString(
        encode_metrics(conversion.data).SerializeToString()
    )

    assert not {family.name for family in families} & set(names.BY_PROMETHEUS)
    assert ((), scraped_samples(families)) == (conversion.skipped, translated_samples(request))


def test_the_documented_table_is_the_names_table() -> None:
    """The metrics reference's table (docs/reference/metrics.md, generated)
    gives each row's OTLP name, kind, unit and Prometheus name (as a scrape
    shows it), in the table's order."""
    page = Path(__file__).parent.parent / "docs" / "reference" / "metrics.md"
    section = page.read_text().split("\n## OTLP names\n", 1)[1]
    header = "| OTLP name | kind | unit | Prometheus name |"
    table = section.split(header, 1)[1].strip().split("\n\n", 1)[0]
    lines = table.splitlines()[1:]
    rows = [line for line in lines if line.startswith("| `")]
    kinds = {
        names.COUNTER: "monotonic sum",
        names.UPDOWN: "non-monotonic sum",
        names.GAUGE: "gauge",
        names.HISTOGRAM: "histogram",
        names.INFO: "gauge (info)",
    }
    expected = [
        f"| `{row.otlp}` | {kinds[row.kind]} | {f'`{row.unit}`' if row.unit else ''} | "
        f"`{row.prometheus}{EXPOSED_SUFFIX.get(row.kind, '')}` |"
        for row in names.NAMES
    ]
    assert expected == rows
