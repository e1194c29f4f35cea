"""A fixed number of daemon threads that run jobs from one queue.

The master's HTTP server hands them complete requests only (the selector
thread reads heads and writes answers), so a worker is busy for as long as
a password check, a collection or a route's handler takes, never for as
long as a client takes: a few of them answer any number of scrapers.
The queue needs no bound of its own: every job holds a slot of the
server's connection table, which is bounded.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable


class Pool:
    """``size`` threads named ``name``, started by ``start``."""

    def __init__(self, size: int, name: str) -> None:
        self.size = size
        self.name = name
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for _ in range(self.size):
            thread = threading.Thread(target=self._work, name=self.name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def submit(self, job: Callable[[], None]) -> None:
        """Run ``job`` in a worker; it must not raise (one that does is
        dropped, and the worker goes on)."""
        self._jobs.put(job)

    def stop(self, wait: float) -> None:
        """Let each worker finish its job and exit; wait up to ``wait`` s."""
        for _ in self._threads:
            self._jobs.put(None)
        deadline = time.monotonic() + wait
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._threads = []

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            # A job answers its client itself; one that fails leaves the worker going.
            with contextlib.suppress(Exception):
                job()
