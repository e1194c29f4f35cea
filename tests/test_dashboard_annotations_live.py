"""The dashboards' annotations against a real Prometheus scraping a real
gunicorn running hookkit.

One scenario: a quiet start, a SIGHUP, a request past ``--timeout 1`` (the
worker is aborted), a USR2 re-exec (both masters answering scrapes for
3 s, then the old one stopped), and a
restart (the master stopped, a new one started on the same ports, its
counters starting again from 0). Then each annotation's expression, as
Grafana sends it at a given step (``$__interval`` the step,
``$__rate_interval`` as Grafana computes it for a 1 s scrape interval), runs
through Prometheus's HTTP API over the scenario, and the points it returns
are turned into marks as Grafana does (points above 0; points one step apart
joined into a band): exactly one mark per event, a single point (not a
band), in the interval between the event and its first scrape (plus a step),
and none anywhere else: none before the event, none at the other events.
"""

from __future__ import annotations

import json
import math
import os
import signal
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from hookkit._face.gunicorn_process import Gunicorn, free_port, http_get, match, wait_gone
from tests.conftest import clean_env, no_control_socket
from tests.prom import MISSING, PROMETHEUS, prometheus

pytestmark = [pytest.mark.integration, pytest.mark.skipif(not PROMETHEUS, reason=MISSING)]

DASHBOARDS = Path(__file__).parent.parent / "dashboards"
NAMES = ["hookkit-overview.json", "hookkit-workers.json"]
APP = "apps.metrics_app:app"
SCRAPE = 1  # seconds, Prometheus's scrape interval here
STEPS = (1, 3)  # query steps, in seconds: one under the rate interval, one near it
OVERLAP = 3  # seconds both masters of the USR2 run


def rate_interval(step: int) -> int:
    """Grafana's $__rate_interval: max(step + scrape interval, 4 scrape intervals)."""
    return max(step + SCRAPE, 4 * SCRAPE)


