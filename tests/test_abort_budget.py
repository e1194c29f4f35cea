"""One abort budget for every sink (``hookkit._core.abort_budget``): what an
aborted worker flushes on ``worker_aborted`` and at its exit shares half a
second, however many sinks wait on a collector that hangs."""

from __future__ import annotations

import os
import time

import hookkit
from hookkit import hooks
from hookkit._core import abort_budget
from hookkit._core.events import Event
from hookkit.testing import FakeArbiter, FakeWorker


def test_without_an_abort_every_wait_is_what_it_asks() -> None:
    assert 7.0 == abort_budget.seconds_left(7.0)


def test_after_an_abort_the_waits_share_half_a_second() -> None:
    abort_budget.start()
    first = abort_budget.seconds_left(10.0)
    time.sleep(0.2)
    second = abort_budget.seconds_left(10.0)
    assert first <= abort_budget.ABORT_BUDGET_SECONDS
    assert second <= first - 0.2
    assert 0.1 == abort_budget.seconds_left(0.1)  # less than is left: as asked
    time.sleep(0.35)
    assert 0.0 == abort_budget.seconds_left(10.0)


class SlowSink(hookkit.Sink):
    """A sink whose collector hangs: every flush takes what it is given."""

    def __init__(self, name: str, waits: list[tuple[str, float]]) -> None:
        self.name = name
        self.waits = waits

    def handle(self, event: Event) -> None:
        if event.name == "worker_aborted":
            self._wait("worker_aborted", abort_budget.seconds_left(2.0))

    def stop_worker(self, seconds: float) -> None:
        self._wait("stop_worker", seconds)

    def _wait(self, where: str, seconds: float) -> None:
        self.waits.append((f"{self.name} {where}", seconds))
        time.sleep(seconds)


def test_two_hanging_sinks_leave_within_the_budget() -> None:
    """worker_abort then worker_exit with two sinks that wait as long as
    they may: both done within the budget, each given what the other left."""
    waits: list[tuple[str, float]] = []
    hookkit.configure(
        tracing=False, metrics=False, sinks=[SlowSink("one", waits), SlowSink("two", waits)]
    )
    arbiter, worker = FakeArbiter(), FakeWorker()
    hooks.on_starting(arbiter)
    hooks.post_fork(arbiter, worker)
    hooks.post_worker_init(worker)
    arbiter.pid = os.getppid()  # from here on, this process is the worker
    started = time.monotonic()
    hooks.worker_abort(worker)
    hooks.worker_exit(arbiter, worker)
    elapsed = time.monotonic() - started

    assert elapsed < abort_budget.ABORT_BUDGET_SECONDS + 0.2, waits
    assert ["one worker_aborted", "two worker_aborted", "one stop_worker", "two stop_worker"] == [
        where for where, _ in waits
    ]
    assert sum(seconds for _, seconds in waits) <= abort_budget.ABORT_BUDGET_SECONDS
