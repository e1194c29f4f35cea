"""The exemplar store (``hookkit._aggregate.exemplars``): keys, files,
filters, the torn-read guard, and what the collector makes of it.

The store is written by one worker per slot file and read by the master;
here both sides run in the test process (and, for the torn-read test, a
forked writer), on files in ``tmp_path``.
"""

from __future__ import annotations

import math
import os
import signal
import struct
import time
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import HistogramMetricFamily, Metric
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from prometheus_client.samples import Exemplar

from hookkit._aggregate import exemplars as ex
from hookkit._core.settings import ConfigError

LABELNAMES = ("http_request_method", "http_response_status_code", "http_route")
BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.1, 1.0, math.inf)
SERIES = ("GET", "200", "/users/{id}")
TRACE = 0x0AF7651916CD43DD8448EB211C80319C
SPAN = 0xB7AD6B7169203331


class Ids(NamedTuple):
    """A span's ids, as OpenTelemetry's SpanContext has them."""

    trace_id: int
    span_id: int
    trace_flags: int = 1


def writer(path: Path, mode: str = ex.TRACE_BASED, records: int = ex.RECORDS) -> ex.ExemplarWriter:
    return ex.ExemplarWriter(str(path), LABELNAMES, BOUNDS, mode=mode, records=records)


def key_of(le: str, series: tuple[str, ...] = SERIES) -> int:
    return ex.series_key(ex.METRIC, zip(LABELNAMES, series, strict=True), le)


# -- keys -----------------------------------------------------------------


def test_the_key_is_stable_across_processes_and_label_order() -> None:
    """BLAKE2b of a canonical text: the same value in any process (a
    re-executed master has another ``hash()`` salt), whatever the order the
    labels come in; the name, a label and the bucket each change it."""
    labels = [("b", "2"), ("a", "1")]
    key = ex.series_key("m", labels, "0.5")
    # BLAKE2b-64 of '["m",[["a","1"],["b","2"]],"0.5"]', little-endian: fixed
    # forever, since the files outlive the processes that wrote them.
    assert 0x9654DD7F788AEC2E == key
    assert key == ex.series_key("m", list(reversed(labels)), "0.5")
    others = {
        ex.series_key("n", labels, "0.5"),
        ex.series_key("m", [("a", "1"), ("b", "3")], "0.5"),
        ex.series_key("m", labels, "+Inf"),
    }
    assert key not in others
    assert 3 == len(others)


# -- the filter -------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "mode"),
    [
        (None, "trace_based"),
        ("", "trace_based"),
        ("  ", "trace_based"),
        ("trace_based", "trace_based"),
        ("Always_On", "always_on"),
        (" ALWAYS_OFF ", "always_off"),
    ],
)
def test_the_filter_variable_is_read_case_insensitively(raw: str | None, mode: str) -> None:
    environ = {} if raw is None else {"OTEL_METRICS_EXEMPLAR_FILTER": raw}
    assert mode == ex.exemplar_filter(environ)


def test_a_bad_filter_value_names_the_variable() -> None:
    with pytest.raises(ConfigError) as caught:
        ex.exemplar_filter({"OTEL_METRICS_EXEMPLAR_FILTER": "sometimes"})
    message = str(caught.value)
    assert "OTEL_METRICS_EXEMPLAR_FILTER='sometimes'" in message
    assert "always_on, always_off, trace_based" in message


# -- writing and reading ----------------------------------------------------


def test_a_request_leaves_its_ids_in_the_bucket_it_fell_in(tmp_path: Path) -> None:
    """0.03 s falls in the ``le="0.05"`` bucket (as prometheus_client counts
    it: the first bound at or above the value); a value on a bound is in
    that bound's bucket; past the last finite bound, ``+Inf``."""
    path = tmp_path / "w1s0.exemplars"
    w = writer(path)
    before = time.time()
    w.record(SERIES, 0.03, Ids(TRACE, SPAN))
    w.record(SERIES, 0.1, Ids(TRACE + 1, SPAN + 1))
    w.record(SERIES, 7.0, Ids(TRACE + 2, SPAN + 2))
    found = ex.read_file(str(path))
    assert {key_of("0.05"), key_of("0.1"), key_of("+Inf")} == set(found)
    stored = found[key_of("0.05")]
    assert (TRACE, SPAN, 0.03) == stored[:3]
    assert before <= stored.timestamp <= time.time()
    assert (TRACE + 2, 7.0) == (found[key_of("+Inf")].trace_id, found[key_of("+Inf")].value)
    assert ex.FILE_SIZE == path.stat().st_size == 64 + 4096 * 64


