"""The attributes of gunicorn's objects that hookkit reads, as Protocols.

gunicorn ships no type information; these say what hookkit relies on, so
that the hook methods are typed, ``hookkit.testing``'s stand-ins are checked
against them by mypy, and a test checks gunicorn's real classes against them
(``tests/test_gunicorn_types.py``) on every supported release.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Config(Protocol):
    """``gunicorn.config.Config``: the settings hookkit reads."""

    @property
    def workers(self) -> int: ...
    @property
    def threads(self) -> int: ...
    @property
    def timeout(self) -> int: ...
    @property
    def worker_class_str(self) -> str: ...
    @property
    def max_requests(self) -> int: ...
    @property
    def proc_name(self) -> str | None: ...


@runtime_checkable
class Arbiter(Protocol):
    """``gunicorn.arbiter.Arbiter``, the ``server`` argument of master hooks."""

    pid: int
    cfg: Any  # Config, plus env_orig and the worker class the sinks read
    log: Any
    LISTENERS: Any
    WORKERS: Any
    worker_age: int
    num_workers: int
    reexec_pid: int
    master_pid: int

    def stop(self, graceful: bool = True) -> None: ...


@runtime_checkable
class Worker(Protocol):
    """``gunicorn.workers.base.Worker``, the ``worker`` argument."""

    age: int
    pid: int
    ppid: int
    cfg: Any
    log: Any
    nr: int
    max_requests: int
    booted: bool
    aborted: bool
    alive: bool


@runtime_checkable
class Request(Protocol):
    """gunicorn's request (``gunicorn.http.message.Request``, or the ASGI
    worker's): what the request path reads."""

    @property
    def method(self) -> str | None: ...
    @property
    def path(self) -> str | None: ...
    @property
    def query(self) -> str | None: ...
    @property
    def headers(self) -> Any: ...  # (name, value) pairs


@runtime_checkable
class Response(Protocol):
    """gunicorn's response (``gunicorn.http.wsgi.Response``)."""

    status: Any  # "200 OK", or an int from the ASGI worker
    sent: int
