"""hookkit._core.dispatch: each event to every sink; a failing sink never reaches
gunicorn, is counted, and is reported at most once a minute."""

from __future__ import annotations

import os
import re
import types

import pytest

from hookkit._core import dispatch as _dispatch
from hookkit._core.dispatch import ERROR_REPORT_INTERVAL, Dispatcher
from hookkit._core.events import Event


class ListSink:
    """A sink that keeps what it is given."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.events: list[Event] = []

    def handle(self, event: Event) -> None:
        self.events.append(event)


class BrokenSink:
    """A sink that always raises."""

    def __init__(self, name: str = "broken", error: Exception | None = None) -> None:
        self.name = name
        self.error = error or RuntimeError("boom")
        self.calls = 0

    def handle(self, event: Event) -> None:
        self.calls += 1
        raise self.error


class Clock:
    """A ``time.monotonic`` the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """The dispatcher's clock, standing still until the test moves it."""
    fake = Clock()
    monkeypatch.setattr(_dispatch, "time", types.SimpleNamespace(monotonic=fake.monotonic))
    return fake


def event(name: str = "worker_booted") -> Event:
    return Event(name, "post_worker_init", "info", {"worker_class": "SyncWorker"}, os.getpid())


def test_every_sink_gets_each_event_in_order() -> None:
    """Each event goes to every sink, in the order the sinks were given."""
    first, second = ListSink("first"), ListSink("second")
    dispatcher = Dispatcher([first, second])
    booted, exited = event("worker_booted"), event("worker_exited")

    dispatcher.emit(booted)
    dispatcher.emit(exited)

    expected = ([booted, exited], [booted, exited])
    assert expected == (first.events, second.events)


def test_no_sinks_is_fine() -> None:
    """With no sink an event goes nowhere, quietly."""
    dispatcher = Dispatcher()

    dispatcher.emit(event())

    expected: dict[str, int] = {}
    assert expected == dispatcher.errors


@pytest.mark.parametrize(
    "error", [RuntimeError("boom"), ValueError("bad value"), KeyError("k"), OSError("disk full")]
)
def test_a_raising_sink_never_raises_out_of_emit(error: Exception, clock: Clock) -> None:
    """Whatever a sink raises, emit returns normally (gunicorn never sees it)."""
    dispatcher = Dispatcher([BrokenSink(error=error)])

    dispatcher.emit(event())  # does not raise

    expected = {"broken": 1}
    assert expected == dispatcher.errors


def test_other_sinks_still_get_the_event(clock: Clock) -> None:
    """Sinks before and after a raising one still get every event."""
    before, broken, after = ListSink("before"), BrokenSink(), ListSink("after")
    dispatcher = Dispatcher([before, broken, after])
    booted = event()

    dispatcher.emit(booted)

    expected = ([booted], 1, [booted])
    assert expected == (before.events, broken.calls, after.events)


def test_errors_are_counted_per_sink(clock: Clock) -> None:
    """``dispatcher.errors`` counts each sink's failures under its own name."""
    logs, metrics = BrokenSink("logs"), BrokenSink("metrics")
    dispatcher = Dispatcher([logs, ListSink("fine"), metrics])

    for _ in range(3):
        dispatcher.emit(event())
    dispatcher.sinks = (logs, ListSink("fine"))
    dispatcher.emit(event())

    expected = {"logs": 4, "metrics": 3}
    assert expected == dispatcher.errors


def test_hookkits_own_errors_are_counted_apart(clock: Clock) -> None:
    """An error in hookkit's own handling of a hook is counted as hookkit's."""
    dispatcher = Dispatcher([BrokenSink()])

    dispatcher.emit(event())
    dispatcher.internal_error("post_fork", AttributeError("no pid"))
    dispatcher.internal_error("pre_request", AttributeError("no path"))

    expected = {"broken": 1, "hookkit": 2}
    assert expected == dispatcher.errors


def test_the_first_error_is_reported_on_stderr(
    clock: Clock, capsys: pytest.CaptureFixture[str]
) -> None:
    """The first failure of a sink is reported straight to stderr, one line
    naming the sink, the event, the pid and the exception."""
    dispatcher = Dispatcher([BrokenSink("logs", RuntimeError("stream closed"))])

    dispatcher.emit(event("worker_booted"))

    captured = capsys.readouterr()
    expected = (
        f"hookkit: sink 'logs' failed on worker_booted in pid {os.getpid()}: "
        "RuntimeError: stream closed (1 errors so far; reported at most once a minute)\n"
    )
    assert ("", expected) == (captured.out, captured.err)


def reported_counts(text: str) -> list[int]:
    """The error counts of the reports in ``text`` (one report a line)."""
    return [int(m) for m in re.findall(r"\((\d+) errors so far", text)]


def test_the_report_is_rate_limited_to_once_a_minute_per_sink(
    clock: Clock, capsys: pytest.CaptureFixture[str]
) -> None:
    """Within a minute of a report, further errors of that sink are only
    counted; the next report, a minute later, says how many there were."""
    dispatcher = Dispatcher([BrokenSink("logs")])
    reports: dict[float, list[int]] = {}
    start = clock.now

    for seconds in (0, 1, 30, 59.5, 60, 61, 119.9, 120):
        clock.now = start + seconds
        dispatcher.emit(event())
        reports[seconds] = reported_counts(capsys.readouterr().err)

    expected = {0: [1], 1: [], 30: [], 59.5: [], 60: [5], 61: [], 119.9: [], 120: [8]}
    assert expected == reports
    expected_errors = {"logs": 8}
    assert expected_errors == dispatcher.errors
    assert ERROR_REPORT_INTERVAL == 60.0


def test_each_sink_has_its_own_report_limit(
    clock: Clock, capsys: pytest.CaptureFixture[str]
) -> None:
    """One sink's report does not silence another's."""
    dispatcher = Dispatcher([BrokenSink("logs")])
    dispatcher.emit(event())
    capsys.readouterr()

    clock.now += 5
    dispatcher.sinks = (BrokenSink("logs"), BrokenSink("metrics"))
    dispatcher.emit(event())
    dispatcher.internal_error("post_fork", ValueError("x"))

    lines = capsys.readouterr().err.splitlines()
    expected = ["hookkit: sink 'metrics' failed", "hookkit: hookkit failed in post_fork"]
    assert expected == [line.split(" in pid")[0].split(" on ")[0] for line in lines]


def test_a_broken_stderr_is_survived(clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    """Reporting itself never raises, even when stderr is closed."""

    class ClosedStream:
        def write(self, text: str) -> int:
            raise ValueError("I/O operation on closed file")

        def flush(self) -> None:
            raise ValueError("I/O operation on closed file")

    monkeypatch.setattr("sys.stderr", ClosedStream())
    dispatcher = Dispatcher([BrokenSink()])

    dispatcher.emit(event())

    expected = {"broken": 1}
    assert expected == dispatcher.errors
