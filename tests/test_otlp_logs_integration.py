"""OTLP logs end to end: real gunicorn with ``HOOKKIT_OTLP_LOGS=on``, the
official exporter in the master and in each worker, sending to
``tests.otlp_logs_receiver`` on 127.0.0.1, which decodes the protobuf.

Which process sent a record is its resource's ``process.pid``; the stderr
lines (unchanged, and still the reference) say which process each event
came from, so each record is checked against its line.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from hookkit._face.gunicorn_process import Gunicorn, http_get, match
from tests.conftest import TESTS
from tests.otlp import refused_endpoint
from tests.otlp_logs_receiver import LOGS_PATH, LogsReceiver, named
from tests.scrape import scrape_text, total
from tests.traced import TRACE_ID, TRACEPARENT, request

pytestmark = [pytest.mark.integration]

APP = "apps.wsgi:app"


def start(serve: Any, endpoint: str, *args: str, **extra: str) -> Gunicorn:
    """gunicorn with OTLP logs to ``endpoint`` (a base URL); exported every
    100 ms. Tracing has no exporter (no ``OTEL_EXPORTER_OTLP_ENDPOINT``)."""
    env = {
        "HOOKKIT_OTLP_LOGS": "on",
        "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": endpoint + LOGS_PATH,
        "OTEL_BLRP_SCHEDULE_DELAY": "100",
        **extra,
    }
    return serve(APP, *args, env=env)  # type: ignore[no-any-return]


def line_of(server: Gunicorn, event: str, **fields: object) -> dict[str, Any]:
    (line,) = server.wait_for(match(event=event, **fields))
    return line


def test_lifecycle_records_come_from_the_process_that_produced_them(serve: Any) -> None:
    """Two workers: each ``worker_booted`` from its worker (with the worker's
    identity), ``master_starting`` and ``server_ready`` from the master; a
    SIGHUP: ``worker_exiting`` from each old worker, ``worker_exited`` with
    ``reason`` from the master. gunicorn's own lines come too, each from
    its process ("Booting worker" is logged by the new worker before
    hookkit's pipeline exists there, and waits for it)."""
    with LogsReceiver() as rx:
        server = start(serve, rx.endpoint, "-w", "2")
        booted = rx.wait_for(named("worker_booted"), count=2)
        lines = server.events(match(event="worker_booted"))
        workers = sorted(line["worker_pid"] for line in lines)
        assert workers == sorted(record.pid for record in booted)
        for record in booted:
            assert (9, "INFO", "worker_booted", "post_worker_init") == (
                record.severity_number,
                record.severity_text,
                record.body,
                record.attributes["hook"],
            )
            assert server.pid == record.resource["process.parent_pid"]
            (line,) = [one for one in lines if one["worker_pid"] == record.pid]
            assert line["worker_age"] == record.resource["gunicorn.worker.age"]
        for name in ("master_starting", "server_ready"):
            (record,) = rx.wait_for(named(name))
            assert server.pid == record.pid, name

        server.signal(signal.SIGHUP)
        exited = rx.wait_for(named("worker_exited"), count=2, timeout=20)
        exiting = rx.wait_for(named("worker_exiting"), count=2)
        assert [server.pid, server.pid] == [record.pid for record in exited]
        assert ["reload", "reload"] == [record.attributes["reason"] for record in exited]
        assert workers == sorted(record.attributes["worker_pid"] for record in exited)
        assert workers == sorted(record.pid for record in exiting)

        gunicorn_lines = rx.wait_for(lambda r: r.scope_name == "gunicorn.error", count=3)
        for worker in workers:
            (line,) = [r for r in gunicorn_lines if r.body == f"Booting worker with pid: {worker}"]
            assert (worker, "INFO", "") == (line.pid, line.severity_text, line.event_name)
        (listening,) = [r for r in gunicorn_lines if str(r.body).startswith("Listening at")]
        assert server.pid == listening.pid
        assert [] == rx.errors


def test_a_timed_out_worker_sends_its_abort_with_the_stack(serve: Any) -> None:
    """A request past ``--timeout``: the worker's ``worker_aborted`` record,
    ERROR, with the stuck request's stack; the master's ``worker_exited``
    with reason timeout."""
    with LogsReceiver() as rx:
        server = start(serve, rx.endpoint, "-w", "1", "--timeout", "2")
        worker = line_of(server, "worker_booted")["worker_pid"]
        assert 500 == http_get(server.port, "/sleep?30", timeout=20)[0]
        (aborted,) = rx.wait_for(named("worker_aborted"), timeout=20)
        (exited,) = rx.wait_for(
            lambda r: r.event_name == "worker_exited" and r.attributes["reason"] == "timeout",
            timeout=20,
        )
    assert (worker, 17, "ERROR", "worker_abort") == (
        aborted.pid,
        aborted.severity_number,
        aborted.severity_text,
        aborted.attributes["hook"],
    )
    (stuck,) = aborted.attributes["requests_in_flight"]
    assert ("/sleep", True) == (stuck["path"], "stuck_in_sleep" in stuck["stack"])
    assert (server.pid, worker) == (exited.pid, exited.attributes["worker_pid"])


def test_the_access_line_carries_the_requests_trace(serve: Any) -> None:
    """With the access line and spans on (no span export), the
    ``request_finished`` record has the ids of the request's span, as its
    stderr line does, and comes from the worker."""
    with LogsReceiver() as rx:
        server = start(
            serve, rx.endpoint, "-w", "1", HOOKKIT_ACCESS_LOG="on", OTEL_TRACES_EXPORTER="none"
        )
        status, _ = request(server.port, "/", [("traceparent", TRACEPARENT)])
        assert 200 == status
        line = line_of(server, "request_finished")
        (record,) = rx.wait_for(named("request_finished"))
    assert (TRACE_ID, line["trace_id"], line["span_id"]) == (
        record.trace_id,
        record.trace_id,
        record.span_id,
    )
    assert (line["pid"], 200, "/") == (
        record.pid,
        record.attributes["status"],
        record.attributes["path"],
    )


def sink_errors(server: Gunicorn) -> float:
    text = scrape_text(server.metrics_port)  # type: ignore[attr-defined]
    return total(text, "hookkit_sink_errors_total", sink="otlp_logs")


def test_a_refused_endpoint_is_counted_and_requests_are_answered(serve: Any) -> None:
    """Nothing listens: the failed exports are counted (the series exists
    from the start, at 0), and every request is answered promptly."""
    server = start(serve, refused_endpoint(), "-w", "1", OTEL_EXPORTER_OTLP_LOGS_TIMEOUT="0.5")
    assert 'hookkit_sink_errors_total{sink="otlp_logs"}' in scrape_text(
        server.metrics_port  # type: ignore[attr-defined]
    )
    slow = []
    for _ in range(20):
        started = time.monotonic()
        status, _ = http_get(server.port, "/")
        slow += [] if status == 200 and time.monotonic() - started < 0.5 else [status]
    assert [] == slow
    deadline = time.monotonic() + 15
    while sink_errors(server) < 1:
        assert time.monotonic() < deadline, "no export failure counted"
        time.sleep(0.1)


def stamp(line: dict[str, Any]) -> float:
    """A line's timestamp, in seconds since the epoch."""
    return datetime.fromisoformat(str(line["timestamp"]).replace("Z", "+00:00")).timestamp()


def test_a_hanging_receiver_holds_neither_an_abort_nor_a_stop(serve: Any) -> None:
    """The receiver reads and never answers (the exporter would wait its
    10 s timeout): the aborted worker's flush gives up within the abort's
    0.5 s (its ``worker_exiting`` line follows ``worker_aborted`` within the
    bound: the exit after it shares the same budget, unit-tested), and a
    SIGTERM stops the workers and the master within their bounds
    (HOOKKIT_TRACING_FLUSH_SECONDS=1 each)."""
    with LogsReceiver(mode="hang") as rx:
        server = start(
            serve,
            rx.endpoint,
            "-w",
            "1",
            "--timeout",
            "2",
            "--graceful-timeout",
            "20",
            HOOKKIT_TRACING_FLUSH_SECONDS="1",
        )
        rx.wait_for(named("worker_booted"))  # the worker's exporter now hangs
        assert 500 == http_get(server.port, "/sleep?30", timeout=20)[0]
        server.wait_for(match(event="worker_exited", reason="timeout"), timeout=20)
        aborted = line_of(server, "worker_aborted")
        (leaving,) = server.events(match(event="worker_exiting", pid=aborted["pid"]))
        assert stamp(leaving) - stamp(aborted) < 0.5 + 0.5  # the bound, slack for load
        server.wait_for(match(event="worker_booted"), count=2, timeout=20)
        started = time.monotonic()
        server.signal(signal.SIGTERM)
        assert server.proc is not None
        server.proc.wait(20)
        took = time.monotonic() - started
    assert took < 1.0 + 1.0 + 2.0  # the worker's bound, the master's, slack


def test_stderr_lines_stay_as_they_are(serve: Any) -> None:
    """The same start with the sink off and on: the same lines, with the
    same fields (``server_ready`` lists one sink more)."""
    shapes = []
    with LogsReceiver() as rx:
        for on in ("off", "on"):
            server = start(serve, rx.endpoint, "-w", "1", HOOKKIT_OTLP_LOGS=on)
            lines = {
                name: line_of(server, name)
                for name in ("master_starting", "server_ready", "worker_booted")
            }
            assert 0 == server.stop()
            gunicorn_lines = sorted(
                re.sub(r"\d+", "N", str(line.get("event")))
                for line in server.events()
                if "hook" not in line
            )
            shapes.append(({name: set(line) for name, line in lines.items()}, gunicorn_lines))
            sinks = lines["server_ready"]["sinks"]
            assert ("otlp_logs" in sinks) == (on == "on")
    off, on = shapes
    assert off == on


def refused_start(serve: Any, env: dict[str, str]) -> str:
    """Start gunicorn with ``env``; it must stop before any worker: its output."""
    server: Gunicorn = serve(APP, env={"HOOKKIT_OTLP_LOGS": "on", **env}, wait=False)
    assert server.proc is not None
    assert 0 != server.proc.wait(20)
    assert [] == server.events(match(event="worker_booted"))
    return json.dumps(server.events())


def test_grpc_stops_gunicorn_at_start_naming_the_variable(serve: Any) -> None:
    text = refused_start(serve, {"OTEL_EXPORTER_OTLP_LOGS_PROTOCOL": "grpc"})
    assert "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL=grpc is not supported for HOOKKIT_OTLP_LOGS" in text


def test_an_unsupported_sdk_stops_gunicorn_at_start_naming_the_setting(
    serve: Any, tmp_path: Path
) -> None:
    """An opentelemetry-sdk release outside the pinned range (its metadata
    shadowed by an older one, first on the path) stops gunicorn with the
    setting, the release found and the fix."""
    fake = tmp_path / "old-sdk"
    dist_info = fake / "opentelemetry_sdk-1.30.0.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: opentelemetry-sdk\nVersion: 1.30.0\n", encoding="utf-8"
    )
    text = refused_start(serve, {"PYTHONPATH": os.pathsep.join([str(fake), str(TESTS)])})
    assert "HOOKKIT_OTLP_LOGS=on needs opentelemetry-sdk >=1.43,<1.46 (found: 1.30.0)" in text
    assert "or set HOOKKIT_OTLP_LOGS=off" in text
