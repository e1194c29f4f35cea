"""The master's book: what the master knows of its workers and their exits.

One record per live worker (by age, shared memory the worker writes its
exit kind and request count into), the exit statuses gunicorn's reap lines
told (by pid), and what the master itself did: a SIGHUP reload (workers
from before it leave with reason ``reload``), a scale-down (TTOU,
``scaled_down``), a stop (``shutdown``). From these, ``worker_exit_fields``
gives the ``worker_exited`` event its reason, and the requests a worker
was serving when it died (``requests_in_flight``, read from its live state
before its record is closed).

For a status page, in the master: ``workers()`` (the records of the
workers alive now, oldest first; ``hookkit._core.live.live_view(record)``
reads one's live state) and ``recent_exits()`` (the last ``RECENT_EXITS``
exits, oldest first).
"""

from __future__ import annotations

import os
import signal
import struct
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from hookkit._core.events import Level
from hookkit._core.exits import (
    EXIT_NONE,
    ExitStatus,
    MasterContext,
    WorkerRecord,
    classify,
    parse_reap_line,
)
from hookkit._core.live import in_flight_fields

RECENT_EXITS = 50  # exits the master keeps for a status page

EXIT_LEVELS: dict[str, Level] = {
    "max_requests": "info",
    "shutdown": "info",
    "reload": "info",
    "scaled_down": "info",
    "killed": "warning",
    "unknown": "warning",
    "timeout": "error",
    "crashed": "error",
    "boot_error": "error",
    "app_load_error": "error",
}


@dataclass(frozen=True)
class RecentExit:
    """One worker exit, as ``worker_exited`` told it (kept for a status
    page; paths are the master's to show or not, never a query string)."""

    pid: int
    age: int
    reason: str
    signal: str | None  # the signal's name, when the worker died of one
    exit_code: int | None
    time: float  # time.time() when the master reported the exit
    requests_in_flight: tuple[dict[str, object], ...]


