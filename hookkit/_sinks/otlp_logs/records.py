"""hookkit's events and gunicorn's error lines as OpenTelemetry log records.

Pure conversions, no provider and no I/O, so that each mapping is tested
on its own:

- an ``Event``: its name in ``event_name`` and in the body (the body is
  what most backends show first, as ``event`` is on the stderr line), the
  severity from its level, its fields as attributes and ``hook`` as on the
  stderr line. Nested fields (``worker_aborted``'s ``requests_in_flight``
  with each stack, ``threads``) stay nested: the logs SDK takes extended
  attributes (maps and lists of any value), and the OTLP encoder sends them
  as key-value lists and arrays. A value OpenTelemetry cannot carry is sent
  as its ``str()``;
- a line of gunicorn's ``gunicorn.error`` logger: its message as the body,
  the severity from its level, the exception (``exception.*``) when the
  line has one;
- the trace: a record carries the ids of the span it belongs to. The ids a
  sink gave the request (``RequestFinished.span_ids``) or an event's
  ``trace_id`` / ``span_id`` fields (``request_slow``, from the watchdog's
  thread, where no span is current) win; otherwise the span current where
  the record is made (the request's, while the tracing sink keeps it
  current; the app's own).
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Mapping
from typing import Any

from opentelemetry import trace
from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.context import Context
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from hookkit._core.events import Event, Level
from hookkit._core.sink import RequestFinished, SpanIds

# hookkit's levels, as OpenTelemetry's severity (number and the text the
# logs data model displays: WARN, FATAL).
SEVERITY: dict[Level, tuple[SeverityNumber, str]] = {
    "debug": (SeverityNumber.DEBUG, "DEBUG"),
    "info": (SeverityNumber.INFO, "INFO"),
    "warning": (SeverityNumber.WARN, "WARN"),
    "error": (SeverityNumber.ERROR, "ERROR"),
    "critical": (SeverityNumber.FATAL, "FATAL"),
}
# Nesting kept before a value is sent as text (a guard against cycles).
_MAX_DEPTH = 8


def plain(value: object, depth: int = 0) -> Any:
    """``value`` as an OpenTelemetry extended attribute value: None, str,
    bool, int, float, bytes, a list of those, or a map of str to those;
    anything else (and anything nested deeper than ``_MAX_DEPTH``) as its
    ``str()``."""
    if value is None or isinstance(value, str | bool | int | float | bytes):
        return value
    if depth >= _MAX_DEPTH:
        return str(value)
    if isinstance(value, Mapping):
        return {str(key): plain(item, depth + 1) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [plain(item, depth + 1) for item in value]
    return str(value)


def ids_context(trace_id: int, span_id: int, flags: int = TraceFlags.DEFAULT) -> Context | None:
    """A context whose current span has these ids (None when they are not valid)."""
    span_context = SpanContext(trace_id, span_id, is_remote=False, trace_flags=TraceFlags(flags))
    if not span_context.is_valid:
        return None
    return trace.set_span_in_context(NonRecordingSpan(span_context), Context())


def span_ids_context(ids: SpanIds | None) -> Context | None:
    """The context of a request's ``SpanIds`` (None without ids)."""
    if ids is None:
        return None
    flags = getattr(ids, "trace_flags", TraceFlags.DEFAULT)
    return ids_context(ids.trace_id, ids.span_id, int(flags))


def _fields_context(fields: Mapping[str, object]) -> Context | None:
    """The context of an event's ``trace_id`` / ``span_id`` fields (hex)."""
    trace_hex, span_hex = fields.get("trace_id"), fields.get("span_id")
    if not (isinstance(trace_hex, str) and isinstance(span_hex, str)):
        return None
    try:
        return ids_context(int(trace_hex, 16), int(span_hex, 16), TraceFlags.SAMPLED)
    except ValueError:
        return None


def event_attributes(event: Event) -> dict[str, Any]:
    """The record's attributes: ``hook`` (as on the stderr line) and the fields."""
    attributes: dict[str, Any] = {}
    if event.hook is not None:
        attributes["hook"] = event.hook
    for key, value in event.fields.items():
        attributes[key] = plain(value)
    return attributes


def make(
    name: str,
    level: Level,
    timestamp: int,
    attributes: dict[str, Any],
    context: Context | None = None,
) -> LogRecord:
    """The log record of the hookkit event ``name``, made at ``timestamp``
    (ns since the epoch); ``context`` names its span (None: the current one)."""
    number, text = SEVERITY.get(level, SEVERITY["info"])
    return LogRecord(
        timestamp=timestamp,
        observed_timestamp=timestamp,
        context=context,
        severity_number=number,
        severity_text=text,
        body=name,
        attributes=attributes,
        event_name=name,
    )


def from_event(event: Event, timestamp: int) -> LogRecord:
    """The log record of ``event``, made at ``timestamp`` (ns since the
    epoch): its span is the one its fields name, else the current one."""
    return make(
        event.name,
        event.level,
        timestamp,
        event_attributes(event),
        _fields_context(event.fields),
    )


def std_severity(levelno: int) -> tuple[SeverityNumber, str]:
    """A stdlib logging level as OpenTelemetry's severity."""
    if levelno >= logging.CRITICAL:
        return SEVERITY["critical"]
    if levelno >= logging.ERROR:
        return SEVERITY["error"]
    if levelno >= logging.WARNING:
        return SEVERITY["warning"]
    if levelno >= logging.INFO:
        return SEVERITY["info"]
    return SEVERITY["debug"]


def from_stdlib(record: logging.LogRecord) -> LogRecord:
    """The log record of one line of a stdlib logger (gunicorn's error log):
    the formatted message, no event name, the exception when it has one."""
    number, text = std_severity(record.levelno)
    attributes: dict[str, Any] = {}
    if record.exc_info and record.exc_info[0] is not None:
        exc_type, exc, tb = record.exc_info
        attributes["exception.type"] = exc_type.__qualname__
        if exc is not None:
            attributes["exception.message"] = str(exc)
        attributes["exception.stacktrace"] = "".join(traceback.format_exception(exc_type, exc, tb))
    timestamp = int(record.created * 1e9)
    return LogRecord(
        timestamp=timestamp,
        observed_timestamp=timestamp,
        severity_number=number,
        severity_text=text,
        body=record.getMessage(),
        attributes=attributes,
    )


def access_attributes(
    request: RequestFinished, client: str | None, with_client: bool
) -> dict[str, Any]:
    """The access line's fields (as the log sink writes them), as attributes."""
    queued = request.queue_seconds
    attributes: dict[str, Any] = {
        "hook": "post_request",
        "method": request.method,
        "path": request.path,
        "status": request.status,
        "duration_seconds": round(request.duration, 6),
        "response_bytes": request.response_bytes,
        "request_bytes": request.request_bytes,
        "route": request.route,
        "error_type": request.error_type,
        "queue_seconds": None if queued is None else round(queued, 6),
    }
    if with_client:
        attributes["client_address"] = client
    return attributes
