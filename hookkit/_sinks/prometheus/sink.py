"""hookkit's Prometheus support across gunicorn's processes.

In the master (``on_starting``): choose the multiprocess directory, make
prometheus_client multiprocess with slot identities, create the metrics and
start ``/metrics``. Per worker: a slot in ``pre_fork``, the slot's identity
in ``post_fork``; when the worker is gone its live gauges are dropped and
the slot freed. ``pre_exec`` hands the endpoint and directory to the new
master; ``on_exit`` closes the endpoint and removes a private directory
unless a re-executed master still uses it.
"""

from __future__ import annotations

import os
from typing import Any

import gunicorn
from prometheus_client import CollectorRegistry

from hookkit._aggregate.collect import FileCollector, MasterCollector
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
from hookkit._core.settings import Settings, split_host_port
from hookkit._master_http.server import MetricsEndpoint
from hookkit._master_http.webconfig import load_web_config
from hookkit._sinks.prometheus.metrics import Metrics, MetricsSink
from hookkit._version import __version__


class Prometheus:
    """The metrics state of this process (master or worker)."""

    def __init__(self) -> None:
        self.sink: MetricsSink | None = None
        self.metrics: Metrics | None = None
        self.directory: MetricsDir | None = None
        self.endpoint: MetricsEndpoint | None = None
        self.files: FileCollector | None = None
        self.slots = Slots(self._slot_freed)
        self.master_pid = 0
        self._pending_slot: dict[int, int] = {}  # worker age -> slot, until post_fork

    def start_master(self, server: Any, settings: Settings, sink_names: list[str]) -> MetricsSink:
        """Set everything up in the master, before the first fork. A bad
        directory or a port in use stops start-up (SystemExit / ConfigError)."""
        self.master_pid = os.getpid()
        reexec = "GUNICORN_PID" in os.environ
        web = load_web_config(settings.metrics_web_config)
        self.directory = MetricsDir.open(os.environ, reexec=reexec)
        # A re-executed master (USR2) starts from gunicorn's env_orig.
        server.cfg.env_orig[ENV_DIR] = self.directory.path
        if self.directory.private:
            server.cfg.env_orig[ENV_PRIVATE] = self.directory.path
        set_identity(master_identity(self.master_pid))
        use_slot_identities()
        self.metrics = Metrics(timeout=float(server.cfg.timeout or 0))
        self.metrics.start_series(sink_names)
        self.sink = MetricsSink(self.metrics, settings.max_routes)

        self.files = FileCollector(self.directory.path)
        registry = CollectorRegistry(auto_describe=False)
        registry.register(self.files)
        registry.register(
            MasterCollector(
                server,
                self.slot_of,
                self.files,
                {
                    "gunicorn_version": gunicorn.__version__,
                    "hookkit_version": __version__,
                    "worker_class": str(server.cfg.worker_class_str),
                },
            )
        )
        self.endpoint = MetricsEndpoint(registry, web)
        try:
            self.endpoint.listen(
                split_host_port(settings.metrics_bind), "HOOKKIT_METRICS_BIND", os.environ
            )
        except BaseException:
            # Start-up stops here (a port in use): no master will remove it later.
            self.directory.remove()
            raise
        self.endpoint.start()
        return self.sink

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

    def pre_fork(self, age: int) -> None:
        """Master: the next worker's slot."""
        if self.directory is not None:
            self._pending_slot[age] = self.slots.take(age)

    def post_fork(self, age: int) -> None:
        """Worker: write metrics under the slot's identity; drop the
        master's socket copy."""
        if self.endpoint is not None:
            self.endpoint.close_in_child()
            self.endpoint = None
        slot = self._pending_slot.pop(age, None)
        self._pending_slot.clear()
        if slot is not None:
            set_identity(slot_identity(self.master_pid, slot))

    def own_process(self, kind: str) -> None:
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

    def pre_exec(self, server: Any) -> None:
        """USR2 child, just before exec: hand the endpoint over."""
        if self.endpoint is not None:
            self.endpoint.hand_over(server.cfg.env_orig)

    def exit_master(self, server: Any) -> None:
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
