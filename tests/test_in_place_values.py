"""In-place writes of the request path's metrics (``hookkit._aggregate.in_place``)
against prometheus_client's own multiprocess values: the same files, byte
for byte, through a remap of the file, a new identity (a fork) and any
value a histogram may observe; and gthread keeps prometheus_client's
values and their lock."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values
from prometheus_client.multiprocess import MultiProcessCollector

from hookkit._aggregate import directory
from hookkit._aggregate.in_place import HistogramWriter, in_place, value_writer
from hookkit._core.worker import runs_threads

BUCKETS = (0.005, 0.01, 0.1, 1.0, 10.0)


class Files:
    """A multiprocess directory with its own value class, as hookkit's
    workers have (``use_slot_identities``)."""

    def __init__(self, path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.path = path
        path.mkdir()
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(path))
        monkeypatch.setattr(values, "ValueClass", values.MultiProcessValue(directory.identity))
        # The class's own cleanup (it keeps its files open): run at the
        # test's end, or the examples' files pile up in this process.
        cleanup = values._multi_process_cleanups.pop()
        FILES_OPEN.append(cleanup)

    def bytes(self) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in sorted(self.path.iterdir())}

    def samples(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(self.path))  # type: ignore[no-untyped-call]
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for metric in registry.collect()
            for s in metric.samples
        }


FILES_OPEN: list[Any] = []


@pytest.fixture(autouse=True)
def _close_files() -> Iterator[None]:
    yield
    while FILES_OPEN:
        FILES_OPEN.pop()()


@pytest.fixture
def identity(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(directory, "_identity", "w1s0")


def write(files: Files, fast: bool, amounts: list[float]) -> None:
    """The same writes, through prometheus_client or in place."""
    counter = Counter("c", "c", ["k"], registry=None)
    gauge = Gauge("g", "g", ["k"], registry=None, multiprocess_mode="livesum")
    histogram = Histogram("h", "h", ["k"], buckets=BUCKETS, registry=None)
    children = counter.labels("a"), gauge.labels("a"), histogram.labels("a")
    if fast:
        c, g = value_writer(children[0], True), value_writer(children[1], True)
        h = HistogramWriter(children[2], True)
        for amount in amounts:
            c.inc(abs(amount))
            g.inc(1.0)
            g.inc(-1.0)
            g.inc(amount)
            h.observe(amount)
    else:
        for amount in amounts:
            children[0].inc(abs(amount))
            children[1].inc()
            children[1].dec()
            children[1].inc(amount)
            children[2].observe(amount)


finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)
edges = st.sampled_from([*BUCKETS, 0.0, -0.0, math.inf, 1e-9, 10.000001])


@settings(max_examples=60, deadline=None)
@given(amounts=st.lists(st.one_of(finite, edges), max_size=30))
def test_in_place_files_are_byte_for_byte_prometheus_clients(
    amounts: list[float], tmp_path_factory: pytest.TempPathFactory
) -> None:
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setattr(directory, "_identity", "w1s0")
        stock = Files(tmp_path_factory.mktemp("s") / "d", monkeypatch)
        write(stock, False, amounts)
        stock_bytes = stock.bytes()
        fast = Files(tmp_path_factory.mktemp("f") / "d", monkeypatch)
        write(fast, True, amounts)
        try:
            assert stock_bytes == fast.bytes()
        finally:
            while FILES_OPEN:
                FILES_OPEN.pop()()


def test_nan_goes_into_the_sum_and_no_bucket_as_prometheus_client_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, identity: None
) -> None:
    files = Files(tmp_path / "d", monkeypatch)
    histogram = Histogram("h", "h", buckets=BUCKETS, registry=None)
    writer = HistogramWriter(histogram, True)
    writer.observe(math.nan)
    buckets = [v for (name, _), v in files.samples().items() if name == "h_bucket"]
    assert [0.0] * (len(BUCKETS) + 1) == buckets
    assert math.isnan(files.samples()[("h_sum", ())])


def test_a_write_lands_after_the_file_was_remapped_larger(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, identity: None
) -> None:
    """A cached writer keeps writing where the file's readers look after
    prometheus_client replaced the mmap (new label sets that no longer fit
    in the first 64 KiB)."""
    files = Files(tmp_path / "d", monkeypatch)
    counter = Counter("c", "c", ["k"], registry=None)
    first = value_writer(counter.labels("first"), True)
    first.inc(1.0)
    [db] = files.path.iterdir()
    size = db.stat().st_size
    for n in range(2000):  # grows the file: MmapedDict maps it again
        counter.labels(f"label-{n:04d}-{'x' * 40}").inc()
    assert db.stat().st_size > size
    first.inc(2.0)
    assert 3.0 == files.samples()[("c_total", (("k", "first"),))]


def test_a_new_identity_moves_the_writes_to_its_own_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, identity: None
) -> None:
    """After a fork hookkit gives the worker its slot's identity: the next
    write resets the values onto that identity's file, as prometheus_client
    does for a new pid."""
    files = Files(tmp_path / "d", monkeypatch)
    counter = Counter("c", "c", registry=None)
    writer = value_writer(counter, True)
    writer.inc(5.0)
    monkeypatch.setattr(directory, "_identity", "w1s1")
    writer.inc(1.0)
    writer.inc(1.0)
    names = sorted(files.bytes())
    assert ["counter_w1s0.db", "counter_w1s1.db"] == names
    per_file = {name: [row[1] for row in _read(files.path / name)] for name in names}
    assert {"counter_w1s0.db": [5.0], "counter_w1s1.db": [2.0]} == per_file


def test_a_histogram_moves_to_the_new_identitys_file_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, identity: None
) -> None:
    """The same for a histogram: its sum and buckets after the new identity
    are in that identity's file, and only there."""
    files = Files(tmp_path / "d", monkeypatch)
    histogram = Histogram("h", "h", buckets=BUCKETS, registry=None)
    writer = HistogramWriter(histogram, True)
    for amount in (0.001, 0.5, 0.5):
        writer.observe(amount)
    monkeypatch.setattr(directory, "_identity", "w1s1")
    for amount in (0.5, 20.0):
        writer.observe(amount)
    rows = {path.name: _read(path) for path in sorted(files.path.iterdir())}

    def total(name: str, sample: str) -> float:
        return sum(row[1] for row in rows[name] if json.loads(row[0])[1] == sample)

    assert (1.001, 3.0) == (
        total("histogram_w1s0.db", "h_sum"),
        total("histogram_w1s0.db", "h_bucket"),
    )
    assert (20.5, 2.0) == (
        total("histogram_w1s1.db", "h_sum"),
        total("histogram_w1s1.db", "h_bucket"),
    )
    samples = files.samples()
    assert 5.0 == samples[("h_count", ())]
    assert 21.501 == pytest.approx(samples[("h_sum", ())])
    assert 3.0 == samples[("h_bucket", (("le", "1.0"),))] - samples[("h_bucket", (("le", "0.1"),))]


