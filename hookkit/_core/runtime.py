"""What hookkit does on each gunicorn hook: one guarded method per hook.

One ``Runtime`` per process (``RUNTIME``), a thin facade over:

- the master's book (``MasterBook``: worker records, exit statuses, reload
  and scale-down knowledge, the ``worker_exited`` reason);
- the worker's book (``WorkerBook``: its own record, how it leaves, the
  watchdog);
- the request path (``RequestPath``: in-flight scopes, the sinks' hot path);
- the sinks, through the ``Dispatcher``: each hook becomes lifecycle calls
  on the sinks that implement them and an ``Event`` for ``handle``.

The runtime names no backend: which sinks exist is the drop-in's choice
(``hookkit._dropin.assemble``), handed over with ``use``.

Every hook method is guarded: an error in hookkit itself is counted and
reported like a sink's, and never reaches gunicorn (a raising ``post_fork``
halts the arbiter, a raising ``pre_request`` fails the request).
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from hookkit._core import abort_budget, identity, live
from hookkit._core import events as ev
from hookkit._core.asgi import calls_request_hooks, wrap_worker_app
from hookkit._core.dispatch import Dispatcher
from hookkit._core.events import Event, Level
from hookkit._core.excluded import ExcludedUrls
from hookkit._core.frameworks import watch_routes
from hookkit._core.gunicorn_types import Arbiter, Request, Response, Worker
from hookkit._core.master import MasterBook
from hookkit._core.request_path import RequestPath, span_fields
from hookkit._core.requests import InFlight, RequestScope
from hookkit._core.settings import ConfigError, Settings
from hookkit._core.sink import Sink
from hookkit._core.stacks import Watchdog, interrupted_stack, thread_stacks
from hookkit._core.trust import TrustedPeers
from hookkit._core.worker import WorkerBook, answers_system_exit, runs_tasks, runs_threads
from hookkit._version import __version__

F = TypeVar("F", bound=Callable[..., None])


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
        self.master = MasterBook()
        self.worker = WorkerBook()
        self.requests = RequestPath(self.dispatcher)
        # os.getpid() is a system call, and costs on every event: the pid
        # is kept here and refreshed in each forked child.
        self.pid = os.getpid()
        self.requests.pid = self.pid
        # How to configure from the environment when nothing configured
        # hookkit (single hooks imported into a user's config): set by
        # hookkit.hooks to the drop-in's assembly.
        self.configure_from_environment: Callable[[], None] | None = None

    # -- configuration -----------------------------------------------------

    def use(
        self,
        settings: Settings,
        sinks: Sequence[Sink],
        started_order: Sequence[Sink] | None = None,
        finished_order: Sequence[Sink] | None = None,
    ) -> None:
        """Use ``settings`` and ``sinks``; replaces, never adds to, the sinks
        (a reload configures again and nothing may be duplicated). In a
        master that already started, the sinks a reload replaced are
        stopped and the new ones started."""
        names = [sink.name for sink in sinks]
        if len(set(names)) != len(names):
            raise ConfigError(f"sinks: two sinks share a name ({', '.join(names)})")
        excluded = ExcludedUrls.load(settings.excluded_urls, os.environ)
        old = self.dispatcher.sinks
        self.settings = settings
        self.requests.excluded = excluded
        self.configured = True
        self.dispatcher.set_sinks(sinks, started_order, finished_order)
        if not self.master.started:
            return
        server = self.master.server
        for sink in old:
            if sink not in sinks:
                self._call_one(sink, "stop_master", server)
        for sink in sinks:
            if sink not in old:
                self._call_one(sink, "start_master", server)
        self.dispatcher.announce_error_series()

    def _call_one(self, sink: Sink, method: str, *args: Any) -> None:
        try:
            getattr(sink, method)(*args)
        except Exception as exc:
            self.dispatcher.failed(sink.name, f"in {method}", exc)

    def ensure_configured(self) -> None:
        """Read the environment if nothing configured hookkit yet (single
        hooks imported into a user's config)."""
        if self.configured:
            return
        if self.configure_from_environment is not None:
            self.configure_from_environment()
        else:
            self.use(Settings.load(), ())

    @property
    def in_flight(self) -> InFlight:
        """The requests in flight in this worker."""
        return self.requests.in_flight

    def emit(self, name: str, hook: str | None, level: Level = "info", /, **fields: object) -> None:
        """Build an event and hand it to the sinks."""
        self.dispatcher.emit(Event(name, hook, level, fields, self.pid))

    # -- master ------------------------------------------------------------

    @_guarded
    def on_starting(self, server: Arbiter) -> None:
        self.ensure_configured()
        self.master.start(server)
        try:
            started = self.dispatcher.call("start_master", server)
        except ConfigError as exc:
            # A bad directory, web config or a port in use stops gunicorn here.
            raise SystemExit(f"hookkit: {exc}") from None
        self.dispatcher.announce_error_series()
        import gunicorn

        logger_class = type(server.log)
        fields: dict[str, object] = {
            "master_pid": os.getpid(),
            "gunicorn_version": gunicorn.__version__,
            "hookkit_version": __version__,
            "gunicorn_logger": f"{logger_class.__module__}.{logger_class.__qualname__}",
        }
        level: Level = "info"
        if not getattr(logger_class, "hookkit_logger", False):
            level = "warning"
            fields["note"] = (
                "gunicorn's logger_class is not hookkit's: gunicorn's own lines keep that "
                "logger's format and worker exit codes and signals are not seen, so some "
                "worker_exited reasons may be 'unknown'"
            )
        fields.update(started)
        sdk_metrics = sdk_metrics_warning(self.settings, os.environ)
        if sdk_metrics is not None:
            fields["warnings"] = [sdk_metrics]
        # A sink says what it does instead of a default it cannot honour in
        # a "warnings" list of its fields (tracing under opentelemetry-distro).
        if sdk_metrics is not None or any(
            isinstance(value, dict) and value.get("warnings") for value in started.values()
        ):
            level = "warning"
        self.emit(ev.MASTER_STARTING, "on_starting", level, **fields)

    @_guarded
    def when_ready(self, server: Arbiter) -> None:
        import gunicorn

        cfg = server.cfg
        fields: dict[str, object] = {
            "master_pid": os.getpid(),
            "listeners": [str(listener) for listener in server.LISTENERS],
            "worker_class": str(cfg.worker_class_str),
            "workers": server.num_workers,
            "threads": cfg.threads,
            "timeout": cfg.timeout,
            "gunicorn_version": gunicorn.__version__,
            "hookkit_version": __version__,
            "sinks": [sink.name for sink in self.dispatcher.sinks],
        }
        fields.update(self.dispatcher.call("server_ready", server))
        fields["request_hooks"] = _request_hooks(cfg)
        self.emit(ev.SERVER_READY, "when_ready", **fields)

    @_guarded
    def on_reload(self, server: Arbiter) -> None:
        self.master.reloaded(server)
        self.emit(ev.SERVER_RELOADED, "on_reload", workers=server.cfg.workers)

    @_guarded
    def nworkers_changed(self, server: Arbiter, new_value: int, old_value: int | None) -> None:
        self.ensure_configured()
        self.master.workers_changed(new_value, old_value)
        self.emit(ev.WORKERS_CHANGED, "nworkers_changed", new_value=new_value, old_value=old_value)

    @_guarded
    def pre_fork(self, server: Arbiter, worker: Worker) -> None:
        self.master.spawning(worker.age, live.slots_for(worker))
        self.dispatcher.call("before_fork", worker.age)
        self.emit(ev.WORKER_SPAWNING, "pre_fork", "debug", worker_age=worker.age)

    @_guarded
    def child_exit(self, server: Arbiter, worker: Worker) -> None:
        self._report_exit(worker.pid, worker.age, bool(worker.aborted), "child_exit", server)

    @_guarded
    def on_exit(self, server: Arbiter) -> None:
        for pid, age in self.master.unreported_exits(server):
            self._report_exit(pid, age, False, "on_exit")
        self.emit(ev.MASTER_EXITING, "on_exit", master_pid=os.getpid())
        self.dispatcher.call("stop_master", server)

    @_guarded
    def pre_exec(self, server: Arbiter) -> None:
        self.dispatcher.call("hand_over", server)
        self.emit(ev.MASTER_REEXECUTING, "pre_exec", master_pid=os.getppid())

    def note_reap_line(self, msg: object, args: tuple[object, ...]) -> None:
        """A line gunicorn logged: the master's reap lines tell exit statuses."""
        self.master.note_reap_line(msg, args)

    def _report_exit(
        self, pid: int, age: int, aborted: bool, hook: str, server: Arbiter | None = None
    ) -> None:
        level, fields = self.master.worker_exit_fields(pid, age, aborted, server)
        self.dispatcher.call("worker_gone", age)
        self.emit(ev.WORKER_EXITED, hook, level, **fields)

    # -- worker ------------------------------------------------------------

    @_guarded
    def post_fork(self, server: Arbiter, worker: Worker) -> None:
        pid = self.pid = os.getpid()
        self.worker.forked(self.master.forked(worker.age), pid)
        self.requests.reset(pid, self.worker.record)
        live.activate(self.requests.live)
        self._live_state(live.BOOTING)
        identity.set_worker(pid, worker.age)
        self.dispatcher.call("after_fork", worker.age)
        self.emit(ev.WORKER_FORKED, "post_fork", master_pid=server.pid)

    @_guarded
    def post_worker_init(self, worker: Worker) -> None:
        fields: dict[str, object] = {"worker_class": type(worker).__name__}
        self.requests.answers_system_exit = answers_system_exit(worker)
        self.requests.in_flight.tasks = runs_tasks(worker)
        if self.worker.record is not None:
            self.worker.record.threaded = runs_threads(worker)
        self.requests.trusted = TrustedPeers.from_config(worker.cfg)
        fields.update(self.worker.booted())
        self.worker.leave_on_default_stop_signals(lambda: self._leave_guarded(worker))
        fields["request_events"] = wrap_worker_app(worker, self)
        # The app is loaded: its framework's route template, where
        # post_request and the ASGI middleware read it (on every worker
        # class: Django's ASGI app runs under uvicorn's too).
        watch_routes(self.dispatcher.internal_error)
        fields.update(self.dispatcher.call("start_worker", worker))
        self.dispatcher.refresh_request_path()
        if self.settings.slow_request_seconds is not None:
            self.worker.start_watchdog(
                Watchdog(self.in_flight, self.settings.slow_request_seconds, self._report_slow)
            )
        self._live_state(live.IDLE)
        self.emit(ev.WORKER_BOOTED, "post_worker_init", **fields)

    @_guarded
    def worker_int(self, worker: Worker) -> None:
        self._live_state(live.STOPPING)
        self.emit(ev.WORKER_INTERRUPTED, "worker_int", "warning")

    @_guarded
    def worker_abort(self, worker: Worker) -> None:
        self.worker.aborting = self.requests.aborting = True
        self._live_state(live.STOPPING)
        scopes = self.in_flight.snapshot()
        requests = [
            {
                "method": scope.method,
                "path": scope.path,
                "elapsed_seconds": round(scope.elapsed(), 6),
                "stack": interrupted_stack(scope),
                **span_fields(scope),
            }
            for scope in scopes
        ]
        # gunicorn SIGKILLs the worker about a second from now: a tracing
        # sink ends the spans of the stuck requests on this event, and every
        # wait from now on shares one budget.
        abort_budget.start()
        self.emit(
            ev.WORKER_ABORTED,
            "worker_abort",
            "error",
            timeout=getattr(worker.cfg, "timeout", None),
            requests_in_flight=requests,
            threads=thread_stacks(),
        )

    @_guarded
    def worker_exit(self, server: Arbiter, worker: Worker) -> None:
        if os.getpid() == server.pid:
            # Arbiter.kill_worker found the worker gone (ESRCH) and runs this
            # hook in the master instead of child_exit.
            self._report_exit(worker.pid, worker.age, bool(worker.aborted), "worker_exit", server)
            return
        self._leave_worker(worker, sys.exc_info()[1])

    def _leave_guarded(self, worker: Worker) -> None:
        try:
            self._leave_worker(worker, None)
        except Exception as exc:
            self.dispatcher.internal_error("worker_exit", exc)

    def _leave_worker(self, worker: Worker, exc: BaseException | None) -> None:
        """The worker's side of its exit: record how it leaves, say so, and
        let the sinks finish within the bound."""
        self._live_state(live.STOPPING)
        fields = self.worker.leaving(worker, exc)
        self.emit(ev.WORKER_EXITING, "worker_exit", **fields)
        self.dispatcher.call(
            "stop_worker", abort_budget.seconds_left(self.settings.tracing_flush_seconds)
        )

    def _live_state(self, state: int) -> None:
        """This worker's state in its live area (one byte; also from the
        signal handlers of worker_int and worker_abort)."""
        area = self.requests.live
        if area is not None:
            area.set_state(state)

    # -- requests ----------------------------------------------------------

    # The request path guards itself (one frame less on every request).

    def pre_request(self, worker: Worker, req: Request) -> None:
        self.requests.pre_request(req)

    def post_request(
        self, worker: Worker, req: Request, environ: Any, resp: Response | None
    ) -> None:
        self.requests.post_request(req, environ, resp)

    def note_request_error(self, exc: BaseException | None) -> None:
        """gunicorn logged ``exc`` while handling the current request (called
        by hookkit's logger class from ``exception()``)."""
        self.requests.note_error(exc)

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
            **span_fields(scope),
        )

    # -- dirty arbiter and workers (gunicorn 25+) --------------------------

    @_guarded
    def on_dirty_starting(self, arbiter: Any) -> None:
        self.ensure_configured()
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
        self.dispatcher.call("start_worker", worker)
        self.dispatcher.refresh_request_path()
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


