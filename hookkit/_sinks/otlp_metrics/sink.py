"""The OTLP metrics sink: the master pushes its one aggregate as OTLP.

``HOOKKIT_OTLP_METRICS=on``. Only the master exports: ``start_master``
starts a daemon thread (threads do not survive gunicorn's fork, and a
worker never starts one), which every ``OTEL_METRIC_EXPORT_INTERVAL``
milliseconds (default 60000) reads the aggregate the Prometheus sink
publishes (``hookkit._aggregate.collect.current``: the same families
``/metrics`` serves, read under the aggregate's fork guard, so no fork
happens meanwhile), converts it (``convert``), applies the temporality
preference (``temporality``) and sends it, outside the guard, with the
official ``OTLPMetricExporter`` over HTTP, instrumentation suppressed as
the SDK's own exporters do (under ``opentelemetry-instrument`` a push would
otherwise be a CLIENT span). A failed export is counted in
``hookkit_sink_errors_total{sink="otlp_metrics"}`` and reported on stderr
at most once a minute.

- The master exits: one last export when ``master_exiting`` comes (before
  any sink's ``stop_master``: the metrics sink's removes a private
  directory), bounded by the exporter's timeout; ``stop_master`` then shuts
  the exporter down. A reload that turns the sink off: the last export in
  ``stop_master``. When an export is already running, that one is the
  last (waited for, within the timeout).
- ``hand_over`` (the USR2 re-exec child) is not overridden: the child was
  forked, so it has no export thread, and it exports nothing.
- The resource is ``Resource.create()`` (``OTEL_SERVICE_NAME``,
  ``OTEL_RESOURCE_ATTRIBUTES``) plus a ``service.instance.id`` made once per
  master process (uuid4) and kept across reloads (SIGHUP), unless
  ``OTEL_RESOURCE_ATTRIBUTES`` names one. Points start at the master's
  first start of this sink (deltas: at the last successful export).
- ``OTEL_SDK_DISABLED=true``: no thread and no exporter; ``master_starting``
  says so.

The aggregate is recorded by the Prometheus sink (its metrics, slots and
directory), so ``HOOKKIT_METRICS`` must be on (``HOOKKIT_METRICS_BIND=none``
opens no port): start-up stops with a ConfigError otherwise. gRPC is
refused (a gRPC channel in a master that forks can hang its children),
unless it is opentelemetry-distro's default, which is warned about in
``master_starting`` and HTTP used; the timeout variables are read as the
Python SDK reads them, in seconds.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, attach, detach, set_value

from hookkit._aggregate.collect import current
from hookkit._core import events as ev
from hookkit._core.events import Event
from hookkit._core.otel_env import (
    http_protobuf_only,
    otel_bool,
    positive_number,
    process_distro_defaults,
)
from hookkit._core.resets import on_reset
from hookkit._core.settings import ConfigError, Settings
from hookkit._core.sink import Fields, Sink
from hookkit._sinks.otlp_metrics.temporality import Deltas, load_preference

INTERVAL = "OTEL_METRIC_EXPORT_INTERVAL"
PROTOCOLS = ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
TIMEOUTS = ("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT")
DEFAULT_INTERVAL_MS = 60000.0
DEFAULT_TIMEOUT_SECONDS = 10.0
INSTANCE_ID = "service.instance.id"


class ExportFailed(RuntimeError):
    """The exporter said an export failed (it logs why)."""


@dataclass(frozen=True)
class ExportConfig:
    """How often and how long: from the ``OTEL_*`` variables, checked."""

    interval: float  # seconds between exports
    timeout: float  # seconds one export may take
    temporality: str  # cumulative, delta or lowmemory
    disabled: bool  # OTEL_SDK_DISABLED=true: no export at all
    # What the sink does instead of a default it cannot honour, with the
    # fix (shown in master_starting, which they make a warning).
    warnings: tuple[str, ...] = ()

    @classmethod
    def load(
        cls,
        settings: Settings,
        environ: Mapping[str, str],
        defaulted: Collection[str] = frozenset(),
    ) -> ExportConfig:
        """The configuration, or a ConfigError naming the variable.
        ``defaulted``: the names whose values are opentelemetry-distro's
        defaults (``hookkit._core.otel_env``), warned about, not refused."""
        if not settings.metrics:
            raise ConfigError(
                "HOOKKIT_OTLP_METRICS=on needs HOOKKIT_METRICS=on: the OTLP metrics are "
                "the aggregate the metrics sink records (set HOOKKIT_METRICS=on, with "
                "HOOKKIT_METRICS_BIND=none to open no /metrics port, or "
                "HOOKKIT_OTLP_METRICS=off)"
            )
        disabled = otel_bool(environ, "OTEL_SDK_DISABLED")
        warning = http_protobuf_only(environ, PROTOCOLS, "HOOKKIT_OTLP_METRICS", defaulted)
        interval_ms = positive_number(environ, (INTERVAL,), DEFAULT_INTERVAL_MS, "milliseconds")
        timeout = positive_number(environ, TIMEOUTS, DEFAULT_TIMEOUT_SECONDS, "seconds")
        return cls(
            interval=interval_ms / 1000.0,
            timeout=timeout,
            temporality=load_preference(environ),
            disabled=disabled,
            warnings=(warning,) if warning else (),
        )


# This master's identity: (pid, service.instance.id, start time in ns),
# made on its first start and kept across reloads (a reload may make the
# sink again; the pid tells a re-executed master from a reloaded one).
_master: tuple[int, str, int] | None = None


def master_identity() -> tuple[str, int]:
    """(service.instance.id, start time in ns) of this master process."""
    global _master  # noqa: PLW0603 - one identity per master process
    pid = os.getpid()
    if _master is None or _master[0] != pid:
        _master = (pid, str(uuid.uuid4()), time.time_ns())
    return _master[1], _master[2]


@on_reset
def _forget_master() -> None:
    """hookkit.testing.reset(): a new identity on the next start."""
    global _master  # noqa: PLW0603
    _master = None


def master_resource(instance_id: str) -> Any:
    """``Resource.create()`` (the ``OTEL_*`` resource variables) with this
    master's ``service.instance.id`` unless they name one."""
    from opentelemetry.sdk.resources import OTELResourceDetector, Resource

    detected = Resource.create()
    # Recent SDKs detect a service.instance.id of their own, per process:
    # this master's wins over it, one the user set wins over this master's.
    if INSTANCE_ID in OTELResourceDetector().detect().attributes:
        return detected
    return detected.merge(Resource({INSTANCE_ID: instance_id}))


