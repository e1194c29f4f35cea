"""Stacks on demand, the socketpair protocol, with real forks.

Each test forks children the way gunicorn's master forks workers:
``before_fork(age)`` in the parent, ``after_fork(age)`` in the child (which
starts the answering OS thread), then the child's main thread gets stuck in
a function named for the test. The parent (the master) gathers and reads
the function's name from the answer. Every child is killed by PID at the
end of its test.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import os
import re
import signal
import socket
import time
import traceback
import warnings
from collections.abc import Callable, Iterator

import pytest

from hookkit._sinks.status import stacks as stacks_module
from hookkit._sinks.status.stacks import (
    MAX_ANSWER_BYTES,
    StackChannels,
    _Pair,
    stacks_response,
)

Spawn = Callable[..., int]


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    """``spawn(channels, age, body, answer=True)``: fork a child worker that
    runs ``body(ready)`` (``ready()`` tells the parent it is in place) and
    wait until it is; returns its pid. ``answer``: True, the child calls
    ``after_fork`` first; False, ``close_in_child``; None, ``body`` calls
    ``after_fork`` itself. All are SIGKILLed and reaped after the test."""
    children: list[int] = []

    def start(
        channels: StackChannels,
        age: int,
        body: Callable[[Callable[[], None]], None],
        *,
        answer: bool | None = True,
    ) -> int:
        channels.before_fork(age)
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: never return into pytest
            code = 0
            try:
                os.close(read_end)
                if answer:
                    channels.after_fork(age)
                elif answer is not None:
                    channels.close_in_child()

                def ready() -> None:
                    os.write(write_end, b"r")

                body(ready)
            except BaseException:
                traceback.print_exc()  # shown with the test's captured stderr
                code = 3
            finally:
                os._exit(code)
        children.append(pid)
        os.close(write_end)
        os.set_blocking(read_end, True)
        assert os.read(read_end, 1) == b"r", "the child died before it was ready"
        os.close(read_end)
        wait_until_asleep(pid)
        return pid

    yield start
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def wait_until_asleep(pid: int, timeout: float = 10.0) -> None:
    """Until the main thread of ``pid`` sleeps. Every body sleeps right
    after ``ready()``, but the parent may read the pipe while the child is
    still returning from its write (a stack ending in ``ready`` was seen
    once in CI). A thread in ``clock_nanosleep`` is in state S; where the
    kernel shows ``wchan``, it must name a sleep too (S alone could be a
    brief wait for the GIL)."""
    deadline = time.monotonic() + timeout
    task = f"/proc/{pid}/task/{pid}"
    while time.monotonic() < deadline:
        with open(f"{task}/stat") as stat:
            state = stat.read().rpartition(")")[2].split()[0]
        try:
            with open(f"{task}/wchan") as wchan:
                waiting_in = wchan.read().strip()
        except OSError:
            waiting_in = ""
        if state == "S" and (waiting_in in ("", "0") or "sleep" in waiting_in):
            return
        time.sleep(0.005)
    raise AssertionError(f"the main thread of {pid} did not fall asleep within {timeout} s")


@pytest.fixture
def channels() -> Iterator[StackChannels]:
    made = StackChannels()
    yield made
    made.close()


def stuck_in_here(ready: Callable[[], None]) -> None:
    ready()
    time.sleep(30)


def stacks_text(worker: dict[str, object]) -> str:
    """Every stack of one worker's answer, as one string."""
    parts = []
    for kind in ("threads", "greenlets", "tasks"):
        entries = worker[kind]
        assert isinstance(entries, list)
        parts.extend(entry["stack"] for entry in entries)
    return "\n".join(parts)


def hold_the_gil(seconds: int) -> None:
    """Sleep in C with the GIL held: ``ctypes.PyDLL`` calls do not release it,
    as a C extension stuck in a loop would not."""
    libc = ctypes.PyDLL(ctypes.util.find_library("c"))
    libc.sleep(seconds)


