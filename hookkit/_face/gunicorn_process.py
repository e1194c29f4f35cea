"""Run a real gunicorn on loopback and read its JSON log stream.

Used by the reference server tour (``hookkit demo``) and by the integration
tests: one way to start gunicorn, wait for events and stop every process
it started, by PID.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

LogLine = dict[str, Any]
Predicate = Callable[[LogLine], bool]


# The kernel's range of ephemeral ports: the source ports it gives outgoing
# connections, and what ``bind(("127.0.0.1", 0))`` answers from.
_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def _listen_ports() -> range:
    """Ports outside the ephemeral range, where a port found free stays free
    until gunicorn binds it.

    A port from ``bind(0)`` is ephemeral: between the check and gunicorn's
    bind, any client socket on the machine (a test's HTTP client, Prometheus
    scraping) may take it as its source port, and gunicorn then fails with
    "Address already in use" (seen in CI under pytest-xdist).
    """
    try:
        low, high = (int(part) for part in _EPHEMERAL_RANGE.read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999  # Linux's default
    if low - 10000 >= 2000:
        return range(10000, low)
    return range(min(high + 1, 65535), 65536)


_handed_out: set[int] = set()  # by this process: never handed out twice


def _share(ports: range) -> range:
    """This process's share of ``ports``: under pytest-xdist each worker
    takes every n-th port from its own offset, so two workers never hand
    out the same port. A port found free is only bound later, when gunicorn
    starts (hundreds of ms): two workers that picked the same free port in
    that window collided in CI ("Connection in use")."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = os.environ.get("PYTEST_XDIST_WORKER_COUNT", "")
    if worker.startswith("gw") and worker[2:].isdigit() and count.isdigit() and int(count) > 1:
        return ports[int(worker[2:]) % int(count) :: int(count)]
    return ports


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now, chosen at random
    outside the kernel's ephemeral range (see ``_listen_ports``), so servers
    started side by side and outgoing connections do not take it first;
    from this process's share (``_share``), and never one it handed out
    before."""
    ports = _share(_listen_ports())
    for _ in range(200):
        port = random.choice(ports)
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        fallback: int = sock.getsockname()[1]
        return fallback


def match(**expected: object) -> Predicate:
    """A predicate: every key of ``expected`` has that value in the line."""
    return lambda line: all(line.get(key) == value for key, value in expected.items())


class LogStream:
    """Lines of a gunicorn's output, parsed as JSON where they are JSON."""

    def __init__(self, pipe: Any, on_line: Callable[[LogLine], None] | None = None) -> None:
        self.lines: list[LogLine] = []
        self._cond = threading.Condition()
        self._on_line = on_line
        self._closed = False
        self._thread = threading.Thread(target=self._read, args=(pipe,), daemon=True)
        self._thread.start()

    def _read(self, pipe: Any) -> None:
        for raw in iter(pipe.readline, b""):
            text = raw.decode("utf-8", "replace").rstrip("\n")
            try:
                line = json.loads(text)
                if not isinstance(line, dict):
                    line = {"raw": text}
            except ValueError:
                line = {"raw": text}
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()
            if self._on_line is not None:
                self._on_line(line)
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def events(self, pred: Predicate | None = None) -> list[LogLine]:
        """The lines so far that satisfy ``pred``."""
        with self._cond:
            return [line for line in self.lines if pred is None or pred(line)]

    def wait_for(self, pred: Predicate, timeout: float = 15.0, count: int = 1) -> list[LogLine]:
        """Wait until ``count`` lines satisfy ``pred``; raise TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [line for line in self.lines if pred(line)]
                if len(found) >= count:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self._closed and len(found) < count):
                    raise TimeoutError(
                        f"waited {timeout}s for {count} matching line(s), saw {len(found)}; "
                        f"last lines: {self.lines[-5:]}"
                    )
                self._cond.wait(remaining)

    def wait_closed(self, timeout: float) -> bool:
        """Wait until every writer closed the pipe."""
        self._thread.join(timeout)
        return not self._thread.is_alive()


def gunicorn_command() -> list[str]:
    """The ``gunicorn`` script beside this interpreter, as users start it.
    Not ``python -m gunicorn``: on SIGUSR2 gunicorn re-executes its argv[0],
    which would then be gunicorn/__main__.py, putting gunicorn/ first on
    sys.path, where its ``http`` package hides the standard library's."""
    script = os.path.join(os.path.dirname(sys.executable), "gunicorn")
    if os.access(script, os.X_OK):
        return [script]
    return [sys.executable, "-m", "gunicorn"]


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` names a live (not zombie) process."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_gone(pid: int, timeout: float) -> bool:
    """Wait until ``pid`` is gone; True if it went."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    return not pid_alive(pid)


class Gunicorn:
    """A real gunicorn master started as a child process, output captured.

    ``pids`` collects every master, worker and dirty process the log stream
    names, so ``stop`` can end each one by PID.
    """

    def __init__(
        self,
        args: Sequence[str],
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        on_line: Callable[[LogLine], None] | None = None,
    ) -> None:
        self.args = list(args)
        self.env = dict(os.environ if env is None else env)
        self.cwd = cwd
        self.on_line = on_line
        self.pids: set[int] = set()
        self.proc: subprocess.Popen[bytes] | None = None
        self.stream: LogStream | None = None

    def _note(self, line: LogLine) -> None:
        for key in ("pid", "worker_pid", "master_pid", "dirty_worker_pid", "dirty_arbiter_pid"):
            value = line.get(key)
            if isinstance(value, int):
                self.pids.add(value)
        if self.on_line is not None:
            self.on_line(line)

    def start(self) -> Gunicorn:
        """Start the master."""
        self.proc = subprocess.Popen(
            [*gunicorn_command(), *self.args],
            env=self.env,
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.pids.add(self.proc.pid)
        self.stream = LogStream(self.proc.stdout, self._note)
        return self

    @property
    def pid(self) -> int:
        """The first master's pid."""
        assert self.proc is not None
        return self.proc.pid

    def wait_for(self, pred: Predicate, timeout: float = 15.0, count: int = 1) -> list[LogLine]:
        """See ``LogStream.wait_for``."""
        assert self.stream is not None
        return self.stream.wait_for(pred, timeout, count)

    def events(self, pred: Predicate | None = None) -> list[LogLine]:
        """See ``LogStream.events``."""
        assert self.stream is not None
        return self.stream.events(pred)

    def signal(self, sig: int, pid: int | None = None) -> None:
        """Send ``sig`` to the master (or to ``pid``)."""
        os.kill(self.pid if pid is None else pid, sig)

    def live_workers(self) -> list[int]:
        """Pids of workers that booted and have not exited, oldest first."""
        booted = [line["worker_pid"] for line in self.events(match(event="worker_booted"))]
        exited = {line.get("worker_pid") for line in self.events(match(event="worker_exited"))}
        return [pid for pid in booted if pid not in exited and pid_alive(pid)]

    def stop(self, timeout: float = 15.0) -> int | None:
        """Stop the master gracefully, then every process it left, by PID."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        for pid in sorted(self.pids):
            if pid != self.proc.pid and pid_alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
        for pid in sorted(self.pids):
            if pid != self.proc.pid and not wait_gone(pid, 5):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if self.stream is not None:
            self.stream.wait_closed(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.proc.returncode

    def __enter__(self) -> Gunicorn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def http_get(
    port: int, path: str, timeout: float = 10.0, headers: Mapping[str, str] | None = None
) -> tuple[int, bytes]:
    """GET ``path`` from 127.0.0.1:``port``: (status, body); status 0 if
    the connection failed or closed without a response."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except (urllib.error.URLError, http.client.HTTPException, OSError):
        return 0, b""


@contextlib.contextmanager
def running(args: Sequence[str], **kwargs: Any) -> Iterator[Gunicorn]:
    """``with running([...]) as server:`` start gunicorn, stop it after."""
    server = Gunicorn(args, **kwargs).start()
    try:
        yield server
    finally:
        server.stop()
