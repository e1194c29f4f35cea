"""The sink contract (``hookkit.Sink``) as the runtime keeps it: only the
methods a sink overrides are called, the request hot path hands frozen
values in the declared order, no ``Event`` is built per request unless a
sink asks for one, a raising sink is isolated and counted, and a user's
sinks are checked, replaced on reconfiguration, started and stopped."""

from __future__ import annotations

import os
from typing import Any, NamedTuple

import pytest

import hookkit
from hookkit import ConfigError, RequestFinished, RequestStarted, Sink, SpanIds
from hookkit._core import request_path
from hookkit._core.dispatch import Dispatcher
from hookkit._core.runtime import RUNTIME
from hookkit._core.settings import Settings
from hookkit._core.sink import overrides, span_id_fields
from hookkit.hooks import on_starting, post_request, pre_request
from hookkit.testing import FakeArbiter, FakeRequest, FakeResponse, FakeWorker

OFF = {"logs": False, "metrics": False, "tracing": False, "status": False}


class Recorder(Sink):
    """Notes every call, by name, in a list shared by the test."""

    def __init__(self, name: str, calls: list[tuple[str, str]]) -> None:
        self.name = name
        self.calls = calls

    def start_master(self, server: Any) -> None:
        self.calls.append((self.name, "start_master"))

    def stop_master(self, server: Any) -> None:
        self.calls.append((self.name, "stop_master"))

    def request_started(self, request: RequestStarted) -> SpanIds | None:
        self.calls.append((self.name, "request_started"))
        return None

    def request_finished(self, request: RequestFinished) -> None:
        self.calls.append((self.name, "request_finished"))


class Ids(NamedTuple):
    """Span ids as a sink of the user's own may return them."""

    trace_id: int
    span_id: int


class Tracer(Recorder):
    """A sink that 'starts a span': returns its ids from request_started."""

    def request_started(self, request: RequestStarted) -> SpanIds | None:
        super().request_started(request)
        return Ids(0xA1, 0xB2)


class Keeper(Sink):
    """Keeps the values of the hot path."""

    name = "keeper"

    def __init__(self) -> None:
        self.started: list[RequestStarted] = []
        self.finished: list[RequestFinished] = []

    def request_started(self, request: RequestStarted) -> None:
        self.started.append(request)

    def request_finished(self, request: RequestFinished) -> None:
        self.finished.append(request)


class Counter(Sink):
    """Counts errors, as a metrics backend does."""

    name = "counter"

    def __init__(self) -> None:
        self.counted: dict[str, int] = {}

    def count_errors(self, sink: str, count: int) -> None:
        self.counted[sink] = self.counted.get(sink, 0) + count


class Raising(Sink):
    """Raises on every request and every event."""

    name = "raising"

    def handle(self, event: hookkit.Event) -> None:
        raise RuntimeError("handle")

    def request_finished(self, request: RequestFinished) -> None:
        raise RuntimeError("request_finished")


def one_request(path: str = "/items/7", environ: dict[str, Any] | None = None) -> None:
    """pre_request and post_request of one request, with the fakes."""
    worker, req = FakeWorker(), FakeRequest("GET", path, headers=[("CONTENT-LENGTH", "12")])
    pre_request(worker, req)
    post_request(worker, req, environ or {}, FakeResponse("201 Created", sent=5))


def test_the_base_does_nothing_and_overrides_tells_what_a_sink_implements() -> None:
    """A bare ``Sink`` implements nothing; a subclass what it overrides."""
    calls: list[tuple[str, str]] = []
    assert (False, False) == (
        overrides(Sink(), "request_finished"),
        overrides(Sink(), "handle"),
    )
    assert (True, False) == (
        overrides(Recorder("r", calls), "request_finished"),
        overrides(Recorder("r", calls), "handle"),
    )


def test_only_overriding_sinks_are_on_the_request_path() -> None:
    """The dispatcher keeps, per hot-path method, only the sinks that
    override it."""
    calls: list[tuple[str, str]] = []
    dispatcher = Dispatcher([Sink(), Recorder("r", calls), Counter()])
    assert (["r"], ["r"]) == (
        [name for name, _ in dispatcher.request_started],
        [name for name, _ in dispatcher.request_finished],
    )


def test_request_values_reach_the_sinks_in_the_declared_orders() -> None:
    """Started: in the started order; finished: in the finished order; a
    sink's span ids reach RequestFinished."""
    calls: list[tuple[str, str]] = []
    tracing, logs, keeper = Tracer("tracing", calls), Recorder("logs", calls), Keeper()
    RUNTIME.use(
        Settings(), [logs, tracing, keeper], [tracing, logs, keeper], [logs, keeper, tracing]
    )
    one_request(environ={"hookkit.route": "/items/{id}"})

    expected_calls = [
        ("tracing", "request_started"),
        ("logs", "request_started"),
        ("logs", "request_finished"),
        ("tracing", "request_finished"),
    ]
    assert expected_calls == calls
    (started,) = keeper.started
    (finished,) = keeper.finished
    assert ("GET", "/items/7", started.key) == (finished.method, finished.path, finished.key)
    assert ("/items/{id}", 201, 12, 5, None) == (
        finished.route,
        finished.status,
        finished.request_bytes,
        finished.response_bytes,
        finished.error_type,
    )
    assert Ids(0xA1, 0xB2) == finished.span_ids
    assert {"trace_id": f"{0xA1:032x}", "span_id": f"{0xB2:016x}"} == span_id_fields(
        finished.span_ids
    )


