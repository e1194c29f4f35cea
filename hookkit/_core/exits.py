"""Why a worker exited.

gunicorn does not hand the exit status to ``child_exit``, and some facts are
only known inside the worker (it reached ``max_requests``; it failed to boot,
in which case the master halts before ``child_exit`` runs). hookkit gathers
them from three places, each checked against gunicorn's source:

1. A ``WorkerRecord`` per worker: a few bytes of anonymous shared memory that
   the master maps in ``pre_fork``. ``fork()`` shares a ``MAP_SHARED`` mapping
   between parent and child, so the worker writes its facts (requests served,
   boot time, how it left) and the master reads them after the worker is
   gone, even after a SIGKILL. No file; each field has one writer, but for
   the request count, which gthread's pool threads add to under a lock of
   the worker's. Beside it, the worker's live state (its requests in
   flight, ``hookkit._core.live``), which the master reads the same way.
2. The master's own knowledge: ``worker.aborted`` (set by
   ``Arbiter.murder_workers`` before it sends SIGABRT), whether the master is
   stopping (``Arbiter.stop``), reloading (``on_reload``), or scaling down
   (``nworkers_changed`` with a smaller number, then ``manage_workers`` sends
   SIGTERM to the oldest workers).
3. The exit status itself, which ``Arbiter.reap_workers`` logs just before it
   calls ``child_exit`` ("Worker (pid:%s) was sent %s!", "Worker (pid:%s)
   exited with code %s."): hookkit's gunicorn logger class notes it. With
   another logger class the status stays unknown and the reason is inferred
   from 1 and 2 alone.

Where the reason cannot be known, it is ``unknown``: hookkit does not guess.
"""

from __future__ import annotations

import mmap
import re
import signal
import struct
import threading
from dataclasses import dataclass

from hookkit._core.live import LiveArea

# How the worker left, as written by the worker itself.
EXIT_NONE = 0  # the worker never ran its exit path (SIGKILL, os._exit, crash)
EXIT_NORMAL = 1  # the worker's run loop returned (asked to stop, or parent gone)
EXIT_MAX_REQUESTS = 2
EXIT_ABORTED = 3  # SIGABRT from the master's timeout
EXIT_BOOT_ERROR = 4
EXIT_APP_LOAD_ERROR = 5
EXIT_ERROR = 6  # an exception ended the worker after it booted

REASONS = (
    "max_requests",
    "timeout",
    "killed",
    "crashed",
    "boot_error",
    "app_load_error",
    "shutdown",
    "reload",
    "scaled_down",
    "unknown",
)


@dataclass(frozen=True)
class ReasonDoc:
    """What an exit reason means and where hookkit knows it from, as the
    documentation lists it (docs/reference/exit-reasons.md is generated from
    ``REASON_DOCS``; the level is ``hookkit._core.master.EXIT_LEVELS``)."""

    meaning: str
    known_from: str


# One row per reason of REASONS, in its order (tests/test_docs.py checks it).
REASON_DOCS: dict[str, ReasonDoc] = {
    "max_requests": ReasonDoc(
        "recycled after `max_requests`",
        "the worker (its request count reached its limit)",
    ),
    "timeout": ReasonDoc(
        "the master timed it out (SIGABRT, then SIGKILL if still there)",
        "the master (`worker.aborted`)",
    ),
    "killed": ReasonDoc(
        "ended by a signal the master did not send (`signal` names it; the OOM "
        "killer's is SIGKILL)",
        "the exit status; the stop signal the worker received",
    ),
    "crashed": ReasonDoc(
        "exited with a non-zero code after it booted (`exit_code`)",
        "the exit status",
    ),
    "boot_error": ReasonDoc(
        "failed before it booted; gunicorn halts",
        "the worker's exit code 3 (logged from `on_exit`, since gunicorn halts "
        "before `child_exit`)",
    ),
    "app_load_error": ReasonDoc(
        "the app could not be imported; gunicorn halts",
        "exit code 4 (likewise)",
    ),
    "shutdown": ReasonDoc(
        "the master is stopping (TERM, INT, QUIT)",
        "the master (`Arbiter.stop`)",
    ),
    "reload": ReasonDoc(
        "replaced by a SIGHUP",
        "the master (the worker predates the reload)",
    ),
    "scaled_down": ReasonDoc(
        "TTOU or a lower worker count",
        "the master (`nworkers_changed`)",
    ),
    "unknown": ReasonDoc(
        "none of the above can be shown",
        "hookkit does not guess",
    ),
}

