"""Each worker's live state, in shared memory the master can read at any time.

What it is for: the master (a status page, the ``worker_exited`` line) can
say what every worker is doing now, and what a worker that died was doing
when it died, even after a SIGKILL: the memory is the master's.

**The memory.** A ``LiveArea`` is an anonymous ``MAP_SHARED`` mapping the
master makes in ``pre_fork``, beside the worker's ``WorkerRecord`` (which
holds it as ``record.live``); ``fork()`` shares it with the worker. Its
layout, little-endian::

    header (16 bytes)  state u8, pad, overflow u32, slots u32, pad
    slots x entry (440 bytes each)
      version u64                 the seqlock (even: stable, odd: being written)
      started f64                 time.perf_counter() at pre_request
      trace_id 16 bytes           the sampled span's trace id, zeros if none
      in_use u8, method_len u8, path_len u16, route_len u16, pad u16
      method 16 bytes, path 256 bytes, route 128 bytes

Bounds: ``slots`` entries per worker (``slots_for``: gunicorn's ``threads``
for gthread, 1 for sync, ``ASYNC_SLOTS`` = 32 for gevent, eventlet, tornado
and the ASGI classes); a request that finds every entry taken has none and
is counted in ``overflow`` (requests in flight without an entry, now). So
the entries hold the oldest requests in flight, except that a slot freed by
a finished request goes to the next request that starts. The method is cut
to 16 bytes, the path (gunicorn's ``req.path``: never the query string) to
``PATH_BYTES`` = 256, the route template to ``ROUTE_BYTES`` = 128, each at
a UTF-8 character boundary.

**Time.** ``started`` is the request scope's ``time.perf_counter()``,
already taken at ``pre_request``: no clock is read for the live state. On
Linux ``perf_counter`` is ``CLOCK_MONOTONIC``, one clock for every process
of the machine, so the master turns it into elapsed seconds with its own
``perf_counter()`` and into wall time with ``time.time()``. Where the two
clocks differ (``SAME_CLOCK`` false) elapsed times are still right within
one process only; the master then reports what it reads, as is.

**The seqlock.** Each entry has one writer at a time (the request that
holds its slot), and is written as: version + 1 (odd), the fields, version
+ 1 (even). The master reads the version, copies the entry, reads the
version again, and keeps the copy only when both are the same even number;
otherwise it retries, ``READ_ATTEMPTS`` times at most, yielding the CPU
after the first few, and then gives the entry up (a worker killed in the
middle of a write leaves an odd version for good: that entry is left out).
The writer never waits for anything: a reader that loses a race retries, a
writer never does. ``struct.pack_into`` zeroes its target before it writes
it, so a version being written reads 0 for an instant: 0 is never a stable
version (the first write makes it 1; 64 bits never wrap): a reader that
sees 0 reads again, and after three zeros takes the slot as never written.
x86-64 keeps stores, and loads, in program order, which a seqlock needs;
elsewhere (aarch64) CPython's interpreter between the three writes is the
only ordering, and the reader checks that the lengths
are within their bounds and decodes with ``errors="replace"``: a torn entry
there can be wrong, never a crash.

**The slots.** A free list (a Python list of slot numbers): ``pop()`` takes
one and ``append()`` gives it back. Each is one C call, atomic under the
GIL, so gthread's pool threads, gevent's greenlets and asyncio's tasks all
claim distinct slots without a lock; no lock can be held by a thread a
signal interrupted. The slot a request holds is kept on its scope, and in
a ``ContextVar`` (per thread, per greenlet, per asyncio task) for the route
watchers, which see the framework's request, not gunicorn's. The overflow
counter is the one value several writers change: it is changed under a
lock, taken only when every slot is in use, and never held across I/O.

**State.** One byte, written whole: ``booting`` (zero: the mapping starts
so) until ``post_worker_init`` writes ``idle``; ``stopping`` from
``worker_int``, ``worker_abort`` or ``worker_exit``. ``busy`` is not
written: the reader says ``busy`` for an idle worker with requests in
flight, so a request costs no state writes.
"""

