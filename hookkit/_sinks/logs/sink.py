"""The log sink: one line per lifecycle event, and the optional access line.

Lines go through the stdlib logger ``hookkit`` (see ``pipeline``): hookkit
never calls ``structlog.configure``. ``request_started`` is a debug line, as
gunicorn's default ``pre_request`` hook logs each request at debug; the
access line (``request_finished``) is written when ``HOOKKIT_ACCESS_LOG`` is
on, before the tracing sink ends the request's span, and carries its ids.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from hookkit._core import events as ev
from hookkit._core.client_address import client_address, client_address_from_environ
from hookkit._core.events import Event
from hookkit._core.http import DEFAULT_SENSITIVE_QUERY, QueryRedactor, parse_list
from hookkit._core.settings import Settings
from hookkit._core.sink import RequestFinished, RequestStarted, Sink, span_id_fields
from hookkit._core.stderr import NonBlockingStderrHandler, set_on_drop, stderr
from hookkit._core.trust import TrustedPeers
from hookkit._sinks.logs import pipeline

# Requests whose client is kept between their start and their end: far
# more than run at once in a worker (a bound against ends that never come).
_CLIENTS_LIMIT = 4096


def configure_process_logging(settings: Settings) -> None:
    """What every process needs, whether or not the log sink is on: a
    stderr handler for hookkit's logger when nothing gave it one, foreign
    loggers' lines rendered like hookkit's, and the query redactor."""
    pipeline.ensure_stderr_handler(settings)
    pipeline.render_unrouted_lines(settings.log_format)
    pipeline.set_query_redactor(
        QueryRedactor(DEFAULT_SENSITIVE_QUERY + parse_list(settings.redact_query))
    )


# The shared processors after add_log_level (the access line sets its level
# itself), and json.dumps(line, default=repr)'s encoder, made once: dumps
# makes a new one on every call that passes ``default``.
_AFTER_THE_LEVEL = tuple(pipeline.SHARED_PROCESSORS[1:])
_ENCODE = json.JSONEncoder(default=repr).encode


class LogSink(Sink):
    """Events as log lines."""

    name = "logs"

    def __init__(self, settings: Settings) -> None:
        self.server: Any = None
        # The access line's client_address (HOOKKIT_ACCESS_LOG_CLIENT): who
        # may name the client (the worker's forwarded_allow_ips, from
        # start_worker), and each request's client, read at its start.
        self.trusted = TrustedPeers.from_config(None)
        self._clients: dict[int, str | None] = {}
        self.configure(settings)

    def configure(self, settings: Settings) -> None:
        """Use ``settings`` (a reload may change them)."""
        self.access_log = settings.access_log
        self.access_log_client = settings.access_log_client
        self.log_format = settings.log_format
        self._json = settings.log_format == "json"
        self._log = pipeline.get_logger()
        self._stdlib = pipeline.stdlib_logger()

    def start_master(self, server: Any) -> None:
        """Lines stderr had to drop count as this sink's errors."""
        self.server = server
        set_on_drop(self.count_error)

    def start_worker(self, worker: Any) -> None:
        """The worker's gunicorn config says which peers may name the client."""
        self.trusted = TrustedPeers.from_config(getattr(worker, "cfg", None))
        self._clients.clear()

    def handle(self, event: Event) -> None:
        """Write ``event`` as one log line."""
        name = event.name
        # Checked here so a filtered event costs no processor run.
        if not self._stdlib.isEnabledFor(pipeline.LEVELS[event.level]):
            return
        if name == ev.SERVER_RELOADED:
            self._reapply_log_format()
        method: Callable[..., Any] = getattr(self._log, event.level)
        method(name, hook=event.hook, **event.fields)

    def request_started(self, request: RequestStarted) -> None:
        """The debug line of a request that began, if debug lines are on;
        the request's client, for the access line, if it shows it."""
        if self.access_log_client and self.access_log:
            clients = self._clients
            if len(clients) >= _CLIENTS_LIMIT:  # ends that never came
                clients.clear()
            clients[request.key] = client_address(request.request, self.trusted)
        if self._stdlib.isEnabledFor(logging.DEBUG):
            self._log.debug(
                ev.REQUEST_STARTED, hook="pre_request", method=request.method, path=request.path
            )

    def wants(self, method: str) -> bool:
        """request_started: a debug line, when debug lines are on;
        request_finished: the access line, when it is on (and at the
        start too, for its client_address)."""
        if method == "request_started":
            return self._stdlib.isEnabledFor(logging.DEBUG) or (
                self.access_log_client
                and self.access_log
                and self._stdlib.isEnabledFor(logging.INFO)
            )
        return self.access_log and self._stdlib.isEnabledFor(logging.INFO)

    def request_finished(self, request: RequestFinished) -> None:
        """The access line, if it is on."""
        client = self._clients.pop(request.key, None) if self._clients else None
        if not self.access_log or not self._stdlib.isEnabledFor(logging.INFO):
            return
        fields: dict[str, object] = {
            "method": request.method,
            "path": request.path,
            "status": request.status,
            "duration_seconds": round(request.duration, 6),
            "response_bytes": request.response_bytes,
            "request_bytes": request.request_bytes,
            "route": request.route,
            "error_type": request.error_type,
        }
        # Always present, as route and error_type are: null without a
        # queue header from a trusted proxy.
        queued = request.queue_seconds
        fields["queue_seconds"] = None if queued is None else round(queued, 6)
        if self.access_log_client:
            # Read at the request's start; gunicorn's ASGI worker tells the
            # peer only in the environ it hands post_request.
            if client is None:
                client = client_address_from_environ(request.environ, self.trusted)
            fields["client_address"] = client
        ids = request.span_ids
        if self._json:
            self._access_line(fields, span_id_fields(ids) if ids is not None else None)
            return
        if ids is not None:
            fields.update(span_id_fields(ids))
        self._log.info(ev.REQUEST_FINISHED, hook="post_request", **fields)

    def _access_line(self, fields: dict[str, object], ids: dict[str, str] | None) -> None:
        """The JSON access line, rendered here: the same keys, order and
        values as structlog's chain gives every other line, at a fraction of
        its cost (it is written for every request). The record still goes
        through hookkit's logger, so its handlers, files and levels apply."""
        line: dict[str, Any] = {"event": ev.REQUEST_FINISHED, "hook": "post_request", **fields}
        line["level"] = "info"
        for processor in _AFTER_THE_LEVEL:
            line = processor(None, "info", line)
        if ids is not None:  # where add_trace_context puts them
            for key, value in ids.items():
                line.setdefault(key, value)
        text = _ENCODE(line)
        stdlib = self._stdlib
        handlers = stdlib.handlers
        if (
            len(handlers) == 1
            and type(handlers[0]) is NonBlockingStderrHandler
            and handlers[0].level <= logging.INFO
            and not handlers[0].filters
            and not stdlib.filters
        ):
            # Only hookkit's own stderr handler: no record needed.
            stderr().write((text + "\n").encode("utf-8", "replace"))
            return
        record = stdlib.makeRecord(pipeline.LOGGER_NAME, logging.INFO, "", 0, text, (), None)
        setattr(record, pipeline.RENDERED, True)
        stdlib.handle(record)

    def _reapply_log_format(self) -> None:
        """gunicorn 25 does not run its logger's setup() again on SIGHUP (26
        and 27 do), so a changed HOOKKIT_LOG_FORMAT would not apply there:
        re-apply it to gunicorn's error-log handlers."""
        import gunicorn

        log = getattr(self.server, "log", None)
        if log is None or not getattr(type(log), "hookkit_logger", False):
            return
        if gunicorn.version_info < (26,):
            formatter = pipeline.make_formatter(self.log_format)
            for handler in log.error_log.handlers:
                handler.setFormatter(formatter)
