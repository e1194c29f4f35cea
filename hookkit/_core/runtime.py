"""What hookkit does on each gunicorn hook, per process.

One ``Runtime`` per process (``RUNTIME``). The master keeps the workers'
exit records and what it knows of each exit; a worker keeps its in-flight
requests, its own record and the slow-request watchdog. After ``fork`` the
worker drops the master's state it inherited.

Every hook method is guarded: an error in hookkit itself is counted and
reported like a sink's, and never reaches gunicorn (a raising ``post_fork``
halts the arbiter, a raising ``pre_request`` fails the request).
"""

from __future__ import annotations

import functools
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

import gunicorn

from hookkit import processors
from hookkit._core import events as ev
from hookkit._core import stderr as _stderr
from hookkit._core.asgi import calls_request_hooks, wrap_worker_app
from hookkit._core.dispatch import Dispatcher
from hookkit._core.events import Event, Level, Sink
from hookkit._core.exits import (
    APP_LOAD_ERROR,
    EXIT_ABORTED,
    EXIT_APP_LOAD_ERROR,
    EXIT_BOOT_ERROR,
    EXIT_ERROR,
    EXIT_MAX_REQUESTS,
    EXIT_NONE,
    EXIT_NORMAL,
    WORKER_BOOT_ERROR,
    ExitStatus,
    MasterContext,
    WorkerRecord,
    classify,
)
from hookkit._core.http import DEFAULT_SENSITIVE_QUERY, QueryRedactor, parse_list
from hookkit._core.requests import InFlight, RequestOutcome, RequestScope
from hookkit._core.routes import watch_flask_routes
from hookkit._core.settings import ConfigError, Settings
from hookkit._core.stacks import Watchdog, interrupted_stack, thread_stacks
from hookkit._sinks.logs import pipeline as _logging
from hookkit._sinks.prometheus.metrics import route_from_environ
from hookkit._sinks.prometheus.sink import Prometheus
from hookkit._sinks.tracing.config import TracingConfig
from hookkit._sinks.tracing.sink import Tracing, span_ids, worker_identity
from hookkit._version import __version__

F = TypeVar("F", bound=Callable[..., None])

_EXIT_LEVELS: dict[str, Level] = {
    "max_requests": "info",
    "shutdown": "info",
    "reload": "info",
    "scaled_down": "info",
    "killed": "warning",
    "unknown": "warning",
    "timeout": "error",
    "crashed": "error",
    "boot_error": "error",
    "app_load_error": "error",
}

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGQUIT, signal.SIGINT)


def _guarded(method: F) -> F:
    @functools.wraps(method)
    def guarded(self: Runtime, *args: Any) -> None:
        try:
            method(self, *args)
        except Exception as exc:
            self.dispatcher.internal_error(method.__name__, exc)

    return guarded  # type: ignore[return-value]


