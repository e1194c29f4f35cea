"""structlog processors that users can put into their own chains.

>>> import structlog, hookkit.processors
>>> structlog.configure(processors=[
...     hookkit.processors.add_pid,
...     hookkit.processors.add_worker_info,
...     structlog.processors.JSONRenderer(),
... ])

``add_trace_context`` adds ``trace_id`` and ``span_id`` (lower-case hex, as
OpenTelemetry shows them) while a recording span is current: inside a
request that hookkit traces, the request's span or the app's own.

``add_worker_info`` adds ``worker_pid`` and ``worker_age`` (gunicorn's spawn
counter for the worker, ``worker.age``) in a gunicorn worker where hookkit's
``post_fork`` ran, and nothing elsewhere.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from typing import Any

import structlog
from opentelemetry import trace

EventDict = MutableMapping[str, Any]

# Set in the worker by hookkit's post_fork; None in the master.
_worker_identity: tuple[int, int] | None = None


def set_worker_identity(pid: int, age: int) -> None:
    """Record which gunicorn worker this process is (called by post_fork)."""
    global _worker_identity  # noqa: PLW0603 - one identity per process, set after fork
    _worker_identity = (pid, age)


def clear_worker_identity() -> None:
    """Forget the worker identity (tests, and processes that are not workers)."""
    global _worker_identity  # noqa: PLW0603
    _worker_identity = None


def add_pid(_logger: object, _method: str, event_dict: EventDict) -> EventDict:
    """Add ``pid``: the process that logged the event."""
    event_dict.setdefault("pid", os.getpid())
    return event_dict


def add_worker_info(_logger: object, _method: str, event_dict: EventDict) -> EventDict:
    """Add ``worker_pid`` and ``worker_age`` inside a gunicorn worker."""
    identity = _worker_identity
    if identity is not None and identity[0] == os.getpid():
        event_dict.setdefault("worker_pid", identity[0])
        event_dict.setdefault("worker_age", identity[1])
    return event_dict


def add_trace_context(_logger: object, _method: str, event_dict: EventDict) -> EventDict:
    """Add ``trace_id`` and ``span_id`` of the current span, if any."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event_dict.setdefault("trace_id", format(context.trace_id, "032x"))
        event_dict.setdefault("span_id", format(context.span_id, "016x"))
    return event_dict


add_timestamp = structlog.processors.TimeStamper(fmt="iso", utc=True)
"""Add ``timestamp``: ISO-8601 in UTC."""

__all__ = [
    "EventDict",
    "add_pid",
    "add_timestamp",
    "add_trace_context",
    "add_worker_info",
    "clear_worker_identity",
    "set_worker_identity",
]
