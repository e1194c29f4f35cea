"""``hookkit top`` in a real terminal (tmux): it draws the busy worker's pid
and the request's path, and ``q`` quits with status 0."""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import ServeFactory
from tests.test_status_live import busy_workers, hanging, wait_status

pytestmark = [pytest.mark.integration]

# The requests hang as long as the test needs them; under a loaded CI
# machine that can pass gunicorn's default 30 s timeout, which would abort
# the workers (state "stopping") in the middle of the test.
NO_TIMEOUT = ("--timeout", "300")

TMUX = shutil.which("tmux")


def tmux(socket: str, *args: str) -> str:
    """Run a tmux command on the test's own tmux server (``-L``)."""
    done = subprocess.run(
        [str(TMUX), "-L", socket, *args], capture_output=True, text=True, timeout=10, check=False
    )
    return done.stdout


def wait_pane(socket: str, target: str, pred: Callable[[str], bool], timeout: float = 15.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        screen = tmux(socket, "capture-pane", "-p", "-t", target)
        if pred(screen):
            return screen
        if time.monotonic() > deadline:
            raise AssertionError(f"the pane never matched:\n{screen}")
        time.sleep(0.2)


@pytest.mark.skipif(TMUX is None, reason="tmux is not installed (apt-get install tmux)")
@pytest.mark.parametrize("columns", [120, 50])
def test_top_shows_the_busy_worker_and_q_quits(
    serve: ServeFactory, tmp_path: Path, columns: int
) -> None:
    """A request hangs in one of two workers; ``hookkit top URL`` in a
    terminal of ``columns`` shows that worker's pid and the request's path
    (first line of the view: the master's); ``q`` exits 0 and leaves the
    alternate screen."""
    server = serve("apps.hanging:app", "-w", "2", *NO_TIMEOUT)
    server.cwd = tmp_path  # type: ignore[attr-defined]
    port = server.metrics_port  # type: ignore[attr-defined]
    wait_status(
        port, lambda d: len(d["workers"]) == 2 and all(w["state"] == "idle" for w in d["workers"])
    )
    socket = f"hookkit-test-{uuid.uuid4().hex[:8]}"
    session = "top"
    command = (
        f"{shlex.quote(sys.executable)} -m hookkit top http://127.0.0.1:{port}; "
        f"echo EXIT=$?; sleep 60"
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("TMUX") and k not in ("COLUMNS", "LINES")
    }
    tmux_pid = 0
    with hanging(server, "/hang/tmux/view"):
        (busy,) = busy_workers(wait_status(port, lambda d: len(busy_workers(d)) == 1))
        try:
            subprocess.run(
                [
                    str(TMUX),
                    "-L",
                    socket,
                    "-f",
                    "/dev/null",
                    "new-session",
                    "-d",
                    "-s",
                    session,
                    "-x",
                    str(columns),
                    "-y",
                    "30",
                    command,
                ],
                env=env,
                check=True,
                timeout=10,
            )
            tmux_pid = int(
                tmux(socket, "display-message", "-p", "-t", session, "#{pid}").strip() or 0
            )
            screen = wait_pane(
                socket, session, lambda s: str(busy["pid"]) in s and "/hang/tmux/view" in s
            )
            lines = screen.splitlines()
            assert lines[0].startswith(f"gunicorn {server.pid} sync")
            row = next(line for line in lines if str(busy["pid"]) in line)
            assert "busy" in row
            assert "GET /hang/tmux/view" in row
            assert all(len(line) <= columns for line in lines)
            tmux(socket, "send-keys", "-t", session, "q")
            screen = wait_pane(socket, session, lambda s: "EXIT=" in s)
            assert "EXIT=0" in screen
            assert "/hang/tmux/view" not in screen  # the alternate screen is gone
        finally:
            tmux(socket, "kill-session", "-t", session)
            if tmux_pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(tmux_pid, signal.SIGTERM)


def test_top_in_a_pipe_prints_one_snapshot_of_a_real_server(
    serve: ServeFactory, tmp_path: Path
) -> None:
    """Not a terminal: one view of the real master, the busy worker's pid
    and path in it, no escape code, exit 0."""
    server = serve("apps.hanging:app", "-w", "2", *NO_TIMEOUT)
    server.cwd = tmp_path  # type: ignore[attr-defined]
    port = server.metrics_port  # type: ignore[attr-defined]
    with hanging(server, "/hang/in/a/pipe?secret=1"):
        (busy,) = busy_workers(wait_status(port, lambda d: len(busy_workers(d)) == 1))
        done = subprocess.run(
            [sys.executable, "-m", "hookkit", "top", f"127.0.0.1:{port}"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            env={**os.environ, "COLUMNS": "100"},
        )
    assert 0 == done.returncode, done.stderr
    assert "\x1b" not in done.stdout
    row = next(line for line in done.stdout.splitlines() if str(busy["pid"]) in line)
    assert "GET /hang/in/a/pipe" in row
    assert "secret" not in done.stdout
