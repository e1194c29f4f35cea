"""OTLP metrics end to end: a real gunicorn master with two workers,
``HOOKKIT_OTLP_METRICS=on``, pushing to ``tests.otlp_metrics_receiver``.
The resource carries ``process.pid`` (the SDK's ``process`` detector), so
each export tells which process sent it.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import time
from typing import Any

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)

from hookkit._face.gunicorn_process import Gunicorn, free_port, http_get, match
from tests.otlp_metrics_receiver import METRICS_PATH, MetricsReceiver
from tests.scrape import scrape_text, total

pytestmark = [pytest.mark.integration]

APP = "apps.wsgi:app"
DURATION = "http.server.request.duration"


def start(serve: Any, endpoint: str, interval_ms: int, **extra: str) -> Gunicorn:
    env = {
        **extra,
        "HOOKKIT_OTLP_METRICS": "on",
        "HOOKKIT_TRACING": "off",  # spans would go to the same endpoint
        "OTEL_METRIC_EXPORT_INTERVAL": str(interval_ms),
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_SERVICE_NAME": "shop",
        "OTEL_EXPERIMENTAL_RESOURCE_DETECTORS": "process",
    }
    return serve(APP, "-w", "2", env=env)  # type: ignore[no-any-return]


def base(rx: MetricsReceiver) -> str:
    """The receiver as ``OTEL_EXPORTER_OTLP_ENDPOINT`` (the exporter adds /v1/metrics)."""
    return rx.metrics_endpoint.removesuffix(METRICS_PATH)


def sink_errors(server: Gunicorn) -> float:
    text = scrape_text(server.metrics_port)  # type: ignore[attr-defined]
    return total(text, "hookkit_sink_errors_total", sink="otlp_metrics")


def resource(request: ExportMetricsServiceRequest) -> dict[str, Any]:
    """The one resource of an export, as {key: value}."""
    (resource_metrics,) = request.resource_metrics
    return {
        attribute.key: getattr(attribute.value, attribute.value.WhichOneof("value"))
        for attribute in resource_metrics.resource.attributes
    }


def request_count(request: ExportMetricsServiceRequest) -> int:
    """Requests the export counts: ``http.server.request.duration``'s counts, summed."""
    return sum(
        point.count
        for resource_metrics in request.resource_metrics
        for scope_metrics in resource_metrics.scope_metrics
        for metric in scope_metrics.metrics
        if metric.name == DURATION
        for point in metric.histogram.data_points
    )


def all_requests(rx: MetricsReceiver) -> list[ExportMetricsServiceRequest]:
    with rx._lock:
        return list(rx._requests)