from __future__ import annotations

import mmap
import struct
import threading
import time
from contextvars import ContextVar
from typing import Any, NamedTuple

from hookkit._core.resets import on_reset

STATES = ("booting", "idle", "stopping")
BOOTING, IDLE, STOPPING = 0, 1, 2

ASYNC_SLOTS = 32  # entries per worker for the classes that run many requests at once
METHOD_BYTES = 16
PATH_BYTES = 256
ROUTE_BYTES = 128
READ_ATTEMPTS = 200  # per entry, by the master
_SPIN_ATTEMPTS = 8  # then the reader yields the CPU between attempts

_HEADER = struct.Struct("<BxxxII4x")  # state, overflow, slots
_HEADER_SIZE = _HEADER.size
_OVERFLOW_AT = 4
_VERSION = struct.Struct("<Q")  # 64 bits: never wraps
# started, trace id, in use, method length, path length, route length,
# method, path, route: everything after the version.
_BODY = struct.Struct(f"<d16sBBHH2x{METHOD_BYTES}s{PATH_BYTES}s{ROUTE_BYTES}s")
_BODY_AT = 8  # after the version
_IN_USE = struct.Struct("<B")
_IN_USE_AT = _BODY_AT + 8 + 16
_ROUTE_LEN = struct.Struct("<H")
_ROUTE_LEN_AT = _IN_USE_AT + 4
_ROUTE = struct.Struct(f"<{ROUTE_BYTES}s")
_ROUTE_AT = _BODY_AT + _BODY.size - ROUTE_BYTES
_STRIDE = _BODY_AT + _BODY.size
_NO_TRACE = bytes(16)
# Bound once: a request writes six times.
_pack_version = _VERSION.pack_into
_pack_body = _BODY.pack_into
_pack_in_use = _IN_USE.pack_into

SAME_CLOCK = (
    time.get_clock_info("perf_counter").implementation
    == time.get_clock_info("monotonic").implementation
)

# The slot of the request this thread, greenlet or task runs (-1: none).
CURRENT_SLOT: ContextVar[int] = ContextVar("hookkit_live_slot", default=-1)


class LiveRequest(NamedTuple):
    """One request in flight, as the master read it."""

    method: str
    path: str  # never the query string; cut to PATH_BYTES
    route: str | None  # None until the app matched one
    started: float  # time.time() when the request started
    elapsed_seconds: float
    trace_id: str | None  # 32 lower-case hex digits, when the request was sampled


class WorkerLive(NamedTuple):
    """A worker's state: ``booting``, ``idle``, ``busy``, ``stopping`` (or
    ``exited`` once its record is closed), its requests in flight that hold
    an entry (oldest first) and how many more are in flight without one."""

    state: str
    requests: tuple[LiveRequest, ...]
    overflow: int


def slots_for(worker: Any) -> int:
    """The entries a worker of this class needs: one per thread for gthread,
    one for sync, ``ASYNC_SLOTS`` for the classes that run many requests in
    one thread (gevent, eventlet, tornado, the ASGI workers)."""
    from gunicorn.workers.gthread import ThreadWorker
    from gunicorn.workers.sync import SyncWorker

    if isinstance(worker, ThreadWorker):
        threads = getattr(getattr(worker, "cfg", None), "threads", 1)
        return max(1, threads if isinstance(threads, int) else 1)
    if isinstance(worker, SyncWorker):
        return 1
    return ASYNC_SLOTS


def cut(text: str, limit: int) -> bytes:
    """``text`` as UTF-8, at most ``limit`` bytes, never half a character."""
    raw = text.encode("utf-8", "replace")
    if len(raw) <= limit:
        return raw
    return raw[:limit].decode("utf-8", "ignore").encode("utf-8")


