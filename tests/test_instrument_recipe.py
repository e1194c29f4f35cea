"""The README's recipe for ``opentelemetry-instrument gunicorn -c
python:hookkit.conf ...``, run for real: the contrib auto-instrumentation
(opentelemetry-distro, the Django, Flask and requests instrumentations)
beside hookkit, on the sync worker with two workers, exporting over OTLP/HTTP
to an ``OtlpReceiver``. Everything listens and connects on 127.0.0.1 only.

What it shows, per request:

- exactly one SERVER span, and it is hookkit's: instrumentation scope
  ``hookkit``, with the worker's ``process.pid`` as a span attribute (hookkit
  adds it when it uses a provider someone else installed: here the
  distro's, whose resource carries ``telemetry.auto.version``);
- the framework's span (Django's middleware, Flask's) an INTERNAL child of
  it, in the same trace (the caller's, from ``traceparent``);
- a view's outgoing ``requests`` call: a CLIENT span of the requests
  instrumentation under the framework's span, and the loopback server the
  test runs received that trace's ``traceparent``;
- hookkit's Prometheus request count equals the requests made.

And the start-up: under the distro's own defaults (gRPC, which the grpc
exporter, not installed, would need) gunicorn serves and ``master_starting``
says what to set, while a ``grpc`` the user set still stops it.

``serve`` (tests/conftest.py) starts gunicorn as usual; the ``instrumented``
fixture puts ``opentelemetry-instrument`` in front of the gunicorn script
(it executes gunicorn in its own process: the master's pid is the one
started, and every process is stopped by pid as usual).
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from hookkit._face import gunicorn_process
from hookkit._face.gunicorn_process import Gunicorn, free_port, match
from tests.otlp import OtlpReceiver, Span
from tests.otlp_metrics_receiver import MetricsReceiver
from tests.scrape import REQUEST_COUNT, settled_count, total
from tests.traced import request, traceparent

pytestmark = [pytest.mark.integration]

INSTRUMENT = Path(sys.executable).parent / "opentelemetry-instrument"
DJANGO_EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "django"
HOOKKIT_SCOPE = "hookkit"
DJANGO_SCOPE = "opentelemetry.instrumentation.django"
FLASK_SCOPE = "opentelemetry.instrumentation.flask"
REQUESTS_SCOPE = "opentelemetry.instrumentation.requests"
WORKERS = 2


def recipe_env(rx: OtlpReceiver, **extra: str) -> dict[str, str]:
    """The README's variables for ``opentelemetry-instrument``, exporting to
    ``rx`` (and a short batch delay, so spans arrive soon)."""
    return {
        "OTEL_SERVICE_NAME": "hookkit-instrument",
        "OTEL_EXPORTER_OTLP_ENDPOINT": rx.endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_BSP_SCHEDULE_DELAY": "50",
        **extra,
    }


@pytest.fixture
def instrumented(monkeypatch: pytest.MonkeyPatch) -> None:
    """gunicorn, as ``serve`` starts it, under ``opentelemetry-instrument``."""
    assert INSTRUMENT.exists(), "pip install opentelemetry-distro (the test extras)"
    gunicorn = gunicorn_process.gunicorn_command()
    monkeypatch.setattr(gunicorn_process, "gunicorn_command", lambda: [str(INSTRUMENT), *gunicorn])


class Downstream:
    """A loopback HTTP server the apps' ``/fetch`` views call: answers 200
    and keeps each request's ``traceparent`` header."""

    def __init__(self) -> None:
        self.traceparents: list[str | None] = []
        downstream = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

            def do_GET(self) -> None:
                downstream.traceparents.append(self.headers.get("traceparent"))
                body = b"downstream\n"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/"


@contextlib.contextmanager
def downstream() -> Iterator[Downstream]:
    server = Downstream()
    server.thread.start()
    try:
        yield server
    finally:
        server.server.shutdown()
        server.server.server_close()
        server.thread.join(5)


def settled(rx: OtlpReceiver, count: int) -> list[Span]:
    """Wait for ``count`` spans, then a little longer, so that an extra span
    would have arrived too; every span received."""
    rx.wait_for(count=count, timeout=20)
    time.sleep(0.5)
    return rx.spans


def only(spans: list[Span], **fields: str) -> Span:
    """The one span whose fields have the values given."""
    found = [s for s in spans if all(getattr(s, key) == value for key, value in fields.items())]
    assert 1 == len(found), (fields, spans)
    return found[0]


