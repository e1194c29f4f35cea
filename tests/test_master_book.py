"""The master's book (``hookkit._core.master``) with ``hookkit.testing``'s
stand-ins: which reason a worker's exit gets from what the master did."""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass, field

from hookkit._core.exits import EXIT_MAX_REQUESTS, EXIT_NORMAL, ExitStatus
from hookkit._core.master import MasterBook
from hookkit.testing import FakeArbiter


@dataclass
class KillingArbiter(FakeArbiter):
    """An arbiter stand-in with gunicorn's ``kill_worker``, noting the kills."""

    kills: list[tuple[int, int]] = field(default_factory=list)

    def kill_worker(self, pid: int, sig: int) -> None:
        """Record the signal sent (gunicorn's sends it)."""
        self.kills.append((pid, sig))


def started_book(server: FakeArbiter) -> MasterBook:
    """A master's book, started on ``server``, with workers of ages 1 to 3."""
    book = MasterBook()
    book.start(server)
    for age, pid in ((1, 101), (2, 102), (3, 103)):
        book.spawning(age)
        book.records[age].pid = pid
    return book


def exit_cleanly(book: MasterBook, age: int, kind: int, received: int = 0) -> None:
    """What a worker's own exit path writes into its record."""
    record = book.records[age]
    record.set_exit(kind, 0)
    record.signal_received = received


def test_the_worker_a_scale_down_stopped_is_scaled_down_though_another_left_first() -> None:
    """TTOU from 3 to 2: gunicorn SIGTERMs the oldest worker, but before it
    is reaped another worker leaves on its own (max_requests), so no excess
    is left when the stopped one is reaped. It is still ``scaled_down``: the
    master's own kill_worker said which worker it stopped."""
    server = KillingArbiter(num_workers=2)
    book = started_book(server)
    book.workers_changed(2, 3)
    server.kill_worker(101, signal.SIGTERM)
    exit_cleanly(book, 3, EXIT_MAX_REQUESTS)
    server.WORKERS = {101: None, 102: None}
    first = book.worker_exit_fields(103, 3, False, server)[1]["reason"]
    exit_cleanly(book, 1, EXIT_NORMAL, signal.SIGTERM)
    server.WORKERS = {102: None}
    book.exit_statuses[101] = ExitStatus(0, None)
    second = book.worker_exit_fields(101, 1, False, server)[1]["reason"]

    assert ("max_requests", "scaled_down") == (first, second)
    assert [(101, signal.SIGTERM)] == server.kills


def test_a_sigterm_from_outside_during_a_scale_down_is_killed() -> None:
    """While a scale-down is pending, a worker the master did not stop, that
    exits on a SIGTERM someone else sent, is ``killed``."""
    server = KillingArbiter(num_workers=2, WORKERS={101: None, 102: None, 103: None})
    book = started_book(server)
    book.workers_changed(2, 3)
    exit_cleanly(book, 2, EXIT_NORMAL, signal.SIGTERM)

    assert "killed" == book.worker_exit_fields(102, 2, False, server)[1]["reason"]


def test_without_kill_worker_a_pending_scale_down_explains_a_stop_signal() -> None:
    """An arbiter without ``kill_worker`` to watch (a stand-in): a stop signal
    while a scale-down is pending is taken as the scale-down's."""
    server = FakeArbiter(num_workers=2, WORKERS={102: None, 103: None})
    book = started_book(server)
    book.workers_changed(2, 3)
    exit_cleanly(book, 1, EXIT_NORMAL, signal.SIGTERM)

    assert "scaled_down" == book.worker_exit_fields(101, 1, False, server)[1]["reason"]


def test_the_book_is_the_masters_only() -> None:
    """After the fork a worker drops the master's records and knowledge."""
    server = KillingArbiter()
    book = started_book(server)
    record = book.forked(2)

    assert (2, {}, None, False) == (
        record.age if record else None,
        book.records,
        book.terminated,
        book.started,
    )
    assert os.getpid() != book.pid
