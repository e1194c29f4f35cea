"""The log sink and its pipeline (``hookkit._sinks.logs``): events as one JSON
line each, gunicorn's own records through the same formatter; and the
worker exit statuses read from gunicorn's reap lines (``hookkit._core``)."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from hookkit._core.events import Event
from hookkit._core.exits import parse_reap_line
from hookkit._core.master import MasterBook
from hookkit._core.settings import Settings
from hookkit._core.sink import RequestFinished, RequestStarted
from hookkit._core.stderr import NonBlockingStderrHandler
from hookkit._sinks.logs import pipeline as _logging
from hookkit._sinks.logs.sink import LogSink

pytestmark = pytest.mark.compat


class Captured:
    """What hookkit's handler wrote."""

    def __init__(self, stream: io.StringIO) -> None:
        self.stream = stream

    @property
    def text(self) -> str:
        return self.stream.getvalue()

    def lines(self) -> list[dict[str, Any]]:
        """Each line parsed as JSON (a line that is not JSON fails the test)."""
        return [json.loads(line) for line in self.text.split("\n") if line]


def use_handler(log_format: str = "json", level: int = logging.INFO) -> Captured:
    """Give hookkit one handler writing to a string, with hookkit's formatter."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(_logging.make_formatter(log_format))
    _logging.set_handlers([handler], level)
    return Captured(stream)


@pytest.fixture(autouse=True)
def restore_hookkit_logger() -> Iterator[None]:
    """The stdlib ``hookkit`` logger's handlers and level are put back after each test."""
    logger = logging.getLogger(_logging.LOGGER_NAME)
    handlers, level, propagate = list(logger.handlers), logger.level, logger.propagate
    yield
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    for handler in handlers:
        logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = propagate


@pytest.fixture
def captured() -> Captured:
    return use_handler()


def event(name: str, level: Any = "info", **fields: object) -> Event:
    return Event(name, "post_worker_init", level, fields, os.getpid())


def finished(
    *,
    method: str = "GET",
    path: str = "/",
    status: int | None = 200,
    duration_seconds: float = 0.0,
    response_bytes: int | None = None,
    request_bytes: int | None = None,
    route: str | None = None,
    error_type: str | None = None,
    queue_seconds: float | None = None,
) -> RequestFinished:
    """A request the log sink is told finished (its access line's fields)."""
    return RequestFinished(
        0, method, path, route, status, duration_seconds, request_bytes, response_bytes,
        error_type, None, None, {}, None, queue_seconds,
    )  # fmt: skip


# -- LogSink -----------------------------------------------------------------


def test_one_json_line_per_event(captured: Captured) -> None:
    """Each event is one line of JSON, ending in a newline."""
    sink = LogSink(Settings())

    sink.handle(event("worker_booted", worker_class="SyncWorker"))
    sink.handle(event("worker_exiting", exit_code=0))

    expected = (2, True, ["worker_booted", "worker_exiting"])
    lines = captured.lines()
    actual = (captured.text.count("\n"), captured.text.endswith("\n"), [x["event"] for x in lines])
    assert expected == actual


def test_line_opens_with_event_and_has_the_standard_fields(captured: Captured) -> None:
    """A line opens with ``event``, and has ``hook``, ``level``, a UTC ISO
    ``timestamp``, the ``pid`` and the event's fields."""
    before = datetime.now(timezone.utc)

    LogSink(Settings()).handle(event("worker_booted", worker_class="SyncWorker"))

    [line] = captured.lines()
    expected = ("event", "worker_booted", "post_worker_init", "info", os.getpid(), "SyncWorker")
    actual = (
        next(iter(line)),
        line["event"],
        line["hook"],
        line["level"],
        line["pid"],
        line["worker_class"],
    )
    assert expected == actual
    assert line["timestamp"].endswith("Z")
    stamped = datetime.fromisoformat(line["timestamp"].replace("Z", "+00:00"))
    assert before - timedelta(seconds=1) <= stamped <= datetime.now(timezone.utc)


def test_the_level_is_the_events(captured: Captured) -> None:
    """An event's level is the line's level."""
    sink = LogSink(Settings())

    for level in ("info", "warning", "error", "critical"):
        sink.handle(event(f"at_{level}", level))

    expected = [("at_info", "info"), ("at_warning", "warning")]
    expected += [("at_error", "error"), ("at_critical", "critical")]
    assert expected == [(x["event"], x["level"]) for x in captured.lines()]


