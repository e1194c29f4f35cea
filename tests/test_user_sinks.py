"""A user's own sink, registered with ``hookkit.configure(sinks=[...])`` in the
user's ``gunicorn.conf.py`` under the drop-in, in a real gunicorn: it sees
the lifecycle and every request, across a SIGKILL and a SIGHUP, once.

The test sink appends one JSON line per call to a file opened with
``O_APPEND`` (one ``write`` per line: the master and the workers share it).
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from hookkit._face.gunicorn_process import http_get, match, wait_gone
from tests.conftest import hookkit_init

pytestmark = pytest.mark.integration

USER_CONFIG = """\
import json, os, time
import hookkit

workers = 2
GENERATION = time.monotonic_ns()  # a new one each time gunicorn reads this file


class FileSink(hookkit.Sink):
    name = "file"

    def _line(self, call, **fields):
        line = {"call": call, "pid": os.getpid(), "generation": GENERATION, **fields}
        fd = os.open(os.environ["SINK_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, (json.dumps(line) + "\\n").encode())
        finally:
            os.close(fd)

    def start_master(self, server):
        self._line("start_master")

    def stop_master(self, server):
        self._line("stop_master")

    def handle(self, event):
        self._line(
            "handle",
            event=event.name,
            reason=event.fields.get("reason"),
            worker_pid=event.fields.get("worker_pid"),
        )

    def request_finished(self, request):
        self._line("request_finished", path=request.path, status=request.status)


hookkit.configure(sinks=[FileSink()])
"""


def read_lines(path: Path) -> list[dict[str, Any]]:
    """Every line the sink wrote so far."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def wait_for_line(path: Path, timeout: float = 15.0, **expected: object) -> dict[str, Any]:
    """The first line with ``expected`` values, waiting for it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in read_lines(path):
            if all(line.get(key) == value for key, value in expected.items()):
                return line
        time.sleep(0.05)
    raise AssertionError(f"no sink line {expected} in {timeout} s: {read_lines(path)[-10:]}")


def finished_paths(lines: list[dict[str, Any]]) -> list[str]:
    """The paths of the requests the sink saw finish, in order."""
    return [line["path"] for line in lines if line["call"] == "request_finished"]


def test_a_user_sink_sees_the_lifecycle_and_every_request_once(serve, tmp_path: Path) -> None:
    """Two workers; requests before and after one is SIGKILLed; then a SIGHUP
    (the config runs again and builds a new sink) and more requests. The
    sink sees both workers boot, the killed worker's exit with reason
    ``killed``, every request exactly once (the kill falls between
    requests, outside the documented SIGKILL window), and after the reload
    each request and each exit once, from the new instance only: the
    replaced one was stopped, the new one started once."""
    log = tmp_path / "sink.jsonl"
    (tmp_path / "gunicorn.conf.py").write_text(USER_CONFIG)
    server = serve("apps.wsgi:app", env={"SINK_LOG": str(log)})
    booted = server.wait_for(match(event="worker_booted"), count=2)

    sent: list[str] = []
    for n in range(10):
        sent.append(f"/before-{n}")
        assert 200 == http_get(server.port, sent[-1])[0]
    time.sleep(0.3)  # the last post_request has run (the SIGKILL window)
    victim = booted[0]["worker_pid"]
    os.kill(victim, signal.SIGKILL)
    assert wait_gone(victim, 10)
    exited = wait_for_line(log, call="handle", event="worker_exited", worker_pid=victim)
    server.wait_for(match(event="worker_booted"), count=3)
    for n in range(10):
        sent.append(f"/between-{n}")
        assert 200 == http_get(server.port, sent[-1])[0]

    server.signal(signal.SIGHUP)
    server.wait_for(match(event="server_reloaded"))
    server.wait_for(match(event="worker_exited", reason="reload"), count=2)
    server.wait_for(match(event="worker_booted"), count=5)
    for n in range(10):
        sent.append(f"/after-{n}")
        assert 200 == http_get(server.port, sent[-1])[0]
    time.sleep(0.3)

    lines = read_lines(log)
    first, second = sorted({line["generation"] for line in lines})
    assert "killed" == exited["reason"]
    assert sorted(sent) == sorted(finished_paths(lines)), "each request seen exactly once"
    # Two workers: a request's line may follow the next one's.
    assert [f"/after-{n}" for n in range(10)] == sorted(
        finished_paths([line for line in lines if line["generation"] == second])
    )
    booted_pids = [  # worker_booted is handled in the worker itself
        line["pid"]
        for line in lines
        if line["call"] == "handle" and line["event"] == "worker_booted"
    ]
    assert len(booted_pids) == len(set(booted_pids)), "a worker's boot seen twice"
    assert {b["worker_pid"] for b in booted[:2]} <= set(booted_pids)
    reload_exits = [
        line
        for line in lines
        if line["call"] == "handle"
        and line["reason"] == "reload"
        and line["event"] == "worker_exited"
    ]
    assert 2 == len(reload_exits)
    assert {second} == {line["generation"] for line in reload_exits}
    lifecycle = [(line["call"], line["generation"]) for line in lines if "master" in line["call"]]
    expected = [("start_master", first), ("stop_master", first), ("start_master", second)]
    assert expected == lifecycle


@pytest.mark.parametrize("dropin", ["python:hookkit.conf", "hookkit.conf"])
def test_access_log_from_configure_in_the_user_config(serve, tmp_path: Path, dropin: str) -> None:
    """``hookkit.configure(access_log=True)`` in the user's ``gunicorn.conf.py``
    turns the access line on under the drop-in, the module and the file
    ``hookkit init`` writes (it used to be discarded), and still does, once
    per request, after a SIGHUP read the config again."""
    if dropin == "hookkit.conf":
        hookkit_init(tmp_path)
    (tmp_path / "gunicorn.conf.py").write_text(
        "import hookkit\nhookkit.configure(access_log=True)\n"
    )
    server = serve("apps.wsgi:app", config=dropin)
    server.wait_for(match(event="worker_booted"))
    assert 200 == http_get(server.port, "/configured")[0]
    (line,) = server.wait_for(match(event="request_finished", path="/configured"))
    assert 200 == line["status"]
    server.signal(signal.SIGHUP)
    server.wait_for(match(event="server_reloaded"))
    server.wait_for(match(event="worker_booted"), count=2)
    assert 200 == http_get(server.port, "/after-reload")[0]
    server.wait_for(match(event="request_finished", path="/after-reload"))
    time.sleep(0.3)
    assert 1 == len(server.events(match(event="request_finished", path="/after-reload")))


def test_access_log_from_configure_with_single_hooks(serve, tmp_path: Path) -> None:
    """The same with single hooks imported into the user's own config (no
    drop-in): ``configure`` applies at once, and on a SIGHUP once more."""
    (tmp_path / "own.conf.py").write_text(
        "import hookkit\n"
        "from hookkit.hooks import on_starting, post_fork, post_request, post_worker_init, "
        "pre_request, when_ready, on_reload\n"
        "logger_class = 'hookkit.glogging.Logger'\n"
        "hookkit.configure(access_log=True)\n"
    )
    server = serve("apps.wsgi:app", config="own.conf.py")
    server.wait_for(match(event="worker_booted"))
    assert 200 == http_get(server.port, "/single")[0]
    server.wait_for(match(event="request_finished", path="/single"))
    server.signal(signal.SIGHUP)
    server.wait_for(match(event="server_reloaded"))
    server.wait_for(match(event="worker_booted"), count=2)
    assert 200 == http_get(server.port, "/single-after")[0]
    time.sleep(0.3)
    assert 1 == len(server.events(match(event="request_finished", path="/single-after")))
