"""``hookkit demo``: the reference server tour.

Starts a real gunicorn with the drop-in config and the bundled demo app on
127.0.0.1, then drives it through every hook with real signals and requests
(TTIN, TTOU, max_requests recycling, a request hung past the timeout, a
worker killed by SIGKILL, a worker interrupt, HUP, USR2 re-exec, shutdown),
streaming hookkit's events as they happen. Ends with a table: each hook,
fired or not, how many times. Exits 0 only when every hook the
configuration can fire has fired.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from hookkit._core.hooks import CORE_HOOKS, DIRTY_HOOKS, HOOKS_BY_NAME
from hookkit._face.gunicorn_process import (
    Gunicorn,
    LogLine,
    free_port,
    http_get,
    match,
    pid_alive,
    wait_gone,
)

TIMEOUT = 2  # gunicorn's worker timeout in the tour: the hung request is aborted after it
MAX_REQUESTS = 15

DEMO_CONFIG = """\
# The reference server's gunicorn config, applied by the drop-in
# (HOOKKIT_GUNICORN_CONFIG): hookkit's hooks run beside it.
bind = "127.0.0.1:{port}"
workers = 2
timeout = {timeout}
graceful_timeout = 3
max_requests = {max_requests}
max_requests_jitter = 0
loglevel = "debug"
# gunicorn 25.1+ opens a control socket at a fixed path in the home directory;
# the tour's USR2 runs two masters at once, so it stays off.
control_socket_disable = True
hookkit_access_log = True
{dirty}
"""

DIRTY_CONFIG = """\
dirty_apps = ["hookkit.demo_app:DemoDirtyApp"]
dirty_workers = 1
"""

# The events the tour prints as they happen (gunicorn's own lines and
# per-request debug events are left out of the stream, not of the count).
_SHOWN_FIELDS = (
    "reason",
    "signal",
    "exit_code",
    "worker_pid",
    "new_value",
    "old_value",
    "status",
    "path",
    "boot_duration_seconds",
    "master_pid",
    "dirty_worker_pid",
)


@dataclass
class Tour:
    """One run of the tour."""

    dirty: bool = False
    out: TextIO | None = sys.stdout
    steps: list[dict[str, Any]] = field(default_factory=list)
    masters: list[int] = field(default_factory=list)
    metrics_port: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def show(self, text: str) -> None:
        """Print a line of the tour (not in --json mode)."""
        if self.out is not None:
            with self._lock:
                self.out.write(text + "\n")
                self.out.flush()

    def on_line(self, line: LogLine) -> None:
        """Stream hookkit's lifecycle events as they arrive."""
        hook = line.get("hook")
        if hook is None or line.get("event") == "request_started":
            return
        details = " ".join(f"{k}={line[k]}" for k in _SHOWN_FIELDS if line.get(k) is not None)
        self.show(
            f"    {line.get('event', ''):<22} hook={hook:<18} pid={line.get('pid')} {details}"
        )

    def step(self, title: str, action: Callable[[], None]) -> None:
        """Run one step of the tour, recording whether it did what it should."""
        self.show(f"--- {title}")
        started = time.monotonic()
        try:
            action()
            ok, error = True, None
        except (TimeoutError, AssertionError, OSError) as exc:
            ok, error = False, str(exc)[:500]
            self.show(f"    step failed: {error}")
        self.steps.append(
            {
                "step": title,
                "ok": ok,
                "seconds": round(time.monotonic() - started, 2),
                "error": error,
            }
        )