def test_worker_fields_inside_a_worker(captured: Captured) -> None:
    """In a worker where hookkit's post_fork ran, lines carry worker_pid and worker_age."""
    from hookkit._core.identity import set_worker

    set_worker(os.getpid(), 3)

    LogSink(Settings()).handle(event("worker_booted"))

    [line] = captured.lines()
    expected = (os.getpid(), 3)
    assert expected == (line["worker_pid"], line["worker_age"])


def test_request_finished_only_with_the_access_log(captured: Captured) -> None:
    """``request_finished`` (the access line) is written only when
    ``access_log`` is on; other events are written either way."""
    request = finished(method="GET", path="/", status=200)

    LogSink(Settings(access_log=False)).request_finished(request)
    LogSink(Settings(access_log=False)).handle(event("worker_booted"))
    LogSink(Settings(access_log=True)).request_finished(request)

    expected = [("worker_booted", None), ("request_finished", 200)]
    assert expected == [(x["event"], x.get("status")) for x in captured.lines()]


def test_the_access_line_is_rendered_as_every_other_line(captured: Captured) -> None:
    """The access line, rendered by hookkit itself for speed, has the keys,
    order and values structlog's chain gives the same event (the timestamp
    aside): event and hook first, the fields, then level, timestamp, pid
    and, in a traced request, the trace ids."""
    from opentelemetry.sdk.trace import TracerProvider

    fields = {
        "method": "GET",
        "path": '/a "quoted"\npath\u00e9',
        "status": 200,
        "duration_seconds": 0.001234,
        "response_bytes": None,
        "request_bytes": 12,
        "route": "/a/{id}",
        "error_type": None,
        "queue_seconds": 0.012345,
    }
    sink = LogSink(Settings(access_log=True))
    with TracerProvider().get_tracer("t").start_as_current_span("request"):
        sink.request_finished(finished(**fields))  # type: ignore[arg-type]  # hookkit's rendering
        sink._log.info("request_finished", hook="post_request", **fields)  # structlog's
    fast, chain = captured.lines()
    assert list(chain) == list(fast)
    assert {**chain, "timestamp": None} == {**fast, "timestamp": None}


def test_debug_events_follow_the_level() -> None:
    """``request_started`` is a debug line: left out at INFO, written at DEBUG."""
    started = RequestStarted(0, "GET", "/", None)
    at_info = use_handler(level=logging.INFO)
    LogSink(Settings()).request_started(started)
    at_debug = use_handler(level=logging.DEBUG)
    LogSink(Settings()).request_started(started)

    expected = ("", ["request_started"])
    assert expected == (at_info.text, [x["event"] for x in at_debug.lines()])


NASTY_VALUES = {
    "newlines": "first\nsecond\r\nthird",
    "quotes": "say \"hi\" \\ 'bye'",
    "surrogate": "bad\udcffbyte",  # os.fsdecode of a non-UTF-8 byte
    "latin1": b"\xff\xfe caf\xe9 \x00".decode("latin-1"),
    "separators": "a\u2028b\u2029c\x1cd\x85e",
    "tab_and_nul": "a\tb\x00c",
    "nested": {"list": ["x\ny", "\udcfe"], "n": 1},
}


def test_nasty_values_stay_one_valid_json_line(captured: Captured) -> None:
    """Values with newlines, quotes, lone surrogates (undecodable bytes) or
    latin-1 text stay ONE line of valid JSON that encodes as strict UTF-8
    (stderr would fail on a lone surrogate), and come back unchanged."""
    LogSink(Settings()).handle(event("request_slow", "warning", **NASTY_VALUES))

    text = captured.text
    text.encode("utf-8")  # strict: raises on a lone surrogate
    expected = (1, True)
    assert expected == (text.count("\n"), text.endswith("\n"))
    [line] = captured.lines()
    expected_values = NASTY_VALUES
    assert expected_values == {k: line[k] for k in NASTY_VALUES}


def test_a_traceback_stays_inside_its_one_line(captured: Captured) -> None:
    """A record with an exception (gunicorn's ``log.exception``) is one JSON
    line whose ``exception`` holds the traceback."""
    logger = _logging.stdlib_logger()

    try:
        raise ValueError("broken\napp")
    except ValueError:
        logger.exception("Error handling request %s", "/boom")

    text = captured.text
    [line] = captured.lines()
    expected = (1, "Error handling request /boom", "error")
    assert expected == (text.count("\n"), line["event"], line["level"])
    assert "Traceback" in line["exception"]
    assert "ValueError: broken\napp" in line["exception"]