class LiveArea:
    """One worker's live state (see the module docstring): made by the
    master, written by the worker, read by the master."""

    __slots__ = ("_buf", "_free", "_overflow", "_overflow_lock", "_versions", "slots")

    def __init__(self, slots: int) -> None:
        self.slots = max(1, slots)
        self._buf = mmap.mmap(-1, _HEADER.size + self.slots * _STRIDE, flags=mmap.MAP_SHARED)
        _HEADER.pack_into(self._buf, 0, BOOTING, 0, self.slots)
        # The writer's side, copied into the worker by the fork.
        self._versions = [0] * self.slots
        # Popped from the end: slot 0 first.
        self._free = list(range(self.slots - 1, -1, -1))
        self._overflow = 0
        self._overflow_lock = threading.Lock()

    def close(self) -> None:
        self._buf.close()

    # -- the worker's side -------------------------------------------------

    def set_state(self, state: int) -> None:
        """``BOOTING``, ``IDLE`` or ``STOPPING`` (one byte, written whole:
        an item assignment, where ``pack_into`` would zero it first)."""
        self._buf[0] = state

    def begin(self, started: float, method: str, path: str, trace_id: int | None) -> int:
        """A request starts: its entry (returns the slot, or -1 when every
        slot is taken and the request is counted as overflow)."""
        try:
            slot = self._free.pop()
        except IndexError:
            with self._overflow_lock:
                self._overflow += 1
                self._buf[_OVERFLOW_AT : _OVERFLOW_AT + 4] = self._overflow.to_bytes(4, "little")
            CURRENT_SLOT.set(-1)
            return -1
        try:  # str.encode() without arguments is the fast path
            raw_method = method.encode()
            raw_path = path.encode()
        except UnicodeEncodeError:  # a lone surrogate
            raw_method = method.encode("utf-8", "replace")
            raw_path = path.encode("utf-8", "replace")
        if len(raw_method) > METHOD_BYTES:
            raw_method = cut(method, METHOD_BYTES)
        if len(raw_path) > PATH_BYTES:
            raw_path = cut(path, PATH_BYTES)
        at = _HEADER_SIZE + slot * _STRIDE
        buf = self._buf
        version = self._versions[slot] + 1
        _pack_version(buf, at, version)
        _pack_body(
            buf,
            at + _BODY_AT,
            started,
            _NO_TRACE if not trace_id else trace_id.to_bytes(16, "big"),
            1,
            len(raw_method),
            len(raw_path),
            0,
            raw_method,
            raw_path,
            b"",
        )
        _pack_version(buf, at, version + 1)
        self._versions[slot] = version + 1
        CURRENT_SLOT.set(slot)
        return slot

    def set_route(self, slot: int, route: str) -> None:
        """The app matched ``route`` for the request holding ``slot``."""
        if slot < 0 or slot >= self.slots:
            return
        raw = cut(route, ROUTE_BYTES)
        at = _HEADER.size + slot * _STRIDE
        buf = self._buf
        version = self._versions[slot] + 1
        _VERSION.pack_into(buf, at, version)
        _ROUTE.pack_into(buf, at + _ROUTE_AT, raw)
        _ROUTE_LEN.pack_into(buf, at + _ROUTE_LEN_AT, len(raw))
        _VERSION.pack_into(buf, at, version + 1)
        self._versions[slot] = version + 1

    def end(self, slot: int) -> None:
        """The request holding ``slot`` (-1: an overflow) finished."""
        if slot < 0:
            with self._overflow_lock:
                self._overflow = max(0, self._overflow - 1)
                self._buf[_OVERFLOW_AT : _OVERFLOW_AT + 4] = self._overflow.to_bytes(4, "little")
            return
        at = _HEADER_SIZE + slot * _STRIDE
        buf = self._buf
        version = self._versions[slot] + 1
        _pack_version(buf, at, version)
        _pack_in_use(buf, at + _IN_USE_AT, 0)
        _pack_version(buf, at, version + 1)
        self._versions[slot] = version + 1
        CURRENT_SLOT.set(-1)
        self._free.append(slot)  # last: the slot is ours until here

    # -- the master's side -------------------------------------------------

    def read(self, now: float | None = None) -> WorkerLive:
        """The state and the entries in use, oldest first; ``now`` is the
        ``time.perf_counter()`` elapsed times are taken to (default: now)."""
        buf = self._buf
        state, overflow, slots = _HEADER.unpack_from(buf, 0)
        slots = min(slots, self.slots)
        if now is None:
            now = time.perf_counter()
        wall = time.time()
        found: list[LiveRequest] = []
        for slot in range(slots):
            entry = self._read_entry(_HEADER.size + slot * _STRIDE)
            if entry is None:
                continue
            started, trace, method, path, route = entry
            elapsed = max(0.0, now - started)
            found.append(
                LiveRequest(
                    method,
                    path,
                    route,
                    round(wall - elapsed, 6),
                    round(elapsed, 6),
                    None if trace == _NO_TRACE else trace.hex(),
                )
            )
        found.sort(key=lambda request: request.started)
        name = STATES[state] if state < len(STATES) else "unknown"
        if name == "idle" and (found or overflow):
            name = "busy"
        return WorkerLive(name, tuple(found), overflow)

    def _read_entry(self, at: int) -> tuple[float, bytes, str, str, str | None] | None:
        """One entry under the seqlock, or None (not in use, or never stable)."""
        buf = self._buf
        for attempt in range(READ_ATTEMPTS):
            if attempt >= _SPIN_ATTEMPTS:
                time.sleep(0)
            (before,) = _VERSION.unpack_from(buf, at)
            if not before:
                if attempt >= 2:
                    return None  # never written (a write's 0 lasts an instant)
                continue
            if before & 1:
                continue
            raw = buf[at + _BODY_AT : at + _STRIDE]
            (after,) = _VERSION.unpack_from(buf, at)
            if before != after:
                continue
            started, trace, in_use, method_len, path_len, route_len, method, path, route = (
                _BODY.unpack(raw)
            )
            if not in_use:
                return None
            return (
                started,
                trace,
                method[: min(method_len, METHOD_BYTES)].decode("utf-8", "replace"),
                path[: min(path_len, PATH_BYTES)].decode("utf-8", "replace"),
                route[: min(route_len, ROUTE_BYTES)].decode("utf-8", "replace")
                if route_len
                else None,
            )
        return None


