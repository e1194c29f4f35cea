"""``/status.json``'s builder, with fakes: which fields, from where, and
the privacy rule (paths only on loopback or with basic auth)."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
from gunicorn.workers.gthread import ThreadWorker
from gunicorn.workers.sync import SyncWorker

from hookkit._core.live import LiveRequest, WorkerLive
from hookkit._core.master import RecentExit
from hookkit._core.settings import Settings
from hookkit._master_http.webconfig import WebConfig
from hookkit._sinks.status import snapshot
from hookkit._sinks.status.sink import StatusSink
from hookkit.testing import FakeArbiter, FakeConfig


@dataclass
class Tmp:
    """A worker's heartbeat file: ``last_update`` is monotonic, as gunicorn's."""

    at: float

    def last_update(self) -> float:
        return self.at


@dataclass
class Worker:
    age: int
    tmp: Tmp = field(default_factory=lambda: Tmp(time.monotonic() - 2.0))


@dataclass
class Record:
    """Stand-in for the master's ``WorkerRecord``: what the builder reads."""

    requests: int
    forked_at: float
    live: WorkerLive


@dataclass
class Listener:
    backlog: int | None

    def get_backlog(self) -> int:
        return -1 if self.backlog is None else self.backlog

    def __str__(self) -> str:
        return "127.0.0.1:8000" if self.backlog is not None else "unix:/run/app.sock"


IN_FLIGHT = {
    "method": "POST",
    "path": "/pay/9",
    "route": "/pay/{id}",
    "elapsed_seconds": 3.0,
    "trace_id": None,
}


def request(path: str, elapsed: float, route: str | None = None) -> LiveRequest:
    return LiveRequest("GET", path, route, time.time() - elapsed, elapsed, "ab" * 16)


def arbiter(workers: dict[int, Any], worker_class: type = SyncWorker) -> FakeArbiter:
    fake = FakeArbiter(
        cfg=FakeConfig(workers=len(workers), threads=4, worker_class_str="sync"),
        WORKERS=workers,
        num_workers=3,
        LISTENERS=[Listener(2), Listener(None)],
    )
    fake.worker_class = worker_class  # type: ignore[attr-defined]
    return fake


def build(paths: bool = True, **overrides: Any) -> dict[str, Any]:
    """Two live workers: slot 0 busy with two requests, slot 1 idle."""
    me = os.getpid()  # /proc readings of a process that exists
    now = time.monotonic()
    records = {
        1: Record(
            7,
            now - 30,
            WorkerLive("busy", (request("/a/1", 1.0), request("/u/42", 5.0, "/u/{id}")), 1),
        ),
        2: Record(3, now - 20, WorkerLive("idle", (), 0)),
    }
    exits = [
        RecentExit(11, 1, "max_requests", None, 0, 1.0, ()),
        RecentExit(12, 2, "killed", "SIGKILL", None, 2.0, (dict(IN_FLIGHT),)),
    ]
    kwargs: dict[str, Any] = {
        "arbiter": arbiter({me: Worker(1), 999_999_999: Worker(2)}),
        "records": records,
        "exits": exits,
        "live": lambda record: record.live,
        "slot_of": {1: 0, 2: 1}.get,
        "totals": {
            snapshot.BUSY_SAMPLE: 12.5,
            snapshot.REQUESTS_SAMPLE: 40.0,
            snapshot.RELOADS_SAMPLE: 1.0,
        },
        "paths": paths,
        "started": time.time() - 60,
    }
    kwargs.update(overrides)
    return snapshot.build(**kwargs)


def test_the_document_has_every_documented_field_and_is_json() -> None:
    """master, workers, dirty workers and recent exits, each with the
    fields the README documents; the whole is JSON as it stands."""
    document = build()
    json.dumps(document)
    assert {"master", "workers", "dirty_workers", "recent_exits"} == set(document)
    master = document["master"]
    assert {
        "pid",
        "uptime_seconds",
        "worker_class",
        "workers_live",
        "workers_desired",
        "capacity",
        "busy_seconds_total",
        "requests_total",
        "listen_backlog",
        "reloads",
        "paths_shown",
        "time",
    } == set(master)
    assert (2, 3, 2) == (master["workers_live"], master["workers_desired"], master["capacity"])
    assert (12.5, 40, 1) == (
        master["busy_seconds_total"],
        master["requests_total"],
        master["reloads"],
    )
    assert 59 <= master["uptime_seconds"] < 70
    for worker in document["workers"]:
        assert {
            "slot",
            "pid",
            "age",
            "state",
            "uptime_seconds",
            "requests_served",
            "rss_bytes",
            "cpu_seconds",
            "heartbeat_age_seconds",
            "requests",
            "requests_not_shown",
        } == set(worker)


def test_listen_backlog_is_per_listener_and_null_where_unknown() -> None:
    """A TCP listener's queue length; null for one the platform cannot
    measure (a UNIX socket: gunicorn's get_backlog answers -1)."""
    assert [
        {"listener": "127.0.0.1:8000", "backlog": 2},
        {"listener": "unix:/run/app.sock", "backlog": None},
    ] == build()["master"]["listen_backlog"]