def run_tour(dirty: bool = False, out: TextIO | None = sys.stdout) -> dict[str, Any]:
    """Run the tour; returns the report (see ``report``)."""
    tour = Tour(dirty=dirty, out=out)
    started = time.monotonic()
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="hookkit-demo-") as workdir:
        config_path = os.path.join(workdir, "gunicorn.conf.py")
        with open(config_path, "w") as config:
            config.write(
                DEMO_CONFIG.format(
                    port=port,
                    timeout=TIMEOUT,
                    max_requests=MAX_REQUESTS,
                    dirty=DIRTY_CONFIG if dirty else "",
                )
            )
        env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKKIT_")}
        env["HOOKKIT_GUNICORN_CONFIG"] = config_path
        env["HOOKKIT_LOG_FORMAT"] = "json"
        metrics_port = free_port()
        env["HOOKKIT_METRICS_BIND"] = f"127.0.0.1:{metrics_port}"
        server = Gunicorn(
            ["-c", "python:hookkit.conf", "hookkit.demo_app:app"],
            env=env,
            cwd=workdir,
            on_line=tour.on_line,
        )
        tour.metrics_port = metrics_port
        tour.show(
            f"hookkit demo: gunicorn on http://127.0.0.1:{port}, metrics on "
            f"http://127.0.0.1:{metrics_port}/metrics (sync worker, "
            f"timeout {TIMEOUT}s, max_requests {MAX_REQUESTS})"
        )
        server.start()
        tour.masters.append(server.pid)
        try:
            _Driver(tour, server, port).run()
        finally:
            for master in tour.masters:
                if pid_alive(master):
                    os.kill(master, signal.SIGTERM)
                    wait_gone(master, 10)
            server.stop()
        counts = Counter(line["hook"] for line in server.events() if line.get("hook"))
    return report(counts, tour, dirty, time.monotonic() - started)


class _Driver:
    """The tour's steps, in order, against one running gunicorn."""

    def __init__(self, tour: Tour, server: Gunicorn, port: int) -> None:
        self.tour, self.server, self.port = tour, server, port

    def run(self) -> None:
        steps: list[tuple[str, Callable[[], None]]] = [
            ("start: master, listeners, two workers", self.start),
            ("requests: pre_request and post_request", self.requests),
            ("TTIN: one more worker", self.ttin),
            ("TTOU: one worker less", self.ttou),
            (f"max_requests: a worker recycled after {MAX_REQUESTS} requests", self.recycle),
            (f"timeout: a request hangs past {TIMEOUT}s", self.hang),
            ("SIGKILL: a worker killed, as the OOM killer would", self.sigkill),
            ("SIGINT to a worker: worker_int", self.interrupt),
            ("HUP: configuration reloaded, workers replaced", self.hup),
            ("USR2: the master re-executes; the old one is stopped", self.usr2),
            ("shutdown: TERM to the master", self.shutdown),
        ]
        for title, action in steps:
            self.tour.step(title, action)
            if title.startswith("start") and not self.tour.steps[-1]["ok"]:
                return

    def start(self) -> None:
        self.server.wait_for(match(event="server_ready"))
        self.server.wait_for(match(event="worker_booted"), count=2)
        if self.tour.dirty:
            self.server.wait_for(match(event="dirty_worker_booted"))

    def requests(self) -> None:
        statuses = [http_get(self.port, "/")[0] for _ in range(5)]
        assert statuses == [200] * 5, statuses
        assert http_get(self.port, "/error")[0] == 500
        if self.tour.dirty:
            assert http_get(self.port, "/dirty")[0] == 200
        self.server.wait_for(match(event="request_finished"), count=6)
        self.show_metrics()

    def show_metrics(self) -> None:
        """Scrape /metrics and show the request count hookkit exported."""
        status, body = http_get(self.tour.metrics_port, "/metrics")
        assert status == 200, f"/metrics answered {status}"
        count = sum(
            float(line.rsplit(" ", 1)[1])
            for line in body.decode().splitlines()
            if line.startswith("http_server_request_duration_seconds_count")
        )
        self.tour.show(f"    /metrics: http_server_request_duration_seconds_count = {count:g}")

    def ttin(self) -> None:
        booted = len(self.server.events(match(event="worker_booted")))
        self.server.signal(signal.SIGTTIN)
        self.server.wait_for(match(event="worker_booted"), count=booted + 1)

    def ttou(self) -> None:
        self.server.signal(signal.SIGTTOU)
        self.server.wait_for(match(event="worker_exited", reason="scaled_down"))

    def recycle(self) -> None:
        recycled = match(event="worker_exited", reason="max_requests")
        for _ in range(MAX_REQUESTS * 3):
            http_get(self.port, "/")
            if self.server.events(recycled):
                return
        self.server.wait_for(recycled, timeout=5)

    def hang(self) -> None:
        status = http_get(self.port, f"/sleep?{TIMEOUT * 10}", timeout=TIMEOUT * 10)[0]
        self.server.wait_for(match(event="worker_exited", reason="timeout"), timeout=TIMEOUT * 4)
        self.server.wait_for(match(event="worker_aborted"))
        self.tour.show(f"    the client of the hung request got {status}")

    def sigkill(self) -> None:
        _wait_for_workers(self.server, 2)
        victim = self.server.live_workers()[-1]
        os.kill(victim, signal.SIGKILL)
        self.server.wait_for(match(event="worker_exited", reason="killed", worker_pid=victim))

    def interrupt(self) -> None:
        _wait_for_workers(self.server, 2)
        victim = self.server.live_workers()[-1]
        os.kill(victim, signal.SIGINT)
        self.server.wait_for(match(event="worker_interrupted", worker_pid=victim))
        self.server.wait_for(match(event="worker_exited", worker_pid=victim))

    def hup(self) -> None:
        _wait_for_workers(self.server, 2)
        self.server.signal(signal.SIGHUP)
        self.server.wait_for(match(event="server_reloaded"))
        self.server.wait_for(match(event="worker_exited", reason="reload"), count=2)

    def usr2(self) -> None:
        _wait_for_workers(self.server, 2)
        old = self.server.pid
        self.server.signal(signal.SIGUSR2)
        self.server.wait_for(match(event="master_reexecuting", hook="pre_exec"))
        new = self.server.wait_for(
            lambda line: line.get("event") == "server_ready" and line.get("master_pid") != old
        )[0]["master_pid"]
        self.tour.masters.append(new)
        self.tour.show(f"    new master {new}; stopping the old master {old}")
        os.kill(old, signal.SIGTERM)
        self.server.wait_for(match(event="master_exiting", master_pid=old), timeout=15)
        assert http_get(self.port, "/")[0] == 200, "the new master does not serve"
        self.show_metrics()

    def shutdown(self) -> None:
        master = self.tour.masters[-1]
        os.kill(master, signal.SIGTERM)
        self.server.wait_for(match(event="master_exiting", master_pid=master), timeout=15)
        assert wait_gone(master, 10), "the master did not exit"


