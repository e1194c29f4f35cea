"""Stacks of threads, greenlets and asyncio tasks, as plain strings, and the
slow-request watchdog that reports them.

gunicorn's timeout only catches a worker whose main loop stops beating: a
hung request in a gthread worker, or in an async worker whose loop stays
alive, is never aborted. The watchdog is a daemon thread (a greenlet under
gevent) that looks at the in-flight map and logs one ``request_slow`` line
per request that runs past the threshold.
"""

from __future__ import annotations

import sys
import threading
import traceback
from collections.abc import Callable
from types import FrameType

from hookkit._core.requests import InFlight, RequestScope


def thread_stacks() -> dict[str, str]:
    """The stack of every thread of this process, keyed by thread name."""
    names = {thread.ident: thread.name for thread in threading.enumerate()}
    stacks: dict[str, str] = {}
    for ident, frame in sys._current_frames().items():
        name = names.get(ident, "thread")
        stacks[f"{name} ({ident})"] = "".join(traceback.format_stack(frame))
    return stacks


def scope_stack(scope: RequestScope) -> str | None:
    """The stack of the code running ``scope``'s request, when it can be read."""
    task = scope.task
    if task is not None:
        frame: FrameType | None = getattr(task, "gr_frame", None)  # a greenlet
        if frame is not None:
            return "".join(traceback.format_stack(frame))
        get_coro = getattr(task, "get_coro", None)  # an asyncio task
        if get_coro is not None:
            return _coroutine_stack(get_coro())
    frame = sys._current_frames().get(scope.thread_id)
    if frame is None:
        return None
    return "".join(traceback.format_stack(frame))


# gunicorn's SIGABRT handlers: workers/base.py and the ASGI worker's.
_ABORT_HANDLERS = frozenset({"handle_abort", "handle_abort_signal"})


def interrupted_stack(scope: RequestScope) -> str | None:
    """``scope_stack``, also for the request that a signal handler running
    on its own thread interrupted (the sync worker's timeout abort): there
    the stack is the one below gunicorn's abort handler."""
    if scope.task is not None or scope.thread_id != threading.get_ident():
        return scope_stack(scope)
    frame: FrameType | None = sys._getframe()
    while frame is not None:
        if frame.f_code.co_name in _ABORT_HANDLERS and "gunicorn" in frame.f_code.co_filename:
            stuck = frame.f_back
            return "".join(traceback.format_stack(stuck)) if stuck is not None else None
        frame = frame.f_back
    return None


def _coroutine_stack(coro: object) -> str | None:
    """The await chain of a suspended coroutine, outermost first. A suspended
    coroutine's frame has no ``f_back``: the chain is in ``cr_await``."""
    lines: list[str] = []
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is None:
            break
        lines.extend(traceback.format_stack(frame))
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return "".join(lines) or None


class Watchdog:
    """Reports requests running longer than ``threshold`` seconds, once each."""

    def __init__(
        self,
        in_flight: InFlight,
        threshold: float,
        report: Callable[[RequestScope, str | None], None],
    ) -> None:
        self.in_flight = in_flight
        self.threshold = threshold
        self.report = report
        self._stop = threading.Event()
        # Look a few times per threshold, never less than every 50 ms nor
        # more than every second: a late line is still one line.
        self.interval = min(1.0, max(0.05, threshold / 4))
        self._thread = threading.Thread(target=self._run, name="hookkit-watchdog", daemon=True)

    def start(self) -> None:
        """Start watching (in the worker, after the app is loaded)."""
        self._thread.start()

    def stop(self) -> None:
        """Stop watching."""
        self._stop.set()

    def check(self) -> int:
        """Report every newly slow request; returns how many were reported."""
        reported = 0
        for scope in self.in_flight.snapshot():
            if scope.slow_reported or scope.elapsed() < self.threshold:
                continue
            scope.slow_reported = True
            try:
                stack = scope_stack(scope)
            except Exception:  # the task or thread went away meanwhile
                stack = None
            self.report(scope, stack)
            reported += 1
        return reported

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.check()
            except Exception:
                continue


def bounded_stack(frame: FrameType, limit: int) -> str:
    """The stack ending at ``frame`` (outermost first, as ``format_stack``),
    keeping only the ``limit`` innermost frames: where a thread is stuck is
    at the inner end. A line says how many outer frames were left out."""
    depth = 0
    outer: FrameType | None = frame
    while outer is not None:
        depth += 1
        outer = outer.f_back
    text = "".join(traceback.format_stack(frame, limit=limit))
    if depth > limit:
        text = f"  ... {depth - limit} outer frames left out\n" + text
    return text


def bounded_coroutine_stack(coro: object, limit: int) -> str | None:
    """The await chain of a coroutine (an asyncio task's), outermost first,
    one frame per coroutine, at most ``limit`` frames (the innermost). A
    suspended coroutine's frame has no ``f_back``: the chain is in
    ``cr_await`` (``gi_yieldfrom`` for a generator-based one). A running
    task's innermost frames are on its thread's stack instead."""
    frames: list[tuple[FrameType, int]] = []
    seen = 0
    while coro is not None and seen < 10_000:  # a cycle would be a bug elsewhere
        seen += 1
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is None:
            break
        frames.append((frame, frame.f_lineno))
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    if not frames:
        return None
    left_out = max(0, len(frames) - limit)
    text = "".join(traceback.StackSummary.extract(frames[left_out:]).format())
    if left_out:
        text = f"  ... {left_out} outer frames left out\n" + text
    return text