def test_the_master_reads_the_function_a_worker_is_stuck_in(
    channels: StackChannels, spawn: Spawn
) -> None:
    """A worker whose main thread sleeps in ``stuck_in_here`` answers within
    the deadline; its main thread is named, its stack ends in that
    function, and the answering thread itself is left out."""
    pid = spawn(channels, 1, stuck_in_here)
    started = time.monotonic()
    result = channels.gather({1: pid}, timeout=2.0)
    assert time.monotonic() - started < 2.0
    assert [] == result["not_answering"]
    [worker] = result["workers"]
    assert (pid, 1) == (worker["pid"], worker["age"])
    main = [t for t in worker["threads"] if t["name"] == "MainThread"]
    assert 1 == len(main), worker["threads"]
    assert "in stuck_in_here" in main[0]["stack"]
    assert main[0]["stack"].rstrip().endswith("time.sleep(30)")
    assert "_serve" not in stacks_text(worker), "the answering thread is not listed"
    assert 0 == worker["left_out"]
    json.dumps(result)  # plain JSON values


def test_a_worker_holding_the_gil_is_not_answering_and_not_waited_for(
    channels: StackChannels, spawn: Spawn
) -> None:
    """Two workers asked at once: one answers, the other sleeps in C with the
    GIL held (as a C extension stuck in a loop), so its thread cannot run.
    It is listed as ``not_answering`` (``timeout``), the answering one is
    listed with its stack, and the gather returns at its deadline, not
    later."""
    fine = spawn(channels, 1, stuck_in_here)

    def hold(ready: Callable[[], None]) -> None:
        ready()
        hold_the_gil(30)

    stuck = spawn(channels, 2, hold)
    time.sleep(0.2)  # it is in C by now
    started = time.monotonic()
    result = channels.gather({1: fine, 2: stuck}, timeout=0.5)
    elapsed = time.monotonic() - started
    assert 0.45 < elapsed < 0.9, elapsed  # the deadline, plus a loaded machine's slack
    assert [{"pid": stuck, "age": 2, "reason": "timeout"}] == result["not_answering"]
    assert [fine] == [w["pid"] for w in result["workers"]]
    assert "stuck_in_here" in stacks_text(result["workers"][0])


def test_a_worker_without_the_thread_is_not_answering(
    channels: StackChannels, spawn: Spawn
) -> None:
    """A child that closed its ends without starting the thread (as a
    process that is not a worker does, ``close_in_child``): its master end
    sees the close, and the gather says ``closed`` at once."""
    pid = spawn(channels, 1, stuck_in_here, answer=False)
    started = time.monotonic()
    result = channels.gather({1: pid}, timeout=1.0)
    assert time.monotonic() - started < 0.5
    assert [{"pid": pid, "age": 1, "reason": "closed"}] == result["not_answering"]


def test_unknown_and_gone_workers(channels: StackChannels, spawn: Spawn) -> None:
    """A worker the channels never forked is ``no_channel``; after
    ``worker_gone`` its pair is closed and it is ``no_channel`` too. Neither
    is waited for."""
    pid = spawn(channels, 1, stuck_in_here)
    started = time.monotonic()
    result = channels.gather({7: 4242}, timeout=1.0)
    assert [{"pid": 4242, "age": 7, "reason": "no_channel"}] == result["not_answering"]
    channels.worker_gone(1)
    result = channels.gather({1: pid}, timeout=1.0)
    assert [{"pid": pid, "age": 1, "reason": "no_channel"}] == result["not_answering"]
    assert time.monotonic() - started < 0.5, "neither was waited for"


def test_a_late_answer_is_discarded(channels: StackChannels, spawn: Spawn) -> None:
    """A worker holds the GIL for a second in ``first_phase``: two gathers
    time out. When it lets go, its thread answers late (once: it answers
    only the newest request it finds waiting, or twice when the first
    request was read before the second came) and the main thread moves on
    to ``second_phase``. The next gather drops the late answers (their
    request ids are old) and returns its own."""

    def phases(ready: Callable[[], None]) -> None:
        ready()
        first_phase()
        second_phase()

    def first_phase() -> None:
        hold_the_gil(1)

    def second_phase() -> None:
        time.sleep(30)

    pid = spawn(channels, 1, phases)
    time.sleep(0.1)
    for _ in range(2):
        result = channels.gather({1: pid}, timeout=0.2)
        assert [{"pid": pid, "age": 1, "reason": "timeout"}] == result["not_answering"]
    time.sleep(1.5)  # the GIL is free again; the late answer is in the socket
    assert 0 == channels.stale_discarded
    result = channels.gather({1: pid}, timeout=2.0)
    assert channels.stale_discarded in (1, 2)
    [worker] = result["workers"]
    assert "in second_phase" in stacks_text(worker)
    assert "in first_phase" not in stacks_text(worker)