# gunicorn's Arbiter.WORKER_BOOT_ERROR and APP_LOAD_ERROR exit codes.
WORKER_BOOT_ERROR = 3
APP_LOAD_ERROR = 4

# requests, fork time, boot time (monotonic), pid, exit kind, exit code,
# signal received: each written by the worker only.
_LAYOUT = struct.Struct("<Qddiiii")
# Each field on its own, at its offset: a write changes that field only, so
# a setter run from a signal handler never puts back an older request count.
_FIELDS = tuple(
    (struct.Struct("<" + code), struct.calcsize("<" + _LAYOUT.format[1 : 1 + index]))
    for index, code in enumerate(_LAYOUT.format[1:])
)
_REQUESTS = struct.Struct("<Q")


class WorkerRecord:
    """Facts about one worker, shared between the master and that worker,
    and its live state (``live``, see ``hookkit._core.live``)."""

    __slots__ = ("_buf", "_lock", "age", "live", "threaded")

    def __init__(self, age: int, slots: int = 1) -> None:
        self.age = age
        self._buf = mmap.mmap(-1, _LAYOUT.size, flags=mmap.MAP_SHARED)
        self.live = LiveArea(slots)
        # gthread runs post_request in its pool threads: the request count's
        # read-modify-write is made under this lock (never held across I/O,
        # never taken in a signal handler; uncontended but under gthread).
        # A worker that runs one request at a time sets ``threaded`` False
        # once it knows its class, and counts without it.
        self._lock = threading.Lock()
        self.threaded = True

    def close(self) -> None:
        """Unmap it (in the master, once the worker was reported)."""
        self._buf.close()
        self.live.close()

    def _read(self) -> tuple[int, float, float, int, int, int, int]:
        values: tuple[int, float, float, int, int, int, int] = _LAYOUT.unpack_from(self._buf, 0)
        return values

    def _write(self, index: int, value: float) -> None:
        field, offset = _FIELDS[index]
        field.pack_into(self._buf, offset, value)

    @property
    def requests(self) -> int:
        """Requests the worker served (counted at post_request)."""
        return self._read()[0]

    def add_request(self) -> None:
        """One more request served (called in the worker, per request, from
        any of its threads)."""
        if self.threaded:
            with self._lock:
                _REQUESTS.pack_into(self._buf, 0, _REQUESTS.unpack_from(self._buf, 0)[0] + 1)
        else:
            _REQUESTS.pack_into(self._buf, 0, _REQUESTS.unpack_from(self._buf, 0)[0] + 1)

    @property
    def forked_at(self) -> float:
        """``time.monotonic()`` at post_fork (0 before)."""
        return self._read()[1]

    @forked_at.setter
    def forked_at(self, value: float) -> None:
        self._write(1, value)

    @property
    def booted_at(self) -> float:
        """``time.monotonic()`` at post_worker_init (0 before)."""
        return self._read()[2]

    @booted_at.setter
    def booted_at(self, value: float) -> None:
        self._write(2, value)

    @property
    def pid(self) -> int:
        """The worker's pid, as the worker wrote it in post_fork."""
        return self._read()[3]

    @pid.setter
    def pid(self, value: int) -> None:
        self._write(3, value)

    @property
    def exit_kind(self) -> int:
        """How the worker left (``EXIT_*``)."""
        return self._read()[4]

    @property
    def exit_code(self) -> int:
        """The ``sys.exit`` code the worker left with, if it ran its exit path."""
        return self._read()[5]

    def set_exit(self, kind: int, code: int) -> None:
        """Written by the worker in its own ``worker_exit``."""
        self._write(4, kind)
        self._write(5, code)

    @property
    def signal_received(self) -> int:
        """The last stop signal (TERM, QUIT, INT) the worker received, or 0."""
        return self._read()[6]

    @signal_received.setter
    def signal_received(self, value: int) -> None:
        self._write(6, value)


@dataclass(frozen=True)
class ExitStatus:
    """What ``waitpid`` said about a worker, as gunicorn logged it."""

    exit_code: int | None = None
    signal: int | None = None


@dataclass(frozen=True)
class MasterContext:
    """What the master knew when the worker exited."""

    aborted: bool  # the master timed the worker out (SIGABRT, then SIGKILL)
    stopping: bool  # Arbiter.stop() is running: shutdown or halt
    from_before_reload: bool  # the worker belongs to a generation a SIGHUP replaced
    scale_down_pending: bool  # nworkers_changed lowered the count and a kill is due