# Values of OTEL_METRICS_EXPORTER with which the OpenTelemetry SDK's own
# configuration (opentelemetry-instrument's, an app's) pushes OTLP metrics.
_SDK_OTLP_METRICS = frozenset({"otlp", "otlp_proto_http", "otlp_proto_grpc"})


def sdk_metrics_warning(settings: Settings, environ: Mapping[str, str]) -> str | None:
    """The ``master_starting`` warning when ``OTEL_METRICS_EXPORTER`` asks
    the OpenTelemetry SDK for OTLP metrics, or None.

    That variable stays the switch of the SDK's own metrics, per process
    (opentelemetry-instrument's, an app's), not of hookkit's: under a
    prefork server every worker then pushes its own cumulative series under
    one resource, and they collide (opentelemetry-python #3885); hookkit's
    aggregate is pushed once, by the master, with ``HOOKKIT_OTLP_METRICS``.
    Unset is not OTLP: the SDK's configuration then sets up no metrics
    exporter. opentelemetry-distro sets it to ``otlp`` in the master's
    environment before gunicorn starts, so under the distro it is read as
    set, and warned about, as it should be: the distro does export."""
    raw = environ.get("OTEL_METRICS_EXPORTER", "").strip()
    names = {name.strip().lower() for name in raw.split(",")}
    if not names & _SDK_OTLP_METRICS:
        return None
    if settings.otlp_metrics:
        fix = "set OTEL_METRICS_EXPORTER=none (HOOKKIT_OTLP_METRICS=on already pushes them)"
    else:
        fix = "set OTEL_METRICS_EXPORTER=none and HOOKKIT_OTLP_METRICS=on"
    return (
        f"OTEL_METRICS_EXPORTER={raw} turns on the OpenTelemetry SDK's own metrics in "
        "every worker, whose series collide under a prefork server "
        f"(opentelemetry-python #3885); hookkit's master pushes the server's metrics once: {fix}"
    )


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


RUNTIME = Runtime()


def _refresh_pid() -> None:
    RUNTIME.pid = RUNTIME.requests.pid = os.getpid()


os.register_at_fork(after_in_child=_refresh_pid)