def _wait_for_workers(server: Gunicorn, count: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while len(server.live_workers()) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"fewer than {count} live workers")
        time.sleep(0.05)


def report(counts: Counter[str], tour: Tour, dirty: bool, seconds: float) -> dict[str, Any]:
    """The tour's result: each hook's count, the steps, and whether every
    hook the configuration can fire has fired."""
    expected = list(CORE_HOOKS) + (list(DIRTY_HOOKS) if dirty else [])
    shown = list(CORE_HOOKS) + list(DIRTY_HOOKS)
    hooks = {
        name: {
            "fired": counts.get(name, 0) > 0,
            "count": counts.get(name, 0),
            "process": HOOKS_BY_NAME[name].process,
            "expected": name in expected,
        }
        for name in shown
    }
    missing = [name for name in expected if not hooks[name]["fired"]]
    return {
        "ok": not missing and all(step["ok"] for step in tour.steps),
        "missing": missing,
        "hooks": hooks,
        "steps": tour.steps,
        "dirty": dirty,
        "seconds": round(seconds, 1),
    }


def render_table(result: dict[str, Any]) -> str:
    """The report as a text table."""
    rows = [f"{'hook':<20} {'process':<14} {'fired':<6} {'times':>5}"]
    for name, row in result["hooks"].items():
        fired = "yes" if row["fired"] else ("NO" if row["expected"] else "-")
        rows.append(f"{name:<20} {row['process']:<14} {fired:<6} {row['count']:>5}")
    verdict = (
        "every hook fired"
        if result["ok"]
        else f"missing: {', '.join(result['missing']) or 'a step failed'}"
    )
    rows.append(f"\n{verdict} ({result['seconds']}s)")
    return "\n".join(rows)


def main(json_output: bool = False, dirty: bool = False) -> int:
    """Run the tour and print the report; 0 only if every expected hook fired."""
    result = run_tour(dirty=dirty, out=None if json_output else sys.stdout)
    if json_output:
        print(json.dumps(result, indent=2))
    else:
        print()
        print(render_table(result))
    return 0 if result["ok"] else 1