def wait_for_count(rx: MetricsReceiver, count: int, timeout: float = 10.0) -> int:
    """Wait for an export counting ``count`` requests; the number of exports then."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        exports = all_requests(rx)
        if exports and request_count(exports[-1]) == count:
            return len(exports)
        time.sleep(0.05)
    counts = [request_count(one) for one in all_requests(rx)]
    raise AssertionError(f"no export counted {count} requests: {counts}; errors {rx.errors}")


def test_the_master_alone_exports_the_aggregate_with_one_identity(serve: Any) -> None:
    """Every 500 ms, one stream: only the master's pid, one service.instance.id,
    kept across a SIGHUP; the latest export counts every request the two
    workers served."""
    requests = 7
    with MetricsReceiver() as rx:
        server = start(serve, base(rx), interval_ms=500)
        started = time.monotonic()
        for _ in range(requests):
            assert 200 == http_get(server.port, "/")[0]
        wait_for_count(rx, requests)
        before = len(all_requests(rx))
        assert 2 == len(server.live_workers())

        server.signal(signal.SIGHUP)
        server.wait_for(match(event="worker_exited", reason="reload"), count=2)
        rx.wait_for_requests(before + 3, timeout=10)
        # Counts carry on across the reload (the workers' slots are reused).
        assert requests == request_count(all_requests(rx)[-1])
        assert 200 == http_get(server.port, "/")[0]
        wait_for_count(rx, requests + 1)
        elapsed = time.monotonic() - started
        exports = all_requests(rx)

        resources = [resource(one) for one in exports]
        assert {server.pid} == {one["process.pid"] for one in resources}
        instance_ids = {one["service.instance.id"] for one in resources}
        assert 1 == len(instance_ids), instance_ids
        assert {"shop"} == {one["service.name"] for one in resources}
        # One stream: at most one export per interval (a second exporter,
        # a worker's or a duplicate thread's, would double the rate).
        assert len(exports) <= elapsed / 0.5 + 2, (len(exports), elapsed)
        assert [] == rx.errors
        # The sink's error series exists from the start, at 0.
        assert 'hookkit_sink_errors_total{sink="otlp_metrics"}' in scrape_text(server.metrics_port)
        assert 0 == sink_errors(server)


def test_stop_sends_the_last_values_and_nothing_before_the_interval(serve: Any) -> None:
    """With a one-minute interval nothing goes out while serving; stopping
    the master sends one export with every request counted."""
    requests = 3
    with MetricsReceiver() as rx:
        server = start(serve, base(rx), interval_ms=60000)
        for _ in range(requests):
            assert 200 == http_get(server.port, "/")[0]
        time.sleep(0.5)
        assert [] == all_requests(rx)
        master = server.pid
        assert 0 == server.stop()
        (last,) = rx.wait_for_requests(1)
        assert requests == request_count(last)
        assert master == resource(last)["process.pid"]
        assert [] == rx.errors


def test_a_failing_export_is_counted_and_gunicorn_serves_on(serve: Any) -> None:
    """Nothing listens at the endpoint: each failed export is counted in
    ``hookkit_sink_errors_total{sink="otlp_metrics"}``; requests are served."""
    # The exporter retries within its timeout before it gives up.
    server = start(
        serve,
        f"http://127.0.0.1:{free_port()}",
        interval_ms=200,
        OTEL_EXPORTER_OTLP_METRICS_TIMEOUT="0.5",
    )
    deadline = time.monotonic() + 10
    while sink_errors(server) < 2:
        assert time.monotonic() < deadline, "no export failure counted"
        time.sleep(0.1)
    assert 200 == http_get(server.port, "/")[0]


# -- exact through kills and recycles, cumulative and delta -------------------------


def monotonic_values(request: ExportMetricsServiceRequest) -> dict[tuple[str, Any], float]:
    """Every monotonic sum's value and histogram's count, by metric and
    attributes: none may ever go down between two cumulative exports."""
    values: dict[tuple[str, Any], float] = {}
    for resource_metrics in request.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                which = metric.WhichOneof("data")
                if which == "sum" and metric.sum.is_monotonic:
                    for point in metric.sum.data_points:
                        key = (metric.name, str(point.attributes))
                        values[key] = point.as_double or float(point.as_int)
                elif which == "histogram":
                    for point in metric.histogram.data_points:
                        values[(metric.name, str(point.attributes))] = float(point.count)
    return values


def churn(server: Gunicorn, requests: int) -> None:
    """``requests`` requests, one at a time, while one worker is SIGKILLed
    (a third of the way) and others recycled by ``--max-requests``."""
    for index in range(requests):
        if index == requests // 3:
            # The client has its answer before post_request counts it: a
            # SIGKILL then would lose that count (the SIGKILL window). Kill
            # only once every answered request is counted.
            wait_until_counted(server, index)
            kill_a_worker(server)
        for _ in range(50):  # a connection refused while a worker restarts
            if http_get(server.port, "/")[0] == 200:
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"request {index} never answered")


def wait_until_counted(server: Gunicorn, requests: int, timeout: float = 10.0) -> None:
    """Until ``/metrics`` counts ``requests`` requests."""
    deadline = time.monotonic() + timeout
    counted = 0.0
    while time.monotonic() < deadline:
        text = scrape_text(server.metrics_port)  # type: ignore[attr-defined]
        counted = total(text, "http_server_request_duration_seconds_count")
        if counted >= requests:
            return
        time.sleep(0.02)
    raise AssertionError(f"{counted:g} of {requests} requests counted after {timeout} s")


def kill_a_worker(server: Gunicorn) -> None:
    """SIGKILL a live worker; one that was leaving anyway (its max_requests
    reached) does not count: then another."""
    for _ in range(5):
        victim = server.live_workers()[0]
        with contextlib.suppress(ProcessLookupError):  # gone since it was listed
            server.signal(signal.SIGKILL, victim)
        (exited,) = server.wait_for(match(event="worker_exited", worker_pid=victim))
        if exited["reason"] == "killed":
            return
        time.sleep(0.2)
    raise AssertionError("no worker could be killed: each was leaving already")


def recycle_args() -> tuple[str, ...]:
    return ("--max-requests", "7")


def test_counts_stay_exact_through_a_kill_and_recycles(serve: Any) -> None:
    """Two workers, N requests, one worker SIGKILLed and others recycled by
    max_requests: the last export counts exactly N (each request is counted
    when it ends, in its slot's file, which the next worker of the slot
    carries on; no request was in flight at the kill). No monotonic sum
    or histogram count ever goes down between exports, and every export,
    after a SIGHUP too, has the master's one service.instance.id."""
    requests = 30
    with MetricsReceiver() as rx:
        env = {"OTEL_METRIC_EXPORT_INTERVAL": "300", "OTEL_EXPORTER_OTLP_ENDPOINT": base(rx)}
        server = serve(
            APP,
            "-w",
            "2",
            *recycle_args(),
            env={
                **env,
                "HOOKKIT_OTLP_METRICS": "on",
                "HOOKKIT_TRACING": "off",
                "OTEL_EXPERIMENTAL_RESOURCE_DETECTORS": "process",
            },
        )
        churn(server, requests)
        recycled = server.events(match(event="worker_exited", reason="max_requests"))
        killed = server.events(match(event="worker_exited", reason="killed"))
        assert recycled, "no worker was recycled"
        assert killed, "no worker was killed"
        wait_for_count(rx, requests)
        server.signal(signal.SIGHUP)
        server.wait_for(match(event="server_reloaded"))
        before = len(all_requests(rx))
        rx.wait_for_requests(before + 2, timeout=10)
        assert requests == request_count(all_requests(rx)[-1])

        exports = all_requests(rx)
        for earlier, later in itertools.pairwise(exports):
            old, new = monotonic_values(earlier), monotonic_values(later)
            went_down = {key: (old[key], new[key]) for key in old if new.get(key, 0) < old[key]}
            assert {} == went_down
        assert 1 == len({resource(one)["service.instance.id"] for one in exports})
        assert {server.pid} == {resource(one)["process.pid"] for one in exports}
        assert [] == rx.errors