def booted_providers(server: Gunicorn) -> list[object]:
    """Each worker's ``worker_booted`` ``tracing``: which provider it uses."""
    lines = server.wait_for(match(event="worker_booted"), count=WORKERS, timeout=30)
    return [line.get("tracing") for line in lines]


def master_starting(server: Gunicorn) -> dict[str, Any]:
    (line,) = server.wait_for(match(event="master_starting"), timeout=30)
    return line


def run_recipe(
    server: Gunicorn, rx: OtlpReceiver, paths: list[str], fetch: str, spans_per_request: int
) -> tuple[list[tuple[int, bytes]], list[Span], list[tuple[int, bytes]], list[Span]]:
    """Send ``paths`` (request n with ``traceparent(n)``), then ``fetch``
    (the view calling out) with the next one: the answers and the spans of
    each, once every span arrived."""
    answers = [
        request(server.port, path, [("traceparent", traceparent(n)[0])])
        for n, path in enumerate(paths)
    ]
    n = len(paths)
    fetched = [request(server.port, fetch, [("traceparent", traceparent(n)[0])])]
    # The callers' traces only: hookkit's OTLP metrics push may make spans
    # of its own (test_hookkits_metrics_push_makes_no_span).
    ours = {traceparent(k)[1] for k in range(n + 1)}
    rx.wait_for(
        lambda span: span.trace_id in ours,
        count=spans_per_request * len(paths) + spans_per_request + 1,
        timeout=20,
    )
    time.sleep(0.5)
    spans = [s for s in rx.spans if s.trace_id in ours]
    fetch_trace = traceparent(n)[1]
    return (
        answers,
        [s for s in spans if s.trace_id != fetch_trace],
        fetched,
        [s for s in spans if s.trace_id == fetch_trace],
    )


def assert_nested(
    spans: list[Span], count: int, framework_scope: str, workers: set[int]
) -> dict[str, Span]:
    """Trace n (n < ``count``) is the caller's ``traceparent(n)``, with one
    SERVER span, hookkit's, child of the caller's span and made in one of
    ``workers``, and the framework's span an INTERNAL child of it; no other
    span. The SERVER span of each trace, by trace id."""
    assert {traceparent(n)[1] for n in range(count)} == {s.trace_id for s in spans}
    servers = {}
    for n in range(count):
        header, trace_id = traceparent(n)
        in_trace = [s for s in spans if s.trace_id == trace_id]
        server = only(in_trace, kind="SERVER")
        framework = only(in_trace, scope_name=framework_scope)
        expected = [
            ("SERVER", HOOKKIT_SCOPE, header.split("-")[2]),
            ("INTERNAL", framework_scope, server.span_id),
        ]
        actual = [(s.kind, s.scope_name, s.parent_span_id) for s in (server, framework)]
        assert expected == actual
        assert 2 == len(in_trace), in_trace
        assert server.attributes.get("process.pid") in workers
        servers[trace_id] = server
    return servers


def assert_fetch_nested(
    spans: list[Span], n: int, framework_scope: str, received: list[str | None]
) -> None:
    """The fetch request (``traceparent(n)``): hookkit's SERVER span, the
    framework's INTERNAL span under it, the requests CLIENT span under the
    framework's, and the downstream server got the CLIENT span's context."""
    header, trace_id = traceparent(n)
    server = only(spans, kind="SERVER")
    framework = only(spans, scope_name=framework_scope)
    client = only(spans, kind="CLIENT")
    expected = [
        ("SERVER", HOOKKIT_SCOPE, header.split("-")[2]),
        ("INTERNAL", framework_scope, server.span_id),
        ("CLIENT", REQUESTS_SCOPE, framework.span_id),
    ]
    actual = [(s.kind, s.scope_name, s.parent_span_id) for s in (server, framework, client)]
    assert expected == actual
    assert 3 == len(spans), spans
    assert [f"00-{trace_id}-{client.span_id}-01"] == received


def assert_recipe_start(server: Gunicorn) -> set[int]:
    """The recipe starts clean: ``master_starting`` an info line without
    warnings, tracing exporting over OTLP/HTTP; each worker uses the
    provider the distro installed (``app``), none of its own. The workers' pids."""
    starting = master_starting(server)
    assert ("info", None) == (starting.get("level"), starting.get("warnings"))
    assert {"tracing": "on", "exporters": ["otlp"]} == {
        key: starting["tracing"].get(key) for key in ("tracing", "exporters")
    }
    assert ["app"] * WORKERS == booted_providers(server)
    return set(server.live_workers())


