"""The OTLP logs sink without gunicorn: its configuration checked at
start-up (the SDK's release, the protocol, the timeout), how an event or a
``gunicorn.error`` line becomes a record, and its pipeline (the official
``OTLPLogExporter`` over real HTTP to ``tests.otlp_logs_receiver``): ids,
pids, failures counted, waits bounded. Real gunicorn, forks and a timeout:
``test_otlp_logs_integration``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from importlib import metadata

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from hookkit._core import abort_budget
from hookkit._core import events as ev
from hookkit._core.dispatch import Dispatcher
from hookkit._core.events import Event
from hookkit._core.settings import ConfigError, Settings
from hookkit._core.sink import RequestFinished, span_id_fields
from hookkit._dropin import assemble
from hookkit._sinks.otlp_logs import config as logs_config
from hookkit._sinks.otlp_logs import records
from hookkit._sinks.otlp_logs.config import LogsConfig
from hookkit._sinks.otlp_logs.handler import GUNICORN_ERROR
from hookkit._sinks.otlp_logs.sink import OtlpLogsSink
from hookkit.testing import FakeArbiter, FakeWorker
from tests.otlp import refused_endpoint
from tests.otlp_logs_receiver import LogsReceiver, named

ON = Settings(otlp_logs=True)


def load(**environ: str) -> LogsConfig:
    return LogsConfig.load(ON, environ)


# -- configuration -------------------------------------------------------------


def test_the_setting_is_off_by_default_and_read_from_its_variable() -> None:
    assert False is Settings().otlp_logs
    assert True is Settings.load({"HOOKKIT_OTLP_LOGS": "on"}).otlp_logs


def test_the_installed_sdk_is_supported() -> None:
    """The release this suite runs is one the sink accepts (else every test
    below would test a sink no one may switch on)."""
    low, high = logs_config.SUPPORTED
    for package in logs_config.PACKAGES:
        found = logs_config.parse_version(metadata.version(package))
        assert found is not None, package
        assert low <= found < high, (package, found)
    load()


@pytest.mark.parametrize("found", ["1.42.9", "1.46.0", "2.0.0", "garbage"])
def test_an_sdk_outside_the_pinned_range_is_refused_naming_the_setting_and_fix(
    found: str,
) -> None:
    def version_of(package: str) -> str:
        return found if package == "opentelemetry-sdk" else "1.45.1"

    with pytest.raises(ConfigError) as caught:
        LogsConfig.load(ON, {}, version_of)
    message = str(caught.value)
    assert message.startswith(
        f"HOOKKIT_OTLP_LOGS=on needs opentelemetry-sdk >=1.43,<1.46 (found: {found})"
    )
    assert "pip install 'opentelemetry-sdk>=1.43,<1.46'" in message
    assert "or set HOOKKIT_OTLP_LOGS=off" in message


def test_a_missing_exporter_is_refused_naming_it() -> None:
    def version_of(package: str) -> str:
        if package == "opentelemetry-exporter-otlp-proto-http":
            raise metadata.PackageNotFoundError(package)
        return "1.45.1"

    with pytest.raises(ConfigError) as caught:
        LogsConfig.load(ON, {}, version_of)
    assert "opentelemetry-exporter-otlp-proto-http >=1.43,<1.46 (found: not installed)" in str(
        caught.value
    )


@pytest.mark.parametrize(
    "variable", ["OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"]
)
def test_grpc_is_refused_naming_the_variable(variable: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(**{variable: "grpc"})
    assert str(caught.value).startswith(f"{variable}=grpc is not supported for HOOKKIT_OTLP_LOGS")
    assert "http/protobuf" in str(caught.value)


def test_the_distros_grpc_default_is_passed_over_the_users_is_not() -> None:
    """Under opentelemetry-instrument the distro sets
    OTEL_EXPORTER_OTLP_PROTOCOL=grpc unless the user did: that default does
    not stop start-up (this sink's exporter is HTTP whatever it says)."""
    grpc = {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
    LogsConfig.load(ON, grpc, defaulted={"OTEL_EXPORTER_OTLP_PROTOCOL"})
    with pytest.raises(ConfigError, match="OTEL_EXPORTER_OTLP_PROTOCOL=grpc is not supported"):
        LogsConfig.load(ON, grpc)


def test_the_logs_protocol_wins_over_the_general_one() -> None:
    load(OTEL_EXPORTER_OTLP_LOGS_PROTOCOL="http/protobuf", OTEL_EXPORTER_OTLP_PROTOCOL="grpc")
    with pytest.raises(ConfigError, match="'json' is not valid"):
        load(OTEL_EXPORTER_OTLP_PROTOCOL="json")


@pytest.mark.parametrize("value", ["0", "-1", "never", "inf", "nan"])
def test_a_bad_timeout_is_refused_naming_the_variable(value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(OTEL_EXPORTER_OTLP_LOGS_TIMEOUT=value)
    assert f"OTEL_EXPORTER_OTLP_LOGS_TIMEOUT={value!r} is not valid" in str(caught.value)


def test_timeout_and_bounds_come_from_the_variables_and_settings() -> None:
    """Seconds, as the Python SDK reads them; the logs' variable wins; the
    stop bound is the spans' (HOOKKIT_TRACING_FLUSH_SECONDS)."""
    assert 10.0 == load().timeout
    assert 2.5 == load(OTEL_EXPORTER_OTLP_TIMEOUT="2.5").timeout
    assert 1.0 == load(OTEL_EXPORTER_OTLP_LOGS_TIMEOUT="1", OTEL_EXPORTER_OTLP_TIMEOUT="5").timeout
    settings = Settings(otlp_logs=True, tracing_flush_seconds=0.75, access_log=True)
    assert (0.75, True) == (
        LogsConfig.load(settings, {}).flush_seconds,
        LogsConfig.load(settings, {}).access_log,
    )


def test_assembly_adds_the_sink_after_otlp_metrics_only_when_on() -> None:
    """Off by default; on, it comes last among hookkit's own sinks; ``hookkit
    check`` refuses what start-up refuses."""
    names = [sink.name for sink in assemble.own_sinks(Settings())]
    assert "otlp_logs" not in names
    names = [sink.name for sink in assemble.own_sinks(Settings(otlp_logs=True))]
    assert "otlp_logs" == names[-1]
    with pytest.raises(ConfigError, match="OTEL_EXPORTER_OTLP_PROTOCOL=grpc"):
        assemble.preview({"HOOKKIT_OTLP_LOGS": "on", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, {})


# -- records -------------------------------------------------------------------


def test_an_event_becomes_a_record_with_its_name_severity_and_fields() -> None:
    event = Event(
        ev.WORKER_ABORTED,
        "worker_abort",
        "error",
        {
            "timeout": 2,
            "requests_in_flight": [{"path": "/sleep", "stack": "File x, in stuck"}],
            "threads": {"MainThread": "stack"},
            "route": None,
            "peer": ("127.0.0.1", 4000),
            "odd": object,
        },
    )
    record = records.from_event(event, 123)

    assert ("worker_aborted", "worker_aborted", 17, "ERROR", 123) == (
        record.event_name,
        record.body,
        record.severity_number.value if record.severity_number else None,
        record.severity_text,
        record.timestamp,
    )
    assert {
        "hook": "worker_abort",
        "timeout": 2,
        "requests_in_flight": [{"path": "/sleep", "stack": "File x, in stuck"}],
        "threads": {"MainThread": "stack"},
        "route": None,
        "peer": ["127.0.0.1", 4000],
        "odd": str(object),
    } == record.attributes


@pytest.mark.parametrize(
    ("level", "number", "text"),
    [
        ("debug", 5, "DEBUG"),
        ("info", 9, "INFO"),
        ("warning", 13, "WARN"),
        ("error", 17, "ERROR"),
        ("critical", 21, "FATAL"),
    ],
)
def test_severity_follows_the_level(level: ev.Level, number: int, text: str) -> None:
    record = records.from_event(Event("x", None, level), 0)
    assert (number, text) == (record.severity_number.value, record.severity_text)  # type: ignore[union-attr]
    std = records.std_severity(getattr(logging, level.upper()))
    assert (number, text) == (std[0].value, std[1])


def test_a_deep_value_is_cut_to_text() -> None:
    deep: list[object] = []
    inner = deep
    for _ in range(20):
        inner.append([])
        inner = inner[0]  # type: ignore[assignment]
    flattened = records.plain(deep)
    for _ in range(8):
        flattened = flattened[0]
    assert isinstance(flattened, str)


# -- the pipeline, to a real receiver --------------------------------------------


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[LogsReceiver]:
    """A receiver, and the exporter pointed at it; a short batch delay."""
    with LogsReceiver() as rx:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", rx.logs_endpoint)
        monkeypatch.setenv("OTEL_BLRP_SCHEDULE_DELAY", "50")
        monkeypatch.setenv("OTEL_SERVICE_NAME", "shop")
        yield rx


def started_master(settings: Settings = ON) -> tuple[OtlpLogsSink, Dispatcher]:
    sink = OtlpLogsSink(settings)
    dispatcher = Dispatcher([sink])  # wires report_error to the error counts
    sink.start_master(FakeArbiter())
    return sink, dispatcher


def stop(sink: OtlpLogsSink) -> None:
    sink.stop_master(FakeArbiter())


def test_a_master_event_reaches_the_receiver_from_the_master(receiver: LogsReceiver) -> None:
    """The record carries the event's name, severity and fields, the
    process's pid in its resource, and the service name."""
    sink, _ = started_master()
    try:
        sink.handle(Event(ev.WORKER_EXITED, "child_exit", "warning", {"reason": "timeout"}))
        (record,) = receiver.wait_for(named("worker_exited"))
    finally:
        stop(sink)
    assert ("worker_exited", 13, "WARN", "hookkit") == (
        record.body,
        record.severity_number,
        record.severity_text,
        record.scope_name,
    )
    assert {"hook": "child_exit", "reason": "timeout"} == record.attributes
    assert (os.getpid(), "shop") == (record.pid, record.resource["service.name"])
    assert ("", "") == (record.trace_id, record.span_id)


def test_a_record_made_while_a_span_is_current_carries_its_ids(receiver: LogsReceiver) -> None:
    sink, _ = started_master()
    tracer = TracerProvider().get_tracer("test")
    try:
        with tracer.start_as_current_span("request") as span:
            sink.handle(Event("app_said", None))
        (record,) = receiver.wait_for(named("app_said"))
    finally:
        stop(sink)
    assert span_id_fields(span.get_span_context()) == {
        "trace_id": record.trace_id,
        "span_id": record.span_id,
    }


def test_request_slow_carries_the_ids_its_fields_name(receiver: LogsReceiver) -> None:
    """The watchdog's thread has no current span: the event's ids are used."""
    sink, _ = started_master()
    ids = {"trace_id": "0af7651916cd43dd8448eb211c80319c", "span_id": "b7ad6b7169203331"}
    try:
        sink.handle(Event(ev.REQUEST_SLOW, None, "warning", {"path": "/sleep", **ids}))
        (record,) = receiver.wait_for(named("request_slow"))
    finally:
        stop(sink)
    assert (ids["trace_id"], ids["span_id"]) == (record.trace_id, record.span_id)


def finished(span_ids: object = None) -> RequestFinished:
    return RequestFinished(
        key=1,
        method="GET",
        path="/orders",
        route="/orders",
        status=200,
        duration=0.0123456789,
        request_bytes=None,
        response_bytes=6,
        error_type=None,
        exception=None,
        span_ids=span_ids,  # type: ignore[arg-type]
        environ={"REMOTE_ADDR": "10.0.0.7"},
        response=None,
    )


def test_the_access_line_is_sent_when_on_with_the_requests_span(
    receiver: LogsReceiver,
) -> None:
    """Only with HOOKKIT_ACCESS_LOG on, and only once this process's
    pipeline is built (``wants``); the fields are the stderr line's."""
    assert False is OtlpLogsSink(ON).wants("request_finished")
    sink, _ = started_master(Settings(otlp_logs=True, access_log=True, access_log_client=True))
    span = trace.SpanContext(
        0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, is_remote=False
    )
    try:
        assert True is sink.wants("request_finished")
        assert False is sink.wants("request_started")
        sink.request_finished(finished(span))
        (record,) = receiver.wait_for(named("request_finished"))
    finally:
        stop(sink)
    assert ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331") == (
        record.trace_id,
        record.span_id,
    )
    assert {
        "hook": "post_request",
        "method": "GET",
        "path": "/orders",
        "status": 200,
        "duration_seconds": 0.012346,
        "response_bytes": 6,
        "request_bytes": None,
        "route": "/orders",
        "error_type": None,
        "queue_seconds": None,
        "client_address": "10.0.0.7",
    } == record.attributes


def test_gunicorn_error_lines_are_records_of_their_own_scope(receiver: LogsReceiver) -> None:
    """A ``gunicorn.error`` line becomes a record (message, severity, the
    exception); hookkit's own logger's lines never do (they are events);
    once the master stops, the handler is gone."""
    sink, _ = started_master()
    gunicorn_error = logging.getLogger(GUNICORN_ERROR)
    hookkit_logger = logging.getLogger("hookkit.test")
    handler = next(h for h in gunicorn_error.handlers if getattr(h, "forward", None))
    hookkit_logger.addHandler(handler)  # as a reload may copy it there
    try:
        gunicorn_error.setLevel(logging.INFO)
        gunicorn_error.info("Booting worker with pid: %s", 42)
        hookkit_logger.warning("not a gunicorn line")
        try:
            raise ValueError("boom")
        except ValueError:
            gunicorn_error.exception("Error handling request /x")
        found = receiver.wait_for(lambda r: r.scope_name == GUNICORN_ERROR, count=2)
    finally:
        hookkit_logger.removeHandler(handler)
        stop(sink)
    booting, failed = found
    assert ("Booting worker with pid: 42", 9, "INFO", "") == (
        booting.body,
        booting.severity_number,
        booting.severity_text,
        booting.event_name,
    )
    assert ("Error handling request /x", "ERROR", "ValueError", "boom") == (
        failed.body,
        failed.severity_text,
        failed.attributes["exception.type"],
        failed.attributes["exception.message"],
    )
    assert "raise ValueError" in failed.attributes["exception.stacktrace"]
    time.sleep(0.2)
    assert [] == [r for r in receiver.snapshot() if r.body == "not a gunicorn line"]
    assert handler not in gunicorn_error.handlers


def test_a_worker_builds_its_own_pipeline_and_sends_what_waited(
    receiver: LogsReceiver,
) -> None:
    """After the fork the master's pipeline is dropped; what the worker
    produced before its own exists waits, then goes out with the worker's
    identity. (Here the 'worker' is this process: ``after_fork`` drops the
    master's pipeline because the test sets its owner to another pid.)"""
    sink, _ = started_master()
    master_provider = sink.provider
    sink._owner = -1  # as seen from a forked child: the pipeline is another pid's
    sink.after_fork(3)
    assert sink.provider is None
    sink.handle(Event(ev.WORKER_FORKED, "post_fork"))
    assert [] == receiver.snapshot()
    sink.start_worker(FakeWorker(age=3, ppid=1234))
    try:
        assert sink.provider is not master_provider
        (record,) = receiver.wait_for(named("worker_forked"))
    finally:
        sink.stop_worker(1.0)
    assert {"process.pid": os.getpid(), "process.parent_pid": 1234, "gunicorn.worker.age": 3} == {
        key: record.resource[key]
        for key in ("process.pid", "process.parent_pid", "gunicorn.worker.age")
    }


def test_records_of_another_process_left_waiting_are_dropped(receiver: LogsReceiver) -> None:
    """A queue inherited through a fork holds the parent's records: never sent."""
    sink = OtlpLogsSink(ON)
    sink._pending.append((-1, "hookkit", records.from_event(Event("parents", None), 0)))
    sink.handle(Event("mine", None))
    sink.start_master(FakeArbiter())
    try:
        receiver.wait_for(named("mine"))
        time.sleep(0.2)
    finally:
        stop(sink)
    assert ["mine"] == [r.event_name for r in receiver.snapshot()]


def sink_errors(dispatcher: Dispatcher) -> int:
    return dispatcher.errors.get("otlp_logs", 0)


def test_a_refused_endpoint_is_counted_and_never_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", refused_endpoint() + "/v1/logs")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_LOGS_TIMEOUT", "0.3")
    monkeypatch.setenv("OTEL_BLRP_SCHEDULE_DELAY", "50")
    sink, dispatcher = started_master()
    try:
        sink.handle(Event(ev.SERVER_READY, "when_ready"))
        deadline = time.monotonic() + 10
        while sink_errors(dispatcher) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop(sink)
    assert sink_errors(dispatcher) >= 1


def test_an_error_answer_is_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 500: one batch, one error (some SDK releases retry a 500 within
    the export's timeout, kept short here)."""
    with LogsReceiver(mode="error") as rx:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", rx.logs_endpoint)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_LOGS_TIMEOUT", "1")
        monkeypatch.setenv("OTEL_BLRP_SCHEDULE_DELAY", "50")
        sink, dispatcher = started_master()
        try:
            sink.handle(Event(ev.SERVER_READY, "when_ready"))
            rx.wait_for(named("server_ready"))
            deadline = time.monotonic() + 10
            while sink_errors(dispatcher) == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            stop(sink)
    assert 1 == sink_errors(dispatcher)


def test_a_hanging_receiver_holds_neither_the_abort_nor_the_exit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """worker_aborted's flush and the exit after it return within the
    abort's 0.5 s together (the exporter alone waits 10 s), the budget
    started as the runtime's worker_abort starts it and the exit given what
    is left of it, as the runtime gives it; a plain stop within its bound."""
    with LogsReceiver(mode="hang") as rx:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", rx.logs_endpoint)
        monkeypatch.setenv("OTEL_BLRP_SCHEDULE_DELAY", "50")
        sink, _ = started_master()
        sink.handle(Event(ev.SERVER_READY, "when_ready"))
        rx.wait_for(named("server_ready"))  # the processor's thread now hangs
        started = time.monotonic()
        abort_budget.start()
        sink.handle(Event(ev.WORKER_ABORTED, "worker_abort", "error"))
        aborted = time.monotonic() - started
        started = time.monotonic()
        sink.stop_worker(abort_budget.seconds_left(5.0))
        exited = time.monotonic() - started
        abort_budget._forget()

        other, _ = started_master()
        other.handle(Event(ev.SERVER_READY, "when_ready"))
        rx.wait_for(named("server_ready"), count=2)
        started = time.monotonic()
        other.stop_worker(0.3)
        stopped = time.monotonic() - started
    assert aborted + exited < 0.5 + 0.3
    assert stopped < 0.3 + 0.3


def test_otel_sdk_disabled_sends_nothing(
    receiver: LogsReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``OTEL_SDK_DISABLED=true``: no pipeline is built, nothing waits, nothing
    is sent (as for the spans and the OTLP metrics)."""
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    sink, _ = started_master()
    sink.handle(Event(ev.SERVER_READY, "when_ready"))
    time.sleep(0.3)
    assert (None, 0, []) == (sink.provider, len(sink._pending), receiver.snapshot())
    with pytest.raises(ConfigError, match="OTEL_SDK_DISABLED='1' is not valid"):
        load(OTEL_SDK_DISABLED="1")
