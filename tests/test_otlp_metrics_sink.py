"""The OTLP metrics sink without gunicorn: its ``OTEL_*`` variables checked
at start-up, its resource, its place among hookkit's sinks, and its exports
(a stand-in aggregate, the official exporter, ``tests.otlp_metrics_receiver``).
The real master, its workers and a reload: ``test_otlp_metrics_integration``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.metrics_core import CounterMetricFamily, Metric

from hookkit._aggregate.fork_guard import ForkGuard
from hookkit._core.settings import ConfigError, Settings
from hookkit._dropin import assemble
from hookkit._sinks.otlp_metrics import sink as otlp_sink
from hookkit._sinks.otlp_metrics.sink import (
    DEFAULT_INTERVAL_MS,
    DEFAULT_TIMEOUT_SECONDS,
    ExportConfig,
    OtlpMetricsSink,
    master_identity,
    master_resource,
)
from tests.otlp_metrics_receiver import MetricsReceiver

ON = Settings(otlp_metrics=True)


def load(**environ: str) -> ExportConfig:
    return ExportConfig.load(ON, environ)


# -- configuration -------------------------------------------------------------


def test_defaults_are_a_minute_and_ten_seconds() -> None:
    """No variable: every 60000 ms, 10 s per export (the SDK's defaults)."""
    assert (DEFAULT_INTERVAL_MS / 1000, DEFAULT_TIMEOUT_SECONDS) == (60.0, 10.0)
    assert (
        ExportConfig(interval=60.0, timeout=10.0, temporality="cumulative", disabled=False)
        == load()
    )


def test_the_interval_is_in_milliseconds() -> None:
    assert 0.5 == load(OTEL_METRIC_EXPORT_INTERVAL="500").interval
    assert 60.0 == load(OTEL_METRIC_EXPORT_INTERVAL=" ").interval  # empty: the default


@pytest.mark.parametrize("value", ["0", "-1", "ten", "inf", "nan", "1e999"])
def test_a_bad_interval_is_refused_naming_the_variable(value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(OTEL_METRIC_EXPORT_INTERVAL=value)
    assert f"OTEL_METRIC_EXPORT_INTERVAL={value!r} is not valid" in str(caught.value)
    assert "milliseconds" in str(caught.value)


def test_the_metrics_timeout_wins_over_the_general_one() -> None:
    """Seconds, as the Python SDK reads them."""
    assert 3.0 == load(OTEL_EXPORTER_OTLP_TIMEOUT="3").timeout
    both = load(OTEL_EXPORTER_OTLP_TIMEOUT="3", OTEL_EXPORTER_OTLP_METRICS_TIMEOUT="1.5")
    assert 1.5 == both.timeout


@pytest.mark.parametrize(
    "variable", ["OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT"]
)
def test_a_bad_timeout_is_refused_naming_the_variable(variable: str) -> None:
    with pytest.raises(ConfigError, match=f"{variable}='-2' is not valid"):
        load(**{variable: "-2"})


@pytest.mark.parametrize(
    "variable", ["OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"]
)
def test_grpc_is_refused_naming_the_variable(variable: str) -> None:
    """The master forks: a gRPC channel in it can hang its workers."""
    with pytest.raises(ConfigError) as caught:
        load(**{variable: "grpc"})
    assert f"{variable}=grpc is not supported" in str(caught.value)
    assert "http/protobuf" in str(caught.value)


def test_the_metrics_protocol_decides_before_the_general_one() -> None:
    """OTLP over HTTP for metrics even when traces go over gRPC."""
    load(OTEL_EXPORTER_OTLP_METRICS_PROTOCOL="http/protobuf", OTEL_EXPORTER_OTLP_PROTOCOL="grpc")
    load(OTEL_EXPORTER_OTLP_PROTOCOL="HTTP/Protobuf")


def test_another_protocol_is_refused() -> None:
    with pytest.raises(ConfigError, match="OTEL_EXPORTER_OTLP_PROTOCOL='http/json' is not valid"):
        load(OTEL_EXPORTER_OTLP_PROTOCOL="http/json")


def test_it_needs_the_metrics_sink() -> None:
    """The aggregate is the metrics sink's: without it, start-up stops and
    says so, and how to keep the metrics without a port."""
    with pytest.raises(ConfigError) as caught:
        ExportConfig.load(Settings(otlp_metrics=True, metrics=False), {})
    assert "HOOKKIT_OTLP_METRICS=on needs HOOKKIT_METRICS=on" in str(caught.value)
    assert "HOOKKIT_METRICS_BIND=none" in str(caught.value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", "cumulative"),
        ("Delta", "delta"),
        (" LOWMEMORY ", "lowmemory"),
        ("cumulative", "cumulative"),
    ],
)
def test_the_temporality_preference_in_any_case(value: str, expected: str) -> None:
    preference = load(OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE=value).temporality
    assert expected == preference


def test_an_unknown_temporality_is_refused_naming_the_variable() -> None:
    """The SDK would warn and send cumulative; hookkit stops at start-up."""
    with pytest.raises(ConfigError) as caught:
        load(OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE="deltas")
    assert "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE='deltas' is not valid" in str(
        caught.value
    )
    assert "cumulative, delta, lowmemory" in str(caught.value)


@pytest.mark.parametrize(("value", "disabled"), [("true", True), ("TRUE", True), ("false", False)])
def test_otel_sdk_disabled(value: str, disabled: bool) -> None:
    assert disabled is load(OTEL_SDK_DISABLED=value).disabled


def test_a_bad_otel_sdk_disabled_is_refused() -> None:
    """The SDK reads anything but true as false: hookkit does not guess."""
    with pytest.raises(ConfigError, match="OTEL_SDK_DISABLED='1' is not valid"):
        load(OTEL_SDK_DISABLED="1")


def test_otel_sdk_disabled_starts_no_export(
    monkeypatch: pytest.MonkeyPatch, aggregate: _Aggregate
) -> None:
    """OTEL_SDK_DISABLED=true: no thread, no exporter, and master_starting says why."""
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    sink = OtlpMetricsSink(ON)
    assert {"otlp_metrics": "off: OTEL_SDK_DISABLED=true"} == sink.start_master(None)
    assert (None, None) == (sink._thread, sink._exporter)
    assert not sink.export_now()


# -- identity and resource -----------------------------------------------------


def test_one_instance_id_per_master_process() -> None:
    """Made once per process, then the same (a reload keeps it)."""
    first = master_identity()
    assert first == master_identity()
    assert 36 == len(first[0])  # a uuid4


def test_the_resource_has_the_service_and_the_instance_id(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "shop")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=test")
    attributes = master_resource("id-1").attributes
    assert ("shop", "test", "id-1") == (
        attributes["service.name"],
        attributes["deployment.environment.name"],
        attributes["service.instance.id"],
    )


def test_an_instance_id_the_user_set_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.instance.id=pod-7")
    assert "pod-7" == master_resource("id-1").attributes["service.instance.id"]


# -- among hookkit's sinks -----------------------------------------------------


def test_off_by_default_and_after_tracing_when_on() -> None:
    """Started after the metrics sink, whose aggregate it reads."""
    assert "otlp_metrics" not in [sink.name for sink in assemble.own_sinks(Settings())]
    names = [sink.name for sink in assemble.own_sinks(ON)]
    assert ["metrics", "status", "logs", "tracing", "otlp_metrics"] == names


def test_a_bad_variable_stops_the_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    with pytest.raises(ConfigError, match="OTEL_EXPORTER_OTLP_PROTOCOL=grpc"):
        assemble.own_sinks(ON)


def test_hookkit_check_checks_the_variables() -> None:
    environ = {"HOOKKIT_OTLP_METRICS": "on", "OTEL_METRIC_EXPORT_INTERVAL": "soon"}
    with pytest.raises(ConfigError, match="OTEL_METRIC_EXPORT_INTERVAL='soon'"):
        assemble.preview(environ, {})


# -- exports -------------------------------------------------------------------


class _Aggregate:
    """A stand-in for the published aggregate: one counter."""

    def __init__(self) -> None:
        self.value = 3.0
        self.fork_guard = ForkGuard()

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily("gunicorn_worker_spawns", "Workers spawned.", value=self.value)


@pytest.fixture
def aggregate(monkeypatch: pytest.MonkeyPatch) -> _Aggregate:
    one = _Aggregate()
    monkeypatch.setattr(otlp_sink, "current", lambda: one)
    return one


def started(
    monkeypatch: pytest.MonkeyPatch, endpoint: str, interval_ms: str = "600000"
) -> tuple[OtlpMetricsSink, list[tuple[str, str]]]:
    """A sink started as in a master, its errors recorded as (where, error)."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "2")
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", interval_ms)
    errors: list[tuple[str, str]] = []
    sink = OtlpMetricsSink(ON)
    sink._report = lambda name, where, exc, quiet: errors.append((where, repr(exc)))
    sink.start_master(None)
    return sink, errors


def sums(request: Any) -> dict[str, float]:
    return {
        metric.name: metric.sum.data_points[0].as_double
        for rm in request.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
    }


def test_an_export_sends_the_aggregate(
    monkeypatch: pytest.MonkeyPatch, aggregate: _Aggregate
) -> None:
    with MetricsReceiver() as rx:
        sink, errors = started(monkeypatch, rx.metrics_endpoint)
        try:
            assert sink.export_now()
            (request,) = rx.wait_for_requests(1)
        finally:
            sink.stop_master(None)
    assert {"gunicorn.worker.spawns": 3.0} == sums(request)
    assert [] == errors


def test_the_thread_exports_every_interval(
    monkeypatch: pytest.MonkeyPatch, aggregate: _Aggregate
) -> None:
    with MetricsReceiver() as rx:
        sink, errors = started(monkeypatch, rx.metrics_endpoint, interval_ms="100")
        try:
            rx.wait_for_requests(3, timeout=5)
        finally:
            sink.stop_master(None)
    assert [] == errors


def test_stop_exports_once_more_then_stops(
    monkeypatch: pytest.MonkeyPatch, aggregate: _Aggregate
) -> None:
    """The last values go out at stop; no thread is left, nothing more is sent."""
    with MetricsReceiver() as rx:
        sink, errors = started(monkeypatch, rx.metrics_endpoint)
        thread = sink._thread
        aggregate.value = 5.0
        sink.stop_master(None)
        (request,) = rx.wait_for_requests(1)
        assert thread is not None
        assert not thread.is_alive()
        assert not sink.export_now()  # stopped: nothing is sent
    assert {"gunicorn.worker.spawns": 5.0} == sums(request)
    assert [] == errors


def test_master_exiting_makes_the_last_export_and_stop_no_other(
    monkeypatch: pytest.MonkeyPatch, aggregate: _Aggregate
) -> None:
    """The last export comes with ``master_exiting``, before any sink's
    ``stop_master`` (the metrics sink's removes the directory)."""
    from hookkit._core.events import Event

    with MetricsReceiver() as rx:
        sink, errors = started(monkeypatch, rx.metrics_endpoint)
        sink.handle(Event("master_exiting", "on_exit", "info", {}, os.getpid()))
        rx.wait_for_requests(1)
        aggregate.value = 9.0
        sink.stop_master(None)
        time.sleep(0.2)
        assert 1 == len(rx._requests)
    assert [] == errors


def test_a_failed_export_is_this_sinks_error(
    monkeypatch: pytest.MonkeyPatch, aggregate: _Aggregate
) -> None:
    """Nothing listens: counted and reported as the sink's own error."""
    from hookkit._face.gunicorn_process import free_port

    sink, errors = started(monkeypatch, f"http://127.0.0.1:{free_port()}/v1/metrics")
    try:
        assert not sink.export_now()
    finally:
        sink._stop.set()
        sink._forget()
    assert [("export", "ExportFailed('the OTLP metrics export failed (FAILURE)')")] == errors


def test_a_worker_never_exports(monkeypatch: pytest.MonkeyPatch, aggregate: _Aggregate) -> None:
    """After the fork, the master's exporter is dropped; stop_master in
    another process than the master's does nothing."""
    with MetricsReceiver() as rx:
        sink, errors = started(monkeypatch, rx.metrics_endpoint)
        exporter, thread = sink._exporter, sink._thread
        sink.after_fork(1)
        assert not sink.export_now()
        sink.stop_master(None)
        # The master's own objects, cleaned up by the test.
        sink._exporter, sink._thread, sink._master_pid = exporter, thread, os.getpid()
        sink._stop.set()
        sink._closed = True
        assert thread is not None
        thread.join(2)
        assert [] == rx._requests
    assert [] == errors


def test_no_aggregate_no_export(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before the metrics sink published one (or in another process): nothing."""
    monkeypatch.setattr(otlp_sink, "current", lambda: None)
    with MetricsReceiver() as rx:
        sink, errors = started(monkeypatch, rx.metrics_endpoint)
        try:
            assert not sink.export_now()
        finally:
            sink.stop_master(None)
        assert [] == rx._requests
    assert [] == errors


def test_stopped_and_started_again_keeps_the_instance_id(
    monkeypatch: pytest.MonkeyPatch, aggregate: _Aggregate
) -> None:
    """A reload that turns the sink off and on again (or makes it anew) in
    the same master: one thread again, the same ``service.instance.id``."""
    with MetricsReceiver() as rx:
        sink, errors = started(monkeypatch, rx.metrics_endpoint)
        first = sink._thread
        sink.stop_master(None)  # the last export
        again = OtlpMetricsSink(ON)
        again._report = sink._report
        again.start_master(None)
        try:
            assert again.export_now()
            exports = rx.wait_for_requests(2)
        finally:
            again.stop_master(None)
        assert first is not None
        assert not first.is_alive()
    ids = {
        attribute.value.string_value
        for request in exports
        for rm in request.resource_metrics
        for attribute in rm.resource.attributes
        if attribute.key == "service.instance.id"
    }
    assert 1 == len(ids)
    assert [] == errors
