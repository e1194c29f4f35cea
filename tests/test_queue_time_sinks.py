"""Queue time in the sinks, in-process, each driven through hookkit's
request path (``RequestPath``) from a request with the proxy's header:

- Prometheus: ``http_server_request_queue_duration_seconds`` observed under
  the request's method, ``hookkit_queue_header_errors_total`` counted by
  reason, every reason's series at 0 from the start; read back from a real
  multiprocess directory through hookkit's own collector, as ``/metrics``
  reads it;
- tracing: ``gunicorn.request.queue_duration`` on the SERVER span, with an
  SDK provider of the test's own and an in-memory exporter;
- logs: ``queue_seconds`` on the access line, JSON and console.

Real gunicorn, for every header form and two worker classes:
tests/test_queue_time_live.py.
"""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import context as otel_context
from opentelemetry import propagate
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from hookkit._aggregate.collect import FileCollector
from hookkit._aggregate.directory import ENV_DIR, set_identity, slot_identity, use_slot_identities
from hookkit._core.dispatch import Dispatcher
from hookkit._core.queue_time import REASONS
from hookkit._core.request_path import RequestPath
from hookkit._core.settings import Settings
from hookkit._core.sink import RequestFinished, Sink
from hookkit._sinks.logs import pipeline
from hookkit._sinks.logs.sink import LogSink
from hookkit._sinks.prometheus.metrics import QUEUE_BUCKETS, Metrics
from hookkit._sinks.prometheus.sink import PrometheusSink
from hookkit._sinks.tracing.sink import TracingSink
from hookkit.testing import FakeRequest, FakeResponse

QUEUE = "http_server_request_queue_duration_seconds"
ERRORS = "hookkit_queue_header_errors_total"
TRUSTED = ("127.0.0.1", 40000)  # gunicorn's default forwarded_allow_ips
UNTRUSTED = ("203.0.113.9", 40000)


def stamped(seconds_ago: float) -> list[tuple[str, str]]:
    """An nginx ``X-Request-Start: t=<sec.ms>`` for ``seconds_ago``."""
    return [("HOST", "shop.test"), ("X-REQUEST-START", f"t={time.time() - seconds_ago:.3f}")]


def serve(sinks: list[Sink], requests: list[FakeRequest]) -> None:
    """Each request through hookkit's request path, one after the other."""
    dispatcher = Dispatcher()
    dispatcher.set_sinks(sinks)
    path = RequestPath(dispatcher)
    for req in requests:
        path.pre_request(req)
        path.post_request(req, {}, FakeResponse("200 OK"))


# -- Prometheus --------------------------------------------------------------------


class Scraped:
    """A PrometheusSink writing to a multiprocess directory, and its samples."""

    def __init__(self, directory: Path) -> None:
        use_slot_identities()
        set_identity(slot_identity(1, 0))
        self.sink = PrometheusSink(Settings())
        self.sink.metrics = Metrics(timeout=30)
        self.sink.metrics.start_series(())  # what start_master does
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(FileCollector(str(directory)))

    def samples(self, name: str) -> list[tuple[dict[str, str], float]]:
        return [
            (sample.labels, sample.value)
            for family in self.registry.collect()
            for sample in family.samples
            if sample.name == name
        ]

    def errors(self) -> dict[str, float]:
        return {labels["reason"]: value for labels, value in self.samples(ERRORS)}

    def buckets(self, method: str = "GET") -> dict[float, float]:
        return {
            float(labels["le"]): value
            for labels, value in self.samples(QUEUE + "_bucket")
            if labels["http_request_method"] == method
        }

    def counts(self) -> dict[str, float]:
        return {
            labels["http_request_method"]: value for labels, value in self.samples(QUEUE + "_count")
        }


@pytest.fixture
def scraped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Scraped:
    """hookkit.testing.reset() (conftest) puts prometheus_client back after."""
    monkeypatch.setenv(ENV_DIR, str(tmp_path))
    return Scraped(tmp_path)


