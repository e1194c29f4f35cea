"""The structured-log pipeline: hookkit's lifecycle events and gunicorn's own
error-log lines, rendered by one structlog ``ProcessorFormatter`` so the
stream is uniformly JSON (or console).

hookkit never calls ``structlog.configure``: the application's own structlog
configuration stays untouched. hookkit logs through the stdlib logger
``hookkit``, which shares gunicorn's error-log handlers when hookkit's logger
class is in use, and otherwise writes to stderr.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from typing import Any

import structlog

from hookkit import processors
from hookkit._core.events import REQUEST_FINISHED, Event
from hookkit._core.http import QueryRedactor
from hookkit._core.settings import Settings
from hookkit._core.stderr import NonBlockingStderrHandler, stderr

LOGGER_NAME = "hookkit"
_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
_MARK = "_hookkit"  # attribute on the handlers hookkit added, so a reload replaces them

_SHARED_PROCESSORS: list[Any] = [
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
        if getattr(record, _RENDERED, False):
            return str(record.msg)
        formatted: str = super().format(record)
        return formatted


_RENDERED = "_hookkit_rendered"


# A URL's query string inside a message: from "?" to the next space, quote,
# or "#".
_QUERY = re.compile(r"\?([^\s'\"#]+)")
_redactor = QueryRedactor()


def set_query_redactor(redactor: QueryRedactor) -> None:
    """The names whose values are redacted in other loggers' lines (the
    tracing settings' list: ``HOOKKIT_TRACING_REDACT_QUERY``)."""
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
            *_SHARED_PROCESSORS,
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
            *_SHARED_PROCESSORS,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


class LogSink:
    """Events as log lines: one per lifecycle event, plus the optional JSON
    access line per request. ``request_started`` is a debug line, as
    gunicorn's default ``pre_request`` hook logs each request at debug."""

    name = "logs"

    def __init__(self, settings: Settings) -> None:
        self.access_log = settings.access_log
        self._json = settings.log_format == "json"
        self._log = get_logger()
        self._stdlib = stdlib_logger()

    def wants(self, name: str) -> bool:
        """Whether a request event would be written (so that none is built
        for nothing): ``request_finished`` with the access log on, and
        ``request_started`` at debug level."""
        if name == REQUEST_FINISHED:
            return self.access_log and self._stdlib.isEnabledFor(logging.INFO)
        return self._stdlib.isEnabledFor(logging.DEBUG)

    def handle(self, event: Event) -> None:
        """Write ``event`` as one log line."""
        if event.name == REQUEST_FINISHED and not self.access_log:
            return
        # Checked here so a filtered event (request_started below debug) costs
        # no processor run: this is on every request's path.
        if not self._stdlib.isEnabledFor(_LEVELS[event.level]):
            return
        if event.name == REQUEST_FINISHED and self._json:
            self._access_line(event)
            return
        method: Callable[..., Any] = getattr(self._log, event.level)
        method(event.name, hook=event.hook, **event.fields)

    def _access_line(self, event: Event) -> None:
        """The JSON access line, rendered here: the same keys, order and
        values as structlog's chain gives every other line, at a fraction of
        its cost (it is written for every request). The record still goes
        through hookkit's logger, so its handlers, files and levels apply."""
        line: dict[str, Any] = {"event": event.name, "hook": event.hook, **event.fields}
        line["level"] = event.level
        for processor in _SHARED_PROCESSORS[1:]:  # the level is set above
            line = processor(None, event.level, line)
        text = json.dumps(line, default=repr)
        handlers = self._stdlib.handlers
        if (
            len(handlers) == 1
            and type(handlers[0]) is NonBlockingStderrHandler
            and handlers[0].level <= logging.INFO
            and not handlers[0].filters
            and not self._stdlib.filters
        ):
            # Only hookkit's own stderr handler: no record needed.
            stderr().write((text + "\n").encode("utf-8", "replace"))
            return
        record = self._stdlib.makeRecord(LOGGER_NAME, logging.INFO, "", 0, text, (), None)
        setattr(record, _RENDERED, True)
        self._stdlib.handle(record)


# gunicorn's Arbiter.reap_workers logs each abnormal exit status just before
# it calls child_exit. gunicorn 27 passes the pid and signal name as args,
# 25 and 26 format them into the message first, so the rendered text is read.
# A signal with no name is logged as "signal N".
_SIGNAL_LINE = re.compile(r"^Worker \(pid:(\d+)\) was sent (SIG\w+|signal (\d+))!")
_EXIT_CODE_LINE = re.compile(r"^Worker \(pid:(\d+)\) exited with code (-?\d+)\.")

ExitStatusListener = Callable[[int, "int | None", "int | None"], None]
_exit_status_listener: ExitStatusListener | None = None


def set_exit_status_listener(listener: ExitStatusListener | None) -> None:
    """Called with (pid, exit_code, signal) for each reaped worker's status."""
    global _exit_status_listener  # noqa: PLW0603 - one master per process
    _exit_status_listener = listener


def note_reap_line(msg: object, args: tuple[object, ...]) -> None:
    """Pass the exit status in a reap_workers line to the listener."""
    listener = _exit_status_listener
    if listener is None or not isinstance(msg, str) or not msg.startswith("Worker (pid:"):
        return
    try:
        text = msg % args if args else msg
    except (TypeError, ValueError):
        return
    if match := _SIGNAL_LINE.match(text):
        import signal

        number = int(match.group(3)) if match.group(3) else getattr(signal, match.group(2), None)
        if isinstance(number, int):
            listener(int(match.group(1)), None, number)
    elif match := _EXIT_CODE_LINE.match(text):
        listener(int(match.group(1)), int(match.group(2)), None)