def delta_count(request: ExportMetricsServiceRequest) -> tuple[int, set[int]]:
    """The request count a delta export adds, and its points' temporality."""
    count, temporalities = 0, set()
    for resource_metrics in request.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                if metric.name == DURATION:
                    temporalities.add(metric.histogram.aggregation_temporality)
                    count += sum(point.count for point in metric.histogram.data_points)
    return count, temporalities


def test_delta_exports_add_up_to_the_requests(serve: Any) -> None:
    """The same churn with OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE=delta:
    the deltas of every export add up to N, each point starting where the
    previous export ended."""
    from opentelemetry.proto.metrics.v1.metrics_pb2 import AGGREGATION_TEMPORALITY_DELTA

    requests = 30
    with MetricsReceiver() as rx:
        server = serve(
            APP,
            "-w",
            "2",
            *recycle_args(),
            env={
                "HOOKKIT_OTLP_METRICS": "on",
                "HOOKKIT_TRACING": "off",
                "OTEL_METRIC_EXPORT_INTERVAL": "300",
                "OTEL_EXPORTER_OTLP_ENDPOINT": base(rx),
                "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE": "delta",
            },
        )
        churn(server, requests)
        assert 0 == server.stop()  # the last export: whatever the interval left
        exports = all_requests(rx)
        counts = [delta_count(one) for one in exports]
        assert requests == sum(count for count, _ in counts), counts
        assert {AGGREGATION_TEMPORALITY_DELTA} == set().union(*(kinds for _, kinds in counts))
        starts = []
        for one in exports:
            for resource_metrics in one.resource_metrics:
                for scope_metrics in resource_metrics.scope_metrics:
                    for metric in scope_metrics.metrics:
                        if metric.name == "gunicorn.worker.spawns":
                            (point,) = metric.sum.data_points
                            starts.append((point.start_time_unix_nano, point.time_unix_nano))
        # Back to back: each delta starts where the one before ended.
        assert all(later[0] == earlier[1] for earlier, later in itertools.pairwise(starts)), starts


# -- a collector that hangs ----------------------------------------------------------


