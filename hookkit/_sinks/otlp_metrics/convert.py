"""The master's aggregate, as the OpenTelemetry SDK's ``MetricsData``.

The input is what a Prometheus scrape reads: the metric families
``FileCollector.collect()`` and ``MasterCollector.collect()`` yield
(prometheus_client ``Metric`` objects with their samples), hookkit's and the
application's own, typed by the multiprocess files they were read from. The
output is built from the SDK's public data model
(``opentelemetry.sdk.metrics.export``) for the official
``OTLPMetricExporter.export()``. No ``MeterProvider``, no reader: the
aggregate is made by the files already, and an SDK reader thread in the
master would start again in every forked worker.

Every point is cumulative since ``start_time_ns`` (the master's start), at
``time_ns``, under one instrumentation scope (``hookkit``).

- counter: a monotonic sum (the ``_total`` sample; ``_created`` is left out).
- a gauge whose row in ``names`` is an up-down count (requests and
  WebSocket sessions in flight): a cumulative non-monotonic sum, as the
  semantic conventions type ``http.server.active_requests``.
- gauge, and untyped (``unknown``): a gauge, one point per sample. Untyped
  families become gauges as OpenTelemetry's Prometheus compatibility
  specification says (and the Collector's Prometheus receiver does): a
  value with no promise of monotonicity. prometheus_client's multiprocess
  files never hold one; a custom collector might.
- info: a gauge named ``<name>_info``, 1, its labels as attributes.
- stateset: a gauge, one point per state (1 or 0), as the Prometheus
  receiver does.
- histogram: an explicit-bucket histogram. Prometheus's ``_bucket`` samples
  are cumulative (``le``: at most this bound); OTLP's ``bucket_counts`` are
  per bucket, one more than the finite bounds (the last is the overflow).
  ``count`` is the sum of the buckets (it equals ``_count``, the ``+Inf``
  bucket, in the multiprocess aggregate). ``min`` and ``max`` are not known
  (Prometheus keeps neither): they are left unset, so the protobuf omits
  both fields (they are ``optional``) and a receiver sees no value rather
  than a made-up one (the SDK itself, with ``record_min_max=False``, sends
  ``+inf`` and ``-inf``). A bucket sample's exemplar (the request
  histogram's: trace and span ids, value, time) becomes one of the point's
  ``exemplars``, in bucket order, when it was recorded within the point's
  time range (from ``start_time_ns``).
- summary: a histogram with one bucket and no bounds, keeping ``_count`` and
  ``_sum`` (prometheus_client's multiprocess summaries have no quantiles).
  Back in Prometheus, ``_count`` and ``_sum`` are what they were.
- any other type (gaugehistogram, enum): skipped, and named in
  ``Conversion.skipped``, for the caller to report.

A family with no samples (no listener to read a backlog from) gives no
metric: a metric with no points is not valid OTLP.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import NamedTuple, cast

from opentelemetry.sdk.metrics import Exemplar
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from prometheus_client.metrics_core import Metric as Family
from prometheus_client.samples import Sample

from hookkit._sinks.otlp_metrics import names
from hookkit._version import __version__

SCOPE = InstrumentationScope("hookkit", __version__)
_CUMULATIVE = AggregationTemporality.CUMULATIVE
# The SDK's HistogramDataPoint types min and max as float, but its encoder
# passes them straight to the protobuf constructor, where None leaves an
# optional field unset: the one way to send "not known".
_UNSET = cast("float", None)
# Prometheus family types, as the kinds of names.py they become.
_KINDS = {
    "counter": names.COUNTER,
    "gauge": names.GAUGE,
    "unknown": names.GAUGE,
    "untyped": names.GAUGE,
    "stateset": names.GAUGE,
    "info": names.INFO,
    "histogram": names.HISTOGRAM,
    "summary": names.HISTOGRAM,
}


class Conversion(NamedTuple):
    """What ``convert`` made, and the families it could not."""

    data: MetricsData
    skipped: tuple[str, ...]  # "name (type)"


def convert(
    families: Iterable[Family],
    resource: Resource,
    start_time_ns: int,
    time_ns: int,
    scope: InstrumentationScope = SCOPE,
) -> Conversion:
    """``families`` (as a scrape collects them) as one ``MetricsData``."""
    metrics: list[Metric] = []
    skipped: list[str] = []
    for family in families:
        if family.type not in _KINDS:
            skipped.append(f"{family.name} ({family.type})")
            continue
        kind = _KINDS[family.type]
        if kind == names.GAUGE and names.otlp_name(family.name, kind).kind == names.UPDOWN:
            kind = names.UPDOWN  # a livesum gauge the semantic conventions make a sum
        metric = _metric(family, kind, start_time_ns, time_ns)
        if metric is not None:
            metrics.append(metric)
    scope_metrics = ScopeMetrics(scope=scope, metrics=metrics, schema_url="")
    data = MetricsData(
        resource_metrics=[
            ResourceMetrics(
                resource=resource, scope_metrics=[scope_metrics], schema_url=resource.schema_url
            )
        ]
    )
    return Conversion(data, tuple(skipped))


def _metric(family: Family, kind: str, start: int, now: int) -> Metric | None:
    """One family as a metric of ``kind``; None when it has no samples."""
    data: Sum | Gauge | Histogram
    if kind == names.COUNTER:
        data = Sum(_points(family, family.name + "_total", start, now), _CUMULATIVE, True)
    elif kind == names.UPDOWN:
        data = Sum(_points(family, family.name, start, now), _CUMULATIVE, False)
    elif kind == names.GAUGE:
        data = Gauge(_points(family, family.name, 0, now))
    elif kind == names.INFO:
        data = Gauge(_points(family, family.name + "_info", 0, now))
    else:
        data = Histogram(_histogram_points(family, start, now), _CUMULATIVE)
    if not data.data_points:
        return None
    row = names.otlp_name(family.name, kind)
    return Metric(name=row.otlp, description=family.documentation, unit=row.unit, data=data)


def attributes(labels: Mapping[str, str]) -> dict[str, str | int]:
    """A sample's labels as OTLP attributes (``names.attribute``), in order."""
    result: dict[str, str | int] = {}
    for label, value in labels.items():
        pair = names.attribute(label, value)
        if pair is not None:
            result[pair[0]] = pair[1]
    return result