def test_every_reason_is_at_0_from_the_start_and_nothing_is_queued(scraped: Scraped) -> None:
    """Before any request each reason's series exists at 0 (so ``increase()``
    sees the first); requests without the header change neither metric."""
    assert dict.fromkeys(REASONS, 0.0) == scraped.errors()
    serve([scraped.sink], [FakeRequest(headers=[("HOST", "shop.test")], peer_addr=TRUSTED)] * 3)
    assert (dict.fromkeys(REASONS, 0.0), {}) == (scraped.errors(), scraped.counts())


def test_a_trusted_stamp_is_observed_under_the_method(scraped: Scraped) -> None:
    """A request stamped 0.25 s ago lands above the 0.1 bucket and in the
    1.0 one; an unknown method is ``_OTHER``; no error is counted."""
    serve(
        [scraped.sink],
        [
            FakeRequest("GET", headers=stamped(0.25), peer_addr=TRUSTED),
            FakeRequest("GET", headers=stamped(0.25), peer_addr=TRUSTED),
            FakeRequest("PURGE", headers=stamped(0.002), peer_addr=TRUSTED),
        ],
    )
    assert {"GET": 2.0, "_OTHER": 1.0} == scraped.counts()
    get = scraped.buckets()
    assert [*QUEUE_BUCKETS, float("inf")] == list(get)
    assert (0.0, 2.0) == (get[0.1], get[1.0])
    (total,) = [
        v for labels, v in scraped.samples(QUEUE + "_sum") if labels["http_request_method"] == "GET"
    ]
    assert 0.48 <= total < 2.0
    assert (0.0, 1.0) == (scraped.buckets("_OTHER")[0.001], scraped.buckets("_OTHER")[0.1])
    assert dict.fromkeys(REASONS, 0.0) == scraped.errors()


def test_headers_not_used_are_counted_by_reason(scraped: Scraped) -> None:
    """Untrusted, future, hour-old and malformed stamps: each counted under
    its reason, none observed."""
    now = time.time()
    serve(
        [scraped.sink],
        [
            FakeRequest(headers=stamped(0.25), peer_addr=UNTRUSTED),
            FakeRequest(headers=stamped(0.25), peer_addr=UNTRUSTED),
            FakeRequest(headers=[("X-REQUEST-START", f"t={now + 60:.3f}")], peer_addr=TRUSTED),
            FakeRequest(headers=[("X-QUEUE-START", f"t={now - 7200:.3f}")], peer_addr=TRUSTED),
            FakeRequest(headers=[("X-REQUEST-START", "t=soon")], peer_addr=TRUSTED),
        ],
    )
    assert {
        "untrusted": 2.0,
        "negative": 1.0,
        "too_old": 1.0,
        "unparsable": 1.0,
    } == scraped.errors()
    assert {} == scraped.counts()