def test_the_latest_request_wins_per_bucket_and_across_slots(tmp_path: Path) -> None:
    """Per file, a bucket keeps the last request written; over the slots'
    files, the reader keeps the one with the latest time."""
    first = writer(tmp_path / "w1s0.exemplars")
    second = writer(tmp_path / "w1s1.exemplars")
    first.record(SERIES, 0.03, Ids(1, 1))
    first.record(SERIES, 0.04, Ids(2, 2))
    assert 2 == ex.read_file(str(tmp_path / "w1s0.exemplars"))[key_of("0.05")].trace_id
    second.record(SERIES, 0.045, Ids(3, 3))
    reader = ex.ExemplarReader(str(tmp_path))
    assert (3, 0.045) == reader.latest()[key_of("0.05")][::2][:2]
    first.record(SERIES, 0.031, Ids(4, 4))
    assert 4 == reader.latest()[key_of("0.05")].trace_id


def test_the_filter_decides_which_requests_leave_one(tmp_path: Path) -> None:
    """``trace_based``: only sampled spans (flag bit 0); ids without flags
    count as sampled. ``always_on``: unsampled ones too."""

    class Bare(NamedTuple):
        trace_id: int
        span_id: int

    based = writer(tmp_path / "a.exemplars")
    based.record(SERIES, 0.003, Ids(1, 1, trace_flags=0))
    based.record(SERIES, 0.007, Ids(2, 2, trace_flags=0x02))  # random flag, not sampled
    assert {} == ex.read_file(str(tmp_path / "a.exemplars"))
    based.record(SERIES, 0.003, Bare(3, 3))
    based.record(SERIES, 0.007, Ids(4, 4, trace_flags=0x03))
    assert {3, 4} == {s.trace_id for s in ex.read_file(str(tmp_path / "a.exemplars")).values()}
    on = writer(tmp_path / "b.exemplars", mode=ex.ALWAYS_ON)
    on.record(SERIES, 0.003, Ids(5, 5, trace_flags=0))
    assert [5] == [s.trace_id for s in ex.read_file(str(tmp_path / "b.exemplars")).values()]


def test_a_replacement_worker_reuses_its_predecessors_file(tmp_path: Path) -> None:
    """A new writer on the same slot file finds the records its predecessor
    wrote (one record per key, not two), keeps them until it writes the same
    bucket, and writes sequences above every one already there."""
    path = tmp_path / "w1s0.exemplars"
    old = writer(path)
    old.record(SERIES, 0.003, Ids(1, 1))
    old.record(SERIES, 0.2, Ids(2, 2))
    old.close()
    new = writer(path)
    assert {1, 2} == {s.trace_id for s in ex.read_file(str(path)).values()}
    new.record(SERIES, 0.004, Ids(3, 3))
    found = ex.read_file(str(path))
    assert {key_of("0.005"): 3, key_of("1.0"): 2} == {k: s.trace_id for k, s in found.items()}
    data = path.read_bytes()
    keys = [struct.unpack_from("<Q", data, 64 + i * 64 + 8)[0] for i in range(ex.RECORDS)]
    claimed = [key for key in keys if key]  # one record per bucket of the series
    assert sorted(claimed) == sorted({key_of(ex.floatToGoString(b)) for b in BOUNDS})
    sequences = [struct.unpack_from("<Q", data, 64 + i * 64)[0] for i in range(ex.RECORDS)]
    # The old writer left 2 (0.005) and 4 (1.0); the new one rewrote 0.005 above both.
    assert [4, 6] == sorted(s for s in sequences if s)


def test_the_file_is_bounded_and_the_newest_write_is_always_kept(tmp_path: Path) -> None:
    """Far more (series, bucket) keys than records: the file keeps its size,
    holds at most ``records`` exemplars, and the latest write of every
    series is readable (a full probe window gives up its oldest record)."""
    path = tmp_path / "w1s0.exemplars"
    w = writer(path, records=16)
    for n in range(200):
        w.record(("GET", "200", f"/r{n}"), 0.003, Ids(n + 1, n + 1))
        found = ex.read_file(str(path))
        assert found[key_of("0.005", ("GET", "200", f"/r{n}"))].trace_id == n + 1
    assert len(found) <= 16
    assert 64 + 16 * 64 == path.stat().st_size


