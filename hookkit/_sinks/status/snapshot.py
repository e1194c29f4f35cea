"""``/status.json``: what the master knows of its workers, now, as one dict.

Built at request time in the endpoint's thread, from what the master holds
already: gunicorn's arbiter (``WORKERS``, ``num_workers``, ``LISTENERS``),
the master's book (each live worker's shared record, the last exits), each
record's live view (state and requests in flight, written by the worker into
shared memory: the master never asks a worker anything, so a stuck worker
is shown stuck, not waited for), ``/proc`` (memory, CPU) and the metrics
aggregate (totals over the master's life). Nothing here blocks on a worker.

Privacy: a request's path is personal data (it can hold ids, e-mail
addresses, tokens). The sink decides, per HTTP request, whether the reader
may see paths (``StatusSink.paths_visible``: only when the endpoint is
bound to loopback or basic auth is configured) and hands the answer here
as ``paths``; without it each request shows its route template, or nothing.

The builder takes its sources as arguments (no global read), so it is
unit-tested with ``hookkit.testing.FakeArbiter`` and plain stand-ins.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from hookkit._aggregate.collect import proc_cpu_seconds, proc_rss, worker_capacity

# Sample names in the metrics aggregate that give the master's totals.
BUSY_SAMPLE = "gunicorn_worker_busy_seconds_total"
REQUESTS_SAMPLE = "http_server_request_duration_seconds_count"
RELOADS_SAMPLE = "gunicorn_reloads_total"


# Every field of the document, with what it means (docs/reference/status.md
# is generated from it; tests/test_docs.py checks that each field ``build``
# makes is here). ``workers[].pid`` is a field of each entry of ``workers``.
FIELDS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("master.pid",), "the master's pid"),
    (("master.uptime_seconds",), "seconds since hookkit started in this master"),
    (("master.worker_class",), "gunicorn's `worker_class` (`sync`, `gthread`, ...)"),
    (("master.workers_live",), "workers alive now"),
    (("master.workers_desired",), "workers the master aims for (`workers`, changed by TTIN/TTOU)"),
    (
        ("master.capacity",),
        (
            "requests the live workers can run at once: workers x 1 (sync), x `threads` "
            "(gthread), x `worker_connections` (gevent, ASGI)"
        ),
    ),
    (
        ("master.busy_seconds_total",),
        (
            "seconds workers spent on requests since the master started "
            "(`gunicorn_worker_busy_seconds_total`); null without the metrics files"
        ),
    ),
    (
        ("master.requests_total",),
        ("requests finished since the master started; null without the metrics files"),
    ),
    (
        ("master.listen_backlog",),
        (
            'one `{"listener", "backlog"}` per listener: connections waiting in its accept '
            "queue; `backlog` is null where the platform cannot tell (UNIX sockets, "
            "anything but Linux TCP)"
        ),
    ),
    (("master.reloads",), "SIGHUP reloads since the master started"),
    (
        ("master.paths_shown",),
        ("whether request paths are shown to this reader (the privacy rule below)"),
    ),
    (("master.time",), "when the document was made, seconds since the epoch"),
    (
        ("workers[].slot",),
        ("the worker's slot (its metrics identity, reused by its successor), or null"),
    ),
    (
        (
            "workers[].pid",
            "workers[].age",
        ),
        "the worker's pid, and gunicorn's age (its fork order)",
    ),
    (
        ("workers[].state",),
        (
            "`booting` (app loading), `idle`, `busy` (a request in flight), `stopping`; "
            "`exited` for one reaped while the document was made"
        ),
    ),
    (("workers[].uptime_seconds",), "seconds since the fork; null while booting"),
    (("workers[].requests_served",), "requests the worker finished"),
    (
        (
            "workers[].rss_bytes",
            "workers[].cpu_seconds",
        ),
        ("resident memory and user+system CPU from `/proc`; null once the process is gone"),
    ),
    (
        ("workers[].heartbeat_age_seconds",),
        ("seconds since the worker last notified the master; gunicorn kills it at `timeout`"),
    ),
    (
        ("workers[].requests",),
        (
            "its requests in flight, oldest first: `method`, `path` (never the query "
            "string; null where paths are not shown), `route` (the app's template, null "
            "until matched), `elapsed_seconds`, `trace_id` (of a sampled span, else null)"
        ),
    ),
    (
        ("workers[].requests_not_shown",),
        (
            "requests in flight beyond the worker's entries (one per thread under gthread, "
            "32 under gevent and ASGI), counted only"
        ),
    ),
    (
        ("dirty_workers[]",),
        (
            "the dirty arbiter (gunicorn 25+) and its workers: `pid`, `role` (`arbiter` or "
            "`worker`), `rss_bytes`, `cpu_seconds`; empty without dirty apps"
        ),
    ),
    (
        ("recent_exits[]",),
        (
            "the last 50 worker exits, newest first: `pid`, `reason` (as in "
            "`worker_exited`), `signal` or `exit_code` (whichever is known), `time` "
            "(seconds since the epoch), `requests_in_flight` (the requests it was serving "
            "when it died, as in `requests` above)"
        ),
    ),
)


class LiveRequestLike(Protocol):
    """One request in flight, as ``hookkit._core.live.LiveRequest`` has it."""

    @property
    def method(self) -> str: ...
    @property
    def path(self) -> str | None: ...
    @property
    def route(self) -> str | None: ...
    @property
    def elapsed_seconds(self) -> float: ...
    @property
    def trace_id(self) -> str | None: ...


class WorkerLiveLike(Protocol):
    """A worker's live view, as ``hookkit._core.live.WorkerLive`` has it."""

    @property
    def state(self) -> str: ...
    @property
    def requests(self) -> Sequence[LiveRequestLike]: ...
    @property
    def overflow(self) -> int: ...


