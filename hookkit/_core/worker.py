"""The worker's book: what a worker knows of itself and how it leaves.

Its own record (shared memory the master reads after the worker is gone:
the exit kind, the exit code, the stop signal received, the requests
served), the slow-request watchdog, and the stop signals of worker classes
that leave some at their default action (uvicorn-worker), for which hookkit
does ``worker_exit``'s work in the signal's handler.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from typing import Any

from hookkit._core.exits import (
    APP_LOAD_ERROR,
    EXIT_ABORTED,
    EXIT_APP_LOAD_ERROR,
    EXIT_BOOT_ERROR,
    EXIT_ERROR,
    EXIT_MAX_REQUESTS,
    EXIT_NORMAL,
    WORKER_BOOT_ERROR,
    WorkerRecord,
)
from hookkit._core.stacks import Watchdog

STOP_SIGNALS = (signal.SIGTERM, signal.SIGQUIT, signal.SIGINT)


class WorkerBook:
    """This worker's own facts (no record in the master)."""

    def __init__(self) -> None:
        self.record: WorkerRecord | None = None
        self.aborting = False
        self.watchdog: Watchdog | None = None

    def forked(self, record: WorkerRecord | None, pid: int) -> None:
        """``post_fork``: this process is the worker of ``record``."""
        self.record = record
        self.aborting = False
        self.watchdog = None
        if record is not None:
            record.pid = pid
            record.forked_at = time.monotonic()

    def booted(self) -> dict[str, object]:
        """``post_worker_init``: the boot's duration; stop signals noted."""
        fields: dict[str, object] = {}
        record = self.record
        if record is not None:
            now = time.monotonic()
            record.booted_at = now
            if record.forked_at:
                fields["boot_duration_seconds"] = round(now - record.forked_at, 6)
            _record_stop_signals(record)
        return fields

    def start_watchdog(self, watchdog: Watchdog) -> None:
        """Run the slow-request watchdog in this worker."""
        self.watchdog = watchdog
        watchdog.start()

    def leaving(self, worker: Any, exc: BaseException | None) -> dict[str, object]:
        """The worker's side of its exit: the record says how it leaves; the
        ``worker_exiting`` fields."""
        if self.watchdog is not None:
            self.watchdog.stop()
        kind, code = self._how_worker_leaves(worker, exc)
        fields: dict[str, object] = {"exit_code": code}
        if self.record is not None:
            self.record.set_exit(kind, code)
            fields["requests_served"] = self.record.requests
            if self.record.forked_at:
                fields["uptime_seconds"] = round(time.monotonic() - self.record.forked_at, 6)
        return fields

    def _how_worker_leaves(self, worker: Any, exc: BaseException | None) -> tuple[int, int]:
        """(exit kind, exit code) from inside the worker's exit path:
        Arbiter.spawn_worker runs worker_exit in a ``finally`` while the
        worker's SystemExit propagates."""
        code = 0
        if isinstance(exc, SystemExit):
            raw = exc.code
            code = 0 if raw is None else (raw % 256 if isinstance(raw, int) else 1)
        elif exc is not None:
            code = 1
        if self.aborting:
            return EXIT_ABORTED, code
        if not getattr(worker, "booted", True):
            if code == APP_LOAD_ERROR:
                return EXIT_APP_LOAD_ERROR, code
            if code == WORKER_BOOT_ERROR:
                return EXIT_BOOT_ERROR, code
        if worker.nr >= worker.max_requests:
            return EXIT_MAX_REQUESTS, code
        if code == 0:
            return EXIT_NORMAL, code
        return EXIT_ERROR, code

    def leave_on_default_stop_signals(self, leave: Callable[[], None]) -> None:
        """A worker class that leaves a stop signal at its default action
        dies of it without gunicorn's worker_exit: uvicorn-worker's server
        takes SIGTERM and SIGINT for its graceful shutdown, puts the handlers
        it found back, and raises the signal again. For such a signal hookkit
        installs a handler that does worker_exit's work (``leave``: the exit
        record, ``worker_exiting``, the sinks' bounded stop), then lets the
        signal end the process as it would have."""
        for signum in STOP_SIGNALS:
            if signal.getsignal(signum) is not signal.SIG_DFL:
                continue

            def leaving(sig: int, frame: Any) -> None:
                if self.record is not None:
                    self.record.signal_received = sig
                try:
                    leave()
                finally:
                    signal.signal(sig, signal.SIG_DFL)
                    signal.raise_signal(sig)

            signal.signal(signum, leaving)


def _record_stop_signals(record: WorkerRecord) -> None:
    """Note in the record which stop signal reached the worker, then run
    the worker class's own handler (asyncio's no-op handler included: the
    event loop still sees the signal through its wakeup fd)."""
    for signum in STOP_SIGNALS:
        handler = signal.getsignal(signum)
        if not callable(handler) or getattr(handler, "_hookkit", False):
            continue

        def recording(sig: int, frame: Any, _handler: Any = handler) -> Any:
            record.signal_received = sig
            return _handler(sig, frame)

        recording._hookkit = True  # type: ignore[attr-defined]
        signal.signal(signum, recording)


def runs_threads(worker: Any) -> bool:
    """Whether ``worker`` runs requests on several threads at once:
    gunicorn's gthread worker with ``threads`` above 1 (gevent's greenlets
    and asyncio's tasks take turns on one thread)."""
    from gunicorn.workers.gthread import ThreadWorker

    if not isinstance(worker, ThreadWorker):
        return False
    threads = getattr(getattr(worker, "cfg", None), "threads", 1)
    return not isinstance(threads, int) or threads > 1


def runs_tasks(worker: Any) -> bool:
    """Whether ``worker`` may run requests in greenlets or asyncio tasks:
    every class but gunicorn's sync and gthread workers."""
    from gunicorn.workers.gthread import ThreadWorker
    from gunicorn.workers.sync import SyncWorker

    return not isinstance(worker, (SyncWorker, ThreadWorker))


def answers_system_exit(worker: Any) -> bool:
    """Whether the worker class answers a request aborted by the timeout with
    a 500: gunicorn's sync worker catches every BaseException in handle() and
    writes the error page; gevent swallows the SystemExit and gthread lets it
    end the worker, so their clients get no response."""
    from gunicorn.workers.sync import SyncWorker

    return isinstance(worker, SyncWorker)