class MasterBook:
    """The master's knowledge of its workers (empty in a worker)."""

    def __init__(self) -> None:
        self.server: Any = None  # the arbiter, once on_starting ran
        self.pid = 0
        self.records: dict[int, WorkerRecord] = {}  # by worker age
        self.exit_statuses: dict[int, ExitStatus] = {}  # by pid, from the reap lines
        self.reload_watermark = 0  # workers of this age or younger predate the last SIGHUP
        self.scale_down_pending = 0
        self.stopping = False
        # Pids the master itself sent SIGTERM (Arbiter.kill_worker), when
        # hookkit could watch it: a scale-down's victims, known exactly.
        self.terminated: set[int] | None = None
        self._recent: deque[RecentExit] = deque(maxlen=RECENT_EXITS)

    def workers(self) -> tuple[WorkerRecord, ...]:
        """The records of the workers forked and not yet reported gone,
        oldest first (a copy: safe from another thread of the master, such
        as a status page's; a record closed meanwhile reads as ``exited``
        in ``live_view``). ``record.pid`` is 0 until the worker ran
        ``post_fork``."""
        return tuple(record for _, record in sorted(self.records.copy().items()))

    def recent_exits(self) -> tuple[RecentExit, ...]:
        """The last ``RECENT_EXITS`` worker exits, oldest first."""
        return tuple(self._recent)

    def start(self, server: Any) -> None:
        """``on_starting``: this process is the master."""
        self.server = server
        self.pid = os.getpid()
        self.stopping = False
        self._watch_stop(server)
        self._watch_kills(server)

    @property
    def started(self) -> bool:
        """Whether this process is a master hookkit saw start."""
        return self.server is not None and self.pid == os.getpid()

    def _watch_stop(self, server: Any) -> None:
        """Know when the master is stopping. gunicorn's Arbiter.stop() runs for
        every shutdown (TERM, INT, QUIT, a halt, an unhandled error) and sends
        the workers their stop signal; no hook fires before it, so the bound
        method is wrapped on this arbiter instance."""
        if getattr(server.stop, "_hookkit", False):
            return
        original = server.stop

        def stop(*args: Any, **kwargs: Any) -> Any:
            self.stopping = True
            return original(*args, **kwargs)

        stop._hookkit = True  # type: ignore[attr-defined]
        server.stop = stop

    def _watch_kills(self, server: Any) -> None:
        """Know which workers the master itself sends SIGTERM: manage_workers
        stops the oldest ones on a scale-down (TTOU), reload() the older
        generation, stop() all of them. No hook says which worker a
        scale-down chose, and by the time it is reaped another worker's exit
        may have absorbed the excess, so the bound method is wrapped on this
        arbiter instance, as ``stop`` is."""
        kill_worker = getattr(server, "kill_worker", None)
        if kill_worker is None or getattr(kill_worker, "_hookkit", False):
            if kill_worker is not None and self.terminated is None:
                self.terminated = set()
            return
        self.terminated = set()

        def watched_kill_worker(pid: int, sig: int, *args: Any, **kwargs: Any) -> Any:
            if sig == signal.SIGTERM and self.terminated is not None:
                self.terminated.add(pid)
            return kill_worker(pid, sig, *args, **kwargs)

        watched_kill_worker._hookkit = True  # type: ignore[attr-defined]
        server.kill_worker = watched_kill_worker

    def note_reap_line(self, msg: object, args: tuple[object, ...]) -> None:
        """gunicorn logged a reaped worker's exit status (hookkit's logger
        class passes every line here; only the master's reap lines count)."""
        if not self.started:
            return
        status = parse_reap_line(msg, args)
        if status is not None:
            pid, code, signum = status
            self.exit_statuses[pid] = ExitStatus(code, signum)

    def reloaded(self, server: Any) -> None:
        """``on_reload``: Arbiter.reload() spawns the new generation after
        this hook, then stops every older worker: their ages are at most the
        current one."""
        self.reload_watermark = server.worker_age
        self.scale_down_pending = 0

    def workers_changed(self, new_value: int, old_value: int | None) -> None:
        """``nworkers_changed``: a scale-down's exits are ``scaled_down``."""
        if old_value is not None and new_value < old_value:
            self.scale_down_pending += old_value - new_value

    def spawning(self, age: int, slots: int = 1) -> None:
        """``pre_fork``: the record the worker of ``age`` will write, with
        ``slots`` live entries (``hookkit._core.live.slots_for``)."""
        self.records[age] = WorkerRecord(age, slots)

    def forked(self, age: int) -> WorkerRecord | None:
        """``post_fork``, in the new worker: its own record; the master's
        state inherited by this process is dropped."""
        record = self.records.pop(age, None)
        for inherited in self.records.values():
            inherited.close()
        self.records.clear()
        self.exit_statuses.clear()
        self._recent.clear()
        self.server = None
        self.pid = 0
        self.terminated = None
        return record

    def worker_exit_fields(
        self, pid: int, age: int, aborted: bool, server: Any = None
    ) -> tuple[Level, dict[str, object]]:
        """The ``worker_exited`` event's level and fields for the worker of
        ``pid`` and ``age``, which exited and was reaped (or vanished)."""
        if server is not None and self.scale_down_pending:
            # gunicorn stops workers only while it has more than it wants
            # (this one, already taken out of WORKERS, included). A
            # scale-down that found nothing to stop (a worker was missing
            # at that moment) is not pending any more.
            excess = len(getattr(server, "WORKERS", ())) + 1 - int(server.num_workers)
            self.scale_down_pending = max(0, min(self.scale_down_pending, excess))
        record = self.records.pop(age, None)
        status = self.exit_statuses.pop(pid, None)
        kind, code, received = EXIT_NONE, 0, 0
        fields: dict[str, object] = {"worker_pid": pid, "worker_age": age}
        in_flight: list[dict[str, object]] = []
        if record is not None:
            kind, code, received = record.exit_kind, record.exit_code, record.signal_received
            fields["requests_served"] = record.requests
            now = time.monotonic()
            if record.forked_at:
                fields["uptime_seconds"] = round(now - record.forked_at, 6)
            # What it was serving when it died: elapsed up to now, the exit
            # as the master learns of it. Reading it must never cost the
            # exit its line.
            try:
                in_flight = in_flight_fields(record.live, time.perf_counter())
            except (ValueError, struct.error):
                in_flight = []
            record.close()
        if self.terminated is None:
            # kill_worker not watched: a stop signal while a scale-down is
            # pending is taken as the scale-down's.
            scaled_down = self.scale_down_pending > 0
        else:
            scaled_down = pid in self.terminated
            self.terminated.discard(pid)
        context = MasterContext(
            aborted=aborted,
            stopping=self.stopping,
            from_before_reload=age <= self.reload_watermark,
            scale_down_pending=scaled_down,
        )
        reason = classify(kind, code, received, status, context)
        if reason.reason == "scaled_down":
            self.scale_down_pending = max(0, self.scale_down_pending - 1)
        fields.update(reason.fields())
        if in_flight:
            fields["requests_in_flight"] = in_flight
        self._recent.append(
            RecentExit(
                pid,
                age,
                reason.reason,
                reason.signal,
                reason.exit_code,
                time.time(),
                tuple(in_flight),
            )
        )
        return EXIT_LEVELS[reason.reason], fields

    def unreported_exits(self, server: Any) -> list[tuple[int, int]]:
        """``on_exit``: (pid, age) of the workers that exited without
        ``child_exit``: one that failed to boot makes the master halt
        first, and Arbiter.stop() SIGKILLs the workers still running when
        graceful_timeout ends and reaps only once, without waiting."""
        live = set(server.WORKERS)
        if self.stopping and live:
            live -= self._collect_killed(live, timeout=1.0)
        return [
            (record.pid, age)
            for age, record in sorted(self.records.items())
            if record.pid
            and record.pid not in live
            and (record.exit_kind != EXIT_NONE or record.pid in self.exit_statuses)
        ]

    def _collect_killed(self, pids: set[int], timeout: float) -> set[int]:
        """waitpid the workers stop() killed, for up to ``timeout`` seconds;
        their statuses go where the reap log line would have put them."""
        reaped: set[int] = set()
        deadline = time.monotonic() + timeout
        while True:
            for pid in pids - reaped:
                try:
                    wpid, status = os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    reaped.add(pid)
                    continue
                if wpid == pid:
                    reaped.add(pid)
                    if os.WIFSIGNALED(status):
                        self.exit_statuses[pid] = ExitStatus(None, os.WTERMSIG(status))
                    elif os.WIFEXITED(status):
                        self.exit_statuses[pid] = ExitStatus(os.WEXITSTATUS(status), None)
            if reaped == pids or time.monotonic() >= deadline:
                return reaped
            time.sleep(0.01)