def _points(family: Family, sample_name: str, start: int, now: int) -> list[NumberDataPoint]:
    """One number point per sample named ``sample_name``; a gauge's
    ``start`` is 0 (the encoder does not send a gauge's start time)."""
    return [
        NumberDataPoint(
            attributes=attributes(sample.labels),
            start_time_unix_nano=start,
            time_unix_nano=now,
            value=float(sample.value),
        )
        for sample in family.samples
        if sample.name == sample_name
    ]


class _Series:
    """One histogram series being gathered: cumulative buckets, sum, count."""

    def __init__(self, labels: dict[str, str]) -> None:
        self.labels = labels
        self.buckets: dict[float, float] = {}  # le -> cumulative count
        self.sum = 0.0
        self.count = 0.0
        self.exemplars: list[Exemplar] = []


def _exemplar(sample: Sample, start: int) -> Exemplar | None:
    """A bucket sample's exemplar (labels ``trace_id``, ``span_id`` in hex)
    as OTLP's; None without one, or from before ``start``."""
    exemplar = sample.exemplar
    if exemplar is None or exemplar.timestamp is None:
        return None
    time_ns = round(float(exemplar.timestamp) * 1e9)
    if time_ns < start:
        return None
    labels = dict(exemplar.labels)
    try:
        trace_id = int(labels.pop("trace_id"), 16)
        span_id = int(labels.pop("span_id"), 16)
    except (KeyError, ValueError):
        return None
    return Exemplar(labels, exemplar.value, time_ns, span_id, trace_id)


def _histogram_points(family: Family, start: int, now: int) -> list[HistogramDataPoint]:
    """A histogram's (or a summary's) series, each one point with per-bucket counts."""
    series: dict[tuple[tuple[str, str], ...], _Series] = {}
    sample: Sample
    for sample in family.samples:
        base, _, suffix = sample.name.rpartition("_")
        if base != family.name or suffix not in ("bucket", "sum", "count"):
            continue  # _created, _gsum, quantiles (a summary's, never multiprocess)
        labels = {key: value for key, value in sample.labels.items() if key != "le"}
        key = tuple(sorted(labels.items()))
        one = series.get(key)
        if one is None:
            one = series[key] = _Series(labels)
        if suffix == "bucket":
            one.buckets[float(sample.labels["le"])] = sample.value
            exemplar = _exemplar(sample, start)
            if exemplar is not None:
                one.exemplars.append(exemplar)
        elif suffix == "sum":
            one.sum = sample.value
        else:
            one.count = sample.value
    return [_histogram_point(one, start, now) for one in series.values()]


def _histogram_point(series: _Series, start: int, now: int) -> HistogramDataPoint:
    """Cumulative ``le`` buckets as OTLP's per-bucket counts. A summary has
    no buckets: one overflow bucket holds its count."""
    bounds = sorted(series.buckets)
    cumulative = [round(series.buckets[bound]) for bound in bounds]
    if not bounds or bounds[-1] != math.inf:
        # No +Inf bucket (a summary): the count is the overflow bucket's top.
        bounds.append(math.inf)
        cumulative.append(max(round(series.count), cumulative[-1] if cumulative else 0))
    counts: list[int] = []
    below = 0
    for total in cumulative:
        # Never negative, even for buckets merged from files of different
        # bounds (a re-executed master with another timeout).
        counts.append(max(0, total - below))
        below = max(below, total)
    return HistogramDataPoint(
        attributes=attributes(series.labels),
        start_time_unix_nano=start,
        time_unix_nano=now,
        count=sum(counts),
        sum=float(series.sum),
        bucket_counts=counts,
        explicit_bounds=bounds[:-1],
        min=_UNSET,
        max=_UNSET,
        exemplars=series.exemplars,
    )
