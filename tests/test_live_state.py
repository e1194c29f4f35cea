"""The workers' live state (``hookkit._core.live``): its layout and bounds,
the seqlock under a writer in another process, slots claimed by threads,
the overflow count, and the master's book reading it after a worker died.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import NamedTuple

import pytest

from hookkit._core import live
from hookkit._core.dispatch import Dispatcher
from hookkit._core.excluded import ExcludedUrls
from hookkit._core.exits import WorkerRecord
from hookkit._core.live import (
    ASYNC_SLOTS,
    BOOTING,
    IDLE,
    METHOD_BYTES,
    PATH_BYTES,
    ROUTE_BYTES,
    STOPPING,
    LiveArea,
    cut,
    live_view,
    note_route,
)
from hookkit._core.master import MasterBook
from hookkit._core.request_path import RequestPath
from hookkit._core.sink import RequestStarted, Sink
from hookkit.testing import FakeRequest, FakeResponse, FakeWorker


def test_a_new_area_is_booting_with_nothing_in_flight():
    area = LiveArea(4)
    assert ("booting", (), 0) == tuple(area.read())
    area.close()


def test_state_idle_busy_stopping():
    """``busy`` is an idle worker with a request in flight; stopping stays
    stopping with requests in flight."""
    area = LiveArea(1)
    area.set_state(IDLE)
    assert "idle" == area.read().state
    slot = area.begin(time.perf_counter(), "GET", "/a", None)
    assert "busy" == area.read().state
    area.set_state(STOPPING)
    assert "stopping" == area.read().state
    area.end(slot)
    assert ("stopping", ()) == area.read()[:2]
    area.set_state(BOOTING)
    assert "booting" == area.read().state
    area.close()


def test_an_entry_names_method_path_route_times_and_trace_id():
    area = LiveArea(2)
    area.set_state(IDLE)
    started = time.perf_counter() - 2.0
    before = time.time()
    slot = area.begin(started, "POST", "/orders/42", 0x0AF7651916CD43DD8448EB211C80319C)
    assert 0 == slot
    (request,) = area.read().requests
    assert ("POST", "/orders/42", None) == (request.method, request.path, request.route)
    assert "0af7651916cd43dd8448eb211c80319c" == request.trace_id
    assert 2.0 <= request.elapsed_seconds < 3.0
    assert before - 3.0 < request.started <= before - 2.0 + 0.01
    area.set_route(slot, "/orders/<int:id>")
    assert "/orders/<int:id>" == area.read().requests[0].route
    area.close()


def test_entries_are_oldest_first_and_cleared_at_the_end():
    area = LiveArea(3)
    now = time.perf_counter()
    a = area.begin(now - 1, "GET", "/new", None)
    b = area.begin(now - 5, "GET", "/old", None)
    assert ["/old", "/new"] == [r.path for r in area.read().requests]
    area.end(b)
    assert ["/new"] == [r.path for r in area.read().requests]
    area.end(a)
    assert () == area.read().requests
    area.close()


def test_a_cleared_slot_is_reused_and_shows_no_old_route():
    area = LiveArea(1)
    slot = area.begin(time.perf_counter(), "GET", "/one", None)
    area.set_route(slot, "/one/<x>")
    area.end(slot)
    again = area.begin(time.perf_counter(), "GET", "/two", None)
    assert slot == again
    (request,) = area.read().requests
    assert ("/two", None) == (request.path, request.route)
    area.close()


def test_overflow_is_counted_and_uncounted():
    """Every slot taken: the next requests have no entry and are counted;
    the count falls as they finish, and the worker is busy meanwhile."""
    area = LiveArea(2)
    area.set_state(IDLE)
    now = time.perf_counter()
    slots = [area.begin(now, "GET", f"/{i}", None) for i in range(5)]
    assert [0, 1, -1, -1, -1] == slots
    view = area.read()
    assert (2, 3, "busy") == (len(view.requests), view.overflow, view.state)
    for slot in slots[2:]:
        area.end(slot)
    assert 0 == area.read().overflow
    area.end(slots[0])
    area.end(slots[1])
    assert ("idle", (), 0) == tuple(area.read())
    area.close()


def test_path_method_and_route_are_cut_at_a_character_boundary():
    area = LiveArea(1)
    path = "/" + "é" * 300  # two bytes each
    slot = area.begin(time.perf_counter(), "M" * 40, path, None)
    area.set_route(slot, "/" + "€" * 100)  # three bytes each
    (request,) = area.read().requests
    assert len(request.path.encode()) <= PATH_BYTES
    assert request.path == path[: len(request.path)]
    assert len(request.path.encode()) >= PATH_BYTES - 1
    assert "M" * METHOD_BYTES == request.method
    assert request.route is not None
    assert len(request.route.encode()) <= ROUTE_BYTES
    assert "\ufffd" not in request.path + request.route
    area.close()


def test_cut_keeps_short_text_and_whole_characters():
    assert b"/abc" == cut("/abc", 10)
    assert "日本".encode() == cut("日本語", 8)  # 9 bytes: the third character goes
    assert b"" == cut("日", 2)


def test_slots_per_worker_class():
    """gthread: one per thread; sync: one; other classes: ASYNC_SLOTS."""
    from gunicorn.config import Config
    from gunicorn.workers.gthread import ThreadWorker
    from gunicorn.workers.sync import SyncWorker

    cfg = Config()
    cfg.set("threads", 6)

    class Gthread(ThreadWorker):
        def __init__(self) -> None:
            self.cfg = cfg

    class Sync(SyncWorker):
        def __init__(self) -> None:
            self.cfg = cfg

    assert 6 == live.slots_for(Gthread())
    assert 1 == live.slots_for(Sync())
    assert ASYNC_SLOTS == live.slots_for(FakeWorker())


def test_threads_claim_distinct_slots_and_the_count_is_exact():
    """Many threads at once, each its own request: no two hold one slot at
    the same time, every request's entry is its own, and WorkerRecord's
    request count (read-modify-write under gthread) loses none."""
    threads, rounds = 16, 300
    record = WorkerRecord(1, slots=threads)
    area = record.live
    holders: dict[int, int] = {}
    clashes: list[tuple[int, int]] = []
    start = threading.Barrier(threads)

    def serve(me: int) -> None:
        start.wait()
        for i in range(rounds):
            slot = area.begin(time.perf_counter(), "GET", f"/{me}/{i}", None)
            if slot >= 0:
                if holders.setdefault(slot, me) != me:
                    clashes.append((slot, me))
                assert live.CURRENT_SLOT.get() == slot
            record.add_request()
            if slot >= 0:
                del holders[slot]
            area.end(slot)

    pool = [threading.Thread(target=serve, args=(n,)) for n in range(threads)]
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()
    finally:
        sys.setswitchinterval(old)
    assert [] == clashes
    assert threads * rounds == record.requests
    assert ((), 0) == area.read()[1:]
    record.close()


def test_record_fields_written_from_a_signal_do_not_undo_a_request_count():
    """Setting one field of the record writes that field only: a setter
    (the stop signal's, from a handler) racing with add_request cannot put
    back an older request count."""
    record = WorkerRecord(1)
    for _ in range(3):
        record.add_request()
    record.signal_received = signal.SIGTERM
    record.pid = 1234
    record.forked_at = 5.0
    record.booted_at = 6.0
    record.set_exit(1, 0)
    assert (3, signal.SIGTERM, 1234, 5.0, 6.0) == (
        record.requests,
        record.signal_received,
        record.pid,
        record.forked_at,
        record.booted_at,
    )
    assert (1, 0) == (record.exit_kind, record.exit_code)
    record.close()


def _consistent(request) -> bool:
    """Entries the hammering writer writes: every field derives from one n
    (an odd n's route is written after its entry: until then, none)."""
    n = int(request.path.rsplit("/", 1)[1])
    return (
        request.path == f"/{'p' * (n % 200)}/{n}"
        and request.method == ("GET", "POST", "DELETE")[n % 3]
        and request.route in ((f"/r/{n}", None) if n % 2 else (None,))
        and request.trace_id == f"{n:032x}"
    )


def test_a_forked_writer_never_shows_a_torn_entry():
    """A child process rewrites its entries as fast as it can while this
    process reads them: every entry read is one the child wrote whole."""
    area = LiveArea(3)
    pid = os.fork()
    if pid == 0:  # the worker: rewrite every slot, forever
        try:
            n = 0
            while True:
                slots = []
                for _ in range(3):
                    n += 1
                    slot = area.begin(
                        float(n), ("GET", "POST", "DELETE")[n % 3], f"/{'p' * (n % 200)}/{n}", n
                    )
                    if n % 2:
                        area.set_route(slot, f"/r/{n}")
                    slots.append(slot)
                for slot in slots:
                    area.end(slot)
        finally:
            os._exit(0)
    try:
        seen = 0
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            for request in area.read().requests:
                assert _consistent(request), request
                seen += 1
        assert seen > 100
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        area.close()


def test_the_route_watchers_update_the_current_request():
    """``note_route`` (called by the route watchers) writes the route of the
    request this thread runs, and nothing when it holds no entry."""
    area = LiveArea(1)
    live.activate(area)
    note_route("/nothing-in-flight")
    assert () == area.read().requests
    slot = area.begin(time.perf_counter(), "GET", "/users/7", None)
    note_route("/users/<id>")
    assert "/users/<id>" == area.read().requests[0].route
    area.end(slot)
    note_route("/after")
    assert () == area.read().requests
    live.activate(None)
    area.close()


def test_live_view_of_a_closed_record_is_exited():
    record = WorkerRecord(3, slots=2)
    record.close()
    assert ("exited", (), 0) == tuple(live_view(record))


def test_worker_exited_names_the_requests_the_dead_worker_was_serving():
    """The master's book reads the entries before it closes the record: in
    ``worker_exited`` (elapsed to the exit) and in the recent exits."""
    book = MasterBook()
    book.spawning(5, slots=4)
    record = book.records[5]
    record.pid = 4321
    area = record.live
    a = area.begin(time.perf_counter() - 3, "GET", "/slow", 0xABC)
    area.set_route(a, "/slow")
    area.begin(time.perf_counter() - 1, "POST", "/upload", None)
    assert [record] == list(book.workers())
    level, fields = book.worker_exit_fields(4321, 5, aborted=False)
    assert ("warning", "unknown") == (level, fields["reason"])  # no status known here
    requests = fields["requests_in_flight"]
    assert [("GET", "/slow", "/slow"), ("POST", "/upload", None)] == [
        (r["method"], r["path"], r["route"]) for r in requests
    ]
    assert requests[0]["elapsed_seconds"] >= 3
    assert f"{0xABC:032x}" == requests[0]["trace_id"]
    assert requests[1]["trace_id"] is None
    assert [] == list(book.workers())
    (recent,) = book.recent_exits()
    assert (4321, 5, fields["reason"]) == (recent.pid, recent.age, recent.reason)
    assert requests == list(recent.requests_in_flight)
    assert abs(time.time() - recent.time) < 5


def test_worker_exited_has_no_requests_in_flight_field_when_idle():
    book = MasterBook()
    book.spawning(1)
    book.records[1].pid = 99
    _, fields = book.worker_exit_fields(99, 1, aborted=False)
    assert "requests_in_flight" not in fields
    assert () == book.recent_exits()[0].requests_in_flight


def test_recent_exits_keep_the_last_fifty():
    book = MasterBook()
    for age in range(1, 61):
        book.spawning(age)
        book.records[age].pid = 1000 + age
        book.worker_exit_fields(1000 + age, age, aborted=False)
    recent = book.recent_exits()
    assert 50 == len(recent)
    assert (1011, 1060) == (recent[0].pid, recent[-1].pid)


@pytest.mark.skipif(not live.SAME_CLOCK, reason="perf_counter is not CLOCK_MONOTONIC here")
def test_perf_counter_is_one_clock_across_processes():
    """The master takes elapsed times from the worker's perf_counter."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(write, repr(time.perf_counter()).encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = float(os.read(read, 100))
    os.close(read)
    os.close(write)
    assert abs(time.perf_counter() - child) < 1.0


class _Ids(NamedTuple):
    trace_id: int
    span_id: int
    trace_flags: int = 1


class _Tracer(Sink):
    """Starts a "span" whose ids the request path keeps on the scope."""

    name = "fake_tracing"

    def __init__(self, flags: int = 1) -> None:
        self.flags = flags

    def request_started(self, request: RequestStarted) -> _Ids:
        return _Ids(0x1234, 0x99, self.flags)


def _path(record: WorkerRecord, *sinks: Sink) -> RequestPath:
    dispatcher = Dispatcher()
    dispatcher.set_sinks(list(sinks))
    path = RequestPath(dispatcher)
    path.reset(os.getpid(), record)
    return path


def test_the_request_path_writes_the_entry_after_the_sinks_and_clears_it():
    """pre_request: the entry has the method, the path (gunicorn's
    ``req.path``, no query string) and the sampled span's trace id;
    post_request clears it."""
    record = WorkerRecord(1, slots=2)
    path = _path(record, _Tracer())
    request = FakeRequest(method="PUT", path="/items/3", query="token=secret")
    path.pre_request(request)
    (entry,) = live_view(record).requests
    assert ("PUT", "/items/3", f"{0x1234:032x}") == (entry.method, entry.path, entry.trace_id)
    path.post_request(request, {}, FakeResponse())
    assert ((), 1) == (live_view(record).requests, record.requests)
    record.close()


def test_an_unsampled_span_leaves_no_trace_id():
    record = WorkerRecord(1)
    path = _path(record, _Tracer(flags=0))
    path.pre_request(FakeRequest())
    assert live_view(record).requests[0].trace_id is None
    record.close()


def test_an_aborted_worker_keeps_its_entries_for_the_master():
    """After worker_abort (the timeout), post_request leaves the entry: the
    worker is about to die and worker_exited names the request."""
    record = WorkerRecord(1)
    path = _path(record)
    request = FakeRequest(path="/stuck")
    path.pre_request(request)
    path.aborting = True
    path.post_request(request, {}, FakeResponse())
    assert ["/stuck"] == [r.path for r in live_view(record).requests]
    record.close()


def test_an_excluded_probe_still_holds_an_entry():
    record = WorkerRecord(1)
    path = _path(record)
    path.excluded = ExcludedUrls.load("/healthz", {})
    request = FakeRequest(path="/healthz")
    path.pre_request(request)
    assert ["/healthz"] == [r.path for r in live_view(record).requests]
    path.post_request(request, {}, FakeResponse())
    assert () == live_view(record).requests
    record.close()
