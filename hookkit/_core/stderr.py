"""Log lines to stderr that never wait on the reader.

When nothing reads gunicorn's stderr (a stuck log shipper, a full pipe), a
plain ``StreamHandler`` blocks the process that logs: a worker in its exit
path, or the master itself, which then manages no worker. hookkit writes its
lines, and gunicorn's own error-log lines when hookkit's logger class is in
use, through a second, non-blocking file description of the same stderr
(``/proc/self/fd/2`` opened again with ``O_NONBLOCK``: the flag belongs to the
new description, so nothing else writing to stderr is affected).

A reader that lags (a burst of lines) is waited for, at most
``LAG_SECONDS``; a reader that is still not reading then is considered
stalled, and from then on a line that does not fit in the pipe is dropped at
once and counted (``hookkit_sink_errors_total{sink="logs"}``), until a line
fits again. A line larger than the pipe's atomic size that is cut short is
finished within the same bound, or ended with a newline, so the stream
stays one line per record.

Where stderr cannot be opened again (not Linux, a socket), the handler
writes to ``sys.stderr`` as a ``StreamHandler`` would.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import sys
import time
from collections.abc import Callable

from hookkit._core.resets import on_reset

# How long a line may wait for a reader that lags, before the reader is
# considered stalled and lines are dropped without waiting.
LAG_SECONDS = 0.25
# How often fd 2 is looked at again, in case it was pointed elsewhere.
RECHECK_SECONDS = 1.0


class NonBlockingStderr:
    """One non-blocking file description of this process's stderr."""

    def __init__(self) -> None:
        self.fd: int | None = None
        self.target: tuple[int, int] | None = None  # (st_dev, st_ino) of fd 2 when opened
        self.checked = 0.0  # time.monotonic() when fd 2 was last looked at
        self.stalled = False
        self.on_drop: Callable[[], None] | None = None

    def _current_fd(self) -> int | None:
        """The non-blocking description of what fd 2 is now. Reopened when
        fd 2 was pointed elsewhere (``dup2``: gunicorn's ``capture_output``,
        a test's capture), None where it cannot be opened again. Looked at
        again at most every ``RECHECK_SECONDS``: that is a system call."""
        now = time.monotonic()
        if self.fd is not None and now - self.checked < RECHECK_SECONDS:
            return self.fd
        self.checked = now
        try:
            info = os.fstat(2)
        except OSError:
            return None
        target = (info.st_dev, info.st_ino)
        if self.fd is not None and target == self.target:
            return self.fd
        self.close()
        try:
            self.fd = os.open(
                "/proc/self/fd/2", os.O_WRONLY | os.O_APPEND | os.O_NONBLOCK | os.O_CLOEXEC
            )
        except OSError:
            return None
        self.target = target
        return self.fd

    def write(self, data: bytes) -> bool:
        """Write ``data`` without blocking; False if dropped (``on_drop`` counts it)."""
        # sys.stderr replaced (a test capturing it, an app redirecting it):
        # write where it now points, as a StreamHandler would.
        fd = self._current_fd() if sys.stderr is sys.__stderr__ else None
        if fd is None:
            return self._blocking(data)
        try:
            rest = data[os.write(fd, data) :]
        except BlockingIOError:
            rest = data
        except OSError as exc:
            if exc.errno in (errno.EPIPE, errno.EBADF):
                return self._drop()
            raise
        if not rest:
            self.stalled = False
            return True
        if self.stalled and rest is data:
            return self._drop()
        return self._finish(fd, rest, whole=rest is data)

    def _finish(self, fd: int, rest: bytes, whole: bool) -> bool:
        """Wait, at most ``LAG_SECONDS``, for the reader to take ``rest``. A
        line never started is dropped whole; one cut short is ended with a
        newline rather than left open."""
        deadline = time.monotonic() + LAG_SECONDS
        while rest:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            _, ready, _ = select.select([], [fd], [], remaining)
            if not ready:
                continue
            try:
                rest = rest[os.write(fd, rest) :]
            except BlockingIOError:
                continue
            except OSError:
                break
        if not rest:
            self.stalled = False
            return True
        self.stalled = True
        if not whole:
            with contextlib.suppress(OSError):
                os.write(fd, b"\n")
        return self._drop()

    def _blocking(self, data: bytes) -> bool:
        stream = sys.stderr
        if stream is None:  # started with fd 2 closed
            return self._drop()
        try:
            stream.write(data.decode("utf-8", "replace"))
            stream.flush()
        except Exception:
            return self._drop()
        return True

    def _drop(self) -> bool:
        if self.on_drop is not None:
            with contextlib.suppress(Exception):
                self.on_drop()
        return False

    def close(self) -> None:
        """Close the second description."""
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None


_STDERR: NonBlockingStderr | None = None
_on_drop: Callable[[], None] | None = None


def stderr() -> NonBlockingStderr:
    """This process's non-blocking stderr (opened on first use; inherited
    by forked workers, which share it)."""
    global _STDERR  # noqa: PLW0603 - one per process
    if _STDERR is None:
        _STDERR = NonBlockingStderr()
        _STDERR.on_drop = _on_drop
    return _STDERR


def set_on_drop(callback: Callable[[], None] | None) -> None:
    """Called for every dropped line (the metrics sink counts them)."""
    global _on_drop  # noqa: PLW0603
    _on_drop = callback
    if _STDERR is not None:
        _STDERR.on_drop = callback


class NonBlockingStderrHandler(logging.Handler):
    """A logging handler writing each record as one line to stderr, never
    blocking (see the module docstring)."""

    terminator = "\n"

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + self.terminator
        except Exception:
            self.handleError(record)
            return
        try:
            stderr().write(line.encode("utf-8", "replace"))
        except Exception:
            self.handleError(record)


def is_stderr_stream_handler(handler: logging.Handler) -> bool:
    """A plain StreamHandler writing to this process's stderr."""
    if type(handler) is not logging.StreamHandler:
        return False
    stream = getattr(handler, "stream", None)
    try:
        return stream is sys.stderr or (
            stream is not None and stream.fileno() == sys.stderr.fileno()
        )
    except (OSError, ValueError, AttributeError):
        return False


@on_reset
def _forget_drop_hook() -> None:
    """hookkit.testing.reset(): no callback on dropped lines."""
    set_on_drop(None)
