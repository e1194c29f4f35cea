"""The workers' live state in a real gunicorn: what a dying worker was
serving (``worker_exited``'s ``requests_in_flight``) and what the master
reads of its live workers (``hookkit._core.live.live_view``).

The app (``apps.live_app``, Flask) touches a file when a request enters it,
so a test knows the request is in flight before it acts. The master's view
is read through a test sink (``PROBE_CONFIG``) whose thread, in the master,
writes every worker's ``live_view`` to a file ten times a second.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from hookkit._face.gunicorn_process import http_get, match

pytestmark = [pytest.mark.integration]

APP = "apps.live_app:app"

PROBE_CONFIG = """\
import json, os, threading, time
import hookkit
from hookkit._core.live import live_view
from hookkit._core.runtime import RUNTIME


class LiveProbe(hookkit.Sink):
    name = "live_probe"

    def start_master(self, server):
        threading.Thread(target=self._write, daemon=True).start()

    def _write(self):
        target = os.environ["LIVE_PROBE"]
        while True:
            workers = []
            for record in RUNTIME.master.workers():
                view = live_view(record)
                workers.append(
                    {
                        "pid": record.pid,
                        "age": record.age,
                        "state": view.state,
                        "overflow": view.overflow,
                        "requests": [r._asdict() for r in view.requests],
                    }
                )
            with open(target + ".tmp", "w") as out:
                json.dump(workers, out)
            os.replace(target + ".tmp", target)
            time.sleep(0.1)


hookkit.configure(sinks=[LiveProbe()])
"""


def start_slow(port: int, path: str) -> threading.Thread:
    """A client thread whose request will hang (its worker is killed or
    the server stopped: the client then gets no response)."""
    client = threading.Thread(target=http_get, args=(port, path, 60), daemon=True)
    client.start()
    return client


def wait_entered(directory: Path, *names: str, timeout: float = 15.0) -> None:
    """Wait until the app is serving each of ``names`` (``/slow/<name>``)."""
    deadline = time.monotonic() + timeout
    while not all((directory / f"entered-{name}").exists() for name in names):
        assert time.monotonic() < deadline, f"requests {names} never reached the app"
        time.sleep(0.05)


def probe(path: Path, until: Any, timeout: float = 15.0) -> list[dict[str, Any]]:
    """The probe's latest view of the workers for which ``until(view)`` holds."""
    deadline = time.monotonic() + timeout
    view: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        if path.exists():
            view = json.loads(path.read_text())
            if until(view):
                return view
        time.sleep(0.05)
    raise AssertionError(f"the live view never matched: {view}")


def summary(requests: list[dict[str, Any]]) -> list[tuple[str, str, str | None]]:
    return sorted((r["method"], r["path"], r["route"]) for r in requests)


def test_a_sigkilled_worker_names_the_request_it_was_serving(serve, tmp_path: Path):
    """SIGKILL (as the OOM killer sends it) while a slow request runs: the
    master's ``worker_exited`` names its method, path (no query string) and
    route, with the time it had run."""
    server = serve(APP, "-w", "1")
    pid = server.wait_for(match(event="worker_booted"))[0]["worker_pid"]
    start_slow(server.port, "/slow/a?token=secret")
    wait_entered(tmp_path, "a")
    time.sleep(0.3)
    os.kill(pid, signal.SIGKILL)
    line = server.wait_for(match(event="worker_exited", worker_pid=pid))[0]
    assert ("killed", "SIGKILL") == (line["reason"], line["signal"])
    (request,) = line["requests_in_flight"]
    assert ("GET", "/slow/a", "/slow/<name>") == (
        request["method"],
        request["path"],
        request["route"],
    )
    assert 0.3 <= request["elapsed_seconds"] < 15
    assert request["trace_id"] is None
    assert "secret" not in json.dumps(line)


def test_a_worker_that_exits_inside_a_request_names_it(serve, tmp_path: Path):
    """``os._exit(1)`` inside the app: ``worker_exited`` (crashed, code 1)
    names the request that was running."""
    server = serve(APP, "-w", "1")
    pid = server.wait_for(match(event="worker_booted"))[0]["worker_pid"]
    assert 0 == http_get(server.port, "/exit/1?why=now")[0]
    line = server.wait_for(match(event="worker_exited", worker_pid=pid))[0]
    assert ("crashed", 1) == (line["reason"], line["exit_code"])
    assert [("GET", "/exit/1", "/exit/<int:code>")] == summary(line["requests_in_flight"])