def test_frame_depth_is_bounded_at_the_inner_end(spawn: Spawn) -> None:
    """200 frames deep, with ``max_frames=10``: the stack keeps the 10
    innermost (the function it is stuck in among them) and says how many
    outer frames it left out."""
    channels = StackChannels(max_frames=10)

    def deep(n: int, ready: Callable[[], None]) -> None:
        if n:
            deep(n - 1, ready)
        else:
            stuck_at_the_bottom(ready)

    def stuck_at_the_bottom(ready: Callable[[], None]) -> None:
        ready()
        time.sleep(30)

    try:
        pid = spawn(channels, 1, lambda ready: deep(200, ready))
        [worker] = channels.gather({1: pid}, timeout=2.0)["workers"]
    finally:
        channels.close()
    main = next(t for t in worker["threads"] if t["name"] == "MainThread")
    assert "in stuck_at_the_bottom" in main["stack"]
    # traceback folds repeated lines: "[Previous line repeated 4 more times]"
    repeated = sum(int(n) for n in re.findall(r"repeated (\d+) more time", main["stack"]))
    assert 10 == main["stack"].count('  File "') + repeated
    left_out = re.match(r"  \.\.\. (\d+) outer frames left out\n", main["stack"])
    assert left_out is not None
    assert int(left_out.group(1)) > 190


def test_the_answer_size_is_bounded(spawn: Spawn) -> None:
    """60 threads parked in a function, with ``max_bytes=8192``: the answer
    stays within 8 KiB, the main thread (listed first) is in it, and the
    threads that did not fit are counted in ``left_out``."""
    channels = StackChannels(max_bytes=8192)

    def many_threads(ready: Callable[[], None]) -> None:
        import threading

        stop = threading.Event()
        for n in range(60):
            threading.Thread(target=parked_thread, args=(stop,), name=f"parked-{n}").start()
        time.sleep(0.2)
        stuck_in_here(ready)

    try:
        pid = spawn(channels, 1, many_threads)
        [worker] = channels.gather({1: pid}, timeout=2.0)["workers"]
    finally:
        channels.close()
    assert len(json.dumps(worker)) <= 8192
    assert worker["left_out"] > 0
    assert "MainThread" == worker["threads"][0]["name"]
    assert 60 + 1 == len(worker["threads"]) + worker["left_out"]
    assert 1 << 20 == MAX_ANSWER_BYTES


def parked_thread(stop: object) -> None:
    stop.wait()  # type: ignore[attr-defined]


def test_the_master_refuses_an_oversized_or_garbled_answer() -> None:
    """The master reads no frame larger than ``max_bytes`` (a length field
    past it is taken as garbage, not as a reason to buffer)."""
    channels = StackChannels(max_bytes=100)
    master, worker = socket.socketpair()
    master.setblocking(False)
    pair = _Pair(master, worker)
    try:
        worker.sendall(stacks_module._HEADER.pack(b"HKS1", 1, 101))
        time.sleep(0.05)
        assert "garbled" == channels._read(pair, 1)
        worker.sendall(b"nonsense-header!")
        time.sleep(0.05)
        assert "garbled" == channels._read(pair, 1)
    finally:
        pair.close()


def test_after_fork_keeps_only_its_own_end_and_close_stops_the_thread() -> None:
    """Both ends are close-on-exec. ``after_fork(2)`` closes the ends of the
    other worker's pair and the
    master's end of its own, keeps its own end for the thread; ``close()``
    wakes the thread, which closes that end."""
    channels = StackChannels()
    channels.before_fork(1)
    channels.before_fork(2)
    first, second = channels._pairs[1], channels._pairs[2]
    assert not os.get_inheritable(second.master.fileno()), "close-on-exec: a re-exec gets none"
    assert first.worker is None, "a forked worker's end is closed in the master"
    own = second.worker
    assert own is not None
    channels.after_fork(2)  # in this process: only the bookkeeping matters
    assert -1 == first.master.fileno()
    assert -1 == second.master.fileno()
    assert own.fileno() != -1
    channels.close()
    deadline = time.monotonic() + 2
    while own.fileno() != -1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert -1 == own.fileno(), "the answering thread ended and closed its end"


def test_close_in_child_closes_everything() -> None:
    channels = StackChannels()
    channels.before_fork(1)
    pair = channels._pairs[1]
    channels.close_in_child()
    assert -1 == pair.master.fileno()
    assert pair.worker is None


