"""structlog processors: hookkit's lines use them, and users can put them
into their own chains (re-exported by ``hookkit.processors``).

``add_trace_context`` reads the current OpenTelemetry span only when the
OpenTelemetry API was imported (no span can be current otherwise), so that
a structlog user pays nothing for it.
"""

from __future__ import annotations

import os
import sys

import structlog
from structlog.typing import EventDict

from hookkit._core import identity


def add_pid(_logger: object, _method: str, event_dict: EventDict) -> EventDict:
    """Add ``pid``: the process that logged the event."""
    event_dict.setdefault("pid", os.getpid())
    return event_dict


def add_worker_info(_logger: object, _method: str, event_dict: EventDict) -> EventDict:
    """Add ``worker_pid`` and ``worker_age`` inside a gunicorn worker."""
    worker = identity.worker
    if worker is not None and worker[0] == os.getpid():
        event_dict.setdefault("worker_pid", worker[0])
        event_dict.setdefault("worker_age", worker[1])
    return event_dict


def add_trace_context(_logger: object, _method: str, event_dict: EventDict) -> EventDict:
    """Add ``trace_id`` and ``span_id`` of the current span, if any."""
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return event_dict
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event_dict.setdefault("trace_id", format(context.trace_id, "032x"))
        event_dict.setdefault("span_id", format(context.span_id, "016x"))
    return event_dict


add_timestamp = structlog.processors.TimeStamper(fmt="iso", utc=True)
"""Add ``timestamp``: ISO-8601 in UTC."""
