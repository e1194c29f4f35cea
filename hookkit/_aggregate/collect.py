"""What a scrape reads: the multiprocess files, and the master's live facts.

``FileCollector`` sums the directory's files as prometheus_client's
``MultiProcessCollector`` does, but a file that is empty, truncated or gone
(a worker killed while it was creating it) is skipped and counted instead of
failing the whole scrape (prometheus/client_python #1199). The request
histogram's buckets then get their exemplars from the slots' exemplar files
(``exemplars.ExemplarReader``: prometheus_client keeps none in multiprocess
mode).

``MasterCollector`` reads what only the master knows, at scrape time: live
and desired workers, capacity, each slot's heartbeat age, memory and open
file descriptors, the workers' CPU, the listen backlog, start time and build
info. The master's own process metrics (``process_*``, ``python_info``) are
prometheus_client's collectors, registered beside it by the Prometheus sink.

``Aggregate`` is the two together, the master's one aggregate, read under a
lock (the endpoint's thread and an exporter's thread may both read it), by
readers that hold its ``fork_guard`` while they collect.
The sink that makes it (the Prometheus sink, which owns the directory and
the slots) publishes it with ``publish``; another backend (the OTLP metrics
sink) reads it with ``current``, without importing that sink.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import resource
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.multiprocess import MultiProcessCollector

from hookkit._aggregate.exemplars import ExemplarReader
from hookkit._aggregate.fork_guard import ForkGuard
from hookkit._core.resets import on_reset

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class FileCollector:
    """The multiprocess files, summed; bad files skipped and counted."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.bad_files = 0  # over the collector's life: hookkit_scrape_errors_total
        self.files_read = 0  # in the last scrape: hookkit_multiprocess_files
        self.exemplars = ExemplarReader(path)

    def collect(self) -> Iterator[Metric]:
        """Read every file once and yield the merged metrics."""
        files = glob.glob(os.path.join(self.path, "*.db"))
        metrics: dict[str, Metric] = {}
        read = 0
        for name in files:
            try:
                entries = _read_file(name)
            except Exception:
                self.bad_files += 1
                continue
            read += 1
            _add_samples(metrics, name, entries)
        self.files_read = read
        # The merge itself is prometheus_client's, so the sums are exactly
        # what its own collector would give for the same files.
        merged = MultiProcessCollector._accumulate_metrics(metrics, True)  # type: ignore[no-untyped-call]
        skipped = self.exemplars.bad_files
        yield from self.exemplars.attach(merged)
        self.bad_files += self.exemplars.bad_files - skipped


_Entry = tuple[str, str, tuple[tuple[str, str], ...], str, float, float]


def _read_file(filename: str) -> list[_Entry]:
    """Every sample of one file, parsed whole before any is used, so a file
    that breaks half-way adds nothing (its values are read lazily)."""
    entries: list[_Entry] = []
    for key, value, timestamp, _ in MmapedDict.read_all_values_from_file(filename):  # type: ignore[no-untyped-call]
        metric_name, name, labels, help_text = json.loads(key)
        entries.append(
            (metric_name, name, tuple(sorted(labels.items())), help_text, value, timestamp)
        )
    return entries


def _whole_histograms(entries: list[_Entry]) -> list[_Entry]:
    """A histogram file's entries without the label sets still being made.

    prometheus_client appends a new label set's entries one at a time: the
    sum, then each bucket, +Inf last. A scrape in between would serve a
    histogram without its +Inf bucket (an OpenMetrics parser refuses the
    scrape). Such a set holds only zeros (nothing is observed before it is
    made), so it is left out until the next scrape finds it whole."""
    whole = {
        (metric_name, tuple(pair for pair in labels if pair[0] != "le"))
        for metric_name, name, labels, _, _, _ in entries
        if name.endswith("_bucket") and ("le", "+Inf") in labels
    }
    return [
        entry
        for entry in entries
        if (entry[0], tuple(pair for pair in entry[2] if pair[0] != "le")) in whole
    ]