LiveView = Callable[[Any], WorkerLiveLike]


def request_entry(request: LiveRequestLike, paths: bool) -> dict[str, object]:
    """One request in flight, as ``/status.json`` shows it: its path only
    when ``paths``, else null and its route alone."""
    return {
        "method": request.method,
        "path": request.path if paths else None,
        "route": request.route,
        "elapsed_seconds": round(float(request.elapsed_seconds), 3),
        "trace_id": request.trace_id,
    }


def aggregate_totals(samples: Iterable[tuple[str, float]]) -> dict[str, float]:
    """The totals ``master`` shows, summed from the aggregate's samples
    (name, value): busy seconds, requests, reloads."""
    totals = {BUSY_SAMPLE: 0.0, REQUESTS_SAMPLE: 0.0, RELOADS_SAMPLE: 0.0}
    for name, value in samples:
        if name in totals:
            totals[name] += value
    return totals


def _listener_backlog(listener: Any) -> dict[str, object]:
    """A listener and its accept queue's length; null where the platform
    cannot tell (a UNIX socket, or anything but Linux TCP), as gunicorn's
    ``get_backlog`` answers -1 or is missing there."""
    value: object = None
    with contextlib.suppress(Exception):
        value = getattr(listener, "get_backlog", lambda: -1)()
    backlog = (
        value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None
    )
    return {"listener": str(listener), "backlog": backlog}


def _heartbeat_age(worker: Any, now: float) -> float | None:
    """Seconds since the worker last notified the master (its heartbeat
    file's time, which gunicorn sets from ``time.monotonic()``: ``now`` is
    monotonic too); None for one being reaped (its file is closed)."""
    try:
        return round(max(0.0, now - float(worker.tmp.last_update())), 3)
    except (AttributeError, OSError, ValueError):
        return None


def worker_entry(
    pid: int,
    *,
    worker: Any,
    record: Any,
    live: LiveView,
    slot: int | None,
    paths: bool,
    monotonic_now: float,
) -> dict[str, object]:
    """One live worker: identity, state, counters from its record, /proc
    readings and its requests in flight (oldest first)."""
    state = "booting"
    requests: list[dict[str, object]] = []
    overflow = 0
    requests_served: int | None = None
    uptime: float | None = None
    if record is not None:
        view = live(record)
        state = view.state
        ordered = sorted(view.requests, key=lambda r: -float(r.elapsed_seconds))
        requests = [request_entry(request, paths) for request in ordered]
        overflow = int(view.overflow)
        requests_served = int(record.requests)
        forked_at = float(record.forked_at)
        if forked_at:
            uptime = round(max(0.0, monotonic_now - forked_at), 3)
    cpu = proc_cpu_seconds(pid)
    return {
        "slot": slot,
        "pid": pid,
        "age": int(worker.age),
        "state": state,
        "uptime_seconds": uptime,
        "requests_served": requests_served,
        "rss_bytes": proc_rss(pid),
        "cpu_seconds": round(cpu, 2) if cpu is not None else None,
        "heartbeat_age_seconds": _heartbeat_age(worker, monotonic_now),
        "requests": requests,
        "requests_not_shown": overflow,
    }


