"""Exemplars of the request histogram, kept in shared memory per worker slot.

An exemplar ties a histogram bucket to one request that fell in it: its
trace id, span id, duration and time. Grafana draws them as dots on the
latency panels; a click opens the trace.

Why hookkit keeps them itself: prometheus_client cannot store exemplars in
multiprocess mode (prometheus/client_python #648, #826): its ``.db`` files
hold one float per sample and its merge drops ``Exemplar`` values. hookkit
owns both ends (the worker that knows the span, the master's collector), so
it keeps them in files of its own, beside the ``.db`` files:

- one file per *slot identity* (``<identity>.exemplars``; not ``.db``, so
  prometheus_client and ``FileCollector`` never read it): a replacement
  worker reopens its predecessor's file, as it does the ``.db`` files, and
  the directory stays bounded by the number of slots. Removed with the
  directory; stale ones of an earlier master go on a fresh start
  (``clear``).
- a fixed size, never grown: ``FILE_SIZE`` bytes, a 64-byte header and
  ``RECORDS`` records of 64 bytes. A record holds the exemplar of one
  (series, bucket), the *latest* request's (the latest wins). The
  (series, bucket) key is a stable 64-bit hash (``series_key``: BLAKE2b of
  the metric name, the sorted labels and the bucket's ``le``), so the
  master, the workers and a re-executed master agree on it without sharing
  anything but the file. A key's home record is ``key % RECORDS``; it may
  take any of the ``PROBES`` records from there (open addressing); a
  worker claims a record for each bucket of a series the first time it
  sees the series (the key is written, the sequence stays 0 until the first
  exemplar). When all of them hold other keys, it takes the one written
  longest ago: that (series, bucket) loses its exemplar until it is written
  again. The file never grows, and a request never waits for space.

Record layout (little-endian, offset: field): ``0`` sequence (u64), ``8``
key (u64, 0 = empty), ``16`` trace id high and ``24`` low (u64 each),
``32`` span id (u64), ``40`` value (f64, seconds), ``48`` wall-clock time
(f64, seconds since the epoch), ``56`` unused.

Torn reads: the master reads while a worker writes. Each write is a seqlock
write: the sequence is set odd, the payload written (one ``pack_into``),
then the sequence set even, to a value never used before in that file. The
reader reads every sequence, copies the file, reads every sequence again,
and keeps a record only when both reads agree and are even. Several threads
of one worker (gthread) may write the same record: every ``pack_into`` runs
whole under the GIL, and the sequences come from one counter (``next`` on
``itertools.count`` is atomic), so no lock is taken on the request path.
The ordering of the three stores relies on the CPU keeping stores in order
(x86-64 does); on a weakly ordered CPU a torn record stays possible but
rare, and it can only pair a value with another request's ids of the same
bucket (the key and the value range are checked again by the collector).

The writer (``ExemplarWriter``) runs in workers only; the master only reads
(``ExemplarReader``), at scrape time, and attaches the latest exemplar over
all slots to each ``_bucket`` sample of ``http_server_request_duration_seconds``
whose value still falls in that bucket (OpenMetrics requires it).

Which requests leave one: ``OTEL_METRICS_EXEMPLAR_FILTER`` (OpenTelemetry's
variable): ``trace_based`` (default) only requests whose span is sampled,
``always_on`` every request with span ids, ``always_off`` none.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import itertools
import json
import math
import mmap
import os
import stat
import struct
import threading
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping, Sequence
from time import time
from typing import Any, NamedTuple

from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Exemplar
from prometheus_client.utils import floatToGoString

from hookkit._core.settings import ConfigError

METRIC = "http_server_request_duration_seconds"
SUFFIX = ".exemplars"

FILTER_ENV = "OTEL_METRICS_EXEMPLAR_FILTER"
ALWAYS_ON = "always_on"
ALWAYS_OFF = "always_off"
TRACE_BASED = "trace_based"
FILTERS = (ALWAYS_ON, ALWAYS_OFF, TRACE_BASED)

RECORDS = 4096  # records per slot file
PROBES = 8  # records a key may take, from its home record on
RECORD_SIZE = 64
HEADER_SIZE = 64
FILE_SIZE = HEADER_SIZE + RECORDS * RECORD_SIZE  # 262,208 bytes (256 KiB + 64)
MAGIC = b"HKEXEMP1"

_WORDS = RECORD_SIZE // 8  # u64 words per record
_HEADER = struct.Struct("<8sII")  # magic, records, record size
_SEQ = struct.Struct("<Q")
_PAYLOAD = struct.Struct("<QQQQdd")  # key, trace hi, trace lo, span, value, time
_KEY_AND_TIME = struct.Struct("<Q32xd")  # key ... time, from offset 8
_MASK64 = (1 << 64) - 1


def exemplar_filter(environ: Mapping[str, str]) -> str:
    """``OTEL_METRICS_EXEMPLAR_FILTER``, lower-cased; ``trace_based`` when
    unset or empty. Anything else raises a ConfigError naming the variable."""
    raw = environ.get(FILTER_ENV, "")
    value = raw.strip().lower()
    if not value:
        return TRACE_BASED
    if value not in FILTERS:
        raise ConfigError(
            f"{FILTER_ENV}={raw!r} is not valid (accepted: {', '.join(FILTERS)}, "
            "in any case; unset means trace_based)"
        )
    return value


def series_key(metric: str, labels: Iterable[tuple[str, str]], le: str) -> int:
    """The stable 64-bit key of one (series, bucket): the same in every
    process and Python version (``hash()`` is salted per interpreter). Labels
    are sorted here; ``le`` is the bucket's label as prometheus_client writes
    it (``floatToGoString``). Never 0 (0 marks an empty record)."""
    text = json.dumps([metric, sorted(labels), le], separators=(",", ":"))
    key = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")
    return key or 1


def path_for(directory: str, identity: str) -> str:
    """The exemplar file of the process (slot) ``identity``."""
    return os.path.join(directory, identity + SUFFIX)


def files(directory: str) -> list[str]:
    """The exemplar files now in ``directory``."""
    return sorted(glob.glob(os.path.join(directory, "*" + SUFFIX)))


def clear(directory: str) -> None:
    """Remove stale exemplar files (a fresh start, as for the ``.db`` files)."""
    for name in files(directory):
        with contextlib.suppress(FileNotFoundError):
            os.remove(name)


def _open(path: str, records: int) -> mmap.mmap:
    """The file mapped read-write, created (sparse, zero-filled) if needed.
    A file of another size or header is started over. In a directory other
    users can write to (a Kubernetes emptyDir), only a regular file of this
    user with one link is used: never a symlink or a link planted there to
    make the worker overwrite another file."""
    size = HEADER_SIZE + records * RECORD_SIZE
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid() or info.st_nlink != 1:
            raise OSError(f"{path}: not a regular file of this user's with one link")
        if info.st_size != size:
            os.ftruncate(fd, 0)
            os.ftruncate(fd, size)
        mm = mmap.mmap(fd, size)
    finally:
        os.close(fd)
    if mm[: _HEADER.size] != _HEADER.pack(MAGIC, records, RECORD_SIZE):
        mm[:] = bytes(size)
        _HEADER.pack_into(mm, 0, MAGIC, records, RECORD_SIZE)
    return mm


class ExemplarWriter:
    """A worker's exemplar file: ``record`` on every request that leaves one.

    ``labelnames`` and ``upper_bounds`` are the request histogram's (its
    ``_labelnames``, and ``_upper_bounds`` with ``+Inf`` last); ``record``
    takes the label values in that order, as ``labels(*values)`` does."""

    def __init__(
        self,
        path: str,
        labelnames: Sequence[str],
        upper_bounds: Sequence[float],
        *,
        mode: str = TRACE_BASED,
        metric: str = METRIC,
        records: int = RECORDS,
    ) -> None:
        self.path = path
        self.metric = metric
        self.labelnames = tuple(labelnames)
        self.bounds = list(upper_bounds)
        self.les = [floatToGoString(bound) for bound in self.bounds]  # type: ignore[no-untyped-call]
        self.records = records
        self.trace_based = mode == TRACE_BASED
        self._mm = _open(path, records)
        # Every write's sequence is new to the file: above any a predecessor
        # in this slot left (a reader mid-read then always sees a change).
        with memoryview(self._mm) as view, view.cast("Q") as words:
            highest = max(words[_WORDS::_WORDS], default=0)
        self._base = highest + (highest & 1)
        self._count = itertools.count(1)
        # Per series (label values): (record offset, key) per bucket.
        self._places: dict[tuple[str, ...], list[tuple[int, int]]] = {}
        self._placing = threading.Lock()  # first sight of a series only
        self._pack_seq = _SEQ.pack_into
        self._pack_payload = _PAYLOAD.pack_into

    def record(self, series: tuple[str, ...], value: float, ids: Any) -> None:
        """Keep (``ids``, ``value``, now) as the exemplar of the bucket of
        ``series`` that ``value`` falls in; under ``trace_based`` only when
        the span is sampled (``trace_flags``; ids without flags count as
        sampled). The hot path: a bisect, a dict lookup and three stores."""
        if self.trace_based and not getattr(ids, "trace_flags", 1) & 1:
            return
        places = self._places.get(series)
        if places is None:
            places = self._place(series)
        offset, key = places[bisect_left(self.bounds, value)]
        sequence = self._base + 2 * next(self._count)
        trace_id = ids.trace_id
        mm = self._mm
        self._pack_seq(mm, offset, sequence - 1)
        self._pack_payload(
            mm, offset + 8, key, trace_id >> 64, trace_id & _MASK64, ids.span_id, value, time()
        )
        self._pack_seq(mm, offset, sequence)

    def _place(self, series: tuple[str, ...]) -> list[tuple[int, int]]:
        """Where each bucket of a new series is written: its key's record,
        found once per series and process (bounded by the histogram's
        series, themselves bounded by its labels' bounds). Under a lock:
        two threads must not claim one empty record for two keys."""
        labels = list(zip(self.labelnames, series, strict=True))
        with self._placing:
            places = self._places.get(series)
            if places is None:
                places = [self._find(series_key(self.metric, labels, le)) for le in self.les]
                self._places[series] = places
        return places

    def _find(self, key: int) -> tuple[int, int]:
        """The record for ``key``: the one holding it already (a predecessor
        in this slot wrote it), else the first empty one among its probes,
        claimed at once (its key written, its sequence still 0: readers skip
        it), else the one written longest ago, shared from then on."""
        home = key % self.records
        oldest: tuple[float, int] | None = None
        for step in range(min(PROBES, self.records)):
            offset = HEADER_SIZE + ((home + step) % self.records) * RECORD_SIZE
            held, written = _KEY_AND_TIME.unpack_from(self._mm, offset + 8)
            if held == key:
                return offset, key
            if held == 0:
                _SEQ.pack_into(self._mm, offset + 8, key)
                return offset, key
            if oldest is None or written < oldest[0]:
                oldest = (written, offset)
        assert oldest is not None
        return oldest[1], key

    def close(self) -> None:
        """Unmap the file (it stays, for the next worker of the slot)."""
        with contextlib.suppress(BufferError, ValueError):
            self._mm.close()


class Stored(NamedTuple):
    """One exemplar as a file holds it."""

    trace_id: int
    span_id: int
    value: float
    timestamp: float  # seconds since the epoch


def decode(before: Sequence[int], data: bytes, after: Sequence[int]) -> dict[int, Stored]:
    """The records of one file's copy ``data`` that were whole when copied:
    ``before`` and ``after`` are every record's sequence read before and
    after the copy; a record is kept when they agree and are even (no write
    was under way and none happened meanwhile)."""
    found: dict[int, Stored] = {}
    # Only records ever written (a non-zero sequence) are looked at: most
    # of a file is usually empty, and this walk is C's, not Python's.
    for index in itertools.compress(range(len(before)), before):
        sequence = before[index]
        if sequence & 1 or after[index] != sequence:
            continue
        key, high, low, span, value, written = _PAYLOAD.unpack_from(
            data, HEADER_SIZE + index * RECORD_SIZE + 8
        )
        if key == 0:
            continue
        stored = Stored((high << 64) | low, span, value, written)
        kept = found.get(key)
        if kept is None or kept.timestamp < written:
            found[key] = stored
    return found


def read_file(path: str) -> dict[int, Stored]:
    """The whole records of one exemplar file, by key (the latest of a key
    that sits in two records). Raises OSError or ValueError for a file that
    is not (or no longer) a valid exemplar file."""
    # Never a symlink, and never blocked by a FIFO planted under the name.
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        size = info.st_size
        if not stat.S_ISREG(info.st_mode):
            raise ValueError(f"{path}: not a regular file")
        if size < HEADER_SIZE or (size - HEADER_SIZE) % RECORD_SIZE:
            raise ValueError(f"{path}: {size} bytes is not an exemplar file's size")
        mm = mmap.mmap(fd, size, access=mmap.ACCESS_READ)
    finally:
        os.close(fd)
    try:
        magic, records, record_size = _HEADER.unpack_from(mm, 0)
        if (
            magic != MAGIC
            or record_size != RECORD_SIZE
            or size != HEADER_SIZE + records * RECORD_SIZE
        ):
            raise ValueError(f"{path}: not an exemplar file")
        with memoryview(mm) as view, view.cast("Q") as words:
            sequences = words[_WORDS::_WORDS]
            before = sequences.tolist()
            data = mm[:]
            after = sequences.tolist()
            sequences.release()
        return decode(before, data, after)
    finally:
        mm.close()


class ExemplarReader:
    """The master's side: every slot's file read at scrape time, the latest
    exemplar of each key attached to its bucket sample."""

    def __init__(self, directory: str, metric: str = METRIC) -> None:
        self.directory = directory
        self.metric = metric
        self.bad_files = 0  # files skipped (truncated, replaced, vanished)
        self._keys: dict[tuple[tuple[str, str], ...], int] = {}  # bucket labels -> key

    def latest(self) -> dict[int, Stored]:
        """The latest exemplar of each key over every slot's file."""
        found: dict[int, Stored] = {}
        for name in files(self.directory):
            try:
                one = read_file(name)
            except FileNotFoundError:
                continue
            except (OSError, ValueError):
                self.bad_files += 1
                continue
            for key, stored in one.items():
                kept = found.get(key)
                if kept is None or kept.timestamp < stored.timestamp:
                    found[key] = stored
        return found

    def attach(self, families: Iterable[Metric]) -> Iterator[Metric]:
        """``families`` as they are, the request histogram's ``_bucket``
        samples with their exemplar. Files are read only when the family is
        there. Exemplars are an extra: whatever goes wrong reading them is
        counted in ``bad_files`` and the scrape goes on without them."""
        for family in families:
            if family.name == self.metric and family.type == "histogram":
                try:
                    self._attach(family, self.latest())
                except Exception:
                    self.bad_files += 1
            yield family

    def _attach(self, family: Metric, found: dict[int, Stored]) -> None:
        if not found:
            return
        if len(self._keys) > 4 * RECORDS:
            self._keys.clear()  # bounded: series that came and went
        bucket = family.name + "_bucket"
        below: dict[tuple[tuple[str, str], ...], float] = {}  # series -> previous le
        for index, sample in enumerate(family.samples):
            if sample.name != bucket or "le" not in sample.labels:
                continue
            labels = tuple(sorted(sample.labels.items()))
            key = self._keys.get(labels)
            series = tuple(pair for pair in labels if pair[0] != "le")
            if key is None:
                key = self._keys[labels] = series_key(family.name, series, sample.labels["le"])
            upper = float(sample.labels["le"])
            lower = below.get(series, -math.inf)
            below[series] = upper
            stored = found.get(key)
            # Buckets come in le order per series. A value outside this
            # bucket's range (written under other bounds: a re-executed
            # master with another timeout) is not this bucket's exemplar.
            if stored is None or not lower < stored.value <= upper:
                continue
            family.samples[index] = sample._replace(
                exemplar=Exemplar(
                    {
                        "trace_id": format(stored.trace_id, "032x"),
                        "span_id": format(stored.span_id, "016x"),
                    },
                    stored.value,
                    stored.timestamp,
                )
            )
