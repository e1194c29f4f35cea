"""Failing sinks never hold up a request, a worker or the master: a stderr
nobody reads (a full pipe), a closed stderr, and the multiprocess directory
removed while gunicorn runs. (The OTLP collector refusing, hanging or
answering 500 is in ``test_tracing_failures``.)

Each hello-world request must still complete within a second (SLOW); the
latency difference itself belongs in the benchmark. Real gunicorn, 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hookkit._face.gunicorn_process import (
    free_port,
    gunicorn_command,
    http_get,
    match,
    pid_alive,
    wait_gone,
)
from tests.conftest import clean_env, no_control_socket
from tests.scrape import scrape_text, total

pytestmark = pytest.mark.integration

# A request behind a blocked write never completes (http_get gives up after
# 5 s). Well under a second is usual; half a second was seen for the request
# that meets a recycled worker on a loaded machine (make pytest runs the suite
# in parallel), so the bound is a second.
SLOW = 1.0


def wait_serving(port: int, timeout: float = 20.0) -> None:
    """Poll until 127.0.0.1:``port`` answers 200."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if http_get(port, "/", timeout=1)[0] == 200:
            return
        time.sleep(0.1)
    raise AssertionError(f"nothing served on {port} within {timeout} s")


def timed_requests(port: int, count: int) -> list[tuple[int, float]]:
    """``count`` requests one after the other: (status, seconds) each."""
    results = []
    for _ in range(count):
        started = time.monotonic()
        status, _ = http_get(port, "/", timeout=5)
        results.append((status, time.monotonic() - started))
    return results


@pytest.fixture
def unread_gunicorn(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, int]]:
    """gunicorn whose stdout and stderr go to a pipe nobody reads while the
    test runs, every line it can write on (debug level, the access log):
    (process, port, metrics port). Stopped by PID at the end; the pipe is
    drained then."""
    port, metrics_port = free_port(), free_port()
    env = clean_env(HOOKKIT_ACCESS_LOG="on", HOOKKIT_METRICS_BIND=f"127.0.0.1:{metrics_port}")
    proc = subprocess.Popen(
        [
            *gunicorn_command(),
            "-c",
            "python:hookkit.conf",
            "-b",
            f"127.0.0.1:{port}",
            "-w",
            "2",
            "--max-requests",
            "50",
            "--log-level",
            "debug",
            "--graceful-timeout",
            "3",
            *no_control_socket(),
            "apps.wsgi:app",
        ],
        env=env,
        cwd=str(tmp_path),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield proc, port, metrics_port
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        assert proc.stdout is not None
        proc.stdout.close()
        proc.wait(10)


def test_a_stderr_nobody_reads_holds_up_nothing(
    unread_gunicorn: tuple[subprocess.Popen[bytes], int, int],
) -> None:
    """With the pipe full, 400 requests (each logging at least two lines,
    workers recycling every 50 and logging their exits) all succeed, each
    in well under a second; the dropped lines are counted; and SIGTERM
    stops the master and its workers promptly. What did reach the pipe is
    still one JSON object per line."""
    proc, port, metrics_port = unread_gunicorn
    wait_serving(port)
    results = timed_requests(port, 400)
    slow = [(status, seconds) for status, seconds in results if status != 200 or seconds >= SLOW]
    assert [] == slow
    dropped = total(scrape_text(metrics_port), "hookkit_sink_errors_total", sink="logs")
    assert dropped > 0
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.wait(10)  # raises TimeoutExpired if the master hangs
    assert time.monotonic() - started < 8
    assert proc.stdout is not None
    lines = proc.stdout.read().decode("utf-8", "replace").splitlines()
    assert [] == [line for line in lines if line.strip() and not _is_json(line)]


def _is_json(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def test_a_closed_stderr_holds_up_nothing(tmp_path: Path) -> None:
    """gunicorn started with stdout and stderr closed: requests succeed, in
    well under a second each, and SIGTERM stops everything."""
    port = free_port()
    env = clean_env(HOOKKIT_ACCESS_LOG="on", HOOKKIT_METRICS_BIND=f"127.0.0.1:{free_port()}")
    argv = [
        *gunicorn_command(),
        "-c",
        "python:hookkit.conf",
        "-b",
        f"127.0.0.1:{port}",
        "-w",
        "2",
        "--max-requests",
        "30",
        "--graceful-timeout",
        "3",
        *no_control_socket(),
        "apps.wsgi:app",
    ]

    def close_output() -> None:
        os.close(1)
        os.close(2)

    proc = subprocess.Popen(
        argv,
        env=env,
        cwd=str(tmp_path),
        stdin=subprocess.DEVNULL,
        preexec_fn=close_output,  # noqa: PLW1509 - closes fds only, in the child
        start_new_session=True,
    )
    try:
        wait_serving(port)
        results = timed_requests(port, 100)
        assert [] == [(s, d) for s, d in results if s != 200 or d >= SLOW]
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def test_the_multiprocess_directory_removed_mid_run(serve: Any, tmp_path: Path) -> None:
    """Removing ``PROMETHEUS_MULTIPROC_DIR`` while gunicorn runs (workers
    recycling into it): every request still succeeds in well under a
    second, scrapes still answer 200, the master stays up, and hookkit
    reports its own failing sink on stderr (at most once a minute)."""
    directory = tmp_path / "metrics"
    directory.mkdir(mode=0o700)
    server = serve(
        "apps.wsgi:app",
        "-w",
        "2",
        "--max-requests",
        "20",
        env={"PROMETHEUS_MULTIPROC_DIR": str(directory)},
    )
    server.wait_for(match(event="worker_booted"), count=2)
    assert [] == [r for r in timed_requests(server.port, 20) if r[0] != 200]
    shutil.rmtree(directory)
    results = timed_requests(server.port, 120)
    assert [] == [(s, d) for s, d in results if s != 200 or d >= SLOW]
    assert 200 == http_get(server.metrics_port, "/metrics")[0]
    assert pid_alive(server.pid)
    server.wait_for(
        lambda line: "hookkit: sink 'metrics' failed" in str(line.get("raw", "")), timeout=10
    )
    server.stop()
    assert wait_gone(server.pid, 5)
