"""Helpers to unit-test gunicorn hooks without starting gunicorn, in the
spirit of ``structlog.testing``.

>>> from hookkit.hooks import post_request, pre_request
>>> from hookkit.testing import FakeRequest, FakeResponse, FakeWorker, capture_events
>>> worker, req = FakeWorker(), FakeRequest("GET", "/hello")
>>> with capture_events() as events:
...     pre_request(worker, req)
...     post_request(worker, req, {}, FakeResponse("200 OK"))
>>> [(e.name, e.fields["status"]) for e in events if e.name == "request_finished"]
[('request_finished', 200)]

The stand-ins carry only the attributes hookkit and typical hooks read
(gunicorn's real objects have many more); pass your own values as keywords.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from hookkit._core.events import Event as _Event
from hookkit._core.runtime import RUNTIME as _RUNTIME
from hookkit._core.runtime import Runtime as _Runtime


@dataclass
class FakeConfig:
    """The parts of ``gunicorn.config.Config`` hooks usually read."""

    workers: int = 1
    threads: int = 1
    timeout: int = 30
    worker_class_str: str = "sync"
    max_requests: int = 0
    proc_name: str = "gunicorn"


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


class CapturingSink:
    """A sink that keeps every event it is given, in order."""

    name = "capture"

    def __init__(self) -> None:
        self.events: list[_Event] = []

    def handle(self, event: _Event) -> None:
        """Keep ``event``."""
        self.events.append(event)


@contextmanager
def capture_events(runtime: _Runtime = _RUNTIME) -> Iterator[list[_Event]]:
    """Capture the events hookkit's hooks emit inside the block, instead of
    logging them (and without starting the metrics endpoint); the runtime's
    sinks and settings are restored afterwards."""
    sink = CapturingSink()
    saved = runtime.dispatcher.sinks, runtime.request_sinks()
    was_configured, settings = runtime.configured, runtime.settings
    runtime.configured = True  # do not read the environment and add sinks
    # No /metrics endpoint and no multiprocess directory in a unit test.
    runtime.settings = settings.replace(metrics=False)
    runtime.dispatcher.sinks = (sink,)
    runtime.set_request_sinks(None, None, (sink,))
    try:
        yield sink.events
    finally:
        runtime.dispatcher.sinks = saved[0]
        runtime.set_request_sinks(*saved[1])
        runtime.configured, runtime.settings = was_configured, settings


__all__ = [
    "CapturingSink",
    "FakeArbiter",
    "FakeConfig",
    "FakeLog",
    "FakeRequest",
    "FakeResponse",
    "FakeWorker",
    "capture_events",
]