def _add_samples(metrics: dict[str, Metric], filename: str, entries: list[_Entry]) -> None:
    """Add one file's samples, as prometheus_client's _read_metrics does."""
    parts = os.path.basename(filename).split("_")
    typ = parts[0]
    if typ == "histogram":
        entries = _whole_histograms(entries)
    for metric_name, name, labels_key, help_text, value, timestamp in entries:
        metric = metrics.get(metric_name)
        if metric is None:
            metric = Metric(metric_name, help_text, typ)
            metrics[metric_name] = metric
        # Labels as tuples: prometheus_client's merge groups by them.
        if typ == "gauge":
            metric._multiprocess_mode = parts[1]  # type: ignore[attr-defined]
            pid = parts[2][:-3]
            metric.add_sample(name, (*labels_key, ("pid", pid)), value, timestamp)  # type: ignore[arg-type]
        else:
            metric.add_sample(name, labels_key, value)  # type: ignore[arg-type]


def proc_rss(pid: int) -> int | None:
    """Resident memory of ``pid`` in bytes, from /proc; None once it is gone.
    Public: the status sink shows it per worker, as a scrape does."""
    try:
        with open(f"/proc/{pid}/statm") as statm:
            return int(statm.read().split()[1]) * _PAGE_SIZE
    except (OSError, ValueError, IndexError):
        return None


def _proc_open_fds(pid: int) -> int | None:
    """Open file descriptors of ``pid``: one listing of /proc/<pid>/fd (names
    only, nothing read per descriptor). None for a worker gone since WORKERS
    was copied, or a zombie (its table is empty; a live worker always holds
    its heartbeat file)."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd")) or None
    except OSError:
        return None


def proc_cpu_seconds(pid: int) -> float | None:
    """User plus system CPU seconds of ``pid``, from /proc; None once it is
    gone. Public: the status sink shows it per worker."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS  # utime, stime
    except (OSError, ValueError, IndexError):
        return None


def worker_capacity(arbiter: Any) -> int:
    """Requests one worker can run at once: 1 for sync, ``threads`` for
    gthread, ``worker_connections`` for the async classes (gevent, ASGI),
    where a connection waiting on I/O does not use up the worker."""
    from gunicorn.workers.gthread import ThreadWorker
    from gunicorn.workers.sync import SyncWorker

    cls = arbiter.worker_class
    if isinstance(cls, type) and issubclass(cls, ThreadWorker):
        return int(arbiter.cfg.threads)
    if isinstance(cls, type) and issubclass(cls, SyncWorker):
        return 1
    return int(arbiter.cfg.worker_connections)