def _read(path: Path) -> list[tuple[Any, ...]]:
    from prometheus_client.mmap_dict import MmapedDict

    return list(MmapedDict.read_all_values_from_file(str(path)))  # type: ignore[no-untyped-call]


def test_single_process_values_are_left_as_they_are() -> None:
    """Without a multiprocess directory prometheus_client's values are
    plain, locked floats: nothing to write in place."""
    counter = Counter("c", "c", registry=None)
    assert in_place(counter._value) is counter._value
    assert type(counter._value) is values.MutexValue


def test_only_gthread_with_several_threads_runs_threads() -> None:
    from gunicorn.workers.gthread import ThreadWorker
    from gunicorn.workers.sync import SyncWorker

    class Cfg:
        threads = 4

    def worker(cls: type, threads: int) -> Any:
        made = cls.__new__(cls)
        cfg = Cfg()
        cfg.threads = threads
        made.cfg = cfg
        return made

    assert runs_threads(worker(ThreadWorker, 4))
    assert not runs_threads(worker(ThreadWorker, 1))
    assert not runs_threads(worker(SyncWorker, 4))


def test_without_in_place_the_values_keep_prometheus_clients_class(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, identity: None
) -> None:
    Files(tmp_path / "d", monkeypatch)
    counter = Counter("c", "c", registry=None)
    stock = type(counter._value)
    assert type(value_writer(counter, False)) is stock
    histogram = Histogram("h", "h", buckets=BUCKETS, registry=None)
    writer = HistogramWriter(histogram, False)
    assert {stock} == {type(v) for v in [writer.total, *writer.buckets]}
    assert type(value_writer(counter, True)) is not stock


def test_only_the_async_classes_run_tasks() -> None:
    """The request scope looks for a greenlet or task only where there can
    be one: not under the sync and gthread workers."""
    from gunicorn.workers.gasgi import ASGIWorker
    from gunicorn.workers.ggevent import GeventWorker
    from gunicorn.workers.gthread import ThreadWorker
    from gunicorn.workers.sync import SyncWorker

    from hookkit._core.worker import runs_tasks

    def made(cls: type) -> Any:
        return cls.__new__(cls)

    assert not runs_tasks(made(SyncWorker))
    assert not runs_tasks(made(ThreadWorker))
    assert runs_tasks(made(GeventWorker))
    assert runs_tasks(made(ASGIWorker))


def test_a_scrape_during_a_histograms_creation_leaves_the_new_series_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, identity: None
) -> None:
    """prometheus_client adds a new label set's entries to the file one by
    one (the sum, then each bucket, +Inf last). A scrape in between (a real
    one met it in CI, as the first request's series was being made) must
    not serve a histogram without its +Inf bucket, which an OpenMetrics
    parser refuses: the series is left out until it is whole, and the
    complete series beside it are served."""
    from prometheus_client.mmap_dict import MmapedDict, mmap_key
    from prometheus_client.openmetrics.exposition import generate_latest
    from prometheus_client.openmetrics.parser import text_string_to_metric_families

    from hookkit._aggregate.collect import FileCollector

    files = Files(tmp_path / "d", monkeypatch)
    histogram = Histogram("h", "h", ["k"], buckets=BUCKETS, registry=None)
    histogram.labels("whole").observe(0.5)
    [path] = files.path.iterdir()
    partial = MmapedDict(str(path))  # another writer's view: "half" being made
    partial.write_value(mmap_key("h", "h_sum", ["k"], ["half"], "h"), 0.0, 0.0)
    for bound in ("0.005", "0.01"):
        key = mmap_key("h", "h_bucket", ["k", "le"], ["half", bound], "h")
        partial.write_value(key, 0.0, 0.0)
    partial.close()

    registry = CollectorRegistry()
    registry.register(FileCollector(str(files.path)))  # type: ignore[arg-type]
    text = generate_latest(registry).decode()
    [family] = [f for f in text_string_to_metric_families(text) if f.name == "h"]
    assert {"whole"} == {s.labels["k"] for s in family.samples}
