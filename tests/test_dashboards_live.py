"""The dashboards and alert rules against a real Prometheus scraping a real
gunicorn running hookkit.

One scenario (normal load, 4xx and 5xx, routes, a slow request, queue-time
headers, a request past the timeout, a SIGHUP, TTIN), then every panel's queries run through
Prometheus's HTTP API with the template variables substituted as Grafana
would, each required to return data; and the worker-timeout alert fires.
"""

from __future__ import annotations

import json
import re
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from hookkit._face.gunicorn_process import Gunicorn, free_port, http_get, match
from tests.conftest import clean_env, no_control_socket
from tests.prom import MISSING, PROMETHEUS, PROMTOOL, prometheus

DASHBOARDS = Path(__file__).parent.parent / "dashboards"
RULES = DASHBOARDS / "hookkit-alerts.rules.yml"
APP = "apps.metrics_app:app"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not (PROMETHEUS and PROMTOOL), reason=MISSING),
]

# What Grafana puts in place of the variables: "All" for job and instance
# (the dashboards' allValue), and $__rate_interval for a 1 s scrape interval
# is at least 4 scrapes; a little more keeps instant edges out of the way.
SUBSTITUTIONS = {
    "$__rate_interval": "15s",
    "${__rate_interval}": "15s",
    "$__interval": "1s",
    "$__range": "2m",
    "$job": ".+",
    "${job}": ".+",
    "$instance": ".+",
    "${instance}": ".+",
}


def grafana_expr(expr: str) -> str:
    """The query as Grafana sends it, with the variables replaced."""
    for variable, value in sorted(SUBSTITUTIONS.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace(variable, value)
    leftover = re.findall(r"\$\{?\w+", expr)
    assert not leftover, f"unsubstituted variables {leftover} in {expr}"
    return expr


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, rows' children included."""
    found: list[dict[str, Any]] = []
    for panel in dashboard.get("panels", []):
        found.append(panel)
        found.extend(panel.get("panels", []))
    return [panel for panel in found if panel.get("targets")]


def drive_scenario(server) -> None:
    """Traffic of every kind, then a reload and a scale-up."""
    port = server.port
    hung = threading.Thread(target=http_get, args=(port, "/sleep?30", 30))
    hung.start()  # past the 2 s timeout: the worker is aborted
    for round_ in range(6):
        for _ in range(6):
            http_get(port, "/")
        http_get(port, "/status/404")
        http_get(port, "/raise")
        http_get(port, f"/routed/{round_ % 3}")
        http_get(port, "/sleep?0.3")
        # Behind a proxy (loopback is trusted): a queue time, and a stamp that does not parse.
        http_get(port, "/", headers={"X-Request-Start": f"t={time.time() - 0.02:.3f}"})
        http_get(port, "/", headers={"X-Request-Start": "t=soon"})
        time.sleep(0.5)
    hung.join(30)
    server.wait_for(match(event="worker_exited", reason="timeout"), timeout=15)
    server.signal(signal.SIGHUP)
    server.wait_for(match(event="worker_exited", reason="reload"), count=2)
    server.signal(signal.SIGTTIN)
    for _ in range(10):
        http_get(port, "/")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """One gunicorn and one Prometheus (with hookkit's rules) for the module."""

    port, metrics_port = free_port(), free_port()
    gunicorn = Gunicorn(
        [
            "-c",
            "python:hookkit.conf",
            "-b",
            f"127.0.0.1:{port}",
            "-w",
            "2",
            "--timeout",
            "2",
            "--graceful-timeout",
            "3",
            *no_control_socket(),
            APP,
        ],
        env=clean_env(HOOKKIT_METRICS_BIND=f"127.0.0.1:{metrics_port}"),
        cwd=str(tmp_path_factory.mktemp("live")),
    )
    gunicorn.port = port  # type: ignore[attr-defined]
    gunicorn.start()
    try:
        gunicorn.wait_for(match(event="worker_booted"), count=2, timeout=20)
        with prometheus([f"127.0.0.1:{metrics_port}"], rule_files=[str(RULES)]) as prom:
            prom.wait_healthy(timeout=20)
            started = time.time()
            drive_scenario(gunicorn)
            time.sleep(3)  # a few more scrapes after the last request
            yield prom, started, time.time()
    finally:
        gunicorn.stop()


@pytest.mark.parametrize("name", ["hookkit-overview.json", "hookkit-workers.json"])
def test_every_panel_query_returns_data(live, name):
    """Each query of each panel, as Grafana runs it over the scenario's time
    range, returns data from the real Prometheus."""
    prom, start, end = live
    dashboard = json.loads((DASHBOARDS / name).read_text())
    empty = []
    for panel in panels(dashboard):
        for target in panel["targets"]:
            expr = grafana_expr(target["expr"])
            if not prom.query_range(expr, start, end):
                empty.append(f"{panel['title']}: {expr}")
    assert [] == empty


def test_worker_timeout_alert_fires(live):
    """A request hung past --timeout makes the worker-timeout alert fire."""
    prom, _, _ = live
    firing = prom.wait_for(
        'count(ALERTS{alertname=~"Hookkit.*Timeout.*", alertstate="firing"})',
        lambda value: value is not None and value >= 1,
        timeout=30,
    )
    assert firing >= 1