class MasterCollector:
    """The master's live facts, read at scrape time."""

    def __init__(
        self,
        arbiter: Any,
        slot_of: Callable[[int], int | None],
        files: FileCollector,
        build: dict[str, str],
    ) -> None:
        self.arbiter = arbiter
        self.slot_of = slot_of
        self.files = files
        self.build = build
        self.started = time.time()
        self._cpu_high_water = 0.0

    def collect(self) -> Iterator[Metric]:
        """Yield the master's gauges and counters."""
        arbiter = self.arbiter
        workers = list(arbiter.WORKERS.items())  # atomic copy: the main thread changes it
        yield _gauge("gunicorn_workers", "Live workers.", len(workers))
        yield _gauge(
            "gunicorn_workers_desired", "Workers the master aims for.", arbiter.num_workers
        )
        yield _gauge(
            "gunicorn_worker_capacity",
            "Requests the live workers can run at once (workers x threads; "
            "x worker_connections for gevent and ASGI).",
            len(workers) * worker_capacity(arbiter),
        )
        heartbeat = GaugeMetricFamily(
            "gunicorn_worker_heartbeat_age_seconds",
            "Seconds since each worker last notified the master; gunicorn kills it at the timeout.",
            labels=["slot"],
        )
        memory = GaugeMetricFamily(
            "gunicorn_worker_resident_memory_bytes",
            "Resident memory of each worker, from /proc.",
            labels=["slot"],
        )
        open_fds = GaugeMetricFamily(
            "gunicorn_worker_open_fds",
            "Open file descriptors of each worker, from /proc.",
            labels=["slot"],
        )
        cpu = 0.0
        now = time.monotonic()
        for pid, worker in workers:
            slot = self.slot_of(worker.age)
            label = [str(slot) if slot is not None else "unknown"]
            # A worker being reaped has its heartbeat file closed already.
            with contextlib.suppress(OSError, ValueError):
                heartbeat.add_metric(label, max(0.0, now - worker.tmp.last_update()))
            rss = proc_rss(pid)
            if rss is not None:
                memory.add_metric(label, rss)
            fds = _proc_open_fds(pid)
            if fds is not None:
                open_fds.add_metric(label, fds)
            cpu += proc_cpu_seconds(pid) or 0.0
        yield heartbeat
        yield memory
        yield open_fds
        reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
        # A worker's CPU moves from /proc to RUSAGE_CHILDREN when it is
        # reaped; between the two reads it could be in neither, so the value
        # is held at its high-water mark and never goes backwards.
        self._cpu_high_water = max(self._cpu_high_water, cpu + reaped.ru_utime + reaped.ru_stime)
        yield CounterMetricFamily(
            "gunicorn_workers_cpu_seconds",
            "CPU seconds of all workers of this master, live and reaped.",
            value=self._cpu_high_water,
        )
        backlog = GaugeMetricFamily(
            "gunicorn_listen_backlog",
            "Connections waiting in each listener's accept queue (Linux TCP).",
            labels=["listener"],
        )
        for listener in list(arbiter.LISTENERS):
            value = getattr(listener, "get_backlog", lambda: -1)()
            if isinstance(value, int) and value >= 0:
                backlog.add_metric([str(listener)], value)
        yield backlog
        yield _gauge(
            "gunicorn_master_start_time_seconds",
            "When the master started, in seconds since the epoch.",
            self.started,
        )
        yield InfoMetricFamily(
            "gunicorn_build", "gunicorn and hookkit versions and the worker class.", self.build
        )
        yield _gauge(
            "hookkit_multiprocess_files",
            "Metric files the last scrape read from the multiprocess directory.",
            self.files.files_read,
        )
        yield CounterMetricFamily(
            "hookkit_scrape_errors",
            "Metric files skipped because they were empty, truncated or vanished.",
            value=self.files.bad_files,
        )


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


class Aggregate:
    """The master's one aggregate: the files summed, then the master's live
    facts (in that order: ``hookkit_multiprocess_files`` counts the files
    this very collection read). A collector for a ``CollectorRegistry``, and
    readable from any thread."""

    def __init__(self, files: FileCollector, master: MasterCollector) -> None:
        self.files = files
        self.master = master
        self._lock = threading.Lock()
        # Every reader collects under it (the endpoint's scrapes, the OTLP
        # export): no fork of the master meanwhile (fork_guard says why).
        self.fork_guard = ForkGuard()

    def collect(self) -> Iterator[Metric]:
        """Every family, read whole under the lock, then yielded."""
        with self._lock:
            families = [*self.files.collect(), *self.master.collect()]
        yield from families


# The aggregate of this master, once a sink made it: (master pid, aggregate).
_published: tuple[int, Aggregate] | None = None


def publish(aggregate: Aggregate) -> None:
    """Make ``aggregate`` this master's, for every backend that exports it."""
    global _published  # noqa: PLW0603 - one aggregate per master
    _published = (os.getpid(), aggregate)


def current() -> Aggregate | None:
    """This master's aggregate; None before one is published, and in any
    process forked from the master (a worker never reads it)."""
    published = _published
    if published is None or published[0] != os.getpid():
        return None
    return published[1]


@on_reset
def _unpublish() -> None:
    """hookkit.testing.reset(): no aggregate."""
    global _published  # noqa: PLW0603
    _published = None
