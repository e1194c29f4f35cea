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


# Stable event names, one per lifecycle event (EVENTS, below, documents them).
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


@dataclass(frozen=True)
class EventSpec:
    """One event as the documentation lists it (docs/reference/events.md is
    generated from ``EVENTS``): the hook that produces it (None when no hook
    does, ``source`` then says what), the process that logs it, its level,
    and its fields in Markdown."""

    name: str
    hook: str | None
    process: str
    level: str  # a Level, or "by reason" (worker_exited: see exits.REASONS)
    fields: str
    source: str = ""  # more about where it comes from
    level_note: str = ""  # when the level differs


# Every event above, once: its hook, process, level and fields. A new event
# without a row here fails tests/test_docs.py.
EVENTS: tuple[EventSpec, ...] = (
    EventSpec(
        MASTER_STARTING,
        "on_starting",
        "master",
        "info",
        (
            "`master_pid`, `gunicorn_version`, `hookkit_version`, `gunicorn_logger`, "
            "`tracing` (what tracing will do: `exporters` and `endpoint`, or why "
            "nothing is exported, or `disabled_by`; `warnings`: an "
            "opentelemetry-distro default hookkit cannot honour, what it does instead"
            " and the fix), `warnings` (`OTEL_METRICS_EXPORTER` asking the SDK for "
            "OTLP metrics, and the fix); a warning line when either is there (see "
            '"Running under `opentelemetry-instrument`")'
        ),
        level_note="warning with a foreign logger class",
    ),
    EventSpec(
        SERVER_READY,
        "when_ready",
        "master",
        "info",
        (
            "`master_pid`, `listeners`, `worker_class`, `workers`, `threads`, "
            "`timeout`, `gunicorn_version`, `hookkit_version`, `sinks` (the sinks in use), "
            "`metrics_endpoint`, "
            "`metrics_directory` (null with metrics off), `request_hooks` (whether "
            "the worker class calls the request hooks, or hookkit's ASGI middleware "
            "makes the request events)"
        ),
    ),
    EventSpec(
        SERVER_RELOADED, "on_reload", "master", "info", "`workers` (the reloaded config's count)"
    ),
    EventSpec(
        WORKERS_CHANGED,
        "nworkers_changed",
        "master",
        "info",
        "`new_value`, `old_value` (null at start)",
    ),
    EventSpec(WORKER_SPAWNING, "pre_fork", "master", "debug", "`worker_age`"),
    EventSpec(WORKER_FORKED, "post_fork", "worker", "info", "`master_pid`"),
    EventSpec(
        WORKER_BOOTED,
        "post_worker_init",
        "worker",
        "info",
        (
            "`worker_class`, `boot_duration_seconds` (fork to app loaded), "
            "`request_events` (`hooks`, `asgi` or `none`), `tracing` (`hookkit`: "
            "hookkit's provider; `app`: the app's own; `none`: nothing to export to; "
            "`off`; `error`: setting tracing up failed, see the stderr line)"
        ),
    ),
    EventSpec(WORKER_INTERRUPTED, "worker_int", "worker", "warning", ""),
    EventSpec(
        WORKER_ABORTED,
        "worker_abort",
        "worker",
        "error",
        (
            "`timeout`, `threads` (thread name to stack), `requests_in_flight` "
            "(`method`, `path`, `elapsed_seconds`, `stack`: the stuck stack of each "
            "request)"
        ),
    ),
    EventSpec(
        WORKER_EXITING,
        "worker_exit",
        "worker",
        "info",
        "`exit_code`, `requests_served`, `uptime_seconds`",
    ),
    EventSpec(
        WORKER_EXITED,
        "child_exit",
        "master",
        "by reason",
        (
            "`worker_pid`, `worker_age`, `reason`, `exit_code` or `signal` and "
            "`signal_sent_by_master` when known, `uptime_seconds`, `requests_served`,"
            " `requests_in_flight` when the worker died serving requests (`method`, "
            "`path` without the query string, `route` or null, `elapsed_seconds` to "
            "the exit, `trace_id` or null)"
        ),
        source="or `worker_exit`, `on_exit`, see below",
    ),
    EventSpec(
        MASTER_REEXECUTING, "pre_exec", "re-exec child", "info", "`master_pid` (the old master)"
    ),
    EventSpec(MASTER_EXITING, "on_exit", "master", "info", "`master_pid`"),
    EventSpec(
        METRICS_DIRECTORY_WORLD_WRITABLE,
        "on_starting",
        "master",
        "warning",
        (
            "`path`, `note`: the multiprocess directory you named can be written by "
            "any user (fine in a container's own `emptyDir`)"
        ),
    ),
    EventSpec(REQUEST_STARTED, "pre_request", "worker", "debug", "`method`, `path`"),
    EventSpec(
        REQUEST_FINISHED,
        "post_request",
        "worker",
        "info",
        (
            "`method`, `path`, `status`, `duration_seconds`, `response_bytes`, "
            "`request_bytes` (from Content-Length, or null), `route` (the template, or null), "
            '`error_type`, `queue_seconds` (the wait behind the proxy, see "Queue '
            'time"; null without its header), `client_address` (only with '
            '`HOOKKIT_ACCESS_LOG_CLIENT`, see "Behind a proxy")'
        ),
        level_note="only with `HOOKKIT_ACCESS_LOG`",
    ),
    EventSpec(
        REQUEST_SLOW,
        None,
        "worker",
        "warning",
        "`method`, `path`, `elapsed_seconds`, `threshold_seconds`, `stack`",
        source="the watchdog",
    ),
    EventSpec(
        WEBSOCKET_OPENED,
        None,
        "worker",
        "debug",
        "`route`",
        source="ASGI workers: the app accepted a WebSocket",
    ),
    EventSpec(
        WEBSOCKET_CLOSED,
        None,
        "worker",
        "debug",
        "`route`, `duration_seconds` (from the accept)",
        source=(
            "the session ended: the app closed, the client disconnected, or the app "
            "returned or raised"
        ),
    ),
    EventSpec(
        DIRTY_ARBITER_STARTING, "on_dirty_starting", "dirty arbiter", "info", "`dirty_arbiter_pid`"
    ),
    EventSpec(
        DIRTY_WORKER_FORKED,
        "dirty_post_fork",
        "dirty arbiter",
        "info",
        "`dirty_worker_pid`, `dirty_worker_age`",
    ),
    EventSpec(
        DIRTY_WORKER_BOOTED,
        "dirty_worker_init",
        "dirty worker",
        "info",
        "`dirty_worker_pid`, `dirty_worker_age`",
    ),
    EventSpec(
        DIRTY_WORKER_EXITED,
        "dirty_worker_exit",
        "dirty arbiter",
        "info",
        "`dirty_worker_pid`, `dirty_worker_age`",
    ),
)
