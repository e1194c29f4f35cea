"""Fan each call out to the sinks that implement it, isolating their failures.

A sink that raises never reaches gunicorn: a raising ``post_fork`` halts the
arbiter and a raising ``pre_request`` fails the request. The error is counted
per sink (``count_errors`` of the sinks that count) and reported at most once
a minute per sink, straight to stderr, since the failing sink may be the log
sink itself.

For each method of the sink contract the dispatcher keeps, when the sinks
are set, the bound methods of the sinks that override it, in the sinks'
order: a request then costs a loop over two or three bound methods.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from hookkit._core.events import Event, Level
from hookkit._core.settings import ConfigError
from hookkit._core.sink import Sink, overrides
from hookkit._core.stderr import stderr

ERROR_REPORT_INTERVAL = 60.0
HOOKKIT = "hookkit"  # the name hookkit's own errors are counted under

# The lifecycle methods a sink may override (the request path and
# handle() are kept apart, see Dispatcher.set_sinks).
LIFECYCLE = (
    "start_master",
    "server_ready",
    "before_fork",
    "after_fork",
    "start_worker",
    "worker_gone",
    "hand_over",
    "stop_worker",
    "stop_master",
)


class Dispatcher:
    """Hands calls and events to sinks; counts and rate-limits their errors."""

    def __init__(self, sinks: Sequence[Sink] = ()) -> None:
        self.errors: dict[str, int] = {}
        self._last_report: dict[str, float] = {}
        self._sinks: tuple[Sink, ...] = ()
        self._orders: tuple[tuple[Sink, ...] | None, tuple[Sink, ...] | None] = (None, None)
        self.handlers: tuple[Sink, ...] = ()
        self.request_started: tuple[tuple[str, Callable[[Any], Any]], ...] = ()
        self.request_finished: tuple[tuple[str, Callable[[Any], Any]], ...] = ()
        self.request_excluded: tuple[tuple[str, Callable[[Any], Any]], ...] = ()
        self.request_event_sinks: tuple[Sink, ...] = ()
        self._counters: tuple[Sink, ...] = ()
        self.set_sinks(sinks)

    def set_sinks(
        self,
        sinks: Sequence[Sink],
        started_order: Sequence[Sink] | None = None,
        finished_order: Sequence[Sink] | None = None,
    ) -> None:
        """Use ``sinks`` (for events and lifecycle, in this order); the
        request path may take them in orders of its own."""
        self._sinks = tuple(sinks)
        self._orders = (
            tuple(started_order) if started_order is not None else None,
            tuple(finished_order) if finished_order is not None else None,
        )
        for sink in self._sinks:
            with contextlib.suppress(AttributeError):  # a sink with __slots__
                sink._report = self._report
                sink._emit = self._emit
        self.handlers = tuple(s for s in self.sinks if overrides(s, "handle"))
        self.refresh_request_path()
        self.request_event_sinks = tuple(
            s for s in self._sinks if getattr(s, "request_events", False)
        )
        self._counters = tuple(s for s in self.sinks if overrides(s, "count_errors"))

    def refresh_request_path(self) -> None:
        """The request path: the sinks that override each hot-path method
        and, asked now, have work for it (``Sink.wants``)."""
        started_order, finished_order = self._orders
        self.request_started = tuple(
            (s.name, s.request_started)
            for s in (started_order or self._sinks)
            if overrides(s, "request_started") and _wants(s, "request_started")
        )
        self.request_finished = tuple(
            (s.name, s.request_finished)
            for s in (finished_order or self._sinks)
            if overrides(s, "request_finished") and _wants(s, "request_finished")
        )
        self.request_excluded = tuple(
            (s.name, s.request_excluded)
            for s in self._sinks
            if overrides(s, "request_excluded") and _wants(s, "request_excluded")
        )

    @property
    def sinks(self) -> tuple[Sink, ...]:
        """The configured sinks, in order."""
        return self._sinks

    @sinks.setter
    def sinks(self, sinks: Sequence[Sink]) -> None:
        self.set_sinks(sinks)

    def snapshot(self) -> tuple[tuple[Sink, ...], tuple[Sink, ...] | None, tuple[Sink, ...] | None]:
        """The sinks and their request-path orders, to restore later."""
        return (self._sinks, *self._orders)

    def restore(
        self, state: tuple[tuple[Sink, ...], tuple[Sink, ...] | None, tuple[Sink, ...] | None]
    ) -> None:
        """Go back to a ``snapshot``."""
        self.set_sinks(state[0], state[1], state[2])

    def _emit(self, name: str, hook: str | None, level: Level, fields: dict[str, object]) -> None:
        self.emit(Event(name, hook, level, fields, os.getpid()))

    def names(self) -> tuple[str, ...]:
        """The configured sinks' names and hookkit's own."""
        return (*(sink.name for sink in self.sinks), HOOKKIT)

    def emit(self, event: Event) -> None:
        """Give ``event`` to every sink that handles events; never raises."""
        self.emit_to(self.handlers, event)

    def emit_to(self, sinks: Sequence[Sink], event: Event) -> None:
        """Give ``event`` to ``sinks`` only; never raises."""
        for sink in sinks:
            try:
                sink.handle(event)
            except Exception as exc:
                self.failed(sink.name, f"on {event.name}", exc)

    def call(self, method: str, *args: Any) -> dict[str, object]:
        """Call lifecycle ``method`` on every sink that overrides it; the
        fields they return, merged. A ConfigError in ``start_master``
        propagates (it stops gunicorn at start-up); other errors are
        isolated."""
        fields: dict[str, object] = {}
        for sink in self.sinks:
            if not overrides(sink, method):
                continue
            try:
                returned = getattr(sink, method)(*args)
            except Exception as exc:
                if method == "start_master" and isinstance(exc, ConfigError):
                    raise
                self.failed(sink.name, f"in {method}", exc)
                continue
            if returned:
                fields.update(returned)
        return fields

    def announce_error_series(self) -> None:
        """Every sink's error series at 0, in the sinks that count errors."""
        for who in self.names():
            self._count(who, 0)

    def internal_error(self, hook: str, exc: BaseException) -> None:
        """hookkit's own handling of ``hook`` raised: count and report it."""
        self.failed(HOOKKIT, f"in {hook}", exc)

    def _report(self, who: str, where: str, exc: BaseException | None, quiet: bool) -> None:
        """A sink's own report (``Sink.report_error`` / ``count_error``)."""
        if quiet or exc is None:
            self.errors[who] = self.errors.get(who, 0) + 1
            self._count(who, 1)
        else:
            self.failed(who, where, exc)

    def _count(self, who: str, count: int) -> None:
        for counter in self._counters:
            with contextlib.suppress(Exception):  # counting must not fail the caller
                counter.count_errors(who, count)

    def failed(self, who: str, where: str, exc: BaseException) -> None:
        """Count an error of ``who`` (a sink's name, or ``hookkit``); report
        it unless reported in the last minute."""
        self.errors[who] = self.errors.get(who, 0) + 1
        self._count(who, 1)
        now = time.monotonic()
        last = self._last_report.get(who)
        if last is not None and now - last < ERROR_REPORT_INTERVAL:
            return
        self._last_report[who] = now
        label = "hookkit" if who == HOOKKIT else f"sink {who!r}"
        # Straight to stderr (the failing sink may be the log sink), never
        # waiting on a reader that stopped reading.
        with contextlib.suppress(Exception):
            stderr().write(
                (
                    f"hookkit: {label} failed {where} in pid {os.getpid()}: "
                    f"{type(exc).__name__}: {exc} ({self.errors[who]} errors so far; "
                    f"reported at most once a minute)\n"
                ).encode("utf-8", "replace")
            )


def _wants(sink: Sink, method: str) -> bool:
    """``sink.wants(method)``, True for a sink without it; a sink that
    raises here is kept on the path (its error shows where it is counted)."""
    wants = getattr(sink, "wants", None)
    if wants is None:
        return True
    try:
        return bool(wants(method))
    except Exception:
        return True