def test_a_timed_out_worker_names_the_request_it_was_stuck_in(serve, tmp_path: Path):
    """A request hung past ``--timeout``: the worker is aborted, and its
    ``worker_exited`` (reason ``timeout``) names the request."""
    server = serve(APP, "-w", "1", "--timeout", "2")
    pid = server.wait_for(match(event="worker_booted"))[0]["worker_pid"]
    start_slow(server.port, "/slow/t")
    line = server.wait_for(match(event="worker_exited", worker_pid=pid), timeout=20)[0]
    assert "timeout" == line["reason"]
    assert [("GET", "/slow/t", "/slow/<name>")] == summary(line["requests_in_flight"])
    assert line["requests_in_flight"][0]["elapsed_seconds"] >= 2


def test_a_clean_exit_has_no_requests_in_flight(serve, tmp_path: Path):
    """Requests that finished leave nothing behind: a worker stopped while
    idle has no ``requests_in_flight`` in its ``worker_exited``."""
    server = serve(APP, "-w", "1")
    pid = server.wait_for(match(event="worker_booted"))[0]["worker_pid"]
    assert 200 == http_get(server.port, "/")[0]
    time.sleep(0.5)  # post_request runs after the client has its response
    os.kill(pid, signal.SIGKILL)
    line = server.wait_for(match(event="worker_exited", worker_pid=pid))[0]
    assert "requests_in_flight" not in line


def test_three_sync_workers_one_busy_the_others_idle(serve, tmp_path: Path):
    """Three sync workers, one request hanging: the master's live view shows
    that worker ``busy`` with the request's method, path (no query string)
    and route, its elapsed time growing; the other two ``idle``."""
    view_file = tmp_path / "live.json"
    (tmp_path / "gunicorn.conf.py").write_text(PROBE_CONFIG)
    server = serve(APP, "-w", "3", env={"LIVE_PROBE": str(view_file)})
    server.wait_for(match(event="worker_booted"), count=3)
    start_slow(server.port, "/slow/a?q=1")
    wait_entered(tmp_path, "a")
    # The probe writes its file ten times a second: one written before the
    # request entered the app (its route not matched yet) may still be there.
    time.sleep(0.3)

    def one_busy(view: list[dict[str, Any]]) -> bool:
        return 3 == len(view) and ["busy", "idle", "idle"] == sorted(w["state"] for w in view)

    first = probe(view_file, one_busy)
    (busy,) = [w for w in first if w["state"] == "busy"]
    (request,) = busy["requests"]
    assert ("GET", "/slow/a", "/slow/<name>") == (
        request["method"],
        request["path"],
        request["route"],
    )
    assert all(w["requests"] == [] and w["overflow"] == 0 for w in first if w is not busy)
    assert abs(time.time() - request["elapsed_seconds"] - request["started"]) < 1.0
    time.sleep(0.5)

    def later(view: list[dict[str, Any]]) -> bool:
        return one_busy(view) and any(
            w["requests"] and w["requests"][0]["elapsed_seconds"] > request["elapsed_seconds"] + 0.3
            for w in view
        )

    second = probe(view_file, later)
    assert busy["pid"] == next(w["pid"] for w in second if w["state"] == "busy")


def test_gthread_two_requests_in_one_worker(serve, tmp_path: Path):
    """gthread, one worker, two requests hanging in its pool threads: the
    live view shows both entries; SIGKILLed, the worker's ``worker_exited``
    names both."""
    view_file = tmp_path / "live.json"
    (tmp_path / "gunicorn.conf.py").write_text(PROBE_CONFIG)
    server = serve(
        APP,
        "-w",
        "1",
        "-k",
        "gthread",
        "--threads",
        "4",
        env={"LIVE_PROBE": str(view_file)},
    )
    pid = server.wait_for(match(event="worker_booted"))[0]["worker_pid"]
    start_slow(server.port, "/slow/a")
    start_slow(server.port, "/slow/b?x=y")
    wait_entered(tmp_path, "a", "b")
    time.sleep(0.3)  # a fresh probe file (see above)
    view = probe(view_file, lambda v: len(v) == 1 and len(v[0]["requests"]) == 2)
    assert "busy" == view[0]["state"]
    expected = [("GET", "/slow/a", "/slow/<name>"), ("GET", "/slow/b", "/slow/<name>")]
    assert expected == summary(view[0]["requests"])
    os.kill(pid, signal.SIGKILL)
    line = server.wait_for(match(event="worker_exited", worker_pid=pid))[0]
    assert expected == summary(line["requests_in_flight"])