def test_greenlets_under_gevent_and_the_thread_is_a_real_one(
    channels: StackChannels, spawn: Spawn
) -> None:
    """A worker that monkey-patched everything (as gunicorn's gevent worker
    does), then started the thread: ``_thread.start_new_thread`` is gevent's
    by then, yet the thread answers while the main greenlet sleeps in the
    *original* ``time.sleep``, never yielding to the hub (a greenlet could
    not run then). A parked greenlet's stack is listed too."""
    pytest.importorskip("gevent")

    def patched(ready: Callable[[], None]) -> None:
        import _thread

        from gevent import monkey

        with warnings.catch_warnings():  # pytest makes warnings errors; gevent warns late patching
            warnings.simplefilter("ignore")
            monkey.patch_all()
        assert _thread.start_new_thread is not monkey.get_original("_thread", "start_new_thread"), (
            "gevent patched the thread API"
        )
        import gevent
        import gevent.event

        event = gevent.event.Event()
        gevent.spawn(parked_greenlet, event)
        gevent.sleep(0.05)
        channels.after_fork(1)  # patched by now: gevent's thread API is in place
        blocking_sleep = monkey.get_original("time", "sleep")
        stuck_without_yielding(ready, blocking_sleep)

    pid = spawn(channels, 1, patched, answer=None)
    result = channels.gather({1: pid}, timeout=2.0)
    [worker] = result["workers"]
    threads = "\n".join(t["stack"] for t in worker["threads"])
    assert "in stuck_without_yielding" in threads
    assert any("in parked_greenlet" in g["stack"] for g in worker["greenlets"]), worker["greenlets"]


def stuck_without_yielding(
    ready: Callable[[], None], blocking_sleep: Callable[[float], None]
) -> None:
    ready()
    blocking_sleep(30)


def parked_greenlet(event: object) -> None:
    event.wait()  # type: ignore[attr-defined]


def test_asyncio_tasks_are_listed_while_the_loop_is_blocked(
    channels: StackChannels, spawn: Spawn
) -> None:
    """An event loop whose running task blocks in ``block_the_loop`` (a sync
    call in an async handler, the classic ASGI hang): the thread lists the
    loop's other task with its await chain (``parked_task`` awaiting
    ``inner_wait``), and the main thread's stack shows the blocking call."""
    import asyncio

    async def inner_wait() -> None:
        await asyncio.sleep(30)

    async def parked_task() -> None:
        await inner_wait()

    def block_the_loop(ready: Callable[[], None]) -> None:
        ready()
        time.sleep(30)

    async def main(ready: Callable[[], None]) -> None:
        task = asyncio.create_task(parked_task(), name="parked")
        await asyncio.sleep(0.05)
        block_the_loop(ready)
        task.cancel()

    pid = spawn(channels, 1, lambda ready: asyncio.run(main(ready)))
    [worker] = channels.gather({1: pid}, timeout=2.0)["workers"]
    parked = [t for t in worker["tasks"] if t["name"] == "parked"]
    assert 1 == len(parked), worker["tasks"]
    assert "in parked_task" in parked[0]["stack"]
    assert "in inner_wait" in parked[0]["stack"]
    main_thread = next(t for t in worker["threads"] if t["name"] == "MainThread")
    assert "in block_the_loop" in main_thread["stack"]


def test_stacks_response(channels: StackChannels, spawn: Spawn) -> None:
    """The HTTP handler's body: 200 and the gather as JSON; 503 without
    channels (no status sink in this server)."""
    pid = spawn(channels, 1, stuck_in_here)
    status, body = stacks_response(channels, {1: pid})
    assert 200 == status
    decoded = json.loads(body)
    assert pid == decoded["workers"][0]["pid"]
    status, body = stacks_response(None, {1: pid})
    assert 503 == status
    assert "error" in json.loads(body)


def test_the_heap_is_searched_for_tasks_only_under_a_running_loop() -> None:
    """A process that imported asyncio but runs no loop (many sync apps do)
    is not made to pay for a heap walk; a thread inside ``asyncio.run`` is
    seen as running one."""
    import asyncio
    import sys

    from hookkit._sinks.status.stacks import _event_loop_in

    if "uvloop" in sys.modules:  # pragma: no cover - then every process is searched
        pytest.skip("uvloop is imported in this process")
    assert not _event_loop_in(sys._current_frames().values())

    async def inside() -> bool:
        return _event_loop_in([sys._getframe()])

    assert asyncio.run(inside())