class Runtime:
    """hookkit's state in this process and its handling of each hook."""

    def __init__(self) -> None:
        self.settings = Settings()
        self.configured = False
        self.dispatcher = Dispatcher()
        self.in_flight = InFlight()
        # master
        self.records: dict[int, WorkerRecord] = {}  # by worker age
        self.exit_statuses: dict[int, ExitStatus] = {}  # by pid, from the reap log line
        self.reload_watermark = 0  # workers of this age or younger predate the last SIGHUP
        self.scale_down_pending = 0
        self.stopping = False
        # worker
        self.answers_system_exit = True  # see _requests.resolve_status
        self.record: WorkerRecord | None = None
        self.aborting = False
        self.watchdog: Watchdog | None = None
        self.prometheus = Prometheus()
        self.tracing = Tracing()
        # os.getpid() is a system call, and costs on every event: the pid
        # is kept here and refreshed in each forked child.
        self.pid = os.getpid()
        # The request path calls the metrics sink directly and builds an
        # event only for the sinks that want one (see configure).
        self._metrics_sink: Any = None
        self._log_sink: _logging.LogSink | None = None
        self._other_sinks: tuple[Sink, ...] = ()
        self.tracing.report = self._report_export_failure

    # -- configuration -----------------------------------------------------

    def configure(self, settings: Settings, extra_sinks: tuple[Sink, ...] = ()) -> None:
        """Use ``settings``; replaces, never adds to, the sinks (a reload
        configures again and nothing may be duplicated)."""
        tracing = TracingConfig.load(settings)  # raises ConfigError before anything changes
        self.settings = settings
        self.configured = True
        self.tracing.configure(tracing, settings.max_routes)
        sinks: list[Sink] = []
        self._log_sink = _logging.LogSink(settings) if settings.logs else None
        if self._log_sink is not None:
            sinks.append(self._log_sink)
        self._metrics_sink = None
        if settings.metrics and self.prometheus.sink is not None:
            self._metrics_sink = self.prometheus.sink
            sinks.append(self.prometheus.sink)
        sinks.extend(extra_sinks)
        self._other_sinks = tuple(extra_sinks)
        self.dispatcher.sinks = tuple(sinks)
        _logging.ensure_stderr_handler(settings)
        _logging.render_unrouted_lines(settings.log_format)
        _logging.set_query_redactor(
            QueryRedactor(DEFAULT_SENSITIVE_QUERY + parse_list(settings.tracing_redact_query))
        )

    def ensure_configured(self) -> None:
        """Read the environment if nothing configured hookkit yet (single
        hooks imported into a user's config)."""
        if not self.configured:
            self.configure(Settings.load())

    def emit(self, name: str, hook: str | None, level: Level = "info", /, **fields: object) -> None:
        """Build an event and hand it to the sinks."""
        self.dispatcher.emit(Event(name, hook, level, fields, self.pid))

    def request_sinks(self) -> tuple[Any, Any, tuple[Sink, ...]]:
        """(log sink, metrics sink, other sinks) of the request path."""
        return self._log_sink, self._metrics_sink, self._other_sinks

    def set_request_sinks(self, log: Any, metrics: Any, others: tuple[Sink, ...]) -> None:
        """Set the request path's sinks (``hookkit.testing.capture_events``)."""
        self._log_sink, self._metrics_sink, self._other_sinks = log, metrics, others

    def _request_sinks(self, name: str) -> tuple[Sink, ...]:
        """The sinks that want this request event, besides the metrics sink
        (called directly): the log sink only when it would write the line."""
        log = self._log_sink
        if log is not None and log.wants(name):
            return (log, *self._other_sinks)
        return self._other_sinks

    # -- master ------------------------------------------------------------

    @_guarded
    def on_starting(self, server: Any) -> None:
        self.ensure_configured()
        self.stopping = False
        _logging.set_exit_status_listener(self._note_exit_status)
        self._watch_stop(server)
        if self.settings.metrics and self.prometheus.sink is None:
            self._start_metrics(server)
        logger_class = type(server.log)
        ours = logger_class.__module__ == "hookkit.glogging"
        fields: dict[str, object] = {
            "master_pid": os.getpid(),
            "gunicorn_version": gunicorn.__version__,
            "hookkit_version": __version__,
            "gunicorn_logger": f"{logger_class.__module__}.{logger_class.__qualname__}",
        }
        level: Level = "info"
        if not ours:
            level = "warning"
            fields["note"] = (
                "gunicorn's logger_class is not hookkit's: gunicorn's own lines keep that "
                "logger's format and worker exit codes and signals are not seen, so some "
                "worker_exited reasons may be 'unknown'"
            )
        # Said once, at start-up: what tracing will do in the workers.
        fields["tracing"] = self.tracing.config.describe()
        self.tracing.preload()
        self.emit(ev.MASTER_STARTING, "on_starting", level, **fields)

    def _start_metrics(self, server: Any) -> None:
        """Metrics are set up once per master; a bad directory, web config or
        a port in use stops gunicorn here, at start-up."""
        try:
            self.prometheus.start_master(server, self.settings, ["logs", "metrics", "hookkit"])
        except ConfigError as exc:
            raise SystemExit(f"hookkit: {exc}") from None
        metrics = self.prometheus.metrics
        assert metrics is not None
        self.dispatcher.on_error = lambda who: metrics.sink_errors.labels(who).inc()
        _stderr.set_on_drop(lambda: metrics.sink_errors.labels("logs").inc())
        self.configure(self.settings)
        directory = self.prometheus.directory
        if directory is not None and not directory.private and directory.world_writable:
            self.emit(
                ev.METRICS_DIRECTORY_WORLD_WRITABLE,
                "on_starting",
                "warning",
                path=directory.path,
                note="any user of this machine can create files in the multiprocess "
                "directory, and so plant files that the metrics are read from or written "
                "through; fine in a container's own emptyDir, otherwise give it mode 0700",
            )

    def _watch_stop(self, server: Any) -> None:
        """Know when the master is stopping. gunicorn's Arbiter.stop() runs for
        every shutdown (TERM, INT, QUIT, a halt, an unhandled error) and sends
        the workers their stop signal; no hook fires before it, so the bound
        method is wrapped on this arbiter instance."""
        if getattr(server.stop, "_hookkit", False):
            return
        original = server.stop

        def stop(*args: Any, **kwargs: Any) -> Any:
            self.stopping = True
            return original(*args, **kwargs)

        stop._hookkit = True  # type: ignore[attr-defined]
        server.stop = stop

    @_guarded
    def when_ready(self, server: Any) -> None:
        cfg = server.cfg
        metrics = self.prometheus
        self.emit(
            ev.SERVER_READY,
            "when_ready",
            master_pid=os.getpid(),
            listeners=[str(listener) for listener in server.LISTENERS],
            worker_class=str(cfg.worker_class_str),
            workers=server.num_workers,
            threads=cfg.threads,
            timeout=cfg.timeout,
            gunicorn_version=gunicorn.__version__,
            hookkit_version=__version__,
            metrics_endpoint=metrics.url(),
            metrics_directory=metrics.directory.path if metrics.directory else None,
            request_hooks=_request_hooks(cfg),
        )

    @_guarded
    def on_reload(self, server: Any) -> None:
        # Arbiter.reload() spawns the new generation after this hook, then
        # stops every older worker: their ages are at most the current one.
        self.reload_watermark = server.worker_age
        self.scale_down_pending = 0
        _reapply_log_format(server, self.settings)
        self.emit(ev.SERVER_RELOADED, "on_reload", workers=server.cfg.workers)

    @_guarded
    def nworkers_changed(self, server: Any, new_value: int, old_value: int | None) -> None:
        self.ensure_configured()
        if old_value is not None and new_value < old_value:
            self.scale_down_pending += old_value - new_value
        self.emit(ev.WORKERS_CHANGED, "nworkers_changed", new_value=new_value, old_value=old_value)

    @_guarded
    def pre_fork(self, server: Any, worker: Any) -> None:
        self.records[worker.age] = WorkerRecord(worker.age)
        self.prometheus.pre_fork(worker.age)
        self.emit(ev.WORKER_SPAWNING, "pre_fork", "debug", worker_age=worker.age)

    @_guarded
    def child_exit(self, server: Any, worker: Any) -> None:
        self._report_exit(worker.pid, worker.age, bool(worker.aborted), "child_exit", server)

    @_guarded
    def on_exit(self, server: Any) -> None:
        # A worker that failed to boot makes the master halt before
        # child_exit runs for it: report what its record says now.
        live = set(server.WORKERS)
        if self.stopping and live:
            # Arbiter.stop() SIGKILLs the workers still running when
            # graceful_timeout ends and reaps only once, without waiting:
            # child_exit never runs for them. Collect their status here.
            live -= self._collect_killed(live, timeout=1.0)
        for age, record in sorted(self.records.items()):
            if (
                record.pid
                and record.pid not in live
                and (record.exit_kind != EXIT_NONE or record.pid in self.exit_statuses)
            ):
                self._report_exit(record.pid, age, False, "on_exit")
        self.emit(ev.MASTER_EXITING, "on_exit", master_pid=os.getpid())
        _logging.set_exit_status_listener(None)
        self.prometheus.exit_master(server)

    def _collect_killed(self, pids: set[int], timeout: float) -> set[int]:
        """waitpid the workers stop() killed, for up to ``timeout`` seconds;
        their statuses go where the reap log line would have put them."""
        reaped: set[int] = set()
        deadline = time.monotonic() + timeout
        while True:
            for pid in pids - reaped:
                try:
                    wpid, status = os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    reaped.add(pid)
                    continue
                if wpid == pid:
                    reaped.add(pid)
                    if os.WIFSIGNALED(status):
                        self.exit_statuses[pid] = ExitStatus(None, os.WTERMSIG(status))
                    elif os.WIFEXITED(status):
                        self.exit_statuses[pid] = ExitStatus(os.WEXITSTATUS(status), None)
            if reaped == pids or time.monotonic() >= deadline:
                return reaped
            time.sleep(0.01)

    @_guarded
    def pre_exec(self, server: Any) -> None:
        self.prometheus.pre_exec(server)
        self.emit(ev.MASTER_REEXECUTING, "pre_exec", master_pid=os.getppid())

    def _note_exit_status(self, pid: int, exit_code: int | None, signum: int | None) -> None:
        self.exit_statuses[pid] = ExitStatus(exit_code, signum)

    def _report_exit(
        self, pid: int, age: int, aborted: bool, hook: str, server: Any = None
    ) -> None:
        if server is not None and self.scale_down_pending:
            # gunicorn stops workers only while it has more than it wants
            # (this one, already taken out of WORKERS, included). A
            # scale-down that found nothing to stop (a worker was missing
            # at that moment) is not pending any more.
            excess = len(getattr(server, "WORKERS", ())) + 1 - int(server.num_workers)
            self.scale_down_pending = max(0, min(self.scale_down_pending, excess))
        record = self.records.pop(age, None)
        status = self.exit_statuses.pop(pid, None)
        self.prometheus.worker_gone(age)
        kind, code, received = EXIT_NONE, 0, 0
        fields: dict[str, object] = {"worker_pid": pid, "worker_age": age}
        if record is not None:
            kind, code, received = record.exit_kind, record.exit_code, record.signal_received
            fields["requests_served"] = record.requests
            if record.forked_at:
                fields["uptime_seconds"] = round(time.monotonic() - record.forked_at, 6)
            record.close()
        context = MasterContext(
            aborted=aborted,
            stopping=self.stopping,
            from_before_reload=age <= self.reload_watermark,
            scale_down_pending=self.scale_down_pending > 0,
        )
        reason = classify(kind, code, received, status, context)
        if reason.reason == "scaled_down":
            self.scale_down_pending -= 1
        fields.update(reason.fields())
        self.emit(ev.WORKER_EXITED, hook, _EXIT_LEVELS[reason.reason], **fields)

    # -- worker ------------------------------------------------------------

    @_guarded
    def post_fork(self, server: Any, worker: Any) -> None:
        pid = self.pid = os.getpid()
        # Drop the master's state this process inherited.
        self.record = self.records.pop(worker.age, None)
        for inherited in self.records.values():
            inherited.close()
        self.records.clear()
        self.exit_statuses.clear()
        _logging.set_exit_status_listener(None)
        self.in_flight = InFlight()
        self.aborting = False
        processors.set_worker_identity(pid, worker.age)
        self.prometheus.post_fork(worker.age)
        if self.record is not None:
            self.record.pid = pid
            self.record.forked_at = time.monotonic()
        self.emit(ev.WORKER_FORKED, "post_fork", master_pid=server.pid)

    @_guarded
    def post_worker_init(self, worker: Any) -> None:
        now = time.monotonic()
        fields: dict[str, object] = {"worker_class": type(worker).__name__}
        self.answers_system_exit = _answers_system_exit(worker)
        if self.record is not None:
            self.record.booted_at = now
            if self.record.forked_at:
                fields["boot_duration_seconds"] = round(now - self.record.forked_at, 6)
            self._record_stop_signals(self.record)
        self._leave_on_default_stop_signals(worker)
        fields["request_events"] = wrap_worker_app(worker, self)
        if fields["request_events"] == "hooks":
            watch_flask_routes()
        fields["tracing"] = self._start_tracing(worker.cfg, getattr(worker, "ppid", None))
        if self.settings.slow_request_seconds is not None:
            self.watchdog = Watchdog(
                self.in_flight, self.settings.slow_request_seconds, self._report_slow
            )
            self.watchdog.start()
        self.emit(ev.WORKER_BOOTED, "post_worker_init", **fields)

    def _start_tracing(self, cfg: Any, master_pid: int | None) -> str:
        """Find or build this worker's tracer provider, once the app is loaded
        (gevent has patched by then, and the app may have installed its own).
        A failure here costs the worker its spans, never its boot."""
        age = self.record.age if self.record is not None else None
        identity = worker_identity(os.getpid(), master_pid or os.getppid(), age)
        service_name = getattr(cfg, "proc_name", None)
        try:
            return self.tracing.start_worker(identity, service_name if service_name else None)
        except Exception as exc:
            self.tracing.tracer = None
            self.dispatcher.failed("tracing", "setting tracing up", exc, "sink 'tracing'")
            return "error"

    def _report_export_failure(self, exc: Exception) -> None:
        self.dispatcher.failed("tracing", "exporting spans", exc, label="sink 'tracing'")

    def _leave_on_default_stop_signals(self, worker: Any) -> None:
        """A worker class that leaves a stop signal at its default action
        dies of it without gunicorn's worker_exit: uvicorn-worker's server
        takes SIGTERM and SIGINT for its graceful shutdown, puts the handlers
        it found back, and raises the signal again. For such a signal hookkit
        installs a handler that does worker_exit's work (the exit record,
        ``worker_exiting``, the bounded flush of spans), then lets the signal
        end the process as it would have."""
        for signum in _STOP_SIGNALS:
            if signal.getsignal(signum) is not signal.SIG_DFL:
                continue

            def leaving(sig: int, frame: Any) -> None:
                if self.record is not None:
                    self.record.signal_received = sig
                try:
                    self._leave_worker(worker, None)
                except Exception as exc:
                    self.dispatcher.internal_error("worker_exit", exc)
                finally:
                    signal.signal(sig, signal.SIG_DFL)
                    signal.raise_signal(sig)

            signal.signal(signum, leaving)

    def _record_stop_signals(self, record: WorkerRecord) -> None:
        """Note in the record which stop signal reached the worker, then run
        the worker class's own handler (asyncio's no-op handler included:
        the event loop still sees the signal through its wakeup fd)."""
        for signum in _STOP_SIGNALS:
            handler = signal.getsignal(signum)
            if not callable(handler) or getattr(handler, "_hookkit", False):
                continue

            def recording(sig: int, frame: Any, _handler: Any = handler) -> Any:
                record.signal_received = sig
                return _handler(sig, frame)

            recording._hookkit = True  # type: ignore[attr-defined]
            signal.signal(signum, recording)

    @_guarded
    def worker_int(self, worker: Any) -> None:
        self.emit(ev.WORKER_INTERRUPTED, "worker_int", "warning")
        self.tracing.flush()

    @_guarded
    def worker_abort(self, worker: Any) -> None:
        self.aborting = True
        scopes = self.in_flight.snapshot()
        stacks = {id(scope): interrupted_stack(scope) for scope in scopes}
        requests = [
            {
                "method": scope.method,
                "path": scope.path,
                "elapsed_seconds": round(scope.elapsed(), 6),
                "stack": stacks[id(scope)],
                **span_ids(scope),
            }
            for scope in scopes
        ]
        timeout = getattr(worker.cfg, "timeout", None)
        self.emit(
            ev.WORKER_ABORTED,
            "worker_abort",
            "error",
            timeout=timeout,
            requests_in_flight=requests,
            threads=thread_stacks(),
        )
        # gunicorn SIGKILLs the worker about a second from now: the spans of
        # the stuck requests end here, and are flushed within half of that.
        self.tracing.abort(scopes, lambda scope: stacks[id(scope)], timeout)

    @_guarded
    def worker_exit(self, server: Any, worker: Any) -> None:
        if os.getpid() == server.pid:
            # Arbiter.kill_worker found the worker gone (ESRCH) and runs this
            # hook in the master instead of child_exit.
            self._report_exit(worker.pid, worker.age, bool(worker.aborted), "worker_exit", server)
            return
        self._leave_worker(worker, sys.exc_info()[1])

    def _leave_worker(self, worker: Any, exc: BaseException | None) -> None:
        """The worker's side of its exit: record how it leaves, say so, and
        flush its spans within the bound."""
        if self.watchdog is not None:
            self.watchdog.stop()
        kind, code = self._how_worker_leaves(worker, exc)
        fields: dict[str, object] = {"exit_code": code}
        if self.record is not None:
            self.record.set_exit(kind, code)
            fields["requests_served"] = self.record.requests
            if self.record.forked_at:
                fields["uptime_seconds"] = round(time.monotonic() - self.record.forked_at, 6)
        self.emit(ev.WORKER_EXITING, "worker_exit", **fields)
        self.tracing.shutdown()

    def _how_worker_leaves(self, worker: Any, exc: BaseException | None) -> tuple[int, int]:
        """(exit kind, exit code) from inside the worker's exit path:
        Arbiter.spawn_worker runs worker_exit in a ``finally`` while the
        worker's SystemExit propagates."""
        code = 0
        if isinstance(exc, SystemExit):
            raw = exc.code
            code = 0 if raw is None else (raw % 256 if isinstance(raw, int) else 1)
        elif exc is not None:
            code = 1
        if self.aborting:
            return EXIT_ABORTED, code
        if not getattr(worker, "booted", True):
            if code == APP_LOAD_ERROR:
                return EXIT_APP_LOAD_ERROR, code
            if code == WORKER_BOOT_ERROR:
                return EXIT_BOOT_ERROR, code
        if worker.nr >= worker.max_requests:
            return EXIT_MAX_REQUESTS, code
        if code == 0:
            return EXIT_NORMAL, code
        return EXIT_ERROR, code

    # -- requests ----------------------------------------------------------

    @_guarded
    def pre_request(self, worker: Any, req: Any) -> None:
        scope = self.in_flight.begin(req)
        self.tracing.begin(scope, req)
        metrics = self._metrics_sink
        if metrics is not None:
            try:
                metrics.request_started(scope.method)
            except Exception as exc:
                self.dispatcher.failed("metrics", "on request_started", exc, "sink 'metrics'")
        sinks = self._request_sinks(ev.REQUEST_STARTED)
        if sinks:
            fields = {"method": scope.method, "path": scope.path}
            event = Event(ev.REQUEST_STARTED, "pre_request", "debug", fields, self.pid)
            self.dispatcher.emit_to(sinks, event)

    @_guarded
    def post_request(self, worker: Any, req: Any, environ: Any, resp: Any) -> None:
        finished = self.in_flight.finish(req, resp, self.answers_system_exit)
        if finished is None:
            return
        scope, outcome = finished
        route = (route_from_environ(environ) if isinstance(environ, dict) else None) or scope.route
        try:
            self._finish_request(scope, outcome, route, req, environ)
        finally:
            # After the access line, so that it carries the trace id.
            self.tracing.end(scope, outcome, route, environ, resp)

    def _finish_request(
        self,
        scope: RequestScope,
        outcome: RequestOutcome,
        route: str | None,
        req: Any,
        environ: Any,
    ) -> None:
        if self.record is not None:
            self.record.add_request()
        error_type = outcome.error_type
        if self.aborting and error_type == "SystemExit":
            error_type = "timeout"
        request_bytes = _content_length(req, environ)
        metrics = self._metrics_sink
        if metrics is not None:
            try:
                metrics.request_finished(
                    scope.method,
                    status=outcome.status,
                    route=route,
                    error_type=error_type,
                    duration=outcome.duration,
                    request_bytes=request_bytes,
                    response_bytes=outcome.response_bytes,
                )
            except Exception as exc:
                self.dispatcher.failed("metrics", "on request_finished", exc, "sink 'metrics'")
        sinks = self._request_sinks(ev.REQUEST_FINISHED)
        if sinks:
            fields = {
                "method": scope.method,
                "path": scope.path,
                "status": outcome.status,
                "duration_seconds": round(outcome.duration, 6),
                "response_bytes": outcome.response_bytes,
                "request_bytes": request_bytes,
                "route": route,
                "error_type": error_type,
            }
            event = Event(ev.REQUEST_FINISHED, "post_request", "info", fields, self.pid)
            self.dispatcher.emit_to(sinks, event)

    def note_request_error(self, exc: BaseException | None) -> None:
        """gunicorn logged ``exc`` while handling the current request (called
        by hookkit's logger class from ``exception()``)."""
        if exc is None or not self.in_flight.scopes:
            return
        scope = self.in_flight.current()
        if scope is not None and scope.error is None:
            scope.error = exc

    def _report_slow(self, scope: RequestScope, stack: str | None) -> None:
        self.emit(
            ev.REQUEST_SLOW,
            None,
            "warning",
            method=scope.method,
            path=scope.path,
            elapsed_seconds=round(scope.elapsed(), 6),
            threshold_seconds=self.settings.slow_request_seconds,
            stack=stack,
            **span_ids(scope),
        )
        if self.settings.slow_request_seconds is not None:
            self.tracing.slow(scope, stack, self.settings.slow_request_seconds)

    # -- dirty arbiter and workers (gunicorn 25+) --------------------------

    @_guarded
    def on_dirty_starting(self, arbiter: Any) -> None:
        self.ensure_configured()
        self.prometheus.own_process("d")
        self.emit(ev.DIRTY_ARBITER_STARTING, "on_dirty_starting", dirty_arbiter_pid=os.getpid())

    @_guarded
    def dirty_post_fork(self, arbiter: Any, worker: Any) -> None:
        self.emit(
            ev.DIRTY_WORKER_FORKED,
            "dirty_post_fork",
            dirty_worker_pid=worker.pid,
            dirty_worker_age=getattr(worker, "age", None),
        )

    @_guarded
    def dirty_worker_init(self, worker: Any) -> None:
        self.prometheus.own_process("d")
        self._start_tracing(getattr(worker, "cfg", None), getattr(worker, "ppid", None))
        self.emit(
            ev.DIRTY_WORKER_BOOTED,
            "dirty_worker_init",
            dirty_worker_pid=os.getpid(),
            dirty_worker_age=getattr(worker, "age", None),
        )

    @_guarded
    def dirty_worker_exit(self, arbiter: Any, worker: Any) -> None:
        self.emit(
            ev.DIRTY_WORKER_EXITED,
            "dirty_worker_exit",
            dirty_worker_pid=worker.pid,
            dirty_worker_age=getattr(worker, "age", None),
        )


