"""The master's fork guard (``hookkit._aggregate.fork_guard``): a fork waits
for a collection under way, and a collection for a fork under way."""

from __future__ import annotations

import os
import threading
import time

import pytest

from hookkit._aggregate.fork_guard import ForkGuard

# Forking beside a thread is the point here (Python 3.12+ warns about it).
pytestmark = pytest.mark.filterwarnings("ignore:.*multi-threaded.*:DeprecationWarning")


def fork_and_reap() -> float:
    """Fork a child that exits at once; when the parent came out of fork."""
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    returned = time.monotonic()
    os.waitpid(pid, 0)
    return returned


def test_a_fork_waits_for_the_collection_under_way() -> None:
    guard = ForkGuard()
    inside, ended = threading.Event(), []

    def collect() -> None:
        with guard.collecting():
            inside.set()
            time.sleep(0.3)
            ended.append(time.monotonic())

    reader = threading.Thread(target=collect)
    reader.start()
    inside.wait(5)
    forked = fork_and_reap()
    reader.join(5)
    assert ended[0] <= forked


def test_a_collection_waits_for_the_fork_under_way() -> None:
    """While the before-fork hook holds the guard, a reader does not enter."""
    guard = ForkGuard()
    entered: list[float] = []
    guard._before_fork()

    def collect() -> None:
        with guard.collecting():
            entered.append(time.monotonic())

    reader = threading.Thread(target=collect)
    reader.start()
    time.sleep(0.2)
    assert [] == entered
    released = time.monotonic()
    guard._after_fork()
    reader.join(5)
    assert 1 == len(entered)
    assert entered[0] >= released


def test_in_another_process_the_guard_does_nothing() -> None:
    """A worker inherits the master's guard: its own forks never wait on it."""
    guard = ForkGuard()
    guard.owner = -1  # as seen from a process forked from the owner
    with guard.collecting():
        fork_and_reap()  # would wait forever if the hook applied here
