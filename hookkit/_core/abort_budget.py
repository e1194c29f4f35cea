"""One budget for everything an aborted worker still does.

gunicorn SIGABRTs a worker that ran past its timeout and SIGKILLs it on the
master's next pass, about a second later. In that second every sink that
sends something on ``worker_aborted`` (the stuck spans, the log record with
the stack) and then every sink's ``stop_worker`` must be done, or the
SIGKILL cuts them off. Each sink bounding its own flush by half a second is
not enough: with two collectors hanging, two such flushes take the whole
second. So the budget is one, started when ``worker_abort`` runs, and each
wait takes what is left of it (``seconds_left``).
"""

from __future__ import annotations

import time

from hookkit._core.resets import on_reset

ABORT_BUDGET_SECONDS = 0.5

_deadline: float | None = None  # time.monotonic() when the budget ends


def start() -> None:
    """This worker is being aborted: the budget runs from now."""
    global _deadline  # noqa: PLW0603 - one budget per worker process
    _deadline = time.monotonic() + ABORT_BUDGET_SECONDS


def seconds_left(wanted: float) -> float:
    """``wanted`` seconds, or what is left of the budget when the worker is
    being aborted, whichever is less (never negative)."""
    deadline = _deadline
    if deadline is None:
        return wanted
    return max(0.0, min(wanted, deadline - time.monotonic()))


@on_reset
def _forget() -> None:
    """hookkit.testing.reset(): no abort under way."""
    global _deadline  # noqa: PLW0603
    _deadline = None
