"""Exemplars end to end: real gunicorn with the drop-in config and tracing
exported to ``tests.otlp.OtlpReceiver``, its ``/metrics`` read in
OpenMetrics (as Prometheus asks for it) and by a real Prometheus with
exemplar storage. Everything listens and connects on 127.0.0.1; every
process is stopped by PID (the ``serve`` fixture, ``tests.prom``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from hookkit._face.gunicorn_process import match
from tests.conftest import ServeFactory
from tests.otlp import OtlpReceiver, Span
from tests.prom import MISSING, PROMETHEUS, prometheus
from tests.scrape import scrape_text
from tests.test_config_failfast import assert_refused, start_refused
from tests.traced import request, server_spans, start_traced

pytestmark = [pytest.mark.integration]

METRIC = "http_server_request_duration_seconds"
# What Prometheus 2.x sends first in its Accept header.
OPENMETRICS = "application/openmetrics-text;version=1.0.0"


def served_exemplars(port: int) -> dict[tuple[str, str], dict[str, Any]]:
    """The request histogram's exemplars on ``/metrics`` in OpenMetrics:
    (status, le) -> trace_id, span_id, value, timestamp."""
    text = scrape_text(port, accept=OPENMETRICS)
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for family in text_string_to_metric_families(text):
        if family.name != METRIC:
            continue
        for sample in family.samples:
            if sample.exemplar is None:
                continue
            assert sample.name == METRIC + "_bucket", sample
            found[(sample.labels["http_response_status_code"], sample.labels["le"])] = {
                **sample.exemplar.labels,
                "value": sample.exemplar.value,
                "timestamp": sample.exemplar.timestamp,
            }
    return found


def ids(span: Span) -> tuple[str, str]:
    return span.trace_id, span.span_id


def metrics_directory(server: Any) -> Path:
    (ready,) = server.events(match(event="server_ready"))
    return Path(ready["metrics_directory"])


@pytest.mark.skipif(PROMETHEUS is None, reason=MISSING)
def test_prometheus_stores_exemplars_that_are_trace_ids_of_exported_spans(
    serve: ServeFactory,
) -> None:
    """The issue's "done when": two workers, every span sampled; a real
    Prometheus with ``--enable-feature=exemplar-storage`` scrapes the master
    and ``/api/v1/query_exemplars`` returns trace ids (and span ids) equal to
    those of SERVER spans the OTLP receiver got, on the series of the span's
    status, with a value in the bucket's range."""
    paths = ["/", "/status/201", "/status/404", "/users/7"]
    with OtlpReceiver() as rx:
        server = start_traced(serve, rx, workers=2, env={"OTEL_TRACES_SAMPLER": "always_on"})
        target = f"127.0.0.1:{server.metrics_port}"  # type: ignore[attr-defined]
        with prometheus([target], extra_args=["--enable-feature=exemplar-storage"]) as prom:
            started = time.time()
            deadline = time.monotonic() + 45
            found: list[dict[str, Any]] = []
            sent = 0
            while time.monotonic() < deadline:
                for path in paths:
                    assert 200 <= request(server.port, path)[0] < 500  # type: ignore[attr-defined]
                    sent += 1
                found = prom.query_exemplars(
                    f"{METRIC}_bucket", start=started - 60, end=time.time() + 60
                )
                if sum(len(series["exemplars"]) for series in found) >= 8:
                    break
                time.sleep(0.5)
            spans = {ids(span): span for span in server_spans(rx, count=sent, timeout=20)}

    exemplars = [
        (series["seriesLabels"], exemplar) for series in found for exemplar in series["exemplars"]
    ]
    assert len(exemplars) >= 8, found
    for labels, exemplar in exemplars:
        pair = (exemplar["labels"]["trace_id"], exemplar["labels"]["span_id"])
        assert pair in spans, (pair, sorted(spans))
        span = spans[pair]
        assert (
            str(span.attributes["http.response.status_code"])
            == (labels["http_response_status_code"])
        )
        assert 0 < float(exemplar["value"]) <= float(labels["le"])
    assert {"hookkit"} == {labels["job"] for labels, _ in exemplars}
    # Both slots' files were read: spans of both workers are exemplars.
    pids = {
        spans[(e["labels"]["trace_id"], e["labels"]["span_id"])].resource["process.pid"]
        for _, e in exemplars
    }
    assert 2 == len(pids), pids