def test_buckets_whose_keys_meet_get_records_of_their_own(tmp_path: Path) -> None:
    """In a file of 8 records every key probes the same 8: a new series'
    buckets each claim a record when the series is first seen (before any
    is written), so all 7 keep their exemplar side by side."""
    path = tmp_path / "w1s0.exemplars"
    w = writer(path, records=8)
    values = (0.001, 0.007, 0.02, 0.03, 0.07, 0.5, 3.0)  # one per bucket
    for n, value in enumerate(values):
        w.record(SERIES, value, Ids(n + 1, n + 1))
    found = ex.read_file(str(path))
    assert list(range(1, 8)) == sorted(s.trace_id for s in found.values())


def test_a_record_being_written_or_rewritten_is_skipped() -> None:
    """The torn-read guard: a record whose sequence is odd (a write under
    way) or changed between the reads before and after the copy is left
    out; agreeing even sequences are kept."""
    data = bytearray(64 + 3 * 64)
    for index in range(3):
        struct.pack_into("<QQQQQdd", data, 64 + index * 64, 2, index + 10, 0, index, 9, 0.1, 1.0)
    before, after = [2, 3, 2], [2, 3, 4]
    assert [10] == list(ex.decode(before, bytes(data), after))


def test_a_reader_never_sees_a_torn_record(tmp_path: Path) -> None:
    """A forked writer rewrites one record as fast as it can, each write
    self-consistent (trace id = span id = value x 1e6); the master-side
    reader, reading meanwhile, only ever gets consistent records. A file of
    one record keeps the reads short and the overlap likely: with the
    sequences ignored, such a run sees a few torn records in a few thousand
    reads."""
    path = tmp_path / "w1s0.exemplars"
    w = writer(path, mode=ex.ALWAYS_ON, records=1)
    w.record(SERIES, 0.003, Ids(3000, 3000))
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            n = 1
            while True:
                n = n % 4000 + 1
                w.record(SERIES, n / 1e6, Ids(n, n))
        finally:
            os._exit(0)
    try:
        reads, deadline = 0, time.monotonic() + 1.5
        while time.monotonic() < deadline:
            for stored in ex.read_file(str(path)).values():
                assert stored.trace_id == stored.span_id == round(stored.value * 1e6)
                reads += 1
        assert reads > 100
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def test_a_file_that_is_not_an_exemplar_file_is_skipped_and_counted(tmp_path: Path) -> None:
    writer(tmp_path / "w1s0.exemplars").record(SERIES, 0.003, Ids(1, 1))
    (tmp_path / "w1s1.exemplars").write_bytes(b"\x00" * 100)
    (tmp_path / "w1s2.exemplars").write_bytes(b"NOTMINE!" + bytes(64 + 64 - 8))
    reader = ex.ExemplarReader(str(tmp_path))
    assert [1] == [s.trace_id for s in reader.latest().values()]
    assert 2 == reader.bad_files


