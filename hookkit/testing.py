"""Helpers to unit-test gunicorn hooks without starting gunicorn, in the
spirit of ``structlog.testing``.

```pycon
>>> from hookkit.hooks import post_request, pre_request
>>> from hookkit.testing import FakeRequest, FakeResponse, FakeWorker, capture_events
>>> worker, req = FakeWorker(), FakeRequest("GET", "/hello")
>>> with capture_events() as events:
...     pre_request(worker, req)
...     post_request(worker, req, {}, FakeResponse("200 OK"))
>>> [(e.name, e.fields["status"]) for e in events if e.name == "request_finished"]
[('request_finished', 200)]

```

The stand-ins carry only the attributes hookkit and typical hooks read
(gunicorn's real objects have many more; ``hookkit._core.gunicorn_types``
names them, and mypy checks the stand-ins against it); pass your own values
as keywords.

``reset()`` puts back what hookkit changed in the process, for tests that
run hooks one after another.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from hookkit._core import gunicorn_types as _types
from hookkit._core import identity as _identity
from hookkit._core.events import Event as _Event
from hookkit._core.resets import run_resets as _run_resets
from hookkit._core.runtime import RUNTIME as _RUNTIME
from hookkit._core.runtime import Runtime as _Runtime
from hookkit._core.sink import Sink as _Sink


@dataclass
class FakeConfig:
    """The parts of ``gunicorn.config.Config`` hooks usually read."""

    workers: int = 1
    threads: int = 1
    timeout: int = 30
    worker_class_str: str = "sync"
    max_requests: int = 0
    proc_name: str = "gunicorn"
    # The environment a re-executed master (SIGUSR2) starts from.
    env_orig: dict[str, str] = field(default_factory=dict)


@dataclass
class FakeLog:
    """A gunicorn logger stand-in that records what it was told."""

    lines: list[tuple[str, str]] = field(default_factory=list)

    def _log(self, level: str, msg: str, *args: Any) -> None:
        self.lines.append((level, msg % args if args else msg))

    def debug(self, msg: str, *args: Any, **_kw: Any) -> None:
        self._log("debug", msg, *args)

    def info(self, msg: str, *args: Any, **_kw: Any) -> None:
        self._log("info", msg, *args)

    def warning(self, msg: str, *args: Any, **_kw: Any) -> None:
        self._log("warning", msg, *args)

    def error(self, msg: str, *args: Any, **_kw: Any) -> None:
        self._log("error", msg, *args)

    def critical(self, msg: str, *args: Any, **_kw: Any) -> None:
        self._log("critical", msg, *args)


@dataclass
class FakeArbiter:
    """A stand-in for ``gunicorn.arbiter.Arbiter`` (the ``server`` argument)."""

    pid: int = field(default_factory=os.getpid)
    cfg: FakeConfig = field(default_factory=FakeConfig)
    log: FakeLog = field(default_factory=FakeLog)
    LISTENERS: list[Any] = field(default_factory=list)
    WORKERS: dict[int, Any] = field(default_factory=dict)
    worker_age: int = 0
    num_workers: int = 1
    reexec_pid: int = 0  # the re-executed master's, after SIGUSR2
    master_pid: int = 0  # the old master's, in a re-executed one
    stopped: bool = False

    def stop(self, graceful: bool = True) -> None:
        """Record that the master was asked to stop."""
        self.stopped = True


@dataclass
class FakeWorker:
    """A stand-in for a gunicorn worker (``gunicorn.workers.base.Worker``)."""

    age: int = 1
    pid: int = field(default_factory=os.getpid)
    ppid: int = field(default_factory=os.getppid)
    cfg: FakeConfig = field(default_factory=FakeConfig)
    log: FakeLog = field(default_factory=FakeLog)
    nr: int = 0
    max_requests: int = sys.maxsize
    booted: bool = True
    aborted: bool = False
    alive: bool = True


@dataclass
class FakeRequest:
    """A stand-in for gunicorn's request object."""

    method: str = "GET"
    path: str = "/"
    query: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)
    scheme: str = "http"
    # (address, port) of the peer, as gunicorn gives it; a UNIX socket's is a string.
    peer_addr: Any = ("127.0.0.1", 40000)

    @property
    def uri(self) -> str:
        """Path and query string, as the client sent them."""
        return f"{self.path}?{self.query}" if self.query else self.path


@dataclass
class FakeResponse:
    """A stand-in for gunicorn's response object (``gunicorn.http.wsgi.Response``)."""

    status: str | int | None = "200 OK"
    sent: int = 0
    headers_sent: bool = True
    headers: list[tuple[str, str]] = field(default_factory=list)


class CapturingSink(_Sink):
    """A sink that keeps every event it is given, in order, the request
    events included."""

    name = "capture"
    request_events = True

    def __init__(self) -> None:
        self.events: list[_Event] = []

    def handle(self, event: _Event) -> None:
        """Keep ``event``."""
        self.events.append(event)


@contextmanager
def capture_events(runtime: _Runtime = _RUNTIME) -> Iterator[list[_Event]]:
    """Capture the events hookkit's hooks emit inside the block, instead of
    handing them to the configured sinks (so nothing is logged, and no
    metrics endpoint starts); the runtime's sinks and settings are restored
    afterwards."""
    sink = CapturingSink()
    saved = runtime.dispatcher.snapshot()
    was_configured, settings = runtime.configured, runtime.settings
    runtime.configured = True  # do not read the environment and add sinks
    runtime.dispatcher.set_sinks((sink,))
    try:
        yield sink.events
    finally:
        runtime.dispatcher.restore(saved)
        runtime.configured, runtime.settings = was_configured, settings


def reset(runtime: _Runtime = _RUNTIME) -> None:
    """Restore what hookkit changed in this process: the runtime's state
    (settings, sinks, master and worker books, requests in flight), the
    worker identity, Python's ``logging.lastResort``, the ``hookkit``
    logger's handlers and ``propagate``, prometheus_client's value class,
    the stderr drop callback, the query redactor, and the sinks hookkit
    made.

    It cannot undo: callbacks registered with ``os.register_at_fork``
    (hookkit's are idempotent instead), the global OpenTelemetry tracer
    provider (the API sets it once per process), and signal handlers
    installed in a worker.
    """
    fallback = runtime.configure_from_environment
    runtime.__init__()  # type: ignore[misc]
    runtime.configure_from_environment = fallback
    _identity.clear_worker()
    _run_resets()


def _stand_ins_match_gunicorn() -> None:
    """mypy: the stand-ins have what hookkit reads of gunicorn's objects."""
    _a: _types.Arbiter = FakeArbiter()
    _w: _types.Worker = FakeWorker()
    _r: _types.Request = FakeRequest()
    _s: _types.Response = FakeResponse()
    _c: _types.Config = FakeConfig()


__all__ = [
    "CapturingSink",
    "FakeArbiter",
    "FakeConfig",
    "FakeLog",
    "FakeRequest",
    "FakeResponse",
    "FakeWorker",
    "capture_events",
    "reset",
]