def test_a_hanging_collector_holds_up_no_signal_and_bounds_the_stop(serve: Any) -> None:
    """The collector reads each export and never answers. SIGHUP and TTIN
    take their usual few seconds (far under the 8 s export timeout that a
    master waiting on the network would add); stopping the master waits for
    the last export at most that bound."""
    timeout = 8.0
    with MetricsReceiver(mode="hang") as rx:
        server = start(
            serve,
            base(rx),
            interval_ms=200,
            OTEL_EXPORTER_OTLP_METRICS_TIMEOUT=str(timeout),
        )
        rx.wait_for_requests(1, timeout=10)  # an export is hanging now

        started = time.monotonic()
        server.signal(signal.SIGHUP)
        server.wait_for(match(event="worker_exited", reason="reload"), count=2, timeout=timeout)
        reload_seconds = time.monotonic() - started

        booted = len(server.events(match(event="worker_booted")))
        started = time.monotonic()
        server.signal(signal.SIGTTIN)
        server.wait_for(match(event="worker_booted"), count=booted + 1, timeout=timeout)
        ttin_seconds = time.monotonic() - started
        assert 200 == http_get(server.port, "/")[0]

        started = time.monotonic()
        server.stop(timeout=30)
        stop_seconds = time.monotonic() - started
    assert reload_seconds < timeout / 2, reload_seconds
    assert ttin_seconds < timeout / 2, ttin_seconds
    # The last export's bound, plus gunicorn's graceful stop (3 s in tests).
    assert stop_seconds < timeout + 3 + 2, stop_seconds


# -- no port ---------------------------------------------------------------------------


def listening_ports(pid: int) -> set[int]:
    """TCP ports ``pid`` listens on (its socket inodes in /proc/net/tcp*)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            for line in list(lines)[1:]:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def test_metrics_bind_none_exports_and_opens_no_port(serve: Any) -> None:
    """HOOKKIT_METRICS_BIND=none: the master listens on gunicorn's port alone,
    server_ready names no endpoint, and the OTLP exports count every request."""
    with MetricsReceiver() as rx:
        server = start(serve, base(rx), interval_ms=300, HOOKKIT_METRICS_BIND="none")
        (ready,) = server.events(match(event="server_ready"))
        assert None is ready["metrics_endpoint"]
        assert {server.port} == listening_ports(server.pid)
        for _ in range(4):
            assert 200 == http_get(server.port, "/")[0]
        wait_for_count(rx, 4)


def test_a_usr2_reexec_is_a_new_master_with_a_new_identity(serve: Any) -> None:
    """USR2: the re-executed master exports under a new service.instance.id
    and a later start time; the old master's exports keep its own id, and
    never come from the new pid."""
    with MetricsReceiver() as rx:
        server = start(serve, base(rx), interval_ms=300)
        old = server.pid
        rx.wait_for_requests(1, timeout=10)
        server.signal(signal.SIGUSR2)
        new = server.wait_for(
            lambda line: line.get("event") == "server_ready" and line.get("master_pid") != old,
            timeout=20,
        )[0]["master_pid"]
        deadline = time.monotonic() + 10
        while not any(resource(one)["process.pid"] == new for one in all_requests(rx)):
            assert time.monotonic() < deadline, "the new master never exported"
            time.sleep(0.1)
        os.kill(old, signal.SIGTERM)
        server.wait_for(match(event="master_exiting", master_pid=old), timeout=15)
        exports = all_requests(rx)
        os.kill(new, signal.SIGTERM)
        server.wait_for(match(event="master_exiting", master_pid=new), timeout=15)

    ids: dict[int, set[str]] = {}
    starts: dict[int, set[int]] = {}
    for one in exports:
        pid = resource(one)["process.pid"]
        ids.setdefault(pid, set()).add(resource(one)["service.instance.id"])
        for resource_metrics in one.resource_metrics:
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    if metric.name == "gunicorn.worker.spawns":
                        starts.setdefault(pid, set()).add(
                            metric.sum.data_points[0].start_time_unix_nano
                        )
    assert {old, new} == set(ids)
    assert 1 == len(ids[old]) == len(ids[new])
    assert ids[old] != ids[new]
    assert 1 == len(starts[old]) == len(starts[new])
    assert min(starts[new]) > max(starts[old])
