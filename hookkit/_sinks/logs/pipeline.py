"""The structured-log pipeline: hookkit's lifecycle events and gunicorn's own
error-log lines, rendered by one structlog ``ProcessorFormatter`` so the
stream is uniformly JSON (or console).

hookkit never calls ``structlog.configure``: the application's own structlog
configuration stays untouched. hookkit logs through the stdlib logger
``hookkit``, which shares gunicorn's error-log handlers when hookkit's logger
class is in use, and otherwise writes to stderr.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import structlog

from hookkit._core.http import QueryRedactor
from hookkit._core.resets import on_reset
from hookkit._core.settings import Settings
from hookkit._core.stderr import NonBlockingStderrHandler
from hookkit._sinks.logs import processors

LOGGER_NAME = "hookkit"
LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
_MARK = "_hookkit"  # attribute on the handlers hookkit added, so a reload replaces them

SHARED_PROCESSORS: list[Any] = [
    structlog.stdlib.add_log_level,
    processors.add_timestamp,
    processors.add_pid,
    processors.add_worker_info,
    processors.add_trace_context,
]


def _event_first(_logger: object, _method: str, event_dict: Any) -> Any:
    """Put ``event`` first, so each JSON line opens with what happened."""
    if "event" in event_dict:
        return {"event": event_dict.pop("event"), **event_dict}
    return event_dict


class _Formatter(structlog.stdlib.ProcessorFormatter):
    """structlog's ProcessorFormatter, except for a record whose message
    hookkit already rendered (the access line, see ``LogSink``)."""

    def format(self, record: logging.LogRecord) -> str:
        if getattr(record, RENDERED, False):
            return str(record.msg)
        formatted: str = super().format(record)
        return formatted


RENDERED = "_hookkit_rendered"


# A URL's query string inside a message: from "?" to the next space, quote,
# or "#".
_QUERY = re.compile(r"\?([^\s'\"#]+)")
_redactor = QueryRedactor()


def set_query_redactor(redactor: QueryRedactor) -> None:
    """The names whose values are redacted in other loggers' lines
    (``HOOKKIT_REDACT_QUERY``, which spans use too)."""
    global _redactor  # noqa: PLW0603 - one list per process
    _redactor = redactor


def redact_query_strings(_logger: object, _method: str, event_dict: Any) -> Any:
    """Redact sensitive query values in a foreign line's message: gunicorn
    logs the request line or URI (``Error handling request GET
    /x?password=...``, ``Invalid HTTP request line: '...'``), and hookkit's
    own events never carry a query string at all."""
    message = event_dict.get("event")
    if isinstance(message, str) and "?" in message:
        event_dict["event"] = _QUERY.sub(
            lambda match: "?" + _redactor.redact(match.group(1)), message
        )
    return event_dict


def make_formatter(log_format: str) -> structlog.stdlib.ProcessorFormatter:
    """The formatter for every hookkit handler: hookkit's events and foreign
    (gunicorn's) records alike; a traceback stays inside its one line."""
    renderer: Any
    if log_format == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=False)
        tail: list[Any] = []
    else:
        renderer = structlog.processors.JSONRenderer(sort_keys=False)
        tail = [structlog.processors.format_exc_info]
    return _Formatter(
        foreign_pre_chain=[
            *SHARED_PROCESSORS,
            structlog.stdlib.add_logger_name,
            redact_query_strings,
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *tail,
            _event_first,
            renderer,
        ],
    )


def stdlib_logger() -> logging.Logger:
    """The stdlib logger hookkit's events go through."""
    logger = logging.getLogger(LOGGER_NAME)
    logger.propagate = False
    return logger


def set_handlers(handlers: list[logging.Handler], level: int = logging.INFO) -> None:
    """Make ``handlers`` hookkit's, replacing the ones hookkit added before."""
    logger = stdlib_logger()
    for handler in list(logger.handlers):
        if getattr(handler, _MARK, False):
            logger.removeHandler(handler)
    for handler in handlers:
        setattr(handler, _MARK, True)
        logger.addHandler(handler)
    logger.setLevel(level)


def render_unrouted_lines(log_format: str) -> None:
    """A record of a logger nobody gave a handler (gunicorn's
    ``gunicorn.http.wsgi``, OpenTelemetry's warnings about a malformed
    ``tracestate`` or ``baggage``) goes to Python's last-resort handler,
    as bare text in the middle of the JSON stream. hookkit's formatter
    renders them instead, at the same level (warning and above)."""
    handler = NonBlockingStderrHandler(logging.WARNING)
    handler.setFormatter(make_formatter(log_format))
    logging.lastResort = handler


def ensure_stderr_handler(settings: Settings) -> None:
    """Give hookkit a stderr handler when nothing else gave it one."""
    if stdlib_logger().handlers:
        return
    handler = NonBlockingStderrHandler()
    handler.setFormatter(make_formatter(settings.log_format))
    set_handlers([handler])


def get_logger() -> Any:
    """hookkit's structlog logger (not configured globally)."""
    return structlog.wrap_logger(
        stdlib_logger(),
        processors=[
            structlog.stdlib.filter_by_level,
            *SHARED_PROCESSORS,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


_LAST_RESORT = logging.lastResort


@on_reset
def _undo_logging() -> None:
    """hookkit.testing.reset(): Python's last-resort handler, the ``hookkit``
    logger without hookkit's handlers and propagating again, the default
    query redactor."""
    global _redactor  # noqa: PLW0603
    logging.lastResort = _LAST_RESORT
    logger = logging.getLogger(LOGGER_NAME)
    for handler in list(logger.handlers):
        if getattr(handler, _MARK, False):
            logger.removeHandler(handler)
    logger.propagate = True
    logger.setLevel(logging.NOTSET)
    _redactor = QueryRedactor()