def test_django_under_opentelemetry_instrument(
    serve: Any, tmp_path: Path, instrumented: None
) -> None:
    """examples/django under the recipe, ``DJANGO_SETTINGS_MODULE`` exported
    before start: per request one SERVER span (hookkit's), Django's span
    nested, a view's ``requests`` call nested below that; the request count
    exact."""
    where = tmp_path / "django"
    shutil.copytree(DJANGO_EXAMPLE, where, ignore=shutil.ignore_patterns("__pycache__"))
    paths = [f"/polls/{n}/" for n in range(4)]
    with OtlpReceiver() as rx, downstream() as down:
        server = serve(
            "mysite.wsgi",
            "-w",
            str(WORKERS),
            "--pythonpath",
            str(where),
            env=recipe_env(
                rx,
                DJANGO_SETTINGS_MODULE="apps.instrument_django_settings",
                DOWNSTREAM_URL=down.url,
            ),
            cwd=where,
        )
        workers = assert_recipe_start(server)
        answers, spans, fetched, fetch_spans = run_recipe(server, rx, paths, "/fetch/", 2)
        text = settled_count(server, len(paths) + 1)
        every_server_span = [s.scope_name for s in rx.spans if s.kind == "SERVER"]

    assert [(200, f"question {n}\n".encode()) for n in range(4)] == answers
    assert [(200, b"downstream said 200: downstream\n")] == fetched
    servers = assert_nested(spans, len(paths), DJANGO_SCOPE, workers)
    assert ["GET polls/<int:question_id>/"] * len(paths) == [s.name for s in servers.values()]
    assert_fetch_nested(fetch_spans, len(paths), DJANGO_SCOPE, down.traceparents)
    assert "0.66b1" == only(fetch_spans, kind="SERVER").resource.get("telemetry.auto.version")
    assert len(paths) + 1 == total(text, REQUEST_COUNT)
    # Whatever the trace: one SERVER span per request, hookkit's.
    assert [HOOKKIT_SCOPE] * (len(paths) + 1) == every_server_span


def flask_recipe(serve: Any, rx: OtlpReceiver, metrics_rx: MetricsReceiver, url: str) -> Gunicorn:
    """The Flask app under the recipe, hookkit's OTLP metrics on
    (``HOOKKIT_OTLP_METRICS=on``, the SDK's own off), pushed every 0.3 s."""
    server: Gunicorn = serve(
        "apps.instrument_flask:app",
        "-w",
        str(WORKERS),
        env=recipe_env(
            rx,
            DOWNSTREAM_URL=url,
            HOOKKIT_OTLP_METRICS="on",
            OTEL_EXPORTER_OTLP_METRICS_ENDPOINT=metrics_rx.metrics_endpoint,
            OTEL_METRIC_EXPORT_INTERVAL="300",
        ),
    )
    return server


def test_flask_under_opentelemetry_instrument(serve: Any, instrumented: None) -> None:
    """A Flask app with no OpenTelemetry code under the recipe: per request
    one SERVER span (hookkit's), Flask's nested, a view's ``requests`` call
    below that; the request count exact, and pushed by the master."""
    paths = [f"/hello/n{n}" for n in range(4)]
    with OtlpReceiver() as rx, MetricsReceiver() as metrics_rx, downstream() as down:
        server = flask_recipe(serve, rx, metrics_rx, down.url)
        workers = assert_recipe_start(server)
        answers, spans, fetched, fetch_spans = run_recipe(server, rx, paths, "/fetch", 2)
        text = settled_count(server, len(paths) + 1)
        every_server_span = [s.scope_name for s in rx.spans if s.kind == "SERVER"]
        metrics_rx.wait_for_requests(1)

    assert [(200, f"hello, n{n}\n".encode()) for n in range(4)] == answers
    assert [(200, b"downstream said 200: downstream\n")] == fetched
    servers = assert_nested(spans, len(paths), FLASK_SCOPE, workers)
    assert ["GET /hello/<name>"] * len(paths) == [s.name for s in servers.values()]
    assert_fetch_nested(fetch_spans, len(paths), FLASK_SCOPE, down.traceparents)
    assert len(paths) + 1 == total(text, REQUEST_COUNT)
    # Whatever the trace: one SERVER span per request, hookkit's.
    assert [HOOKKIT_SCOPE] * (len(paths) + 1) == every_server_span


