"""Shared fixtures.

Unit tests get a fresh hookkit runtime (global state reset between tests).
Integration tests start real gunicorn processes on 127.0.0.1 through
``serve``; every process a test starts is stopped by the test, by PID.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import hookkit.hooks  # noqa: F401 - the runtime's fallback configuration, as users get it
from hookkit._face.gunicorn_process import Gunicorn, free_port, match
from hookkit.testing import reset

TESTS = Path(__file__).parent


@pytest.fixture(autouse=True)
def fresh_runtime() -> Iterator[None]:
    """hookkit's per-process state starts empty in every test."""
    reset()
    yield
    reset()


def clean_env(**extra: str) -> dict[str, str]:
    """The test process's environment without HOOKKIT_*, GUNICORN_*, OTEL_*
    variables and PROMETHEUS_MULTIPROC_DIR, with the tests' apps importable,
    plus ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("HOOKKIT_", "GUNICORN_", "OTEL_", "PROMETHEUS_MULTIPROC_DIR"))
    }
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH", "")]))
    env.update(extra)
    return env


# gunicorn 25.1+ opens a control socket at a fixed path in the home directory
# by default: servers started side by side would fight over it, so tests turn
# it off (the setting does not exist in 25.0; the flag then is left out).
def no_control_socket() -> list[str]:
    from gunicorn.config import KNOWN_SETTINGS

    names = {setting.name for setting in KNOWN_SETTINGS}
    return ["--no-control-socket"] if "control_socket_disable" in names else []


ServeFactory = Callable[..., Gunicorn]


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[ServeFactory]:
    """Start a real gunicorn: ``serve("apps.wsgi:app", "-w", "2", env={...})``.

    Uses the drop-in config (``-c python:hookkit.conf``) unless ``config``
    says otherwise, binds a free port on 127.0.0.1 (``server.port``), runs in
    ``tmp_path``, and waits for ``server_ready`` unless ``wait=False``.
    """
    started: list[Gunicorn] = []

    def start(
        app: str = "apps.wsgi:app",
        *args: str,
        env: dict[str, str] | None = None,
        config: str | None = "python:hookkit.conf",
        cwd: Path | None = None,
        wait: bool = True,
    ) -> Gunicorn:
        port = free_port()
        # A short graceful timeout bounds each teardown: a worker that lost the
        # master's SIGTERM (sent while it was still booting) would otherwise
        # hold the stop for gunicorn's default 30 s. A test can override it.
        argv = [
            "-b",
            f"127.0.0.1:{port}",
            "--graceful-timeout",
            "3",
            *no_control_socket(),
            *args,
            app,
        ]
        env = dict(env or {})
        # Each server gets its own metrics port: servers run side by side.
        metrics_port = free_port()
        env.setdefault("HOOKKIT_METRICS_BIND", f"127.0.0.1:{metrics_port}")
        if config is not None:
            argv = ["-c", config, *argv]
        server = Gunicorn(argv, env=clean_env(**(env or {})), cwd=str(cwd or tmp_path))
        server.port = port  # type: ignore[attr-defined]
        server.metrics_port = metrics_port  # type: ignore[attr-defined]
        started.append(server.start())
        if wait:
            server.wait_for(match(event="server_ready"), timeout=20)
        return server

    yield start
    for server in started:
        server.stop()


def hookkit_init(directory: Path) -> None:
    """Run ``hookkit init`` in ``directory``: it writes ``hookkit.conf``."""
    import subprocess

    done = subprocess.run(
        [sys.executable, "-m", "hookkit", "init"], cwd=directory, capture_output=True, check=False
    )
    assert 0 == done.returncode, done.stderr


@pytest.fixture
def python() -> str:
    """The interpreter running the tests (and gunicorn)."""
    return sys.executable


# By far the longest tests (minutes: a thousand worker recycles), run first:
# under pytest-xdist (make pytest) one started late would hold up the end of
# the run alone.
LONGEST = ("tests/test_metrics_integration.py::test_recycling_keeps_counts_exact_and_the",)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: not item.nodeid.startswith(LONGEST))


def pytest_configure(config: pytest.Config) -> None:
    """In CI a missing Prometheus, Chromium, tmux or setpriv is an install
    step gone wrong, not a reason to skip the tests that run them: stop
    before any test runs."""
    import shutil

    from tests.prom import MISSING, PROMETHEUS, PROMTOOL

    if os.environ.get("CI") != "true":
        return
    if PROMETHEUS is None or PROMTOOL is None:
        raise pytest.UsageError(f"CI=true but {MISSING}")
    missing = [tool for tool in ("chromium", "tmux", "setpriv") if shutil.which(tool) is None]
    if missing:
        raise pytest.UsageError(
            f"CI=true but {', '.join(missing)} not installed (.ci/run installs the Debian "
            "packages chromium and tmux; setpriv is util-linux's)"
        )