def test_the_labelled_children_are_made_once(
    scraped: Scraped, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hot path reuses its labelled children: ``labels()`` (validation
    and a lock) runs once per method and per reason, not per request."""
    metrics = scraped.sink.metrics
    assert metrics is not None
    calls: list[tuple[str, ...]] = []
    for name in ("queue_duration", "queue_header_errors"):
        metric = getattr(metrics, name)
        original = metric.labels

        def counting(*values: str, _original: Any = original) -> Any:
            calls.append(values)
            return _original(*values)

        monkeypatch.setattr(metric, "labels", counting)
    serve(
        [scraped.sink],
        [FakeRequest(headers=stamped(0.01), peer_addr=TRUSTED) for _ in range(5)]
        + [FakeRequest(headers=[("X-REQUEST-START", "x")], peer_addr=TRUSTED) for _ in range(5)],
    )
    assert [("GET",), ("unparsable",)] == calls
    assert (5.0, 5.0) == (scraped.counts()["GET"], scraped.errors()["unparsable"])


# -- tracing -----------------------------------------------------------------------


@pytest.fixture
def traced() -> Iterator[tuple[TracingSink, InMemorySpanExporter]]:
    """A TracingSink on an SDK provider of the test's own, exporting to memory."""
    token = otel_context.attach(Context())
    provider = TracerProvider(shutdown_on_exit=False)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing = TracingSink(Settings.load({}), {})
    tracing.provider = provider
    tracing.tracer = provider.get_tracer("hookkit")
    tracing._propagator = propagate.get_global_textmap()
    yield tracing, exporter
    provider.shutdown()
    otel_context.detach(token)


def test_the_span_has_the_queue_duration_in_seconds(
    traced: tuple[TracingSink, InMemorySpanExporter],
) -> None:
    """``gunicorn.request.queue_duration``, a float in seconds, on the span
    of a trusted stamped request; absent without a stamp or from an
    untrusted peer."""
    tracing, exporter = traced
    serve(
        [tracing],
        [
            FakeRequest(path="/queued", headers=stamped(0.25), peer_addr=TRUSTED),
            FakeRequest(path="/plain", headers=[("HOST", "shop.test")], peer_addr=TRUSTED),
            FakeRequest(path="/untrusted", headers=stamped(0.25), peer_addr=UNTRUSTED),
        ],
    )
    attributes = {
        span.attributes["url.path"]: span.attributes.get("gunicorn.request.queue_duration")
        for span in exporter.get_finished_spans()
        if span.attributes is not None
    }
    queued = attributes.pop("/queued")
    assert isinstance(queued, float)
    assert 0.24 <= queued < 2.0
    assert {"/plain": None, "/untrusted": None} == attributes


# -- the access line ---------------------------------------------------------------


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    """What hookkit's logger writes; its handlers are put back after."""
    logger = logging.getLogger(pipeline.LOGGER_NAME)
    handlers, level = list(logger.handlers), logger.level
    yield io.StringIO()
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    for handler in handlers:
        logger.addHandler(handler)
    logger.setLevel(level)


def access_lines(stream: io.StringIO, log_format: str, requests: list[FakeRequest]) -> str:
    handler = logging.StreamHandler(stream)
    handler.setFormatter(pipeline.make_formatter(log_format))
    pipeline.set_handlers([handler], logging.INFO)
    serve([LogSink(Settings(access_log=True, log_format=log_format))], requests)
    return stream.getvalue()


def test_the_json_access_line_has_queue_seconds_always(stream: io.StringIO) -> None:
    """``queue_seconds`` rounded to the microsecond as ``duration_seconds``
    is; null (present, as ``route`` and ``error_type`` are) without a
    usable stamp."""
    text = access_lines(
        stream,
        "json",
        [
            FakeRequest(headers=stamped(0.25), peer_addr=TRUSTED),
            FakeRequest(headers=[("HOST", "shop.test")], peer_addr=TRUSTED),
            FakeRequest(headers=stamped(0.25), peer_addr=UNTRUSTED),
        ],
    )
    queued, plain, untrusted = (json.loads(line) for line in text.splitlines())
    assert 0.24 <= queued["queue_seconds"] < 2.0
    assert queued["queue_seconds"] == round(queued["queue_seconds"], 6)
    assert (True, None, True, None) == (
        "queue_seconds" in plain,
        plain["queue_seconds"],
        "queue_seconds" in untrusted,
        untrusted["queue_seconds"],
    )


def test_the_console_access_line_has_queue_seconds(stream: io.StringIO) -> None:
    text = access_lines(stream, "console", [FakeRequest(headers=stamped(0.25), peer_addr=TRUSTED)])
    assert 1 == text.count("\n")
    assert "queue_seconds=0." in text


def test_request_finished_carries_the_same_seconds() -> None:
    """What every sink is handed at the end is the value the start measured."""
    seen: list[float | None] = []

    class Keeper(Sink):
        name = "keeper"

        def request_finished(self, request: RequestFinished) -> None:
            seen.append(request.queue_seconds)

    serve([Keeper()], [FakeRequest(headers=stamped(0.1), peer_addr=TRUSTED)])
    (waited,) = seen
    assert waited is not None
    assert 0.09 <= waited < 2.0