def test_gunicorns_own_records_share_the_format() -> None:
    """A plain stdlib record (gunicorn's error log) rendered by hookkit's
    formatter is a JSON line with the logger's name and the same fields."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(_logging.make_formatter("json"))
    gunicorn_error = logging.getLogger("hookkit-tests.gunicorn.error")
    gunicorn_error.propagate = False
    gunicorn_error.addHandler(handler)
    gunicorn_error.setLevel(logging.INFO)
    try:
        gunicorn_error.info("Booting worker with pid: %s", 1234)
    finally:
        gunicorn_error.removeHandler(handler)

    line = json.loads(stream.getvalue())
    expected = ("event", "Booting worker with pid: 1234", "info", "hookkit-tests.gunicorn.error")
    actual = (next(iter(line)), line["event"], line["level"], line["logger"])
    assert expected == actual
    assert os.getpid() == line["pid"]
    assert line["timestamp"].endswith("Z")


def test_console_format_is_one_readable_line() -> None:
    """The console format writes the event and its fields on one line."""
    captured = use_handler("console")

    LogSink(Settings()).handle(event("worker_booted", worker_class="SyncWorker"))

    text = captured.text
    expected = 1
    assert expected == text.count("\n")
    assert "worker_booted" in text
    assert "worker_class=SyncWorker" in text


def test_set_handlers_replaces_only_hookkits_handlers() -> None:
    """``set_handlers`` replaces the handlers hookkit added before and keeps
    any other handler on the logger (a reload must not duplicate lines)."""
    logger = _logging.stdlib_logger()
    foreign = logging.NullHandler()
    logger.addHandler(foreign)
    first, second = logging.NullHandler(), logging.NullHandler()

    _logging.set_handlers([first])
    _logging.set_handlers([second], logging.WARNING)

    expected = ([foreign, second], logging.WARNING, False)
    assert expected == (logger.handlers, logger.level, logger.propagate)


def test_ensure_stderr_handler_adds_one_only_when_there_is_none(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Without any handler hookkit writes to stderr, through its
    non-blocking handler; with one, nothing is added."""
    logger = _logging.stdlib_logger()
    for handler in list(logger.handlers):
        logger.removeHandler(handler)

    _logging.ensure_stderr_handler(Settings())
    _logging.ensure_stderr_handler(Settings())

    [handler] = logger.handlers  # exactly one
    assert isinstance(handler, NonBlockingStderrHandler)
    assert isinstance(handler.formatter, logging.Formatter)
    logger.warning("to stderr")
    assert "to stderr" in capsys.readouterr().err


# -- reap lines ------------------------------------------------------------


_seen: list[tuple[int, int | None, int | None]] = []


def note_reap_line(msg: object, args: tuple[object, ...]) -> None:
    """What the master does with each line gunicorn logs: the status, if any."""
    status = parse_reap_line(msg, args)
    if status is not None:
        _seen.append(status)


@pytest.fixture
def statuses() -> list[tuple[int, int | None, int | None]]:
    """The (pid, exit_code, signal) tuples read from the lines."""
    _seen.clear()
    return _seen


@pytest.mark.parametrize(
    ("msg", "args", "expected"),
    [
        # gunicorn 27: pid and signal name as arguments
        ("Worker (pid:%s) was sent %s!", (123, "SIGTERM"), (123, None, signal.SIGTERM)),
        ("Worker (pid:%s) was sent %s!", (124, "SIGSEGV"), (124, None, signal.SIGSEGV)),
        (
            "Worker (pid:%s) was sent %s! Perhaps out of memory?",
            (125, "SIGKILL"),
            (125, None, signal.SIGKILL),
        ),
        # gunicorn 25: the message is formatted first
        ("Worker (pid:126) was sent SIGTERM!", (), (126, None, signal.SIGTERM)),
        (
            "Worker (pid:127) was sent SIGKILL! Perhaps out of memory?",
            (),
            (127, None, signal.SIGKILL),
        ),
        # every version: the exit code line
        ("Worker (pid:%s) exited with code %s.", (128, 3), (128, 3, None)),
        ("Worker (pid:%s) exited with code %s.", (129, 1), (129, 1, None)),
        ("Worker (pid:130) exited with code 4.", (), (130, 4, None)),
    ],
)
def test_reap_lines_give_the_exit_status(
    msg: str,
    args: tuple[object, ...],
    expected: tuple[int, int | None, int | None],
    statuses: list[tuple[int, int | None, int | None]],
) -> None:
    """``note_reap_line`` reads the pid and the exit code or signal from
    gunicorn's reap_workers lines, in gunicorn 27's style (arguments) and
    25/26's (pre-formatted)."""
    note_reap_line(msg, args)

    assert [expected] == statuses