@dataclass(frozen=True)
class ExitReason:
    """The classified exit, with what is known of the status."""

    reason: str
    exit_code: int | None = None
    signal: str | None = None
    signal_sent_by_master: bool | None = None

    def fields(self) -> dict[str, object]:
        """Log fields, leaving out what is not known."""
        out: dict[str, object] = {"reason": self.reason}
        if self.exit_code is not None:
            out["exit_code"] = self.exit_code
        if self.signal is not None:
            out["signal"] = self.signal
            out["signal_sent_by_master"] = self.signal_sent_by_master
        return out


def signal_name(signum: int) -> str:
    """``SIGKILL`` for 9; ``signal 77`` for a number with no name."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def classify(
    kind: int,
    code: int,
    signal_received: int,
    status: ExitStatus | None,
    context: MasterContext,
) -> ExitReason:
    """Decide why a worker exited; see the module docstring for the sources.

    ``kind``, ``code`` and ``signal_received`` come from the worker's record
    (``EXIT_NONE`` when the worker never ran its exit path), ``status`` from
    the reaped exit status when hookkit's logger saw it.
    """
    exit_code = status.exit_code if status else None
    signum = status.signal if status else None
    if exit_code is None and signum is None and kind != EXIT_NONE:
        exit_code = code  # the worker's own sys.exit code stands for the status
    signame = signal_name(signum) if signum is not None else None

    if kind == EXIT_BOOT_ERROR or exit_code == WORKER_BOOT_ERROR:
        return ExitReason("boot_error", exit_code)
    if kind == EXIT_APP_LOAD_ERROR or exit_code == APP_LOAD_ERROR:
        return ExitReason("app_load_error", exit_code)
    if context.aborted or kind == EXIT_ABORTED:
        # murder_workers sends SIGABRT, then SIGKILL if the worker is still there
        return ExitReason("timeout", exit_code, signame, True if signame else None)
    if kind == EXIT_MAX_REQUESTS:
        return ExitReason("max_requests", exit_code)
    if signum is not None and kind == EXIT_NONE:
        # Died by a signal without running its exit path. The master sends
        # SIGKILL only to a timed-out worker (above) or at the end of stop();
        # a stop signal that kills outright (the worker had not installed its
        # handlers yet) is judged by who would have sent it.
        if signum == signal.SIGKILL and context.stopping:
            return ExitReason("shutdown", None, signame, True)
        if signum in (signal.SIGTERM, signal.SIGQUIT, signal.SIGINT):
            return _asked_to_stop(signum, None, context)
        return ExitReason("killed", None, signame, False)
    if kind == EXIT_NORMAL or (kind == EXIT_NONE and exit_code == 0):
        return _asked_to_stop(signal_received, exit_code, context)
    if exit_code not in (None, 0):
        return ExitReason("crashed", exit_code)
    return ExitReason("unknown", exit_code)


def _asked_to_stop(
    signal_received: int, exit_code: int | None, context: MasterContext
) -> ExitReason:
    """A clean exit: who asked for it decides the reason."""
    received = signal_name(signal_received) if signal_received else None
    if context.stopping:
        return ExitReason("shutdown", exit_code, received, True if received else None)
    if context.from_before_reload:
        return ExitReason("reload", exit_code, received, True if received else None)
    if context.scale_down_pending:
        return ExitReason("scaled_down", exit_code, received, True if received else None)
    if received is not None:
        # A stop signal the master did not send: someone else killed it.
        return ExitReason("killed", exit_code, received, False)
    return ExitReason("unknown", exit_code)


# gunicorn's Arbiter.reap_workers logs each abnormal exit status just before
# it calls child_exit. gunicorn 27 passes the pid and signal name as args,
# 25 and 26 format them into the message first, so the rendered text is read.
# A signal with no name is logged as "signal N".
_SIGNAL_LINE = re.compile(r"^Worker \(pid:(\d+)\) was sent (SIG\w+|signal (\d+))!")
_EXIT_CODE_LINE = re.compile(r"^Worker \(pid:(\d+)\) exited with code (-?\d+)\.")


def parse_reap_line(
    msg: object, args: tuple[object, ...]
) -> tuple[int, int | None, int | None] | None:
    """(pid, exit code, signal) from one of reap_workers' lines, else None."""
    if not isinstance(msg, str) or not msg.startswith("Worker (pid:"):
        return None
    try:
        text = msg % args if args else msg
    except (TypeError, ValueError):
        return None
    if match := _SIGNAL_LINE.match(text):
        number = int(match.group(3)) if match.group(3) else getattr(signal, match.group(2), None)
        if isinstance(number, int):
            return int(match.group(1)), None, number
    elif match := _EXIT_CODE_LINE.match(text):
        return int(match.group(1)), int(match.group(2)), None
    return None
