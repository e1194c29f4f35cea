"""No fork of the master while its aggregate is being read.

gunicorn forks workers from the master while a thread of the master may be
reading the aggregate: a scrape of ``/metrics``, or the OTLP metrics
export. A child inherits every lock as it was at the fork, so an
``os.register_at_fork`` hook waits, before every fork of the master, until
no reader is collecting, and holds new ones back until the fork is done
(the way gunicorn's own control socket pauses its thread around fork).

Only collecting is guarded: a reader that then talks to the network (a
slow scraper reading the body, an OTLP collector that hangs) does it after
``collecting()`` has returned, so a fork never waits on the network.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator


class ForkGuard:
    """Collections of the aggregate and the master's forks, one at a time."""

    def __init__(self) -> None:
        self.owner = os.getpid()
        self._cond = threading.Condition()
        self._collecting = 0  # readers collecting now
        self._forking = False
        # Cannot be undone: a guard lives as long as its master, and in any
        # other process (a worker, a test's fork) the hooks do nothing.
        os.register_at_fork(before=self._before_fork, after_in_parent=self._after_fork)

    @contextlib.contextmanager
    def collecting(self) -> Iterator[None]:
        """Around one collection: not while a fork is under way, and no fork
        until it is done."""
        with self._cond:
            while self._forking:
                self._cond.wait()
            self._collecting += 1
        try:
            yield
        finally:
            with self._cond:
                self._collecting -= 1
                self._cond.notify_all()

    def _before_fork(self) -> None:
        if os.getpid() != self.owner:
            return
        with self._cond:
            self._forking = True
            while self._collecting:
                self._cond.wait()

    def _after_fork(self) -> None:
        if os.getpid() != self.owner:
            return
        with self._cond:
            self._forking = False
            self._cond.notify_all()
