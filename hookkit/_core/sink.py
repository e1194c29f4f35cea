"""The sink contract: one backend of hookkit, and the values it is given.

A sink overrides what it needs of ``Sink``; the runtime calls, per process
and role, only the methods a sink overrides, and isolates every call (an
error is counted in ``hookkit_sink_errors_total{sink="<name>"}`` and
reported at most once a minute; gunicorn never sees it).

Everything here runs inline in gunicorn's hooks: in a worker on every
request, and in the master inside its reap loop. A method must return in
microseconds; slow work (network, disk) goes to a thread of the sink's own.

The request hot path hands a sink two immutable values, ``RequestStarted``
and ``RequestFinished`` (named tuples: built in well under a microsecond),
never hookkit's internal request scope. A sink that would rather have the
request events as ``Event`` objects through ``handle`` sets
``request_events = True``; no ``Event`` is built on the request path when no
configured sink asks for one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple, Protocol, runtime_checkable

from hookkit._core.events import Event, Level

# Names of hookkit's own sinks and of the backends the next releases add:
# no user sink may take one (its error series would be shared).
RESERVED_NAMES = frozenset(
    {"hookkit", "logs", "metrics", "tracing", "otlp_metrics", "otlp_logs", "status"}
)

Fields = Mapping[str, object]


class RequestStarted(NamedTuple):
    """A request a worker began (gunicorn's ``pre_request``).

    ``key`` tells this request apart from the others in flight in the
    process (gthread, gevent and the ASGI worker run several at once): a
    sink that keeps per-request state keys it by ``key``. ``request`` is
    gunicorn's own request object (or an ASGI stand-in with the same
    attributes: ``method``, ``path``, ``query``, ``headers``, ``scheme``,
    ``version``, ``peer_addr``), to read, never to keep.
    """

    key: int
    method: str  # as the client sent it; metrics map unknown ones to _OTHER
    path: str  # without the query string
    request: Any


class RequestFinished(NamedTuple):
    """A request a worker finished (``post_request``), as the client saw it.

    ``status`` is what the client received (None when it received nothing),
    ``error_type`` the exception's qualified name or a 5xx status (as
    OpenTelemetry's ``error.type``), ``route`` the template the app matched
    (None if it gave none; bounded by the sinks that label by it).
    ``span_ids`` are the ids of the span a sink started for the request
    (None when none did). ``environ`` and ``response`` are gunicorn's, to
    read only.

    ``queue_seconds`` is how long the request waited before the worker
    took it, from the ``X-Request-Start`` (or ``X-Queue-Start``) header a
    trusted proxy stamped (``hookkit._core.queue_time``); None without one.
    ``queue_error`` says why such a header was not used (``negative``,
    ``too_old``, ``unparsable``, ``untrusted``), else None. Both come with
    the end of the request: gunicorn's ASGI worker tells who sent the
    request only then.

    ``scheme`` is the request's URL scheme (``http`` or ``https``), as
    gunicorn judged it from TLS and ``secure_scheme_headers``:
    OpenTelemetry's ``url.scheme``.
    """

    key: int
    method: str
    path: str
    route: str | None
    status: int | None
    duration: float  # seconds, pre_request to post_request
    request_bytes: int | None  # Content-Length
    response_bytes: int | None  # body bytes sent
    error_type: str | None
    exception: BaseException | None
    span_ids: SpanIds | None
    environ: Any
    response: Any
    queue_seconds: float | None = None
    queue_error: str | None = None
    scheme: str = "http"  # as gunicorn judged it (TLS, secure_scheme_headers)


@runtime_checkable
class SpanIds(Protocol):
    """The ids of a span a sink started for a request, as OpenTelemetry
    keeps them: integers (formatting them costs, and only some lines show
    them). OpenTelemetry's own ``SpanContext`` is one; a named tuple of your
    own can be another. ``span_id_fields`` gives them as lower-case hex."""

    @property
    def trace_id(self) -> int: ...

    @property
    def span_id(self) -> int: ...


def span_id_fields(ids: SpanIds) -> dict[str, str]:
    """``trace_id`` (32 hex digits) and ``span_id`` (16), as OpenTelemetry
    shows them, for a log line or an event."""
    return {"trace_id": format(ids.trace_id, "032x"), "span_id": format(ids.span_id, "016x")}


class Sink:
    """One backend. Override what it needs; every call is isolated.

    Lifecycle, per role (each runs in the process named):

    - ``start_master(server)``: master, ``on_starting`` (or, for a sink a
      SIGHUP's new config brought, on that reload). A ``ConfigError``
      raised here stops gunicorn at start-up. May return fields for the
      ``master_starting`` line.
    - ``server_ready(server)``: master, ``when_ready``; may return fields for
      the ``server_ready`` line.
    - ``before_fork(age)``: master, ``pre_fork``.
    - ``after_fork(age)``: the new worker, ``post_fork``: drop what the
      master built (threads do not survive a fork; sockets must close).
    - ``start_worker(worker)``: worker, ``post_worker_init``, once the app
      is loaded; also a dirty worker's ``dirty_worker_init``. May return
      fields for the ``worker_booted`` line.
    - ``worker_gone(age)``: master, after a worker exited and was reaped.
    - ``hand_over(server)``: the SIGUSR2 re-exec child, ``pre_exec``.
    - ``stop_worker(seconds)``: worker leaving (``worker_exit``): finish
      within ``seconds``.
    - ``stop_master(server)``: master, ``on_exit``; also a sink a SIGHUP
      replaced.

    Events: ``handle(event)`` receives every lifecycle event (and the
    request events too when ``request_events`` is True).

    Requests: ``request_started`` may return the ids of a span it started
    (``SpanIds``: a tracing sink returns the span's ``SpanContext``); the
    ids then reach the other sinks in ``RequestFinished`` and hookkit's
    lines about the request. A request the excluded URLs keep out (probes:
    ``HOOKKIT_EXCLUDED_URLS``, ``OTEL_PYTHON_EXCLUDED_URLS``) never reaches
    ``request_started`` nor ``request_finished``: its end comes to
    ``request_excluded`` instead, for what counts every request (the time
    a worker is busy).

    ``count_errors(sink, count)`` is for a metrics backend: called with
    ``count=0`` for every configured sink at start-up (so that its error
    series exists from the start) and with 1 on each error of any sink.
    """

    # The sink's name: unique, the ``sink`` label of its errors. A class
    # attribute, or set per instance (two instances of one class).
    name: str = ""
    # True: request_started / request_finished also come as Events
    # through handle() (class attribute, or per instance).
    request_events: bool = False

    # Set by the dispatcher when the sink is configured: (sink name, where,
    # exception, count only) -> None, and (event name, hook, level, fields)
    # -> None.
    _report: Any = None
    _emit: Any = None

    def start_master(self, server: Any) -> Fields | None:
        """Master start (``on_starting``)."""
        return None

    def server_ready(self, server: Any) -> Fields | None:
        """The server listens (``when_ready``)."""
        return None

    def before_fork(self, age: int) -> None:
        """Master, before the worker of ``age`` is forked."""

    def after_fork(self, age: int) -> None:
        """The new worker of ``age``, just after the fork."""

    def start_worker(self, worker: Any) -> Fields | None:
        """Worker, once the app is loaded."""
        return None

    def worker_gone(self, age: int) -> None:
        """Master, after the worker of ``age`` exited."""

    def hand_over(self, server: Any) -> None:
        """The re-exec child, just before it executes the new master."""

    def stop_worker(self, seconds: float) -> None:
        """Worker leaving: finish within ``seconds``."""

    def stop_master(self, server: Any) -> None:
        """Master exiting, or this sink replaced by a reload."""

    def handle(self, event: Event) -> None:
        """One lifecycle event."""

    def request_started(self, request: RequestStarted) -> SpanIds | None:
        """A request began."""
        return None

    def request_finished(self, request: RequestFinished) -> None:
        """A request ended."""

    def request_excluded(self, request: RequestFinished) -> None:
        """A request the excluded URLs keep out ended (no
        ``request_started`` nor ``request_finished`` came for it)."""

    def count_errors(self, sink: str, count: int) -> None:
        """Count ``count`` errors of ``sink`` (a metrics backend)."""

    def wants(self, method: str) -> bool:
        """Whether this sink's ``request_started``, ``request_finished`` or
        ``request_excluded`` (``method``) has work in this process now. Asked when the sinks are
        set and again once a worker started (``start_worker``): a sink with
        nothing to do per request (tracing off, the access line off) then
        costs nothing per request."""
        return True

    def report_error(self, where: str, exc: BaseException) -> None:
        """Count and report an error this sink met outside a call hookkit
        made (its own thread, say): ``hookkit_sink_errors_total`` and a line
        on stderr at most once a minute. Safe from any thread."""
        report = self._report
        if report is not None:
            report(self.name, where, exc, False)

    def emit_event(
        self, name: str, level: Level = "info", hook: str | None = None, **fields: object
    ) -> None:
        """Hand an event of this sink's own to every sink (a warning found
        at start-up, say)."""
        emit = self._emit
        if emit is not None:
            emit(name, hook, level, fields)

    def count_error(self) -> None:
        """Count an error of this sink without a line (where writing one
        would fail the same way, e.g. a full stderr)."""
        report = self._report
        if report is not None:
            report(self.name, "", None, True)


def overrides(sink: Sink, method: str) -> bool:
    """Whether ``sink``'s class implements ``method`` other than as
    ``Sink`` does (nothing)."""
    implementation = getattr(type(sink), method, None)
    return implementation is not None and implementation is not getattr(Sink, method)