def test_reap_lines_as_gunicorn_27_logs_them(
    statuses: list[tuple[int, int | None, int | None]],
) -> None:
    """The exact calls of gunicorn 27's Arbiter.reap_workers (``msg`` plus
    ``*msg_args``) give the status."""
    msg = "Worker (pid:%s) was sent %s!"
    msg_args = [4321, "SIGKILL"]
    msg += " Perhaps out of memory?"
    note_reap_line(msg, tuple(msg_args))
    note_reap_line("Worker (pid:%s) exited with code %s.", (4322, 3))

    expected = [(4321, None, int(signal.SIGKILL)), (4322, 3, None)]
    assert expected == statuses


@pytest.mark.parametrize(
    ("msg", "args"),
    [
        ("Worker (pid:%s) was sent %s!", (131, "signal 40")),  # gunicorn 27
        ("Worker (pid:131) was sent signal 40!", ()),  # gunicorn 25
    ],
)
def test_a_signal_without_a_name(
    msg: str, args: tuple[object, ...], statuses: list[tuple[int, int | None, int | None]]
) -> None:
    """gunicorn names a signal without a name ``signal N`` (a real-time
    signal, say): its number is still the status."""
    note_reap_line(msg, args)

    expected = [(131, None, 40)]
    assert expected == statuses


@pytest.mark.parametrize(
    ("msg", "args"),
    [
        ("Booting worker with pid: %s", (1,)),
        ("Worker exiting (pid: %s)", (2,)),
        ("Dirty arbiter (pid:%s) exited with code %s", (3, 1)),
        ("WORKER TIMEOUT (pid:%s)", (4,)),
        ("Worker (pid:%s) was sent %s!", (5,)),  # arguments that do not fit
        ("Worker (pid:%s) exited with code %s.", ()),  # not formatted
        (None, ()),
        (12345, ()),
    ],
)
def test_other_lines_are_ignored(
    msg: object, args: tuple[object, ...], statuses: list[tuple[int, int | None, int | None]]
) -> None:
    """Lines that are not a worker's reaped status are ignored, quietly."""
    note_reap_line(msg, args)

    expected: list[tuple[int, int | None, int | None]] = []
    assert expected == statuses


def test_no_master_no_work() -> None:
    """Outside a master hookkit saw start (a worker), a reap line is ignored."""
    book = MasterBook()

    book.note_reap_line("Worker (pid:%s) exited with code %s.", (1, 3))  # does not raise

    assert {} == book.exit_statuses


def test_query_values_are_redacted_in_gunicorns_own_lines(captured: Captured) -> None:
    """gunicorn logs the URI or request line of a failed request; the
    values of sensitive query parameters never reach the stream."""
    gunicorn_error = logging.getLogger("gunicorn.error")
    handlers = list(gunicorn_error.handlers)
    gunicorn_error.handlers = list(logging.getLogger(_logging.LOGGER_NAME).handlers)
    try:
        gunicorn_error.error("Error handling request GET %s", "/x?page=2&password=hunter2#top")
        gunicorn_error.warning("Invalid HTTP request line: 'GET /?token=abc&q=1 HTTP/1.1'")
    finally:
        gunicorn_error.handlers = handlers
    expected = [
        "Error handling request GET /x?page=2&password=REDACTED#top",
        "Invalid HTTP request line: 'GET /?token=REDACTED&q=1 HTTP/1.1'",
    ]
    assert expected == [line["event"] for line in captured.lines()]


def test_lines_of_loggers_without_handlers_are_json_too(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A warning from a logger nobody configured (gunicorn's
    ``gunicorn.http.wsgi``, OpenTelemetry's propagators) is rendered by
    hookkit's formatter instead of Python's bare last-resort handler."""
    saved = logging.lastResort
    try:
        _logging.render_unrouted_lines("json")
        logger = logging.getLogger("unconfigured.for.this.test")
        logger.propagate = False
        logger.warning("Member doesn't match the w3c identifiers format %s", "=")
        logger.info("below warning: not written")
    finally:
        logging.lastResort = saved
    (line,) = [json.loads(text) for text in capsys.readouterr().err.splitlines()]
    expected = ("Member doesn't match the w3c identifiers format =", "warning")
    assert expected == (line["event"], line["level"])