def test_hookkits_metrics_push_makes_no_span(serve: Any, instrumented: None) -> None:
    """hookkit's master pushes its OTLP metrics with the official exporter,
    over ``requests``, which the requests instrumentation patched in the
    master too: the push must make no span (the SDK's own exporters
    suppress instrumentation while they export), or every push would be a
    trace of its own, exported by the distro's provider from the master."""
    with OtlpReceiver() as rx, MetricsReceiver() as metrics_rx, downstream() as down:
        server = flask_recipe(serve, rx, metrics_rx, down.url)
        server.wait_for(match(event="worker_booted"), count=WORKERS, timeout=30)
        metrics_rx.wait_for_requests(3)
        time.sleep(0.5)
        spans = rx.spans

    assert [] == [(s.kind, s.name, s.attributes.get("http.url")) for s in spans]


def test_the_distros_defaults_serve_and_say_what_to_set(serve: Any, instrumented: None) -> None:
    """``opentelemetry-instrument`` with only an endpoint set: the distro's
    defaults (OTLP over gRPC for traces, metrics and logs) cannot work
    without the gRPC exporter (the distro's own set-up fails on it, and
    logs why). gunicorn still serves: ``master_starting`` is a warning naming
    ``OTEL_EXPORTER_OTLP_PROTOCOL`` and ``OTEL_METRICS_EXPORTER`` with their
    fixes, and hookkit exports its spans over http/protobuf, its default,
    from a provider of its own."""
    with OtlpReceiver() as rx:
        server = serve(
            "apps.instrument_flask:app",
            "-w",
            str(WORKERS),
            env={"OTEL_EXPORTER_OTLP_ENDPOINT": rx.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "50"},
        )
        starting = master_starting(server)
        assert ["hookkit"] * WORKERS == booted_providers(server)
        answer = request(server.port, "/hello/ada", [("traceparent", traceparent(0)[0])])
        spans = settled(rx, 1)

    assert "warning" == starting["level"]
    (tracing_warning,) = starting["tracing"]["warnings"]
    assert tracing_warning.startswith(
        "OTEL_EXPORTER_OTLP_PROTOCOL=grpc is opentelemetry-distro's default"
    )
    assert tracing_warning.endswith("set OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf")
    (metrics_warning,) = starting["warnings"]
    assert metrics_warning.startswith("OTEL_METRICS_EXPORTER=otlp ")
    assert metrics_warning.endswith("set OTEL_METRICS_EXPORTER=none and HOOKKIT_OTLP_METRICS=on")
    assert (200, b"hello, ada\n") == answer
    assert [("SERVER", HOOKKIT_SCOPE, traceparent(0)[1])] == [
        (s.kind, s.scope_name, s.trace_id) for s in spans
    ]


def test_the_distros_grpc_default_does_not_stop_hookkits_metrics_push(
    serve: Any, instrumented: None
) -> None:
    """The distro's default gRPC with ``HOOKKIT_OTLP_METRICS=on``: the
    master pushes over http/protobuf anyway, and ``master_starting`` says
    so, with the fix; no crash loop."""
    with MetricsReceiver() as metrics_rx:
        endpoint = metrics_rx.metrics_endpoint.removesuffix("/v1/metrics")
        server = serve(
            "apps.instrument_flask:app",
            env={
                "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
                "HOOKKIT_OTLP_METRICS": "on",
                "HOOKKIT_TRACING": "off",
                "OTEL_TRACES_EXPORTER": "none",
                "OTEL_METRICS_EXPORTER": "none",
                "OTEL_LOGS_EXPORTER": "none",
                "OTEL_METRIC_EXPORT_INTERVAL": "200",
            },
        )
        starting = master_starting(server)
        assert 200 == request(server.port, "/hello/ada", [])[0]
        metrics_rx.wait_for_requests(1)

    assert "warning" == starting["level"]
    (warning,) = starting["otlp_metrics"]["warnings"]
    assert warning.startswith("OTEL_EXPORTER_OTLP_PROTOCOL=grpc is opentelemetry-distro's default")
    assert warning.endswith("set OTEL_EXPORTER_OTLP_METRICS_PROTOCOL=http/protobuf to say so")


def test_grpc_the_user_set_still_stops_gunicorn(serve: Any, instrumented: None) -> None:
    """The same ``grpc``, set by the user in gunicorn's environment: a
    mistake to fix once, so gunicorn stops at start-up, naming it."""
    server = serve(
        "apps.instrument_flask:app",
        env={"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_TRACES_EXPORTER": "otlp"},
        wait=False,
    )
    assert server.proc is not None
    returncode = server.proc.wait(30)
    output = " ".join(str(line) for line in server.events())

    assert 0 != returncode
    assert "OTEL_EXPORTER_OTLP_PROTOCOL=grpc needs the package" in output
    assert not server.events(match(event="server_ready"))
