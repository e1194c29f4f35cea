"""Events: what a gunicorn hook call means, as plain values.

An event carries no gunicorn object, only pids, ages, timings, reasons and
request facts, so each sink can be tested without gunicorn and no sink can
keep a worker or request object alive.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

Level = Literal["debug", "info", "warning", "error", "critical"]


@dataclass(frozen=True, slots=True)
class Event:
    """One thing that happened in gunicorn's life.

    ``name`` is a stable snake_case name (``worker_booted``); ``hook`` the
    gunicorn hook that produced it (None for the slow-request watchdog);
    ``pid`` the process that saw it; ``fields`` its plain values.
    """

    name: str
    hook: str | None
    level: Level = "info"
    fields: Mapping[str, object] = field(default_factory=dict)
    pid: int = 0


# Stable event names, one per lifecycle event (the README lists them).
MASTER_STARTING = "master_starting"
SERVER_READY = "server_ready"
SERVER_RELOADED = "server_reloaded"
WORKERS_CHANGED = "workers_changed"
WORKER_SPAWNING = "worker_spawning"
WORKER_FORKED = "worker_forked"
WORKER_BOOTED = "worker_booted"
WORKER_INTERRUPTED = "worker_interrupted"
WORKER_ABORTED = "worker_aborted"
WORKER_EXITING = "worker_exiting"
WORKER_EXITED = "worker_exited"
MASTER_REEXECUTING = "master_reexecuting"
MASTER_EXITING = "master_exiting"
REQUEST_STARTED = "request_started"
REQUEST_FINISHED = "request_finished"
REQUEST_SLOW = "request_slow"
# A WebSocket session on an ASGI worker: from the app's websocket.accept to
# its end (not a request: no request event, span or busy time).
WEBSOCKET_OPENED = "websocket_opened"
WEBSOCKET_CLOSED = "websocket_closed"
DIRTY_ARBITER_STARTING = "dirty_arbiter_starting"
DIRTY_WORKER_FORKED = "dirty_worker_forked"
DIRTY_WORKER_BOOTED = "dirty_worker_booted"
DIRTY_WORKER_EXITED = "dirty_worker_exited"
METRICS_DIRECTORY_WORLD_WRITABLE = "metrics_directory_world_writable"
