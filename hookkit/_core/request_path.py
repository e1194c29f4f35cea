"""The request path: ``pre_request`` to ``post_request``, to each sink.

Every request pays for this module, so it does as little as it can:

- ``pre_request`` opens the request's scope (``InFlight``), builds one
  ``RequestStarted`` (a named tuple) and calls, in the order the drop-in
  declared (tracing first, so its span is current for the others and for
  the app), the ``request_started`` of the sinks that override it. A sink
  that started a span returns its ids, kept on the scope.
- ``post_request`` closes the scope, resolves what the client received
  (``resolve_status``), builds one ``RequestFinished`` and calls the sinks'
  ``request_finished`` (the access line before the span ends, so that it
  carries the trace id).
- an ``Event`` is built only when a configured sink asked for request
  events (``request_events = True``).
- a request the excluded URLs keep out (``hookkit._core.excluded``) gets a
  scope (the watchdog and the worker's request count still see it) but no
  sink call until it ends, and then only ``request_excluded``.
- the queue time a proxy stamped (``hookkit._core.queue_time``) is read at
  ``pre_request`` and judged as soon as the peer is known: at once when the
  request object names it, at ``post_request`` from the environ's
  ``REMOTE_ADDR`` for gunicorn's ASGI worker, whose request does not. It
  reaches the sinks in ``RequestFinished``.
- the worker's live state (``hookkit._core.live``) gets the request's entry
  at ``pre_request``, after the sinks (so it carries the trace id), and
  loses it first thing at ``post_request``: three small writes each, no
  clock read (the scope's ``perf_counter`` is the start time), no lock.
"""

from __future__ import annotations

from time import time
from typing import Any

from hookkit._core import events as ev
from hookkit._core.dispatch import Dispatcher
from hookkit._core.events import Event
from hookkit._core.excluded import ExcludedUrls
from hookkit._core.exits import WorkerRecord
from hookkit._core.http import content_length
from hookkit._core.live import LiveArea
from hookkit._core.queue_time import UNTRUSTED, queue_header, queue_seconds
from hookkit._core.requests import InFlight, RequestScope
from hookkit._core.routes import route_from_environ
from hookkit._core.sink import RequestFinished, RequestStarted, span_id_fields
from hookkit._core.trust import TrustedPeers

TIMEOUT_ERROR = "timeout"  # error.type of a request its worker's timeout aborted

_new = tuple.__new__
_UNKNOWN = object()  # a request object that does not name its peer


