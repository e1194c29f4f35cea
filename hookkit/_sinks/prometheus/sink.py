"""The Prometheus sink: hookkit's metrics across gunicorn's processes.

In the master (``start_master``): choose the multiprocess directory, make
prometheus_client multiprocess with slot identities, create the metrics and
serve ``/metrics`` from the master's HTTP server. Per worker: a slot in
``before_fork``, the slot's identity in ``after_fork``; when the worker is
gone its live gauges are dropped and the slot freed. ``hand_over`` gives the
endpoint and directory to the re-executed master; ``stop_master`` closes the
endpoint and removes a private directory unless a re-executed master still
uses it.

The multiprocess aggregate (``hookkit._aggregate``) and the HTTP server
(``hookkit._master_http``) are shared infrastructure: this sink wires them
to Prometheus's exposition format.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector

from hookkit._aggregate.collect import Aggregate, FileCollector, MasterCollector, publish
from hookkit._aggregate.directory import (
    ENV_DIR,
    ENV_PRIVATE,
    MetricsDir,
    Slots,
    master_identity,
    set_identity,
    slot_identity,
    use_slot_identities,
)
from hookkit._aggregate.exemplars import (
    ALWAYS_OFF,
    ExemplarWriter,
    exemplar_filter,
    path_for,
)
from hookkit._aggregate.exemplars import clear as clear_exemplars
from hookkit._aggregate.in_place import HistogramWriter, value_writer
from hookkit._core import events as ev
from hookkit._core.events import Event
from hookkit._core.http import RouteLimit, method_label, scheme_label
from hookkit._core.settings import Settings, split_host_port
from hookkit._core.sink import Fields, RequestFinished, RequestStarted, Sink
from hookkit._core.worker import runs_threads
from hookkit._master_http.server import MetricsEndpoint, publish_endpoint
from hookkit._master_http.webconfig import load_web_config
from hookkit._sinks.prometheus.metrics import Metrics
from hookkit._version import __version__


class PrometheusSink(Sink):
    """The metrics of this process (master or worker)."""

    name = "metrics"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics: Metrics | None = None
        self.directory: MetricsDir | None = None
        self.endpoint: MetricsEndpoint | None = None
        self.files: FileCollector | None = None
        self.slots = Slots(self._slot_freed)
        self.master_pid = 0
        self._pending_slot: dict[int, int] = {}  # worker age -> slot, until post_fork
        self._a_worker = False
        self.routes = RouteLimit(settings.max_routes)
        # Labelled children by label values: labels() validates and locks on
        # every call, and every request would pay for it. The caches are
        # bounded by the label values' bounds (methods, statuses, routes).
        # They hold what a request writes: the child's value for a counter
        # or gauge, a HistogramWriter for a histogram, written in place
        # unless the worker runs requests on several threads (start_worker;
        # hookkit._aggregate.in_place says why).
        self._write_in_place = False
        self._busy: Any = None  # the busy counter's value, once a worker
        self._active: dict[str, Any] = {}
        self._durations: dict[tuple[str, str, str, str, str], Any] = {}
        self._request_bodies: dict[str, Any] = {}
        self._response_bodies: dict[str, Any] = {}
        self._queue_durations: dict[str, Any] = {}
        self._queue_errors: dict[str, Any] = {}  # by reason (queue_time.REASONS)
        # Exemplars of the request histogram: OTEL_METRICS_EXEMPLAR_FILTER,
        # and this worker's slot file (workers only; the master reads).
        self._exemplar_filter = ALWAYS_OFF
        self._exemplars: ExemplarWriter | None = None

    def configure(self, settings: Settings) -> None:
        """Use ``settings`` after a reload (the endpoint stays where it is)."""
        self.settings = settings

    # -- lifecycle -------------------------------------------------------

    def start_master(self, server: Any) -> None:
        """Set everything up in the master, before the first fork. A bad
        directory, web config or a port in use stops start-up (ConfigError)."""
        if self.metrics is not None:
            return  # started once per master; a reload keeps it
        settings = self.settings
        self.master_pid = os.getpid()
        reexec = "GUNICORN_PID" in os.environ
        self._exemplar_filter = exemplar_filter(os.environ)  # ConfigError: stop
        web = load_web_config(settings.metrics_web_config)
        self.directory = MetricsDir.open(os.environ, reexec=reexec)
        if not reexec:
            clear_exemplars(self.directory.path)  # an earlier master's, as its .db files
        # A re-executed master (USR2) starts from gunicorn's env_orig.
        server.cfg.env_orig[ENV_DIR] = self.directory.path
        if self.directory.private:
            server.cfg.env_orig[ENV_PRIVATE] = self.directory.path
        set_identity(master_identity(self.master_pid))
        use_slot_identities()
        self.metrics = Metrics(timeout=float(server.cfg.timeout or 0))
        self.metrics.start_series(())
        import gunicorn

        self.files = FileCollector(self.directory.path)
        aggregate = Aggregate(
            self.files,
            MasterCollector(
                server,
                self.slot_of,
                self.files,
                {
                    "gunicorn_version": gunicorn.__version__,
                    "hookkit_version": __version__,
                    "worker_class": str(server.cfg.worker_class_str),
                },
            ),
        )
        registry = CollectorRegistry(auto_describe=False)
        registry.register(aggregate)
        # Other backends (OTLP metrics) read the same aggregate.
        publish(aggregate)
        # The master's own process_* and python_info, as every Python
        # exporter has them (the standard dashboards'). Read at scrape time
        # in the endpoint's thread: /proc/self is the process, so CPU counts
        # all its threads. Only this registry has them: a worker serves
        # nothing, and prometheus_client's default REGISTRY is never served.
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        if settings.metrics_bind is not None:  # none: the aggregate, for OTLP, and no port
            self.endpoint = MetricsEndpoint(registry, web, aggregate.fork_guard)
            try:
                self.endpoint.listen(
                    split_host_port(settings.metrics_bind), "HOOKKIT_METRICS_BIND", os.environ
                )
            except BaseException:
                # Start-up stops here (a port in use): no master will remove it later.
                self.directory.remove()
                raise
            self.endpoint.start()
            publish_endpoint(self.endpoint)  # other backends add routes to it
        if not self.directory.private and self.directory.world_writable:
            self.emit_event(
                ev.METRICS_DIRECTORY_WORLD_WRITABLE,
                "warning",
                "on_starting",
                path=self.directory.path,
                note="any user of this machine can create files in the multiprocess "
                "directory, and so plant files that the metrics are read from or written "
                "through; fine in a container's own emptyDir, otherwise give it mode 0700",
            )

    def server_ready(self, server: Any) -> Fields:
        """Where /metrics is served and the directory, for ``server_ready``."""
        return {
            "metrics_endpoint": self.url(),
            "metrics_directory": self.directory.path if self.directory else None,
        }

    def url(self) -> str | None:
        """Where /metrics is served, once it is."""
        if self.endpoint is None:
            return None
        host, port = self.endpoint.address
        scheme = "https" if self.endpoint.web.tls is not None else "http"
        host = f"[{host}]" if ":" in host else host
        return f"{scheme}://{host}:{port}/metrics"

    def slot_of(self, age: int) -> int | None:
        """The slot of the live worker of ``age``."""
        return self.slots.by_age.get(age)

    def before_fork(self, age: int) -> None:
        """Master: the next worker's slot."""
        if self.directory is not None:
            self._pending_slot[age] = self.slots.take(age)

    def after_fork(self, age: int) -> None:
        """Worker: write metrics under the slot's identity; drop the
        master's socket copy."""
        self._a_worker = True
        if self.endpoint is not None:
            self.endpoint.close_in_child()
            self.endpoint = None
        slot = self._pending_slot.pop(age, None)
        self._pending_slot.clear()
        if slot is not None:
            set_identity(slot_identity(self.master_pid, slot))
            if self._exemplar_filter != ALWAYS_OFF and self.metrics and self.directory:
                # The slot's file, reused from its predecessor like the .db files.
                histogram = self.metrics.request_duration
                self._exemplars = ExemplarWriter(
                    path_for(self.directory.path, slot_identity(self.master_pid, slot)),
                    histogram._labelnames,
                    histogram._upper_bounds,
                    mode=self._exemplar_filter,
                )

    def start_worker(self, worker: Any) -> None:
        """A dirty worker (no ``after_fork`` ran in it) writes files of its
        own. The request path writes in place unless requests run on several
        threads at once (gthread with ``threads`` above 1)."""
        if not self._a_worker:
            self._own_process("d")
        self._write_in_place = self.directory is not None and not runs_threads(worker)
        if self.metrics is not None:
            self._busy = value_writer(self.metrics.busy, self._write_in_place)

    def _own_process(self, kind: str) -> None:
        """A process forked from the master that is not a gunicorn worker (the
        dirty arbiter and its workers): metrics it writes (an app's own, a
        sink error) go to files of its own, never into the master's."""
        if self.directory is not None:
            set_identity(f"{kind}{os.getpid()}")
        if self.endpoint is not None and os.getpid() != self.master_pid:
            self.endpoint.close_in_child()
            self.endpoint = None

    def worker_gone(self, age: int) -> None:
        """Master: a worker exited and was reaped (or vanished)."""
        self._pending_slot.pop(age, None)
        self.slots.free(age)

    def _slot_freed(self, slot: int) -> None:
        if self.directory is not None:
            self.directory.mark_dead(slot_identity(self.master_pid, slot))

    def hand_over(self, server: Any) -> None:
        """USR2 child, just before exec: hand the endpoint over."""
        if self.endpoint is not None:
            self.endpoint.hand_over(server.cfg.env_orig)

    def stop_master(self, server: Any) -> None:
        """Master exits: stop serving; a private directory goes unless a
        re-executed master (USR2) is still using it."""
        if self.endpoint is not None:
            self.endpoint.close()
        if self.directory is None:
            return
        # After a USR2 both masters share the directory: it stays while the
        # re-executed child runs, or while the old master this one came from
        # is still its parent (gunicorn's own test in maybe_promote_master; a
        # dead parent's children are re-parented at once, even while it is
        # a zombie).
        successor_alive = bool(server.reexec_pid)
        predecessor_alive = bool(server.master_pid) and server.master_pid == os.getppid()
        if not successor_alive and not predecessor_alive:
            self.directory.remove()

    def count_errors(self, sink: str, count: int) -> None:
        """``hookkit_sink_errors_total{sink}``; 0 creates the series."""
        if self.metrics is not None:
            self.metrics.sink_errors.labels(sink).inc(count)

    # -- events ----------------------------------------------------------

    def handle(self, event: Event) -> None:
        """Update the metrics ``event`` concerns."""
        m = self.metrics
        if m is None:
            return
        name, fields = event.name, event.fields
        if name == ev.WORKER_SPAWNING:
            m.spawns.inc()
        elif name == ev.WORKER_BOOTED:
            boot = fields.get("boot_duration_seconds")
            if isinstance(boot, (int, float)):
                m.boot_duration.observe(boot)
        elif name == ev.WORKER_EXITED:
            m.exits.labels(str(fields.get("reason", "unknown"))).inc()
            uptime = fields.get("uptime_seconds")
            if isinstance(uptime, (int, float)):
                m.lifetime.observe(uptime)
        elif name == ev.SERVER_RELOADED:
            m.reloads.inc()
        elif name == ev.DIRTY_ARBITER_STARTING:
            self._own_process("d")
        elif name == ev.WEBSOCKET_OPENED:
            m.active_websockets.inc()
        elif name == ev.WEBSOCKET_CLOSED:
            # Both events of a session come from one ASGI worker process,
            # handled inline: the gauge goes down in the file it went up in.
            m.active_websockets.dec()
            duration = fields.get("duration_seconds")
            if isinstance(duration, (int, float)):
                route = self.routes.label(fields.get("route"))
                m.websocket_duration.labels(route).observe(duration)

    # -- requests --------------------------------------------------------

    def wants(self, method: str) -> bool:
        """Requests are counted where the master made the metrics."""
        return self.metrics is not None

    def request_started(self, request: RequestStarted) -> None:
        """A request began: one more in flight."""
        if self.metrics is None:
            return
        label = method_label(request.method)
        active = self._active.get(label)
        if active is None:
            active = self._active[label] = self._value(self.metrics.active_requests, label)
        active.inc(1.0)

    def request_excluded(self, request: RequestFinished) -> None:
        """A probe the excluded URLs keep out still kept its worker busy."""
        if self.metrics is not None:
            self._busy_writer().inc(request.duration)

    def _busy_writer(self) -> Any:
        """The busy counter's value (a worker that never ran start_worker,
        as in hookkit.testing, gets prometheus_client's)."""
        if self._busy is None:
            assert self.metrics is not None
            self._busy = value_writer(self.metrics.busy, write_in_place=False)
        return self._busy

    def _value(self, metric: Any, *labels: str) -> Any:
        """What a request writes for one label set of a counter or gauge."""
        return value_writer(metric.labels(*labels), self._write_in_place)

    def _histogram(self, metric: Any, *labels: str) -> HistogramWriter:
        """What a request writes for one label set of a histogram."""
        return HistogramWriter(metric.labels(*labels), self._write_in_place)

    def request_finished(self, request: RequestFinished) -> None:  # noqa: PLR0912 - hot path, inline
        """A request ended: one fewer in flight, its duration, sizes and
        the time it queued behind the proxy."""
        m = self.metrics
        if m is None:
            return
        # One unpacking: cheaper than eight attribute reads, on every request.
        _, method, _, route, status, duration, request_bytes, response_bytes, error_type = request[
            :9
        ]
        label = method_label(method)
        active = self._active.get(label)
        if active is None:
            active = self._active[label] = self._value(m.active_requests, label)
        active.inc(-1.0)
        key = (
            label,
            str(status) if status is not None else "",
            self.routes.label(route),
            error_type or "",
            scheme_label(request.scheme),
        )
        child = self._durations.get(key)
        if child is None:
            child = self._durations[key] = self._histogram(m.request_duration, *key)
        child.observe(duration)
        busy = self._busy
        (busy if busy is not None else self._busy_writer()).inc(duration)
        if request_bytes is not None:
            body = self._request_bodies.get(label)
            if body is None:
                body = self._request_bodies[label] = self._histogram(m.request_body, label)
            body.observe(request_bytes)
        if response_bytes is not None:
            body = self._response_bodies.get(label)
            if body is None:
                body = self._response_bodies[label] = self._histogram(m.response_body, label)
            body.observe(response_bytes)
        # The time it queued behind the proxy, or why its stamp was not
        # used; without a stamp, two cheap checks.
        waited = request.queue_seconds
        if waited is not None:
            queued = self._queue_durations.get(label)
            if queued is None:
                queued = self._queue_durations[label] = self._histogram(m.queue_duration, label)
            queued.observe(waited)
        else:
            reason = request.queue_error
            if reason is not None:
                errors = self._queue_errors.get(reason)
                if errors is None:
                    errors = self._queue_errors[reason] = self._value(m.queue_header_errors, reason)
                errors.inc(1.0)
        # Last, so nothing above is lost if it fails: the span's ids as the
        # exemplar of the duration's bucket (under trace_based, if sampled).
        exemplars = self._exemplars
        if exemplars is not None and (ids := request.span_ids) is not None:
            exemplars.record(key, duration, ids)