def _reapply_log_format(server: Any, settings: Settings) -> None:
    """gunicorn 25 does not run its logger's setup() again on SIGHUP (26 and
    27 do), so a changed HOOKKIT_LOG_FORMAT would not apply: re-apply it."""
    log = server.log
    if type(log).__module__ == "hookkit.glogging" and gunicorn.version_info < (26,):
        formatter = _logging.make_formatter(settings.log_format)
        for handler in log.error_log.handlers:
            handler.setFormatter(formatter)


def _request_hooks(cfg: Any) -> str:
    """How request events are made under the configured worker class, said
    once at start-up."""
    worker_class = getattr(cfg, "worker_class", None)
    if not isinstance(worker_class, type) or calls_request_hooks(worker_class):
        return "called by the worker class"
    return (
        f"not called by {worker_class.__name__}: hookkit wraps the worker's ASGI app "
        "and makes the request events itself"
    )


def _content_length(req: Any, environ: Any = None) -> int | None:
    """The request body's size, from its Content-Length header (the WSGI
    environ has it at hand; otherwise the request's headers are read)."""
    if isinstance(environ, dict) and "wsgi.input" in environ:
        raw_length = environ.get("CONTENT_LENGTH")
        if not raw_length:
            return None
        return int(raw_length) if raw_length.strip().isdigit() else None
    for name, value in getattr(req, "headers", None) or ():
        text = name.decode("latin-1") if isinstance(name, bytes) else str(name)
        if text.upper() == "CONTENT-LENGTH":
            raw = value.decode("latin-1") if isinstance(value, bytes) else str(value)
            return int(raw) if raw.strip().isdigit() else None
    return None


def _answers_system_exit(worker: Any) -> bool:
    """Whether the worker class answers a request aborted by the timeout with
    a 500: gunicorn's sync worker catches every BaseException in handle() and
    writes the error page; gevent swallows the SystemExit and gthread lets it
    end the worker, so their clients get no response."""
    from gunicorn.workers.sync import SyncWorker

    return isinstance(worker, SyncWorker)


RUNTIME = Runtime()


def _refresh_pid() -> None:
    RUNTIME.pid = os.getpid()


os.register_at_fork(after_in_child=_refresh_pid)