def exit_entry(exit: Any, paths: bool) -> dict[str, object]:
    """One recent exit, as the master's book kept it (``RecentExit``, or a
    mapping with the same names): its signal or its exit code (whichever
    is known; absent facts are left out, as in the ``worker_exited`` line)
    and the requests it was serving when it died, under the same privacy
    rule as live requests (``paths``)."""
    get: Callable[[str], Any]
    if isinstance(exit, Mapping):
        get = exit.get
    else:

        def get(name: str) -> Any:
            return getattr(exit, name, None)

    entry: dict[str, object] = {"pid": get("pid"), "reason": get("reason")}
    for name in ("signal", "exit_code"):
        value = get(name)
        if value is not None:
            entry[name] = value
    entry["time"] = get("time")
    in_flight = []
    for request in get("requests_in_flight") or ():
        shown = dict(request)
        if not paths:
            shown["path"] = None
        in_flight.append(shown)
    entry["requests_in_flight"] = in_flight
    return entry


def _proc_children(pid: int) -> list[int]:
    """The children of ``pid`` (Linux's /proc/<pid>/task/<pid>/children);
    empty where the kernel does not tell."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as children:
            return [int(child) for child in children.read().split()]
    except (OSError, ValueError):
        return []


def dirty_entries(arbiter: Any) -> list[dict[str, object]]:
    """The dirty arbiter (gunicorn 25+) and its workers: the master knows
    the arbiter's pid only (its workers are the arbiter's children, with no
    record or live state in the master), so each shows its pid, role and
    /proc readings, nothing about requests."""
    arbiter_pid = getattr(arbiter, "dirty_arbiter_pid", 0)
    if not isinstance(arbiter_pid, int) or arbiter_pid <= 0:
        return []
    entries: list[dict[str, object]] = []
    for role, pid in [("arbiter", arbiter_pid)] + [
        ("worker", child) for child in _proc_children(arbiter_pid)
    ]:
        cpu = proc_cpu_seconds(pid)
        entries.append(
            {
                "pid": pid,
                "role": role,
                "rss_bytes": proc_rss(pid),
                "cpu_seconds": round(cpu, 2) if cpu is not None else None,
            }
        )
    return entries


def build(
    arbiter: Any,
    *,
    records: Mapping[int, Any],
    exits: Sequence[Any],
    live: LiveView,
    slot_of: Callable[[int], int | None],
    totals: Mapping[str, float] | None,
    paths: bool,
    started: float,
) -> dict[str, object]:
    """The ``/status.json`` document.

    ``records`` are the live workers' shared records by age, ``exits`` the
    book's last exits (oldest first: shown newest first), ``live`` reads a
    record's state and requests, ``slot_of`` a worker's slot by age,
    ``totals`` the aggregate's sums (``aggregate_totals``; None without
    one), ``paths`` whether paths may be shown, ``started`` the master's
    start (``time.time()``).
    """
    now, monotonic_now = time.time(), time.monotonic()
    workers = list(arbiter.WORKERS.items())  # atomic copy: the main thread changes it
    entries = [
        worker_entry(
            pid,
            worker=worker,
            record=records.get(worker.age),
            live=live,
            slot=slot_of(worker.age),
            paths=paths,
            monotonic_now=monotonic_now,
        )
        for pid, worker in workers
    ]
    entries.sort(key=lambda e: (e["slot"] is None, e["slot"], e["age"]))
    master: dict[str, object] = {
        "pid": int(arbiter.pid),
        "uptime_seconds": round(max(0.0, now - started), 3),
        "worker_class": str(arbiter.cfg.worker_class_str),
        "workers_live": len(workers),
        "workers_desired": int(arbiter.num_workers),
        "capacity": len(workers) * worker_capacity(arbiter),
        "busy_seconds_total": round(totals[BUSY_SAMPLE], 3) if totals else None,
        "requests_total": int(totals[REQUESTS_SAMPLE]) if totals else None,
        "listen_backlog": [_listener_backlog(listener) for listener in list(arbiter.LISTENERS)],
        "reloads": int(totals[RELOADS_SAMPLE]) if totals else None,
        "paths_shown": paths,
        "time": round(now, 3),
    }
    return {
        "master": master,
        "workers": entries,
        "dirty_workers": dirty_entries(arbiter),
        "recent_exits": [exit_entry(exit, paths) for exit in reversed(list(exits))],
    }
