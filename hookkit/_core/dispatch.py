"""Fan each event out to every enabled sink, isolating their failures.

A sink that raises never reaches gunicorn: a raising ``post_fork`` halts the
arbiter and a raising ``pre_request`` fails the request. The error is counted
per sink and reported at most once a minute per sink, straight to stderr,
since the failing sink may be the log sink itself.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Sequence

from hookkit._core.events import Event, Sink
from hookkit._core.stderr import stderr

ERROR_REPORT_INTERVAL = 60.0


class Dispatcher:
    """Hands events to sinks; counts and rate-limits their errors."""

    def __init__(self, sinks: Sequence[Sink] = ()) -> None:
        self.sinks: tuple[Sink, ...] = tuple(sinks)
        self.errors: dict[str, int] = {}
        self._last_report: dict[str, float] = {}
        # Called with the failing sink's name on every error (the metrics
        # sink counts them in hookkit_sink_errors_total); must not raise.
        self.on_error: Callable[[str], None] | None = None

    def emit(self, event: Event) -> None:
        """Give ``event`` to every sink; never raises."""
        for sink in self.sinks:
            try:
                sink.handle(event)
            except Exception as exc:
                self.failed(sink.name, f"on {event.name}", exc, label=f"sink {sink.name!r}")

    def emit_to(self, sinks: Sequence[Sink], event: Event) -> None:
        """Give ``event`` to ``sinks`` only (the request path chooses them);
        never raises."""
        for sink in sinks:
            try:
                sink.handle(event)
            except Exception as exc:
                self.failed(sink.name, f"on {event.name}", exc, label=f"sink {sink.name!r}")

    def internal_error(self, hook: str, exc: BaseException) -> None:
        """hookkit's own handling of ``hook`` raised: count and report it."""
        self.failed("hookkit", f"in {hook}", exc)

    def failed(self, who: str, where: str, exc: BaseException, label: str | None = None) -> None:
        """Count an error of ``who`` (a sink's name, or ``hookkit``); report
        it unless reported in the last minute."""
        self.errors[who] = self.errors.get(who, 0) + 1
        if self.on_error is not None:
            with contextlib.suppress(Exception):  # counting must not fail the caller
                self.on_error(who)
        now = time.monotonic()
        last = self._last_report.get(who)
        if last is not None and now - last < ERROR_REPORT_INTERVAL:
            return
        self._last_report[who] = now
        # Straight to stderr (the failing sink may be the log sink), never
        # waiting on a reader that stopped reading.
        with contextlib.suppress(Exception):
            stderr().write(
                (
                    f"hookkit: {label or who} failed {where} in pid {os.getpid()}: "
                    f"{type(exc).__name__}: {exc} ({self.errors[who]} errors so far; "
                    f"reported at most once a minute)\n"
                ).encode("utf-8", "replace")
            )
