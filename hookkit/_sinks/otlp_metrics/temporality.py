"""Delta temporality, computed by hookkit from the cumulative aggregate.

``OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE`` (``cumulative``, the
default, ``delta`` or ``lowmemory``) is applied by the SDK's readers, not by
``OTLPMetricExporter.export()``; hookkit has no reader (see the sink), so it
applies the preference here, with the SDK's own mapping per instrument kind
(``OTLPMetricExporterMixin._get_temporality``; ``tests`` compare the two):

============================  ==========  ==========  ==========
instrument kind               cumulative  delta       lowmemory
============================  ==========  ==========  ==========
counter (the files)           cumulative  delta       delta
histogram (the files)         cumulative  delta       delta
observable counter (master)   cumulative  delta       cumulative
up-down counter               cumulative  cumulative  cumulative
gauge                         (none)      (none)      (none)
============================  ==========  ==========  ==========

The multiprocess files are written by ``Counter`` and ``Histogram``
instruments as requests happen; the master's counters (the workers' CPU,
skipped files, the master's own CPU) are read when collected, as an
``ObservableCounter`` callback reads them.

A delta point covers the time since the last export that succeeded: its
``start_time_unix_nano`` is that export's time (the master's start for the
first), its value what the cumulative value grew by since. The state moves
on only when an export succeeds, so a failed export loses nothing: the
next one covers both intervals. A series first seen now counts from 0 (it
was created after the last export). A cumulative value that went down (a
series restarted: never hookkit's own, whose slots carry counts on) is
sent whole, as a new start. A new master process starts with no state: new
series, from its own start. Exemplars older than a delta point's start are
left out of it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from opentelemetry.sdk.metrics import Exemplar
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricsData,
    NumberDataPoint,
    Sum,
)

from hookkit._core.settings import ConfigError

PREFERENCE = "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE"
CUMULATIVE = "cumulative"
DELTA = "delta"
LOWMEMORY = "lowmemory"
PREFERENCES = (CUMULATIVE, DELTA, LOWMEMORY)

# Instrument kinds, as far as the aggregate tells them apart.
COUNTER = "counter"
OBSERVABLE_COUNTER = "observable_counter"
HISTOGRAM = "histogram"

# The kinds each preference sends as deltas (the SDK's mapping; anything
# else stays cumulative).
DELTA_KINDS: dict[str, frozenset[str]] = {
    CUMULATIVE: frozenset(),
    DELTA: frozenset({COUNTER, OBSERVABLE_COUNTER, HISTOGRAM}),
    LOWMEMORY: frozenset({COUNTER, HISTOGRAM}),
}

# The monotonic sums the master reads when it collects (by OTLP name): the
# observable counters. Every other monotonic sum comes from the files.
OBSERVED_COUNTERS = frozenset(
    {"gunicorn.workers.cpu", "hookkit.scrape.errors", "process_cpu_seconds"}
)

_DELTA = AggregationTemporality.DELTA


def load_preference(environ: Mapping[str, str]) -> str:
    """The preference (any case); a ConfigError naming the variable for a
    value the SDK does not know (the SDK would warn and fall back)."""
    raw = environ.get(PREFERENCE, "").strip()
    value = raw.lower() or CUMULATIVE
    if value not in PREFERENCES:
        raise ConfigError(f"{PREFERENCE}={raw!r} is not valid (accepted: {', '.join(PREFERENCES)})")
    return value


def kind_of(metric: Metric) -> str | None:
    """The instrument kind of a converted metric that may become a delta;
    None for gauges and up-down counters (always cumulative)."""
    data = metric.data
    if isinstance(data, Histogram):
        return HISTOGRAM
    if isinstance(data, Sum) and data.is_monotonic:
        return OBSERVABLE_COUNTER if metric.name in OBSERVED_COUNTERS else COUNTER
    return None


_Key = tuple[str, frozenset[tuple[str, object]]]
# What a series' cumulative point was at the last successful export.
_Last = float | tuple[tuple[int, ...], tuple[float, ...], float, int]


class Deltas:
    """Cumulative ``MetricsData`` to the preference's temporality."""

    def __init__(self, preference: str, start_time_ns: int) -> None:
        self.preference = preference
        self._delta_kinds = DELTA_KINDS[preference]
        self._last_time = start_time_ns  # of the last successful export
        self._last: dict[_Key, _Last] = {}
        self._pending: tuple[int, dict[_Key, _Last]] | None = None

    def apply(self, data: MetricsData, time_ns: int) -> MetricsData:
        """``data`` (cumulative, at ``time_ns``) as this preference sends it.
        The state moves on only at ``commit``."""
        if not self._delta_kinds:
            return data
        seen: dict[_Key, _Last] = {}
        resource_metrics = [
            replace(
                one,
                scope_metrics=[
                    replace(
                        scope,
                        metrics=[self._metric(metric, seen) for metric in scope.metrics],
                    )
                    for scope in one.scope_metrics
                ],
            )
            for one in data.resource_metrics
        ]
        self._pending = (time_ns, seen)
        return MetricsData(resource_metrics=resource_metrics)

    def commit(self) -> None:
        """The last ``apply``'s export succeeded: later deltas start from it."""
        if self._pending is not None:
            self._last_time, seen = self._pending
            self._last.update(seen)
            self._pending = None

    def _metric(self, metric: Metric, seen: dict[_Key, _Last]) -> Metric:
        kind = kind_of(metric)
        if kind not in self._delta_kinds:
            return metric
        data = metric.data
        if isinstance(data, Histogram):
            points = [self._histogram_point(metric.name, p, seen) for p in data.data_points]
            return replace(metric, data=Histogram(points, _DELTA))
        assert isinstance(data, Sum)
        numbers = [self._number_point(metric.name, p, seen) for p in data.data_points]
        return replace(metric, data=Sum(numbers, _DELTA, data.is_monotonic))

    def _number_point(
        self, name: str, point: NumberDataPoint, seen: dict[_Key, _Last]
    ) -> NumberDataPoint:
        key = (name, frozenset((point.attributes or {}).items()))
        value = float(point.value)
        seen[key] = value
        last = self._last.get(key, 0.0)
        assert isinstance(last, float)
        delta = value - last if value >= last else value
        return replace(
            point,
            start_time_unix_nano=self._last_time,
            value=delta,
            exemplars=self._recent(point.exemplars),
        )

    def _histogram_point(
        self, name: str, point: HistogramDataPoint, seen: dict[_Key, _Last]
    ) -> HistogramDataPoint:
        key = (name, frozenset((point.attributes or {}).items()))
        counts = tuple(point.bucket_counts)
        bounds = tuple(point.explicit_bounds)
        seen[key] = (counts, bounds, point.sum, point.count)
        last = self._last.get(key)
        count, total, buckets = point.count, point.sum, list(counts)
        if isinstance(last, tuple):
            last_counts, last_bounds, last_sum, last_count = last
            restarted = last_bounds != bounds or any(
                now < before for now, before in zip(counts, last_counts, strict=True)
            )
            if not restarted:
                buckets = [now - before for now, before in zip(counts, last_counts, strict=True)]
                count = point.count - last_count
                total = point.sum - last_sum
        return replace(
            point,
            start_time_unix_nano=self._last_time,
            count=count,
            sum=total,
            bucket_counts=buckets,
            exemplars=self._recent(point.exemplars),
        )

    def _recent(self, exemplars: Sequence[Exemplar] | None) -> list[Exemplar]:
        """The exemplars recorded since the delta point's start."""
        return [one for one in exemplars or () if one.time_unix_nano >= self._last_time]