def test_planted_names_are_never_written_through_nor_block_a_scrape(tmp_path: Path) -> None:
    """In a directory others can write to: a symlink planted under a slot's
    file name is refused by the writer (the file it points to is left as it
    was), and neither it nor a FIFO stops the reader: both are skipped and
    counted, the scrape does not wait on the FIFO."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / "w1s0.exemplars").symlink_to(victim)
    with pytest.raises(OSError, match="symbolic links"):  # ELOOP: O_NOFOLLOW
        writer(tmp_path / "w1s0.exemplars")
    assert "precious" == victim.read_text()
    os.mkfifo(tmp_path / "w1s1.exemplars")
    writer(tmp_path / "w1s2.exemplars").record(SERIES, 0.003, Ids(1, 1))
    reader = ex.ExemplarReader(str(tmp_path))
    assert [1] == [s.trace_id for s in reader.latest().values()]
    assert 2 == reader.bad_files


def test_clear_removes_only_exemplar_files(tmp_path: Path) -> None:
    writer(tmp_path / "w1s0.exemplars")
    (tmp_path / "counter_w1s0.db").write_bytes(b"")
    ex.clear(str(tmp_path))
    assert ["counter_w1s0.db"] == sorted(p.name for p in tmp_path.iterdir())


# -- the collector ------------------------------------------------------------


def family(*series: tuple[str, ...]) -> HistogramMetricFamily:
    """The request histogram as the merge yields it: cumulative buckets."""
    metric = HistogramMetricFamily(ex.METRIC, "Duration.", labels=LABELNAMES)
    for values in series:
        buckets = [(ex.floatToGoString(bound), 1.0) for bound in BOUNDS]
        metric.add_metric(list(values), buckets, sum_value=0.1)
    return metric


def bucket_exemplars(metric: Metric) -> dict[tuple[str, str], Exemplar]:
    return {
        (s.labels["http_route"], s.labels["le"]): s.exemplar
        for s in metric.samples
        if s.exemplar is not None
    }


def test_the_collector_attaches_the_latest_exemplar_to_its_bucket(tmp_path: Path) -> None:
    """Exemplars go on the request histogram's ``_bucket`` samples, labelled
    ``trace_id`` and ``span_id`` (hex, as OpenTelemetry shows them), with the
    value and time of the request; no other family, no other sample."""
    w = writer(tmp_path / "w1s0.exemplars")
    w.record(SERIES, 0.03, Ids(TRACE, SPAN))
    other = HistogramMetricFamily("other_seconds", "Other.", labels=LABELNAMES)
    other.add_metric(list(SERIES), [("0.05", 1.0), ("+Inf", 1.0)], sum_value=0.03)
    families = list(ex.ExemplarReader(str(tmp_path)).attach([family(SERIES), other]))
    got = bucket_exemplars(families[0])
    assert [("/users/{id}", "0.05")] == list(got)
    exemplar = got[("/users/{id}", "0.05")]
    assert {"trace_id": f"{TRACE:032x}", "span_id": f"{SPAN:016x}"} == exemplar.labels
    assert 0.03 == exemplar.value
    assert exemplar.timestamp is not None
    assert abs(time.time() - exemplar.timestamp) < 60
    assert {} == bucket_exemplars(families[1])


def test_an_exemplar_outside_its_buckets_range_is_not_attached(tmp_path: Path) -> None:
    """Written under other bounds (a re-executed master with another
    timeout): 8 s was in ``+Inf`` when 7.5 was the last bound; where 10 is a
    bound, it is not ``+Inf``'s (OpenMetrics: value > previous le)."""
    old = ex.ExemplarWriter(
        str(tmp_path / "w1s0.exemplars"), LABELNAMES, (5.0, 7.5, math.inf), mode=ex.ALWAYS_ON
    )
    old.record(SERIES, 8.0, Ids(1, 1))
    old.record(("GET", "200", "/b"), 6.0, Ids(2, 2))
    metric = HistogramMetricFamily(ex.METRIC, "Duration.", labels=LABELNAMES)
    metric.add_metric(list(SERIES), [("5.0", 0), ("10.0", 1), ("+Inf", 1)], sum_value=8.0)
    metric.add_metric(["GET", "200", "/b"], [("5.0", 0), ("7.5", 1), ("+Inf", 1)], sum_value=6)
    (attached,) = ex.ExemplarReader(str(tmp_path)).attach([metric])
    assert [("/b", "7.5")] == list(bucket_exemplars(attached))


def test_openmetrics_carries_the_exemplars_and_the_text_format_does_not(tmp_path: Path) -> None:
    """What ``/metrics`` serves: OpenMetrics (which Prometheus asks for)
    parses back with the exemplar on its bucket; the classic text format
    has none (it cannot carry them)."""
    writer(tmp_path / "w1s0.exemplars").record(SERIES, 0.03, Ids(TRACE, SPAN))
    reader = ex.ExemplarReader(str(tmp_path))

    class Collector:
        def collect(self) -> Any:
            return reader.attach([family(SERIES)])

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collector())  # type: ignore[arg-type]
    text = generate_openmetrics(registry).decode()
    parsed = [s for f in text_string_to_metric_families(text) for s in f.samples if s.exemplar]
    assert 1 == len(parsed), text
    assert ("0.05", f"{TRACE:032x}", f"{SPAN:016x}", 0.03) == (
        parsed[0].labels["le"],
        parsed[0].exemplar.labels["trace_id"],
        parsed[0].exemplar.labels["span_id"],
        parsed[0].exemplar.value,
    )
    plain = generate_latest(registry).decode()
    assert "trace_id" not in plain
    assert 'le="0.05"' in plain


