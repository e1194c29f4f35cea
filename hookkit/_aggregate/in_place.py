"""In-place writes for the request path's multiprocess metrics.

Hand-written for speed: every request pays for these writes, seven to nine
of them. prometheus_client's multiprocess value (``MmapedValue.inc``) takes
the process-wide lock, asks the process identifier whether the process
forked, packs the value and a timestamp and copies both into the mmap;
``Histogram.observe`` adds a check and a loop over the bounds. Together,
about 1 µs a write. ``in_place(value)`` makes one value write its 8-byte
double in place instead (about a quarter of that), and ``HistogramWriter``
observes without the checks (one ``bisect`` for the bucket).

What stays as prometheus_client has it:

- **the file format**: the value's double at its position in the same
  ``MmapedDict`` file; the timestamp beside it stays 0.0, which is what
  ``inc`` writes and what a new entry starts with. Scrapes, the
  ``MultiProcessCollector`` and hookkit's aggregate read the file as before.
- **the object**: the value's class is changed in place, so it stays in
  prometheus_client's list of values and a fork (a new identity) still
  resets it with the others.
- **the bytes are copied, not packed in place**: ``struct.pack_into`` zeroes
  its bytes before it writes them, and a scrape reading at that moment
  would see 0 (prometheus_client's own note in ``mmap_dict.py``).

What changes, and why it is safe where it is used:

- **no lock**. The sink asks for in-place writes only in a worker that runs
  one request at a time per thread (every class but gthread with more than
  one thread; gevent's and asyncio's switches never happen inside a write),
  and only for the request path's own label children, which nothing else
  writes. Under gthread the request path keeps prometheus_client's values
  and their lock. Other writers (the span exporter's thread counting a sink
  error, the app's own metrics) keep theirs; they share the file, never an
  entry: new entries are appended under prometheus_client's lock, and a
  write here touches only its own 8 bytes.
- **the identity is checked by reference**: hookkit gives each process its
  identity (``hookkit._aggregate.directory``); when it changes (a fork),
  the next write goes through prometheus_client's ``inc``, which resets
  every value onto the new files, and the position is looked up again.
- **the map is looked up at each write**: ``MmapedDict`` replaces its mmap
  with a larger one when a new entry no longer fits (positions stay), so
  only the position is kept, never the map.
"""

from __future__ import annotations

import struct
from bisect import bisect_left
from typing import Any

from hookkit._aggregate import directory

_pack_double = struct.Struct("d").pack
_in_place_classes: dict[type, type] = {}


def in_place(value: Any) -> Any:
    """Make prometheus_client's multiprocess ``value`` write in place; any
    other value (single-process mode) is returned as it is."""
    cls = type(value)
    if not getattr(cls, "_multiprocess", False) or cls in _in_place_classes.values():
        return value
    fast = _in_place_classes.get(cls)
    if fast is None:
        fast = _in_place_classes[cls] = _in_place_class(cls)
    value.__class__ = fast
    return value


def _in_place_class(stock: Any) -> type:
    stock_inc = stock.inc

    def inc(self: Any, amount: float) -> None:
        if self._in_place_identity is directory._identity:
            total = self._value + amount
            start = self._in_place_at
            mapped = self._file._m
            if mapped is not None:
                mapped[start : start + 8] = _pack_double(total)
                self._value = total
                return
        # First write, a new identity (fork), or a closed file: the stock
        # way, which resets the values onto the files of this identity.
        stock_inc(self, amount)
        self._in_place_at = self._file._positions[self._key]
        self._in_place_identity = directory._identity

    return type(
        f"InPlace{stock.__name__}",
        (stock,),
        {"inc": inc, "_in_place_identity": None, "_in_place_at": 0, "__doc__": stock.__doc__},
    )


class HistogramWriter:
    """``observe`` for one label child of a multiprocess histogram: its
    bucket (multiprocess buckets are not cumulative: one write) and its sum.

    In place, both go straight into the file (one call, not three): the sum
    and every bucket live in the same file (prometheus_client's per-process
    ``histogram`` file), whose positions are looked up once per identity,
    as ``in_place`` does for one value. The values' own ``_value`` is kept
    up to date, so prometheus_client's way stays right if it is taken."""

    __slots__ = ("_at", "_file", "_identity", "bounds", "buckets", "total", "write_in_place")

    def __init__(self, child: Any, write_in_place: bool) -> None:
        """``write_in_place``: False keeps prometheus_client's values (and
        their lock) and skips only ``observe``'s checks."""
        # prometheus_client's own attributes; read once per label set
        own = in_place if write_in_place else _as_it_is
        self.write_in_place = write_in_place
        self.bounds: list[float] = list(child._upper_bounds)
        self.buckets: list[Any] = [own(bucket) for bucket in child._buckets]
        self.total: Any = own(child._sum)
        self._identity: str | None = None  # positions not looked up yet
        self._file: Any = None
        self._at: tuple[int, ...] = ()  # the sum's, then each bucket's

    def observe(self, amount: float) -> None:
        """As ``Histogram.observe``: the sum, and the first bucket whose
        bound is at least ``amount`` (the last bound is +Inf; NaN is in no
        bucket)."""
        if self._identity is directory._identity and amount == amount:  # noqa: PLR0124 - not NaN
            mapped = self._file._m
            if mapped is not None:
                total = self.total
                value = total._value + amount
                at = self._at[0]
                mapped[at : at + 8] = _pack_double(value)
                total._value = value
                index = bisect_left(self.bounds, amount)
                bucket = self.buckets[index]
                value = bucket._value + 1.0
                at = self._at[index + 1]
                mapped[at : at + 8] = _pack_double(value)
                bucket._value = value
                return
        # First write, a new identity (fork), NaN or a closed file: value
        # by value, which resets them onto the files of this identity.
        self.total.inc(amount)
        if amount == amount:  # noqa: PLR0124 - not NaN
            self.buckets[bisect_left(self.bounds, amount)].inc(1.0)
        if self.write_in_place:
            file = self.total._file
            positions = file._positions
            self._at = tuple(positions[v._key] for v in (self.total, *self.buckets))
            self._file = file
            self._identity = directory._identity


def value_writer(child: Any, write_in_place: bool) -> Any:
    """The value of a counter's or gauge's label child, to ``inc`` directly
    (``Counter.inc`` and ``Gauge.inc`` add only checks a label child passes)."""
    value = child._value
    return in_place(value) if write_in_place else value


def _as_it_is(value: Any) -> Any:
    return value
