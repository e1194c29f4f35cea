"""Requests as a scope from ``pre_request`` to ``post_request``.

The scope lives in a per-process map keyed by ``id(req)``: the ASGI worker's
request object has ``__slots__`` (no attribute can be added to it), and gthread
and the ASGI worker run requests concurrently, so a thread-local or a single
"current request" would mix them up. ``id()`` is unique while the request
object is alive, and the scope is removed in ``post_request``, before gunicorn
drops the request.

What ``post_request`` receives is not always what the client got, so the
status is resolved here (see ``resolve_status``).
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass, field
from typing import NamedTuple

from hookkit._core.sink import SpanIds

try:
    from gunicorn.http.errors import ParseException
except ImportError:  # pragma: no cover - every supported gunicorn has it
    ParseException = ()


_new = tuple.__new__  # a named tuple without its Python-level __new__


@dataclass(slots=True)
class RequestScope:
    """One request in flight in this worker."""

    method: str
    path: str
    started: float  # time.perf_counter() at pre_request
    thread_id: int
    # The greenlet (gevent) or asyncio task running the request, when there
    # is one: the slow-request watchdog reads its stack.
    task: object | None = None
    slow_reported: bool = False
    # An exception gunicorn logged while handling this request: the ASGI
    # worker catches the app's exception before post_request runs.
    error: BaseException | None = None
    # The ids of the span a sink started for the request, if any.
    ids: SpanIds | None = None
    # The route template, when the app gave it outside the WSGI environ
    # (an ASGI app's scope, see _asgi).
    route: str | None = None
    # Kept out of the request metrics, access lines and spans (probes).
    excluded: bool = False
    # A proxy's X-Request-Start and when the worker took the request
    # (time.time()), until it is known whether the peer may send it.
    queue_stamp: str | None = None
    taken_at: float = 0.0
    # Seconds the request waited before the worker took it, or why the
    # stamp was not used (hookkit._core.queue_time).
    queue_seconds: float | None = None
    queue_error: str | None = None
    # Its entry in the worker's live state (hookkit._core.live): the slot,
    # -1 for none free (counted as overflow), None when none was asked for.
    slot: int | None = None

    def elapsed(self) -> float:
        """Seconds since ``pre_request``."""
        return time.perf_counter() - self.started


class RequestOutcome(NamedTuple):
    """What the client received, as far as gunicorn lets us see (a named
    tuple: a frozen dataclass sets each field through object.__setattr__,
    on every request)."""

    status: int | None
    error_type: str | None
    duration: float
    response_bytes: int | None
    # The exception behind error_type, for the span's exception event.
    exception: BaseException | None = None


@dataclass
class InFlight:
    """The requests in flight in this worker process."""

    scopes: dict[int, RequestScope] = field(default_factory=dict)
    # Whether requests may run in greenlets or asyncio tasks: False once the
    # worker is known to be sync or gthread, whose requests run on threads
    # of their own (no task to look for on every request).
    tasks: bool = True

    def begin(self, req: object, key: int | None = None) -> RequestScope:
        """Open the scope of ``req`` (from ``pre_request``); ``key`` is
        ``id(req)`` when the caller has it already."""
        scope = RequestScope(
            method=_text(getattr(req, "method", None)) or "UNKNOWN",
            path=_text(getattr(req, "path", None)) or "",
            started=time.perf_counter(),
            thread_id=threading.get_ident(),
            task=_current_task() if self.tasks else None,
        )
        self.scopes[id(req) if key is None else key] = scope
        return scope

    def current(self) -> RequestScope | None:
        """The scope of the request this greenlet, task or thread is running."""
        task = _current_task()
        ident = threading.get_ident()
        for scope in self.snapshot():
            if scope.task is task if task is not None else scope.thread_id == ident:
                return scope
        return None

    def finish(
        self, req: object, resp: object | None, answers_system_exit: bool = True
    ) -> tuple[RequestScope, RequestOutcome] | None:
        """Close the scope of ``req`` (from ``post_request``).

        Returns None when there is no open scope: ``pre_request`` never ran
        for it (hookkit's hooks were installed half-way), or ``post_request``
        already ran for it (gunicorn calls it twice for a request aborted
        by a timeout), so each request is counted once.
        """
        scope = self.scopes.pop(id(req), None)
        if scope is None:
            return None
        duration = scope.elapsed()
        exc = sys.exc_info()[1] or scope.error
        status, error_type = resolve_status(resp, exc, answers_system_exit)
        sent = getattr(resp, "sent", None) if resp is not None else None
        outcome: RequestOutcome = _new(
            RequestOutcome,
            (
                status,
                error_type,
                duration,
                sent if isinstance(sent, int) else None,
                _cause(exc) if error_type is not None else None,
            ),
        )
        return scope, outcome

    def snapshot(self) -> list[RequestScope]:
        """The scopes open now (a copy: other threads may change the map)."""
        return list(self.scopes.values())


def resolve_status(
    resp: object | None,
    exc: BaseException | None,
    answers_system_exit: bool = True,
) -> tuple[int | None, str | None]:
    """The status the client received and the error type, if the request failed.

    ``exc`` is the exception propagating through the worker's ``finally``
    when ``post_request`` runs (``sys.exc_info()``), or the one gunicorn
    logged for this request (the ASGI worker catches the app's exception
    before ``post_request``), if any:

    - no exception: the response's status; a 5xx has its status code as the
      error type, as OpenTelemetry does. With no response object (the ASGI
      worker passes ``resp=None`` when the logger class reports the access
      log off, which hookkit's logger class never does) the status is not
      known and stays None;
    - the ASGI worker's response (it has no ``headers_sent``) already holds
      what the client got: the app's status, or the 500 gunicorn sent for
      an app that raised before it started the response;
    - a WSGI exception before the headers were sent: gunicorn answers the
      client itself, 500 (400 for a request it could not parse), whatever
      status the app passed to ``start_response``; except for the SystemExit
      of a timeout abort, which only the sync worker answers with a 500
      (``answers_system_exit``), the others close the connection;
    - a WSGI exception after the headers were sent: the client got the
      app's status and a truncated body; the error type is the app's
      exception (gunicorn re-raises it as StopIteration to close the
      connection);
    - a StopIteration with no exception behind it is how the async workers
      close a connection after a good response: no error;
    - a connection error (OSError): the client is gone and received nothing.
    """
    status = _response_status(resp) if resp is not None else None
    if isinstance(exc, StopIteration):
        exc = exc.__context__
    if exc is None:
        if status is None:
            return None, None
        return status, str(status) if status >= 500 else None
    error_type = _error_type(exc)
    if isinstance(exc, OSError):
        return None, error_type
    headers_sent = getattr(resp, "headers_sent", None) if resp is not None else False
    if headers_sent is None or headers_sent:  # ASGI, or WSGI after the headers went out
        return status, error_type
    if isinstance(exc, ParseException):
        return 400, error_type
    if isinstance(exc, SystemExit) and not answers_system_exit:
        return None, error_type
    return 500, error_type


def _cause(exc: BaseException | None) -> BaseException | None:
    """The app's exception: the async workers re-raise it as a StopIteration."""
    if isinstance(exc, StopIteration):
        return exc.__context__
    return exc


def _error_type(exc: BaseException) -> str:
    cls = type(exc)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def _response_status(resp: object) -> int | None:
    """gunicorn's WSGI response keeps the code it parsed from the status
    line (``status_code``, None until the app starts the response); other
    responses (the ASGI worker's, stand-ins) have the status alone."""
    code = getattr(resp, "status_code", None)
    if type(code) is int:
        return code
    return _status_code(getattr(resp, "status", None))


def _status_code(status: object) -> int | None:
    if isinstance(status, int):
        return status
    if isinstance(status, str):
        head = status.split(None, 1)[0] if status.strip() else ""
        if head.isdigit():
            return int(head)
    return None


def _text(value: object) -> str | None:
    # Inline, not hookkit._core.http.text: a call less, twice per request.
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return str(value)


def _current_task() -> object | None:
    """The greenlet or asyncio task running this request, if any."""
    greenlet = sys.modules.get("greenlet")
    if greenlet is not None and "gevent.monkey" in sys.modules:
        current: object = greenlet.getcurrent()
        if getattr(current, "parent", None) is not None:  # not the hub/main greenlet
            return current
    asyncio = sys.modules.get("asyncio")
    if asyncio is not None:
        # _get_running_loop() answers None outside a loop, where
        # current_task() would raise (an exception on every request).
        loop = asyncio._get_running_loop()
        if loop is not None:
            task: object | None = asyncio.current_task(loop)
            return task
    return None
