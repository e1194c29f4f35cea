"""What tracing keeps out of each worker's private memory (issue 16)."""

from __future__ import annotations

from typing import Any

import pytest

from hookkit._core.settings import Settings
from hookkit._sinks.tracing.sink import TracingSink
from tests.otlp import OtlpReceiver
from tests.traced import request, start_traced


@pytest.mark.integration
def test_a_worker_inherits_the_masters_objects_frozen(serve: Any) -> None:
    """The master freezes its objects (``gc.freeze``) just before it forks
    a worker: the worker's collections never write to the pages it shares
    with the master (copy on write)."""
    with OtlpReceiver() as rx:
        server = start_traced(serve, rx, app="apps.gc_state:app")
        status, body = request(server.port, "/")
    assert 200 == status
    assert int(body) > 10_000


def test_freezing_happens_before_each_fork(monkeypatch: pytest.MonkeyPatch) -> None:
    """before_fork (the master's pre_fork) freezes, each time; with tracing
    off, nothing is frozen by tracing."""
    import gc

    calls: list[str] = []
    monkeypatch.setattr(gc, "freeze", lambda: calls.append("freeze"))
    environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}
    sink = TracingSink(Settings.load(environ), environ)
    sink.before_fork(1)
    sink.before_fork(2)
    assert ["freeze", "freeze"] == calls
    off = {"HOOKKIT_TRACING": "off"}
    TracingSink(Settings.load(off), off).before_fork(3)
    assert ["freeze", "freeze"] == calls