class RequestPath:
    """The requests of this worker process and their way to the sinks."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher
        self.in_flight = InFlight()
        self.pid = 0  # refreshed after each fork by the runtime
        # See _core.requests.resolve_status: whether the worker class
        # answers a request its timeout aborted (the sync worker does).
        self.answers_system_exit = True
        self.aborting = False
        self.record: WorkerRecord | None = None  # the worker's, for its request count
        self.live: LiveArea | None = None  # the record's live state
        self.excluded: ExcludedUrls | None = None  # set with the settings
        # Who may stamp X-Request-Start: gunicorn's forwarded_allow_ips, read
        # from the worker's config once it is loaded (post_worker_init).
        self.trusted = TrustedPeers.from_config(None)

    def reset(self, pid: int, record: WorkerRecord | None) -> None:
        """A new worker: nothing in flight."""
        self.in_flight = InFlight()
        self.aborting = False
        self.pid = pid
        self.record = record
        self.live = record.live if record is not None else None

    def pre_request(self, req: Any) -> None:
        """gunicorn's ``pre_request``; never raises."""
        try:
            key = id(req)
            scope = self.in_flight.begin(req, key)
            excluded = self.excluded
            if excluded is not None and excluded.excludes(req):
                scope.excluded = True
                if self.live is not None:  # a probe still keeps the worker busy
                    scope.slot = self.live.begin(scope.started, scope.method, scope.path, None)
                return
            stamp = queue_header(req)
            if stamp is not None:
                scope.queue_stamp, scope.taken_at = stamp, time()
                peer = getattr(req, "peer_addr", _UNKNOWN)
                if peer is not _UNKNOWN:
                    self._judge_queue(scope, self.trusted.trusts(peer))
            dispatcher = self.dispatcher
            # tuple.__new__ directly: a named tuple's own __new__ is a Python
            # function, a frame more on every request.
            started = _new(RequestStarted, (key, scope.method, scope.path, req))
            for name, method in dispatcher.request_started:
                try:
                    ids = method(started)
                except Exception as exc:
                    dispatcher.failed(name, "on request_started", exc)
                    continue
                if ids is not None:
                    scope.ids = ids
            live = self.live
            if live is not None:
                ids = scope.ids
                scope.slot = live.begin(
                    scope.started,
                    scope.method,
                    scope.path,
                    ids.trace_id if ids is not None and _sampled(ids) else None,
                )
            if dispatcher.request_event_sinks:
                fields = {"method": scope.method, "path": scope.path}
                event = Event(ev.REQUEST_STARTED, "pre_request", "debug", fields, self.pid)
                dispatcher.emit_to(dispatcher.request_event_sinks, event)
        except Exception as exc:
            self.dispatcher.internal_error("pre_request", exc)

    @staticmethod
    def _judge_queue(scope: RequestScope, trusted: bool) -> None:
        """The stamp's verdict, once the peer is known."""
        stamp, scope.queue_stamp = scope.queue_stamp, None
        if stamp is None:
            return
        if trusted:
            scope.queue_seconds, scope.queue_error = queue_seconds(stamp, scope.taken_at)
        else:
            scope.queue_error = UNTRUSTED

    def _judge_queue_from_environ(self, scope: RequestScope, environ: Any) -> None:
        """gunicorn's ASGI worker names the peer only in ``REMOTE_ADDR``
        ("-" on a UNIX socket, which gunicorn's WSGI side trusts)."""
        remote = environ.get("REMOTE_ADDR") if isinstance(environ, dict) else None
        if not isinstance(remote, str) or remote in ("", "-"):
            trusted = self.trusted.trusts(None)
        else:
            trusted = self.trusted.trusts_address(remote)
        self._judge_queue(scope, trusted)

    def is_excluded(self, req: Any) -> bool:
        """Whether ``req``, in flight, is kept out (gunicorn's access line
        is written before ``post_request``)."""
        scope = self.in_flight.scopes.get(id(req))
        return scope is not None and scope.excluded

    def post_request(self, req: Any, environ: Any, resp: Any) -> None:
        """gunicorn's ``post_request``; never raises."""
        try:
            closed = self.in_flight.finish(req, resp, self.answers_system_exit)
            if closed is None:
                return
            scope, outcome = closed
            if scope.slot is not None and self.live is not None and not self.aborting:
                # An aborted worker (its timeout) is about to die: its
                # entries stay for the master's worker_exited.
                self.live.end(scope.slot)
            record = self.record
            if record is not None:
                record.add_request()
            if scope.queue_stamp is not None:
                self._judge_queue_from_environ(scope, environ)
            route = (
                route_from_environ(environ) if isinstance(environ, dict) else None
            ) or scope.route
            error_type = outcome.error_type
            if self.aborting and error_type == "SystemExit":
                error_type = TIMEOUT_ERROR
            finished = _new(
                RequestFinished,
                (
                    id(req),
                    scope.method,
                    scope.path,
                    route,
                    outcome.status,
                    outcome.duration,
                    content_length(req, environ),
                    outcome.response_bytes,
                    error_type,
                    outcome.exception,
                    scope.ids,
                    environ,
                    resp,
                    scope.queue_seconds,
                    scope.queue_error,
                    getattr(req, "scheme", None) or "http",
                ),
            )
            dispatcher = self.dispatcher
            if scope.excluded:
                for name, method in dispatcher.request_excluded:
                    try:
                        method(finished)
                    except Exception as exc:
                        dispatcher.failed(name, "on request_excluded", exc)
                return
            for name, method in dispatcher.request_finished:
                try:
                    method(finished)
                except Exception as exc:
                    dispatcher.failed(name, "on request_finished", exc)
            if dispatcher.request_event_sinks:
                dispatcher.emit_to(
                    dispatcher.request_event_sinks, finished_event(finished, self.pid)
                )
        except Exception as exc:
            self.dispatcher.internal_error("post_request", exc)

    def note_error(self, exc: BaseException | None) -> None:
        """gunicorn logged ``exc`` while handling the current request (the
        ASGI worker catches the app's exception before ``post_request``)."""
        if exc is None or not self.in_flight.scopes:
            return
        scope = self.in_flight.current()
        if scope is not None and scope.error is None:
            scope.error = exc


def _sampled(ids: Any) -> bool:
    """Whether the span was sampled (OpenTelemetry's ``trace_flags``; ids
    without flags count as sampled)."""
    flags = getattr(ids, "trace_flags", 1)
    return bool(flags & 1) if isinstance(flags, int) else True


def finished_event(finished: RequestFinished, pid: int) -> Event:
    """``request_finished`` as an Event, for sinks that want events."""
    fields: dict[str, object] = {
        "method": finished.method,
        "path": finished.path,
        "status": finished.status,
        "duration_seconds": round(finished.duration, 6),
        "response_bytes": finished.response_bytes,
        "request_bytes": finished.request_bytes,
        "route": finished.route,
        "error_type": finished.error_type,
        "queue_seconds": None
        if finished.queue_seconds is None
        else round(finished.queue_seconds, 6),
    }
    if finished.span_ids is not None:
        fields.update(span_id_fields(finished.span_ids))
    return Event(ev.REQUEST_FINISHED, "post_request", "info", fields, pid)


def span_fields(scope: RequestScope) -> dict[str, str]:
    """``trace_id`` and ``span_id`` of the request's span, for lines written
    outside the request's own context (the watchdog, an abort)."""
    ids = scope.ids
    return {} if ids is None else span_id_fields(ids)
