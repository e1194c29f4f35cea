"""Probes kept out, on a real gunicorn: with ``HOOKKIT_EXCLUDED_URLS`` (or
OpenTelemetry's ``OTEL_PYTHON_EXCLUDED_URLS``) 500 probe requests leave the
request metrics, hookkit's access line, gunicorn's own access log and the
exported spans untouched, while the busy-seconds counter still moves.

Real gunicorn (sync worker, one process), real scrapes of /metrics, real
OTLP/HTTP to an ``OtlpReceiver``; everything on 127.0.0.1.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from hookkit._face.gunicorn_process import http_get, match
from tests.otlp import OtlpReceiver
from tests.scrape import scrape_text, total
from tests.traced import server_spans, start_traced

pytestmark = pytest.mark.integration

PROBES = 500
COUNT = "http_server_request_duration_seconds_count"
BUSY = "gunicorn_worker_busy_seconds_total"


@pytest.mark.parametrize(
    "variable", ["HOOKKIT_EXCLUDED_URLS", "OTEL_PYTHON_EXCLUDED_URLS"], ids=["hookkit", "otel"]
)
def test_probes_stay_out_of_everything_but_busy_time(
    serve: Any, tmp_path: Path, variable: str
) -> None:
    env = {variable: r"^/healthz$,^/sleep$", "HOOKKIT_ACCESS_LOG": "on"}
    with OtlpReceiver() as rx:
        server = start_traced(serve, rx, "--access-logfile", "access.log", env=env)
        with ThreadPoolExecutor(4) as pool:
            statuses = list(pool.map(lambda _: http_get(server.port, "/healthz")[0], range(PROBES)))
        assert [200] * PROBES == statuses
        # A slow probe: the worker is busy for 0.3 s and it still counts.
        assert 200 == http_get(server.port, "/sleep?0.3")[0]
        assert 204 == http_get(server.port, "/status/204")[0]
        (kept,) = server_spans(rx, 1)
        deadline = time.monotonic() + 10
        text = scrape_text(server.metrics_port)
        while total(text, COUNT) < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
            text = scrape_text(server.metrics_port)
        time.sleep(0.5)  # anything counted late would show now
        text = scrape_text(server.metrics_port)
        spans = [span for span in rx.spans if span.kind == "SERVER"]
        access_lines = server.events(match(event="request_finished"))

    assert "/status/204" == kept.attributes.get("url.path")
    assert ["/status/204"] == [span.attributes.get("url.path") for span in spans]
    assert 1 == total(text, COUNT)
    assert 1 == total(text, COUNT, http_response_status_code="204")
    assert ["/status/204"] == [line["path"] for line in access_lines]
    gunicorn_access = (tmp_path / "access.log").read_text().splitlines()
    assert 1 == len(gunicorn_access), gunicorn_access[:3]
    assert "/status/204" in gunicorn_access[0]
    assert total(text, BUSY) >= 0.3
    assert 0 == total(text, "http_server_active_requests")
