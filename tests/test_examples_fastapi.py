"""examples/fastapi_uvicorn works as its docstring says: copied out of
examples/ and started as documented (from inside its directory, ``app:app``
under the drop-in config, ``-k uvicorn_worker.UvicornWorker``) with real
gunicorn and real uvicorn, exporting over OTLP/HTTP to an ``OtlpReceiver``.
uvicorn-worker never calls gunicorn's request hooks: hookkit's middleware
makes the request's span and metrics. Everything listens and connects on
127.0.0.1 only.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.otlp import OtlpReceiver, Span
from tests.scrape import scrape_text, total
from tests.test_examples_tracing import assert_item_spans, only, settled, start_example
from tests.traced import request, traceparent

pytestmark = pytest.mark.integration

EXAMPLE = "fastapi_uvicorn"
WORKER = ("-k", "uvicorn_worker.UvicornWorker")
COUNT = "http_server_request_duration_seconds_count"
ITEMS = (42, 7, 3)


def send_item_requests(
    serve: Any, tmp_path: Path
) -> tuple[list[tuple[int, bytes]], list[Span], str]:
    """``/items/{item}`` for each of ``ITEMS``, request n with
    ``traceparent(n)``: the answers, every span that arrived, and a scrape
    of /metrics taken once they all had (hookkit counts a request before it
    ends its span)."""
    with OtlpReceiver() as rx:
        server = start_example(serve, tmp_path, rx, EXAMPLE, *WORKER)
        answers = [
            request(server.port, f"/items/{item}", [("traceparent", traceparent(n)[0])])
            for n, item in enumerate(ITEMS)
        ]
        spans = settled(rx, 2 * len(ITEMS))
        text = scrape_text(server.metrics_port)
    return answers, spans, text


def test_one_server_span_per_request_with_the_apps_span_as_its_child(
    serve: Any, tmp_path: Path
) -> None:
    """Per request, one trace, the caller's: exactly one SERVER span,
    hookkit's, child of the caller's span and named from FastAPI's route
    (``GET /items/{item_id}``); the app's ``load_item`` span is its child.
    FastAPI's own telemetry adds no second SERVER span."""
    answers, spans, _ = send_item_requests(serve, tmp_path)

    assert [(200, f'{{"item_id":{item}}}'.encode()) for item in ITEMS] == answers
    assert Counter({traceparent(n)[1]: 2 for n in range(len(ITEMS))}) == Counter(
        s.trace_id for s in spans
    )
    assert len(ITEMS) == len([s for s in spans if s.kind == "SERVER"])
    assert_item_spans(spans, tuple(str(item) for item in ITEMS), "examples.fastapi_uvicorn")


def test_each_request_is_counted_once_under_its_route(serve: Any, tmp_path: Path) -> None:
    """/metrics counts each request exactly once, under FastAPI's route
    template and the status the client got."""
    _, _, text = send_item_requests(serve, tmp_path)

    assert (len(ITEMS), len(ITEMS)) == (
        total(text, COUNT),
        total(text, COUNT, http_route="/items/{item_id}", http_response_status_code="200"),
    )


def test_a_streamed_response_is_one_request_until_its_last_chunk(
    serve: Any, tmp_path: Path
) -> None:
    """``/stream?chunks=5``: five chunks 0.1 s apart; one SERVER span,
    ``GET /stream``, lasting until the last chunk, and one count."""
    with OtlpReceiver() as rx:
        server = start_example(serve, tmp_path, rx, EXAMPLE, *WORKER)
        status, body = request(
            server.port, "/stream?chunks=5", [("traceparent", traceparent(0)[0])]
        )
        spans = settled(rx, 1)
        text = scrape_text(server.metrics_port)

    assert (200, [f"chunk {n}" for n in range(5)]) == (status, body.decode().splitlines())
    span = only(spans, kind="SERVER")
    assert ("GET /stream", traceparent(0)[1]) == (span.name, span.trace_id)
    assert span.duration >= 0.4
    assert 1 == total(text, COUNT, http_route="/stream")