def grafana_expr(expr: str, step: int) -> str:
    """The annotation's query as Grafana sends it at ``step``."""
    values = {
        "$__rate_interval": f"{rate_interval(step)}s",
        "$__interval": f"{step}s",
        "$job": ".+",
        "$instance": ".+",
    }
    for variable, value in sorted(values.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace(variable, value)
    assert "$" not in expr, expr
    return expr


def grafana_marks(result: list[dict[str, Any]], step: int) -> list[tuple[float, float]]:
    """(start, end) of each mark Grafana draws from a range query's result:
    every point above 0, points at most a step apart joined into one (a band
    when start < end); as Grafana's Prometheus annotation support does."""
    marks: list[tuple[float, float]] = []
    for series in result:
        current: list[float] | None = None
        for at, value in series["values"]:
            if not float(value) > 0:
                continue
            if current is not None and current[1] + step >= at:
                current[1] = at
                continue
            if current is not None:
                marks.append((current[0], current[1]))
            current = [at, at]
        if current is not None:
            marks.append((current[0], current[1]))
    return sorted(marks)


def log_time(line: dict[str, Any]) -> float:
    """A hookkit log line's timestamp, in seconds since the epoch."""
    return datetime.fromisoformat(line["timestamp"].replace("Z", "+00:00")).timestamp()


def start_master(port: int, metrics_port: int, cwd: str) -> Gunicorn:
    server = Gunicorn(
        [
            "-c",
            "python:hookkit.conf",
            "-b",
            f"127.0.0.1:{port}",
            "-w",
            "2",
            "--timeout",
            "1",
            "--graceful-timeout",
            "3",
            *no_control_socket(),
            APP,
        ],
        env=clean_env(HOOKKIT_METRICS_BIND=f"127.0.0.1:{metrics_port}"),
        cwd=cwd,
    )
    server.start()
    return server


def stop_master(server: Gunicorn, pid: int) -> None:
    """SIGTERM to master ``pid``; wait until it exits."""
    os.kill(pid, signal.SIGTERM)
    server.wait_for(match(event="master_exiting", master_pid=pid), timeout=15)
    assert wait_gone(pid, 15), f"master {pid} did not exit"


def drive_scenario(first_boot: Gunicorn, port: int, metrics_port: int, cwd: str, servers: list):
    """The events, each with the window its mark must fall in: from just
    before the event to its first scrape (a scrape interval after the
    moment it is done), plus slack; a list per annotation name."""
    windows: dict[str, list[tuple[float, float]]] = {
        "Reloads": [],
        "Master starts": [],
        "Worker timeouts": [],
    }
    server = first_boot
    time.sleep(2)  # quiet: nothing to mark

    # A reload.
    server.signal(signal.SIGHUP)
    (reloaded,) = server.wait_for(match(event="server_reloaded"))
    server.wait_for(match(event="worker_exited", reason="reload"), count=2)
    windows["Reloads"].append((log_time(reloaded) - 0.5, log_time(reloaded) + SCRAPE))
    time.sleep(2)

    # A worker timeout: the request sleeps past --timeout 1.
    hung = threading.Thread(target=http_get, args=(port, "/sleep?10", 15))
    hung.start()
    server.wait_for(match(event="worker_exited", reason="timeout"), timeout=15)
    hung.join(15)
    time.sleep(2)

    # A USR2 re-exec; the old master is then stopped, as after a deploy. Both
    # serve the metrics port meanwhile: scrapes alternate between the old
    # start time and the new one (for less than the rate interval).
    old = server.pid
    before = time.time()
    server.signal(signal.SIGUSR2)
    new = server.wait_for(
        lambda line: line.get("event") == "server_ready" and line.get("master_pid") != old
    )[0]["master_pid"]
    time.sleep(OVERLAP)
    stop_master(server, old)
    # Until the old one exits, a scrape may still reach it.
    windows["Master starts"].append((before, time.time() + SCRAPE))
    time.sleep(rate_interval(max(STEPS)) + 2 * max(STEPS))

    # A restart: the master stopped, a new one started on the same ports.
    stop_master(server, new)
    time.sleep(2)  # a scrape or two fail: the series goes stale
    before = time.time()
    restarted = start_master(port, metrics_port, cwd)
    servers.append(restarted)
    restarted.wait_for(match(event="server_ready"), timeout=20)
    restarted.wait_for(match(event="worker_booted"), count=2, timeout=20)
    windows["Master starts"].append((before, time.time() + SCRAPE))
    time.sleep(4)  # a few scrapes of the new master

    # Every timeout the masters logged (a worker slow to boot under --timeout 1
    # would be one too, and its mark is as right as the scenario's).
    for each in (server, restarted):
        for line in each.events(match(event="worker_exited", reason="timeout")):
            windows["Worker timeouts"].append((log_time(line) - 0.5, log_time(line) + SCRAPE))
    return windows


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """The scenario once, with one Prometheus scraping at 1 s: (prometheus,
    start, end, the windows of each annotation's events)."""
    port, metrics_port = free_port(), free_port()
    cwd = str(tmp_path_factory.mktemp("annotations"))
    servers = [start_master(port, metrics_port, cwd)]
    try:
        servers[0].wait_for(match(event="worker_booted"), count=2, timeout=20)
        with prometheus([f"127.0.0.1:{metrics_port}"]) as prom:
            prom.wait_healthy(timeout=20)
            # History before the range: the first step's look-back sees samples.
            time.sleep(rate_interval(max(STEPS)) + max(STEPS) + 1)
            start = time.time()
            windows = drive_scenario(servers[0], port, metrics_port, cwd, servers)
            yield prom, start, time.time(), windows
    finally:
        for server in reversed(servers):
            server.stop()


def annotations(name: str) -> dict[str, str]:
    """Name to expression of the dashboard's Prometheus annotations."""
    dashboard = json.loads((DASHBOARDS / name).read_text())
    return {a["name"]: a["expr"] for a in dashboard["annotations"]["list"] if "expr" in a}


def test_the_scenario_has_each_event():
    """The annotations the scenario checks are the dashboards' (both)."""
    for name in NAMES:
        assert {"Reloads", "Master starts", "Worker timeouts"} == set(annotations(name))


@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("annotation", ["Reloads", "Master starts", "Worker timeouts"])
def test_one_mark_per_event(live, annotation, step):
    """Over the scenario's range at ``step``, the annotation's query gives
    one mark per event, a single point, in the event's window; none before
    the first event and none anywhere else (not at the other events, not at
    the restart's counter reset)."""
    prom, start, end, windows = live
    (expr,) = {annotations(name)[annotation] for name in NAMES}  # the same on both
    first, last = math.ceil(start / step) * step, math.floor(end / step) * step
    result = prom.query_range(grafana_expr(expr, step), first, last, step=f"{step}s")
    marks = grafana_marks(result, step)
    expected = sorted(windows[annotation])
    assert expected, "the scenario made no such event"
    assert all(begin >= expected[0][0] for begin, _ in marks), f"a mark before the event: {marks}"
    assert len(expected) == len(marks), f"{marks} for the events {expected}"
    for (begin, finish), (low, high) in zip(marks, expected, strict=True):
        assert begin == finish, f"a band, not a mark: {(begin, finish)}"
        # The first step at or after the first scrape that saw the event.
        assert low <= begin <= high + step + 0.5, f"mark at {begin}, event in {(low, high)}"