def test_workers_by_slot_with_state_requests_and_proc_readings() -> None:
    """Each worker's slot, state and counters from its record, requests
    oldest first with method, path, route, elapsed and trace id; /proc
    readings for a live pid, null for one gone."""
    busy, idle = build()["workers"]
    assert (0, os.getpid(), 1, "busy", 7) == (
        busy["slot"],
        busy["pid"],
        busy["age"],
        busy["state"],
        busy["requests_served"],
    )
    assert ["/u/42", "/a/1"] == [r["path"] for r in busy["requests"]]
    assert {
        "method": "GET",
        "path": "/u/42",
        "route": "/u/{id}",
        "elapsed_seconds": 5.0,
        "trace_id": "ab" * 16,
    } == busy["requests"][0]
    assert 1 == busy["requests_not_shown"]
    assert busy["rss_bytes"] > 0
    assert busy["cpu_seconds"] is not None
    assert 29 <= busy["uptime_seconds"] < 40
    assert 1.9 <= busy["heartbeat_age_seconds"] < 10
    assert ("idle", [], None, None) == (
        idle["state"],
        idle["requests"],
        idle["rss_bytes"],
        idle["cpu_seconds"],
    )


def test_a_worker_without_a_record_is_booting_and_has_no_counters() -> None:
    """A worker whose record the book does not hold (just forked) shows
    as booting, without counters, never as an error."""
    (worker,) = build(arbiter=arbiter({os.getpid(): Worker(5)}), records={})["workers"]
    assert ("booting", None, None, []) == (
        worker["state"],
        worker["requests_served"],
        worker["uptime_seconds"],
        worker["requests"],
    )


def test_recent_exits_newest_first_with_signal_or_exit_code() -> None:
    """The book's exits (oldest first) are shown newest first, each with
    its signal or its exit code, whichever is known, and the requests it
    was serving when it died."""
    assert [
        {
            "pid": 12,
            "reason": "killed",
            "signal": "SIGKILL",
            "time": 2.0,
            "requests_in_flight": [IN_FLIGHT],
        },
        {
            "pid": 11,
            "reason": "max_requests",
            "exit_code": 0,
            "time": 1.0,
            "requests_in_flight": [],
        },
    ] == build()["recent_exits"]


def test_capacity_follows_the_worker_class() -> None:
    """gthread: workers x threads."""
    me = os.getpid()
    document = build(arbiter=arbiter({me: Worker(1), 999_999_999: Worker(2)}, ThreadWorker))
    assert 8 == document["master"]["capacity"]


def test_without_an_aggregate_the_totals_are_null() -> None:
    master = build(totals=None)["master"]
    assert (None, None, None) == (
        master["busy_seconds_total"],
        master["requests_total"],
        master["reloads"],
    )


def test_aggregate_totals_sums_the_samples_it_knows() -> None:
    samples = [
        (snapshot.REQUESTS_SAMPLE, 3.0),
        (snapshot.REQUESTS_SAMPLE, 4.0),
        (snapshot.BUSY_SAMPLE, 1.5),
        ("http_server_request_duration_seconds_bucket", 99.0),
    ]
    totals = snapshot.aggregate_totals(samples)
    assert (7.0, 1.5, 0.0) == (
        totals[snapshot.REQUESTS_SAMPLE],
        totals[snapshot.BUSY_SAMPLE],
        totals[snapshot.RELOADS_SAMPLE],
    )


# -- privacy ------------------------------------------------------------------


def test_without_paths_each_request_shows_its_route_or_nothing() -> None:
    """Off loopback and without basic auth, no path leaves the master:
    path is null, the route (the app's template) stays, or is null too."""
    document = build(paths=False)
    requests = document["workers"][0]["requests"]
    assert [None, None] == [r["path"] for r in requests]
    assert ["/u/{id}", None] == [r["route"] for r in requests]
    assert "/u/42" not in json.dumps(document)
    assert [{**IN_FLIGHT, "path": None}] == document["recent_exits"][0]["requests_in_flight"]
    assert "/pay/9" not in json.dumps(document)
    assert False is document["master"]["paths_shown"]


@dataclass
class FakeEndpoint:
    """What the sink reads of the master's endpoint to decide."""

    host: str
    web: WebConfig

    @property
    def address(self) -> tuple[str, int]:
        return self.host, 9191


@pytest.mark.parametrize(
    ("host", "basic_auth", "shown"),
    [
        ("127.0.0.1", False, True),
        ("127.8.9.10", False, True),
        ("::1", False, True),
        ("::ffff:127.0.0.1", False, True),
        ("localhost", False, True),
        ("0.0.0.0", False, False),
        ("::", False, False),
        ("10.1.2.3", False, False),
        ("2001:db8::1", False, False),
        ("0.0.0.0", True, True),
        ("10.1.2.3", True, True),
    ],
)
def test_paths_are_shown_on_loopback_or_with_basic_auth(
    host: str, basic_auth: bool, shown: bool
) -> None:
    """The privacy decision, per HTTP request, from the endpoint's bind and
    web config: a loopback bind (only this machine can ask) or basic auth
    configured (only known users can); anything else, wildcard binds
    included, shows routes only."""
    users = {"ops": b"$2b$04$hash"} if basic_auth else {}
    sink = StatusSink(Settings())
    sink.endpoint = FakeEndpoint(host, WebConfig(tls=None, basic_auth_users=users))  # type: ignore[assignment]
    assert shown is sink.paths_visible()


def test_without_an_endpoint_no_path_is_shown() -> None:
    assert False is StatusSink(Settings()).paths_visible()


def test_dirty_workers_in_a_list_of_their_own() -> None:
    """The dirty arbiter the master knows by pid, then its children, each
    with its role and /proc readings; none without a dirty arbiter."""
    assert [] == build()["dirty_workers"]
    fake = arbiter({})
    fake.dirty_arbiter_pid = os.getpid()  # type: ignore[attr-defined]
    dirty = build(arbiter=fake)["dirty_workers"]
    assert ("arbiter", os.getpid()) == (dirty[0]["role"], dirty[0]["pid"])
    assert dirty[0]["rss_bytes"] > 0
    assert all(entry["role"] == "worker" for entry in dirty[1:])