def test_exemplars_survive_a_worker_recycled_by_max_requests(serve: ServeFactory) -> None:
    """One worker, recycled after 3 requests: the exemplar its first request
    left is still served after its replacement booted (the slot's file is
    reopened, not replaced), and the replacement's own request adds its
    exemplar to the same, single file."""
    with OtlpReceiver() as rx:
        server = start_traced(serve, rx, "--max-requests", "3")
        port = server.metrics_port  # type: ignore[attr-defined]
        assert 201 == request(server.port, "/status/201")[0]  # type: ignore[attr-defined]
        for _ in range(2):
            request(server.port, "/")  # type: ignore[attr-defined]
        server.wait_for(match(event="worker_exited", reason="max_requests"), timeout=15)
        server.wait_for(match(event="worker_booted"), count=2, timeout=15)
        assert 202 == request(server.port, "/status/202")[0]  # type: ignore[attr-defined]
        first = server_spans(rx, **{"http__response__status_code": 201})[0]
        second = server_spans(rx, **{"http__response__status_code": 202})[0]
        served = served_exemplars(port)
        directory = metrics_directory(server)
        files = sorted(name for name in os.listdir(directory) if name.endswith(".exemplars"))

    assert first.resource["process.pid"] != second.resource["process.pid"]
    by_status = {status: exemplar for (status, _), exemplar in served.items()}
    assert ids(first) == (by_status["201"]["trace_id"], by_status["201"]["span_id"])
    assert ids(second) == (by_status["202"]["trace_id"], by_status["202"]["span_id"])
    assert [f"w{server.pid}s0.exemplars"] == files


@pytest.mark.parametrize(
    ("exemplar_filter", "sampler", "expected"),
    [
        ("", "always_off", False),  # trace_based (the default): nothing sampled
        ("trace_based", "always_on", True),
        ("Always_On", "always_off", True),  # the ids of unsampled spans too
        ("ALWAYS_OFF", "always_on", False),
    ],
)
def test_the_exemplar_filter_decides(
    serve: ServeFactory, exemplar_filter: str, sampler: str, expected: bool
) -> None:
    """``OTEL_METRICS_EXEMPLAR_FILTER`` against what the sampler decided:
    requests are counted either way, exemplars only where the filter lets
    them (and under ``always_off`` no exemplar file is even made)."""
    with OtlpReceiver() as rx:
        env = {"OTEL_TRACES_SAMPLER": sampler, "OTEL_METRICS_EXEMPLAR_FILTER": exemplar_filter}
        server = start_traced(serve, rx, env=env)
        port = server.metrics_port  # type: ignore[attr-defined]
        for _ in range(3):
            assert 201 == request(server.port, "/status/201")[0]  # type: ignore[attr-defined]
        text = scrape_text(port, accept=OPENMETRICS)
        served = served_exemplars(port)
        files = [n for n in os.listdir(metrics_directory(server)) if n.endswith(".exemplars")]
    assert f'{METRIC}_count{{error_type="",http_request_method="GET"' in text
    assert expected == bool(served), served
    assert (exemplar_filter.lower() != "always_off") == bool(files)


def test_the_classic_text_format_has_no_exemplars(serve: ServeFactory) -> None:
    """A scraper that does not ask for OpenMetrics gets the text format,
    which cannot carry exemplars, even while they are stored."""
    with OtlpReceiver() as rx:
        server = start_traced(serve, rx, env={"OTEL_TRACES_SAMPLER": "always_on"})
        port = server.metrics_port  # type: ignore[attr-defined]
        request(server.port, "/")  # type: ignore[attr-defined]
        # post_request records the exemplar after the client has its answer
        deadline = time.monotonic() + 10
        while not served_exemplars(port) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert served_exemplars(port)
        plain = scrape_text(port)
    assert "trace_id" not in plain
    assert f"{METRIC}_bucket" in plain


def test_a_bad_filter_stops_gunicorn_naming_the_variable(
    serve: ServeFactory, tmp_path: Path
) -> None:
    """A value OpenTelemetry does not define is refused at start-up, before
    any worker and before the metrics directory is made."""
    refusal = start_refused(serve, tmp_path, {"OTEL_METRICS_EXEMPLAR_FILTER": "sometimes"})
    assert_refused(
        refusal,
        "OTEL_METRICS_EXEMPLAR_FILTER='sometimes'",
        "always_on, always_off, trace_based",
    )