def test_no_event_is_built_per_request_unless_a_sink_asks(monkeypatch: pytest.MonkeyPatch) -> None:
    """With sinks that take the values only, a request builds no Event; a
    sink with ``request_events = True`` gets both events through handle()."""
    built: list[str] = []
    real = request_path.Event

    def counting_event(name: str, *args: Any) -> hookkit.Event:
        built.append(name)
        return real(name, *args)

    monkeypatch.setattr(request_path, "Event", counting_event)
    RUNTIME.use(Settings(), [Keeper()])
    one_request()
    assert [] == built

    class Wants(Sink):
        name = "wants"
        request_events = True

        def __init__(self) -> None:
            self.names: list[str] = []

        def handle(self, event: hookkit.Event) -> None:
            self.names.append(event.name)

    wants = Wants()
    RUNTIME.use(Settings(), [Keeper(), wants])
    one_request()
    assert ["request_started", "request_finished"] == wants.names


def test_a_raising_sink_is_isolated_and_counted() -> None:
    """A sink that raises on a request and on an event: the request goes
    on, the other sinks still run, and its errors are counted by name."""
    counter, keeper = Counter(), Keeper()
    RUNTIME.use(Settings(), [Raising(), keeper, counter])
    RUNTIME.dispatcher.announce_error_series()
    one_request()
    RUNTIME.emit("worker_booted", "post_worker_init")

    assert 1 == len(keeper.finished)
    assert {"raising": 2, "keeper": 0, "counter": 0, "hookkit": 0} == counter.counted


def test_a_sink_reports_its_own_errors() -> None:
    """``report_error`` and ``count_error`` of a configured sink count it."""
    counter, keeper = Counter(), Keeper()
    RUNTIME.use(Settings(), [keeper, counter])
    keeper.report_error("in its thread", OSError("gone"))
    keeper.count_error()
    assert {"keeper": 2} == counter.counted


@pytest.mark.parametrize(
    ("sinks", "message"),
    [
        ([object()], "is not a hookkit.Sink"),
        ([Sink()], "has no name"),
        ([Recorder("metrics", [])], "is hookkit's own"),
        ([Recorder("a", []), Recorder("a", [])], "two sinks are named 'a'"),
        ("not a list", "expected a list"),
    ],
)
def test_configure_refuses_bad_sinks(sinks: Any, message: str) -> None:
    """Sinks must be ``hookkit.Sink`` instances with unique names that are
    not hookkit's own: ConfigError names the problem, and nothing changes."""
    with pytest.raises(ConfigError, match=message):
        hookkit.configure(sinks=sinks, **OFF)
    assert () == RUNTIME.dispatcher.sinks


def test_configure_registers_user_sinks_after_hookkits(monkeypatch: pytest.MonkeyPatch) -> None:
    """``configure(sinks=[...])`` registers the user's sinks after hookkit's
    own; calling it again replaces them."""
    for name in ("HOOKKIT_METRICS", "HOOKKIT_TRACING", "HOOKKIT_STATUS"):
        monkeypatch.setenv(name, "off")
    calls: list[tuple[str, str]] = []
    hookkit.configure(sinks=[Recorder("mine", calls)])
    assert ["logs", "tracing", "mine"] == [sink.name for sink in RUNTIME.dispatcher.sinks]
    hookkit.configure(sinks=[Recorder("yours", calls)])
    assert ["logs", "tracing", "yours"] == [sink.name for sink in RUNTIME.dispatcher.sinks]


def test_reconfiguring_a_started_master_stops_replaced_sinks_and_starts_new_ones() -> None:
    """In a master that started (a SIGHUP ran the config again), the sinks a
    configuration replaced are stopped and the new ones started, once; a
    sink kept is neither."""
    calls: list[tuple[str, str]] = []
    kept, old, new = Recorder("kept", calls), Recorder("old", calls), Recorder("new", calls)
    hookkit.configure(sinks=[kept, old], **OFF)
    on_starting(FakeArbiter())
    hookkit.configure(sinks=[kept, new], **OFF)
    hookkit.configure(sinks=[kept, new], **OFF)

    expected = [
        ("kept", "start_master"),
        ("old", "start_master"),
        ("old", "stop_master"),
        ("new", "start_master"),
    ]
    assert expected == calls


def test_sink_names_may_be_set_per_instance() -> None:
    """Two instances of one class, each with a name of its own."""
    calls: list[tuple[str, str]] = []
    hookkit.configure(sinks=[Recorder("one", calls), Recorder("two", calls)], **OFF)
    assert ["tracing", "one", "two"] == [sink.name for sink in RUNTIME.dispatcher.sinks]
    assert os.getpid() == RUNTIME.pid