# The live area of this worker process (None in the master and before a fork).
_ACTIVE: list[LiveArea] = []


def activate(area: LiveArea | None) -> None:
    """This process writes ``area`` from now on (``post_fork``)."""
    _ACTIVE[:] = [area] if area is not None else []


def note_route(route: str) -> None:
    """A route watcher found ``route`` for the request this thread, greenlet
    or task runs: into its entry, for the live view (one write; nothing when
    the request holds no entry)."""
    slot = CURRENT_SLOT.get()
    if slot >= 0 and _ACTIVE and route:
        _ACTIVE[0].set_route(slot, route)


@on_reset
def _forget() -> None:
    _ACTIVE.clear()
    CURRENT_SLOT.set(-1)


def live_view(record: Any) -> WorkerLive:
    """The live state of the worker of ``record`` (a ``WorkerRecord`` from
    the master's book). A record closed meanwhile (its worker was reaped)
    reads as ``exited``."""
    area: LiveArea | None = getattr(record, "live", None)
    if area is None:
        return WorkerLive("unknown", (), 0)
    try:
        return area.read()
    except ValueError:  # the mmap was closed by the master's main thread
        return WorkerLive("exited", (), 0)


def in_flight_fields(area: LiveArea, now: float) -> list[dict[str, object]]:
    """The requests a dead worker was serving, as ``worker_exited`` lists
    them (elapsed up to ``now``, a ``time.perf_counter()``)."""
    return [
        {
            "method": request.method,
            "path": request.path,
            "route": request.route,
            "elapsed_seconds": request.elapsed_seconds,
            "trace_id": request.trace_id,
        }
        for request in area.read(now).requests
    ]
