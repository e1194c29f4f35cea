"""hookkit's Protocols of gunicorn's objects (``hookkit._core.gunicorn_types``)
hold for gunicorn's real classes, on every supported release (mypy checks
``hookkit.testing``'s stand-ins against them statically; gunicorn ships no
types, so its classes are checked here, on real instances)."""

from __future__ import annotations

import io
import os
import socket
import typing
from collections.abc import Iterator
from typing import Any

import pytest

from hookkit._core import gunicorn_types as types
from hookkit.testing import FakeArbiter, FakeConfig, FakeRequest, FakeResponse, FakeWorker

pytestmark = pytest.mark.compat


def gunicorn_objects() -> dict[str, Any]:
    """A real Config, Arbiter, SyncWorker, Request and Response."""
    from gunicorn.app.base import BaseApplication
    from gunicorn.arbiter import Arbiter
    from gunicorn.config import Config
    from gunicorn.http.message import Request
    from gunicorn.http.unreader import IterUnreader
    from gunicorn.http.wsgi import Response
    from gunicorn.workers.sync import SyncWorker

    class App(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            self.cfg.set("bind", ["127.0.0.1:0"])

        def load(self) -> Any:
            return lambda environ, start_response: []

    app = App()
    cfg = Config()
    arbiter = Arbiter(app)
    arbiter.pid = os.getpid()  # Arbiter.start() sets it before on_starting
    worker = SyncWorker(1, os.getpid(), [], app, 30, cfg, arbiter.log)
    raw = b"GET /x?y=1 HTTP/1.1\r\nHost: h\r\n\r\n"
    request = Request(cfg, IterUnreader([raw]), ("127.0.0.1", 1), 1)
    left, right = socket.socketpair()
    try:
        response = Response(request, left, cfg)
    finally:
        left.close()
        right.close()
    return {
        "Config": cfg,
        "Arbiter": arbiter,
        "Worker": worker,
        "Request": request,
        "Response": response,
    }


@pytest.fixture
def objects() -> Iterator[dict[str, Any]]:
    """gunicorn's real objects; the worker's heartbeat file closed afterwards."""
    made = gunicorn_objects()
    yield made
    made["Worker"].tmp.close()


def test_gunicorns_classes_have_what_hookkit_reads(objects: dict[str, Any]) -> None:
    """Each real object is an instance of its Protocol (every attribute
    hookkit reads is there)."""
    missing = {
        name: [
            member
            for member in typing._get_protocol_attrs(getattr(types, name))  # type: ignore[attr-defined]
            if not hasattr(obj, member)
        ]
        for name, obj in objects.items()
    }
    assert dict.fromkeys(objects, True) == {
        name: isinstance(obj, getattr(types, name)) for name, obj in objects.items()
    }, missing


def test_the_stand_ins_match_too() -> None:
    """hookkit.testing's stand-ins satisfy the same Protocols at run time."""
    stand_ins = {
        "Config": FakeConfig(),
        "Arbiter": FakeArbiter(),
        "Worker": FakeWorker(),
        "Request": FakeRequest(),
        "Response": FakeResponse(),
    }
    assert dict.fromkeys(stand_ins, True) == {
        name: isinstance(obj, getattr(types, name)) for name, obj in stand_ins.items()
    }


def test_a_stand_in_missing_an_attribute_fails_the_check() -> None:
    """The check can fail: an object without ``age`` is no Worker."""
    assert not isinstance(io.StringIO(), types.Worker)
