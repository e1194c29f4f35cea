"""The OTLP logs sink: hookkit's events and gunicorn's error lines as
OpenTelemetry log records, each sent by the process that produced it.

``HOOKKIT_OTLP_LOGS=on``. What becomes a record: every event hookkit hands
its sinks (lifecycle, ``worker_aborted`` with the stuck stacks,
``request_slow``), the access line when ``HOOKKIT_ACCESS_LOG`` is on, and
each line of gunicorn's ``gunicorn.error`` logger (through a
``logging.Handler``, see ``handler``). How each is mapped: ``records``.
The stderr lines stay as they are: this sink adds no field to any line.

One pipeline per process (``export``: the SDK's provider, batch processor
and OTLP/HTTP exporter), whose resource names the process
(``process.pid``; in a worker also ``process.parent_pid`` and
``gunicorn.worker.age``):

- master: built in ``start_master`` (``on_starting``), from which its own
  events (``master_starting``, ``worker_exited`` with ``reason``...) go;
- worker: a forked child inherits the master's pipeline but never uses it
  (it would send the worker's records under the master's pid); it builds
  its own once the app is loaded (``start_worker``), as the tracing sink
  does, after gevent patched. What a process produces before its pipeline
  exists (gunicorn's "Booting worker" line, ``worker_forked``) waits in a
  bounded queue, keyed by pid, and goes out once it is built. A dirty
  arbiter never builds one: its lines are not sent;
- ``worker_aborted`` (in gunicorn's SIGABRT handler): emitting only appends
  to the batch processor's deque; then a flush, and the exit that follows,
  within 0.5 s together (gunicorn SIGKILLs the worker on the master's next
  loop, about a second after its SIGABRT);
- a stopping worker (``stop_worker``) and the master (``stop_master``):
  flush and shut down within ``HOOKKIT_TRACING_FLUSH_SECONDS``, the spans'
  bound. The SDK's waits do not honour their timeouts against a hanging
  collector, so each runs in a daemon thread waited for at most the bound.

A failed export is counted in ``hookkit_sink_errors_total{sink="otlp_logs"}``
and reported on stderr at most once a minute; nothing waits on the
collector in a request or in the master's loop.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Mapping
from typing import Any

from hookkit._core import abort_budget
from hookkit._core import events as ev
from hookkit._core.client_address import client_address_from_environ
from hookkit._core.events import Event
from hookkit._core.otel_env import process_distro_defaults
from hookkit._core.settings import Settings
from hookkit._core.sink import RequestFinished, Sink
from hookkit._core.trust import TrustedPeers
from hookkit._sinks.otlp_logs import records
from hookkit._sinks.otlp_logs.config import LogsConfig
from hookkit._sinks.otlp_logs.handler import GUNICORN_ERROR, GunicornErrorHandler, attach, detach
from hookkit._version import __version__

# How long a child waits for the master's inherited pipeline to shut down
# (it holds nothing of the child's: its queue was emptied at the fork).
INHERITED_SECONDS = 0.25
# Records a process keeps until its pipeline exists (then sent, in order).
PENDING_LIMIT = 256
HOOKKIT_SCOPE = "hookkit"  # the instrumentation scope of hookkit's events


def _load(settings: Settings, environ: Mapping[str, str] | None) -> LogsConfig:
    """The configuration from ``environ`` (default: this process's, whose
    opentelemetry-distro defaults are told from the user's values)."""
    if environ is None:
        return LogsConfig.load(settings, os.environ, defaulted=process_distro_defaults())
    return LogsConfig.load(settings, environ)


class OtlpLogsSink(Sink):
    """This process's records, sent as OTLP."""

    name = "otlp_logs"

    def __init__(self, settings: Settings, environ: Mapping[str, str] | None = None) -> None:
        self.config = _load(settings, environ)
        self.provider: Any = None  # this process's LoggerProvider, once built
        self._loggers: dict[str, Any] = {}  # by scope: hookkit, gunicorn.error
        self._owner = 0  # the pid whose pipeline ``provider`` is
        self._stopped = False
        self._age: int | None = None  # this worker's, after the fork
        self._base_resource: Any = None  # the OTEL_* resource, read in the master
        self._pending: deque[tuple[int, str, Any]] = deque(maxlen=PENDING_LIMIT)
        self._handler = GunicornErrorHandler(self._forward_line, self._line_failed)
        self._trusted = TrustedPeers.from_config(None)

    def configure(self, settings: Settings, environ: Mapping[str, str] | None = None) -> None:
        """A reload: the settings again (the pipeline stays)."""
        self.config = _load(settings, environ)

    # -- master ------------------------------------------------------------

    def start_master(self, server: Any) -> None:
        """Build the master's pipeline and listen to gunicorn's error log.
        The SDK is imported here, in the master before any fork, so that
        every worker shares it (copy on write)."""
        if self._owns_pipeline():
            attach(self._handler)
            return
        from hookkit._sinks.otlp_logs.export import base_resource

        proc_name = getattr(getattr(server, "cfg", None), "proc_name", None)
        self._base_resource = base_resource(proc_name or None)
        self._build({"process.pid": os.getpid()})
        attach(self._handler)

    def stop_master(self, server: Any) -> None:
        """The master exits (or a reload turned the sink off): stop listening,
        send what is buffered, within the bound."""
        detach(self._handler)
        if self._owns_pipeline():
            self.shutdown(self.config.flush_seconds)

    # -- worker ------------------------------------------------------------

    def after_fork(self, age: int) -> None:
        """A new worker: the master's pipeline is not this process's."""
        self._age = age
        self._stopped = False
        self._discard_inherited()

    def start_worker(self, worker: Any) -> None:
        """Build this worker's pipeline, once the app is loaded; a failure
        costs the worker its records, never its boot."""
        cfg = getattr(worker, "cfg", None)
        self._trusted = TrustedPeers.from_config(cfg)
        if self._owns_pipeline():
            return
        identity: dict[str, Any] = {
            "process.pid": os.getpid(),
            "process.parent_pid": getattr(worker, "ppid", None) or os.getppid(),
        }
        if self._age is not None:
            identity["gunicorn.worker.age"] = self._age
        try:
            self._build(identity)
        except Exception as exc:
            self.report_error("setting OTLP logs up", exc)
        attach(self._handler)

    def stop_worker(self, seconds: float) -> None:
        """The worker leaves: send what is buffered within ``seconds`` (for
        an aborted worker, the runtime gives what is left of the abort's
        budget, ``hookkit._core.abort_budget``)."""
        self.shutdown(seconds)

    # -- records -----------------------------------------------------------

    def handle(self, event: Event) -> None:
        """Every event becomes a record; ``worker_aborted`` is flushed at
        once, within the abort's budget."""
        name = event.name
        if name == ev.SERVER_RELOADED and self._owns_pipeline():
            attach(self._handler)  # a reload's logging configuration may drop it
        self._send(HOOKKIT_SCOPE, records.from_event(event, time.time_ns()))
        if name == ev.WORKER_ABORTED:
            # What is left of the abort's budget, shared with the other sinks.
            self.flush(abort_budget.seconds_left(self.config.flush_seconds))

    def wants(self, method: str) -> bool:
        """The access line, when it is on, where this process's pipeline is."""
        return method == "request_finished" and self.config.access_log and self._owns_pipeline()

    def request_finished(self, request: RequestFinished) -> None:
        """The access line, with the request's span ids."""
        if not self.config.access_log:
            return
        with_client = self.config.access_log_client
        client = (
            client_address_from_environ(request.environ, self._trusted) if with_client else None
        )
        self._send(
            HOOKKIT_SCOPE,
            records.make(
                ev.REQUEST_FINISHED,
                "info",
                time.time_ns(),
                records.access_attributes(request, client, with_client),
                records.span_ids_context(request.span_ids),
            ),
        )

    def _forward_line(self, line: logging.LogRecord) -> None:
        self._send(GUNICORN_ERROR, records.from_stdlib(line))

    def _line_failed(self, exc: Exception) -> None:
        self.report_error("on a gunicorn.error line", exc)

    def _export_failed(self, exc: Exception) -> None:
        self.report_error("exporting logs", exc)

    def _send(self, scope: str, record: Any) -> None:
        """Hand ``record`` to this process's pipeline; keep it for later when
        the pipeline is not built yet. Safe in a signal handler: a dict
        read, a deque append."""
        if self._stopped or self.config.disabled:
            return
        pid = os.getpid()
        logger = self._loggers.get(scope) if self._owner == pid else None
        if logger is None:
            self._pending.append((pid, scope, record))
            return
        logger.emit(record)

    # -- the pipeline ------------------------------------------------------

    def _owns_pipeline(self) -> bool:
        return self.provider is not None and self._owner == os.getpid()

    def _build(self, identity: dict[str, Any]) -> None:
        """This process's pipeline; then what waited for it."""
        from hookkit._sinks.otlp_logs.export import build_provider, otlp_exporter, process_resource

        self._discard_inherited()
        if self.config.disabled:
            return
        resource = process_resource(self._base_resource, identity)
        provider = build_provider(resource, otlp_exporter(self.config.timeout), self._export_failed)
        self._loggers = {
            HOOKKIT_SCOPE: provider.get_logger(HOOKKIT_SCOPE, __version__),
            GUNICORN_ERROR: provider.get_logger(GUNICORN_ERROR),
        }
        self.provider = provider
        self._owner = os.getpid()
        self._stopped = False
        self._drain()

    def _drain(self) -> None:
        """Send the records this process made before its pipeline existed;
        drop those an earlier process left (inherited through the fork)."""
        pid = os.getpid()
        pending = self._pending
        while pending:
            try:
                made_in, scope, record = pending.popleft()
            except IndexError:
                return
            logger = self._loggers.get(scope)
            if made_in == pid and logger is not None:
                logger.emit(record)

    def _discard_inherited(self) -> None:
        """Drop a pipeline this process inherited through a fork, without
        sending anything: its queue was emptied at the fork (the SDK's own
        fork handling), and its thread is stopped within a bound."""
        provider = self.provider
        if provider is None or self._owner == os.getpid():
            return
        self.provider = None
        self._loggers = {}
        self._owner = 0
        from hookkit._sinks.otlp_logs.export import run_bounded

        run_bounded(provider.shutdown, INHERITED_SECONDS, "hookkit-otlp-logs-inherited")

    def flush(self, seconds: float) -> bool:
        """Export what is buffered, waiting at most ``seconds``."""
        provider = self.provider
        if provider is None or self._stopped or not self._owns_pipeline():
            return True
        from hookkit._sinks.otlp_logs.export import run_bounded

        return run_bounded(provider.force_flush, seconds, "hookkit-otlp-logs-flush")

    def shutdown(self, seconds: float) -> bool:
        """Send what is buffered and shut the pipeline down, waiting at most
        ``seconds``; records made after this are dropped."""
        provider = self.provider
        if provider is None or self._stopped or not self._owns_pipeline():
            return True
        self._stopped = True
        from hookkit._sinks.otlp_logs.export import run_bounded

        return run_bounded(provider.shutdown, seconds, "hookkit-otlp-logs-shutdown")
