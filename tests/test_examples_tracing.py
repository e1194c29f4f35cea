"""The tracing examples work as their docstrings say: each one is copied
out of examples/ and started as documented (from inside its directory,
``app:app`` under the drop-in config) with real gunicorn, exporting over
OTLP/HTTP to an ``OtlpReceiver``. Everything listens and connects on
127.0.0.1 only.

- ``examples/flask_tracing``: the contrib Flask instrumentation nests its
  span under hookkit's SERVER span as an INTERNAL span (no second SERVER
  span), and hookkit names its span from Flask's matched rule;
- ``examples/starlette_tracing``: Starlette on gunicorn's own ASGI worker,
  the app's span under hookkit's SERVER span.
"""

from __future__ import annotations

import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from hookkit._face.gunicorn_process import Gunicorn, match
from tests.otlp import OtlpReceiver, Span
from tests.scrape import scrape_text, total
from tests.traced import export_env, request, traceparent

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).parent.parent / "examples"
FLASK_SCOPE = "opentelemetry.instrumentation.flask"


def start_example(serve: Any, tmp_path: Path, rx: OtlpReceiver, name: str, *args: str) -> Gunicorn:
    """examples/``name`` copied into ``tmp_path`` and served from there as
    ``app:app`` (one worker) exporting to ``rx``; returns once it booted."""
    where = tmp_path / name
    shutil.copytree(EXAMPLES / name, where, ignore=shutil.ignore_patterns("__pycache__"))
    server: Gunicorn = serve("app:app", *args, "-w", "1", env=export_env(rx.endpoint), cwd=where)
    server.wait_for(match(event="worker_booted"))
    return server


def settled(rx: OtlpReceiver, count: int) -> list[Span]:
    """Wait for ``count`` spans, then a little longer, so that an extra span
    would have arrived too; every span received."""
    rx.wait_for(count=count)
    time.sleep(0.5)
    return rx.spans


def only(spans: list[Span], **fields: str) -> Span:
    """The one span whose fields have the values given."""
    found = [s for s in spans if all(getattr(s, key) == value for key, value in fields.items())]
    assert 1 == len(found), (fields, spans)
    return found[0]


def assert_item_spans(spans: list[Span], items: tuple[str, ...], app_scope: str) -> None:
    """For request n (``/items/{item}`` with ``traceparent(n)``): one SERVER
    span, hookkit's, child of the caller's span, named from the route
    template, with the app's ``load_item`` span (scope ``app_scope``) as its
    child."""
    for n, item in enumerate(items):
        in_trace = [span for span in spans if span.trace_id == traceparent(n)[1]]
        server = only(in_trace, kind="SERVER")
        app = only(in_trace, name="load_item")
        expected = [
            ("SERVER", "hookkit", traceparent(n)[0].split("-")[2], f"/items/{item}", 200),
            ("INTERNAL", app_scope, server.span_id, None, None),
        ]
        actual = [
            (
                s.kind,
                s.scope_name,
                s.parent_span_id,
                s.attributes.get("url.path"),
                s.attributes.get("http.response.status_code"),
            )
            for s in (server, app)
        ]
        assert expected == actual
        assert item == str(app.attributes.get("item.id"))
        assert ("GET /items/{item_id}", "/items/{item_id}") == (
            server.name,
            server.attributes.get("http.route"),
        )


def send_flask_requests(
    serve: Any, tmp_path: Path
) -> tuple[list[tuple[int, bytes]], list[Span], str]:
    """Three requests to the Flask example, request n with ``traceparent(n)``:
    the answers, every span that arrived, and a scrape of /metrics."""
    with OtlpReceiver() as rx:
        server = start_example(serve, tmp_path, rx, "flask_tracing")
        answers = [
            request(server.port, f"/hello/{name}", [("traceparent", traceparent(n)[0])])
            for n, name in enumerate(("ada", "grace", "edsger"))
        ]
        spans = settled(rx, 3 * len(answers))
        text = scrape_text(server.metrics_port)
    return answers, spans, text


def test_flask_spans_nest_under_hookkits_server_span(serve: Any, tmp_path: Path) -> None:
    """Per request, one trace, the caller's: exactly one SERVER span, hookkit's,
    child of the caller's span; the Flask instrumentation's span is INTERNAL,
    its child; the app's ``greet`` span is the child of Flask's."""
    answers, spans, _ = send_flask_requests(serve, tmp_path)

    assert [
        (200, b'{"message":"hello, ada"}\n'),
        (200, b'{"message":"hello, grace"}\n'),
        (200, b'{"message":"hello, edsger"}\n'),
    ] == answers
    assert Counter({traceparent(n)[1]: 3 for n in range(3)}) == Counter(s.trace_id for s in spans)
    for n in range(3):
        trace_id = traceparent(n)[1]
        in_trace = [span for span in spans if span.trace_id == trace_id]
        server = only(in_trace, kind="SERVER")
        flask = only(in_trace, scope_name=FLASK_SCOPE)
        greet = only(in_trace, name="greet")
        expected = [
            ("SERVER", "hookkit", traceparent(n)[0].split("-")[2]),
            ("INTERNAL", FLASK_SCOPE, server.span_id),
            ("INTERNAL", "examples.flask_tracing", flask.span_id),
        ]
        actual = [(s.kind, s.scope_name, s.parent_span_id) for s in (server, flask, greet)]
        assert expected == actual
        assert "/hello/<name>" == flask.attributes.get("http.route")


def test_flask_route_names_hookkits_span_and_the_route_label(serve: Any, tmp_path: Path) -> None:
    """hookkit names its SERVER span from Flask's matched rule, which is also
    the metrics' route label: ``GET /hello/<name>``, with ``http.route``.
    (Flask clears ``environ["werkzeug.request"]`` before ``post_request``;
    hookkit takes the rule from Flask's ``request_started`` signal.)"""
    _, spans, text = send_flask_requests(serve, tmp_path)
    servers = [span for span in spans if span.kind == "SERVER"]
    assert [("GET /hello/<name>", "/hello/<name>")] * 3 == [
        (span.name, span.attributes.get("http.route")) for span in servers
    ]
    counted = total(text, "http_server_request_duration_seconds_count", http_route="/hello/<name>")
    assert 3 == counted


def test_starlette_on_the_asgi_worker(serve: Any, tmp_path: Path) -> None:
    """Starlette served by ``-k asgi``: per request exactly one SERVER span,
    hookkit's, continuing the caller's trace, named from Starlette's matched
    route (``GET /items/{item_id}``), with the app's ``load_item`` span as
    its child."""
    with OtlpReceiver() as rx:
        server = start_example(serve, tmp_path, rx, "starlette_tracing", "-k", "asgi")
        answers = [
            request(server.port, f"/items/{item}", [("traceparent", traceparent(n)[0])])
            for n, item in enumerate((42, 7))
        ]
        spans = settled(rx, 2 * len(answers))

    assert [(200, b'{"item_id":"42"}'), (200, b'{"item_id":"7"}')] == answers
    assert Counter({traceparent(n)[1]: 2 for n in range(2)}) == Counter(s.trace_id for s in spans)
    assert_item_spans(spans, ("42", "7"), "examples.starlette_tracing")