class OtlpMetricsSink(Sink):
    """The master's aggregate, pushed as OTLP from a thread of its own."""

    name = "otlp_metrics"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # A bad variable: ConfigError.
        self.config = ExportConfig.load(settings, os.environ, process_distro_defaults())
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()  # one export at a time
        self._closed = False  # the last export was made (or given up)
        self._exporter: Any = None
        self._convert: Any = None  # convert.convert, imported in start_master
        self._success: Any = None  # MetricExportResult.SUCCESS
        self._resource: Any = None
        self._deltas: Deltas | None = None
        self._start_ns = 0
        self._master_pid = 0
        self._skipped_reported = False
        self.exports = 0  # successful exports in this process

    def configure(self, settings: Settings) -> None:
        """A reload: the settings again (the exporter and thread stay)."""
        ExportConfig.load(settings, os.environ, process_distro_defaults())
        self.settings = settings

    # -- lifecycle ---------------------------------------------------------

    def start_master(self, server: Any) -> Fields | None:
        """Master: make the exporter and start the export thread."""
        if self._thread is not None:
            return None  # started in this master; a reload keeps it
        config = self.config = ExportConfig.load(
            self.settings, os.environ, process_distro_defaults()
        )
        if config.disabled:
            return {"otlp_metrics": "off: OTEL_SDK_DISABLED=true"}
        # The SDK and its exporter only now, and only in the master; all
        # imported here, in the main thread, never first in the export
        # thread (a fork while that thread held an import lock could leave
        # the lock held in the child).
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.sdk.metrics.export import MetricExportResult

        from hookkit._sinks.otlp_metrics.convert import convert

        self._convert = convert
        self._success = MetricExportResult.SUCCESS
        instance_id, self._start_ns = master_identity()
        self._resource = master_resource(instance_id)
        self._deltas = Deltas(config.temporality, self._start_ns)
        self._exporter = OTLPMetricExporter(timeout=config.timeout)
        self._master_pid = os.getpid()
        self._closed = False
        # A stop event of each thread's own: a thread an earlier stop gave
        # up waiting for never runs on beside this one.
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(self._stop,), name="hookkit-otlp-metrics", daemon=True
        )
        self._thread.start()
        described: dict[str, object] = {
            "interval_seconds": config.interval,
            "temporality": config.temporality,
        }
        if config.warnings:
            described["warnings"] = list(config.warnings)
        return {"otlp_metrics": described}

    def after_fork(self, age: int) -> None:
        """Worker: the master's exporter is not this process's (no thread
        came through the fork)."""
        self._forget()

    def handle(self, event: Event) -> None:
        """``master_exiting``: the last export, now. Every sink's
        ``stop_master`` comes after this event, the metrics sink's among
        them, which removes a private directory the aggregate is read from."""
        if event.name == ev.MASTER_EXITING and os.getpid() == self._master_pid:
            self._last_export("master_exiting")

    def stop_master(self, server: Any) -> None:
        """Master exits (or a reload turned the sink off): a last export
        within the timeout unless ``master_exiting`` made it, then the
        exporter shuts down."""
        thread, exporter = self._thread, self._exporter
        if thread is None or exporter is None or os.getpid() != self._master_pid:
            return
        self._last_export("stop_master")
        thread.join(0.1)
        try:
            exporter.shutdown(timeout_millis=self.config.timeout * 1000)
        except Exception as exc:
            self.report_error("stop_master", exc)
        self._forget()

    def _last_export(self, where: str) -> None:
        """Stop the thread; one last export, within the timeout. When an
        export is already running, that one is the last (waited for)."""
        thread = self._thread
        if thread is None or self._closed:
            return
        self._stop.set()
        if self._lock.acquire(blocking=False):
            try:
                self._export_locked(where)
            finally:
                self._closed = True
                self._lock.release()
        else:
            thread.join(self.config.timeout)
            self._closed = True

    def _forget(self) -> None:
        self._thread = None
        self._exporter = None

    # -- the export thread -------------------------------------------------

    def _run(self, stop: threading.Event) -> None:
        """Export every interval until ``stop`` is set."""
        while not stop.wait(self.config.interval):
            with self._lock:
                if stop.is_set() or self._closed:
                    return
                self._export_locked("export")

    def export_now(self) -> bool:
        """One export now (the thread's work; for tests). True on success."""
        with self._lock:
            return self._export_locked("export")

    def _export_locked(self, where: str) -> bool:
        """Collect, convert and send the aggregate; errors are this sink's."""
        exporter, deltas = self._exporter, self._deltas
        aggregate = current()
        if exporter is None or aggregate is None or deltas is None:
            return False  # not started here, or the metrics sink did not start
        try:
            now = time.time_ns()
            # Read under the fork guard, sent outside it: a fork never
            # waits on the network.
            with aggregate.fork_guard.collecting():
                families = list(aggregate.collect())
            conversion = self._convert(families, self._resource, self._start_ns, now)
            if conversion.skipped and not self._skipped_reported:
                self._skipped_reported = True
                self.report_error(
                    where,
                    ValueError(
                        "left out of the OTLP metrics (no OTLP form): "
                        + ", ".join(conversion.skipped)
                    ),
                )
            # As the SDK's own exporters do: the HTTP call itself is not
            # instrumented (under opentelemetry-instrument, the requests
            # instrumentation would make a CLIENT span of every push).
            token = attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
            try:
                result = exporter.export(deltas.apply(conversion.data, now))
            finally:
                detach(token)
        except Exception as exc:
            self.report_error(where, exc)
            return False
        if result is not self._success:
            self.report_error(
                where, ExportFailed(f"the OTLP metrics export failed ({result.name})")
            )
            return False
        deltas.commit()
        self.exports += 1
        return True