# -- through the real aggregate, to OpenMetrics and OTLP ----------------------


def test_the_aggregate_and_otlp_carry_the_exemplars(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """prometheus_client's files from two slots and an exemplar file beside
    slot 0's: ``FileCollector`` (the scrape's reader) attaches it to the
    bucket of its series; the OTLP conversion gives that series' point the
    same exemplar (ids as integers, time in ns), and the official encoder
    sends the ids as their 16 and 8 bytes. An exemplar from before the
    point's start is not sent."""
    from opentelemetry.exporter.otlp.proto.common._internal.metrics_encoder import (
        encode_metrics,
    )
    from opentelemetry.sdk.resources import Resource

    from hookkit._aggregate.directory import ENV_DIR, slot_identity
    from hookkit._sinks.otlp_metrics.convert import convert
    from tests.aggregate_sample import MASTER_PID, ROUTE, collected, write_hookkit_series

    monkeypatch.setenv(ENV_DIR, str(tmp_path))
    m = write_hookkit_series(timeout=30)
    histogram = m.request_duration
    w = ex.ExemplarWriter(
        ex.path_for(str(tmp_path), slot_identity(MASTER_PID, 0)),
        histogram._labelnames,
        histogram._upper_bounds,
    )
    series = dict(zip(histogram._labelnames, ("GET", "200", ROUTE, "", "http"), strict=True))
    w.record(tuple(series.values()), 0.2, Ids(TRACE, SPAN))
    w.record(("GET", "", "", "aborted", "http"), 1.5, Ids(TRACE + 1, SPAN + 1))
    families = collected(tmp_path)
    (duration,) = [f for f in families if f.name == ex.METRIC]
    got = {
        (s.labels["http_route"], s.labels["le"]): s.exemplar.labels["trace_id"]
        for s in duration.samples
        if s.exemplar is not None
    }
    assert {(ROUTE, "0.25"): f"{TRACE:032x}", ("", "2.5"): f"{TRACE + 1:032x}"} == got

    start = round((time.time() - 60) * 1e9)
    conversion = convert(families, Resource.create({}), start, time.time_ns())
    (metric,) = [
        metric
        for metric in conversion.data.resource_metrics[0].scope_metrics[0].metrics
        if metric.name == "http.server.request.duration"
    ]
    exemplars = [
        (point.attributes.get("http.route"), e.trace_id, e.span_id, e.value, e.filtered_attributes)
        for point in metric.data.data_points
        for e in point.exemplars
    ]
    assert sorted(exemplars, key=str) == sorted(
        [(ROUTE, TRACE, SPAN, 0.2, {}), (None, TRACE + 1, SPAN + 1, 1.5, {})], key=str
    )
    (point,) = [p for p in metric.data.data_points if p.exemplars and p.exemplars[0].value == 0.2]
    assert start <= point.exemplars[0].time_unix_nano <= time.time_ns()

    request = encode_metrics(conversion.data)
    wire = [
        e
        for rm in request.resource_metrics
        for sm in rm.scope_metrics
        for mm in sm.metrics
        if mm.name == "http.server.request.duration"
        for p in mm.histogram.data_points
        for e in p.exemplars
    ]
    assert {(TRACE.to_bytes(16, "big"), SPAN.to_bytes(8, "big"), 0.2)} <= {
        (e.trace_id, e.span_id, e.as_double) for e in wire
    }

    later = convert(families, Resource.create({}), time.time_ns() + 10**9, time.time_ns())
    assert not any(
        point.exemplars
        for metric in later.data.resource_metrics[0].scope_metrics[0].metrics
        for point in metric.data.data_points
    )


def test_hookkit_check_checks_the_exemplar_filter() -> None:
    """``hookkit check`` refuses what start-up refuses."""
    from hookkit._dropin import assemble

    with pytest.raises(ConfigError, match="OTEL_METRICS_EXEMPLAR_FILTER"):
        assemble.preview({"OTEL_METRICS_EXEMPLAR_FILTER": "sometimes"}, {})
    assemble.preview({"OTEL_METRICS_EXEMPLAR_FILTER": "Always_On"}, {})
