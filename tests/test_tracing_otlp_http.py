"""hookkit's OTLP/HTTP transport: one kept-alive ``http.client`` connection
instead of a ``requests`` session, where it sends what the session would
(plain HTTP, no proxy, no netrc, no credential provider). The official
client around it keeps its timeouts, retries, compression and headers."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import pytest
import requests
from opentelemetry.exporter.http.transport._requests import RequestsHTTPTransport

from hookkit._sinks.tracing.otlp_encode import FastOTLPSpanExporter
from hookkit._sinks.tracing.otlp_http import LeanHTTPTransport, lean_applies
from tests.otlp import OtlpReceiver
from tests.test_otlp_encode import varied_spans

NO_ENV: dict[str, str] = {}


@pytest.fixture
def no_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    """A requests session that is used fails the test."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("requests was used")

    monkeypatch.setattr(requests.Session, "request", refuse)


def transport_of(exporter: FastOTLPSpanExporter) -> Any:
    return exporter._client._transport


def test_plain_http_goes_through_one_kept_alive_connection(no_requests: None) -> None:
    """Two exports, one connection, the official exporter's bytes; no
    requests session is used."""
    spans = varied_spans()
    with OtlpReceiver() as rx:
        exporter = FastOTLPSpanExporter(endpoint=rx.traces_endpoint)
        transport = transport_of(exporter)
        assert isinstance(transport, LeanHTTPTransport)
        assert "SUCCESS" == exporter.export(spans).name
        first = transport._connection
        assert "SUCCESS" == exporter.export(spans).name
        assert first is not None
        assert first is transport._connection
        rx.wait_for_requests(2)
        bodies, headers = rx.raw_bodies, rx.headers
        exporter.shutdown()
    official = FastOTLPSpanExporter.__mro__[1]
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    assert official.__name__ == "OTLPSpanExporter"
    assert [encode_spans(spans).SerializePartialToString()] * 2 == bodies
    assert "application/x-protobuf" == headers[0]["content-type"]
    assert headers[0]["user-agent"].startswith("OTel-OTLP-Exporter-Python")


def test_the_endpoint_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, no_requests: None
) -> None:
    """OTEL_EXPORTER_OTLP_ENDPOINT, the traces path added, as the official
    exporter resolves it; the headers variable's headers are sent."""
    with OtlpReceiver() as rx:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", rx.endpoint)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "x-api-key=secret")
        exporter = FastOTLPSpanExporter()
        assert isinstance(transport_of(exporter), LeanHTTPTransport)
        assert "SUCCESS" == exporter.export(varied_spans()).name
        rx.wait_for_requests(1)
        assert "secret" == rx.headers[0]["x-api-key"]
        exporter.shutdown()


def test_gzip_compression(monkeypatch: pytest.MonkeyPatch, no_requests: None) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "gzip")
    spans = varied_spans()
    with OtlpReceiver() as rx:
        exporter = FastOTLPSpanExporter(endpoint=rx.traces_endpoint)
        assert "SUCCESS" == exporter.export(spans).name
        rx.wait_for_requests(1)
        assert "gzip" == rx.headers[0]["content-encoding"]
        assert len(rx.spans) == len(spans)
        exporter.shutdown()
    assert gzip.decompress(gzip.compress(b"x")) == b"x"


def test_a_connection_the_collector_closed_is_made_again(no_requests: None) -> None:
    """A kept-alive connection the collector closed meanwhile: the export
    still succeeds, on a new connection."""
    with OtlpReceiver() as rx:
        exporter = FastOTLPSpanExporter(endpoint=rx.traces_endpoint)
        assert "SUCCESS" == exporter.export(varied_spans()).name
        rx.wait_for_requests(1)
        rx._server.close_connections()  # type: ignore[union-attr]
        assert "SUCCESS" == exporter.export(varied_spans()).name
        assert 2 == rx.wait_for_requests(2)
        exporter.shutdown()


def test_a_server_error_is_a_failure_without_retry(no_requests: None) -> None:
    """500 is not retryable (OTLP/HTTP): one request, a failure."""
    with OtlpReceiver(mode="error") as rx:
        exporter = FastOTLPSpanExporter(endpoint=rx.traces_endpoint)
        assert "FAILURE" == exporter.export(varied_spans()).name
        assert 1 == rx.requests
        exporter.shutdown()


def test_no_collector_is_a_failure_within_the_timeout(no_requests: None) -> None:
    """Connection refused is retried (a connection error), within the
    exporter's timeout, then a failure."""
    import socket
    import time

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    exporter = FastOTLPSpanExporter(endpoint=f"http://127.0.0.1:{port}/v1/traces", timeout=1.5)
    started = time.monotonic()
    assert "FAILURE" == exporter.export(varied_spans()).name
    assert time.monotonic() - started < 5
    assert transport_of(exporter).is_connection_error(ConnectionRefusedError())
    exporter.shutdown()


def test_a_hanging_collector_times_out(no_requests: None) -> None:
    import time

    with OtlpReceiver(mode="hang") as rx:
        exporter = FastOTLPSpanExporter(endpoint=rx.traces_endpoint, timeout=0.5)
        started = time.monotonic()
        assert "FAILURE" == exporter.export(varied_spans()).name
        assert time.monotonic() - started < 5
        exporter.shutdown()


@pytest.mark.parametrize(
    ("url", "environ", "lean"),
    [
        ("http://127.0.0.1:4318/v1/traces", NO_ENV, True),
        ("http://collector:4318/v1/traces?x=1", NO_ENV, True),
        ("https://collector:4318/v1/traces", NO_ENV, False),
        ("http://collector:4318/v1/traces", {"HTTP_PROXY": "http://proxy:3128"}, False),
        ("http://collector:4318/v1/traces", {"http_proxy": "http://proxy:3128"}, False),
        ("http://collector:4318/v1/traces", {"ALL_PROXY": "http://proxy:3128"}, False),
        (
            "http://collector:4318/v1/traces",
            {"HTTP_PROXY": "http://proxy:3128", "NO_PROXY": "collector"},
            True,
        ),
        ("http://collector:4318/v1/traces", {"HTTPS_PROXY": "http://proxy:3128"}, True),
        (
            "http://collector:4318/v1/traces",
            {"OTEL_PYTHON_EXPORTER_OTLP_HTTP_CREDENTIAL_PROVIDER": "x"},
            False,
        ),
        (
            "http://collector:4318/v1/traces",
            {"OTEL_PYTHON_EXPORTER_OTLP_HTTP_TRACES_CREDENTIAL_PROVIDER": "x"},
            False,
        ),
        ("not a url", NO_ENV, False),
    ],
)
def test_where_the_lean_transport_applies(
    url: str, environ: dict[str, str], lean: bool, tmp_path: Path
) -> None:
    """Only where a requests session would send the same request: plain
    HTTP, no proxy for the host, no credential provider."""
    assert lean == lean_applies(url, {"HOME": str(tmp_path), **environ})


def test_a_netrc_keeps_requests(tmp_path: Path) -> None:
    """requests adds a netrc's credentials: with a netrc, requests it is."""
    url = "http://collector:4318/v1/traces"
    (tmp_path / ".netrc").write_text("machine collector login a password b\n")
    assert not lean_applies(url, {"HOME": str(tmp_path)})
    named = tmp_path / "named-netrc"
    named.write_text("machine collector login a password b\n")
    assert not lean_applies(url, {"HOME": str(tmp_path / "nowhere"), "NETRC": str(named)})


def test_otherwise_the_official_transport(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    exporter = FastOTLPSpanExporter(endpoint="http://collector:4318/v1/traces")
    assert isinstance(transport_of(exporter), RequestsHTTPTransport)
    exporter.shutdown()


def test_a_forked_child_never_writes_on_its_parents_connection(no_requests: None) -> None:
    """After a fork (an app's multiprocessing, say), the child's exports go
    through a connection of its own, and a lock of its own: the kept-alive
    one is the parent's."""
    with OtlpReceiver() as rx:
        exporter = FastOTLPSpanExporter(endpoint=rx.traces_endpoint)
        transport = transport_of(exporter)
        assert "SUCCESS" == exporter.export(varied_spans()).name
        parents, parents_lock = transport._connection, transport._lock
        transport._pid = -1  # as seen from a child of this process
        assert "SUCCESS" == exporter.export(varied_spans()).name
        assert transport._connection is not None
        assert transport._connection is not parents
        assert transport._lock is not parents_lock
        exporter.shutdown()


def test_a_batch_is_sent_in_pieces_never_joined_whole(
    monkeypatch: pytest.MonkeyPatch, no_requests: None
) -> None:
    """Uncompressed, a batch goes out as pieces of some KiB each, never
    joined into one buffer (a 150 KiB buffer in the export thread stays in
    its malloc arena); the collector gets the official bytes."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    from hookkit._sinks.tracing import otlp_encode

    spans = varied_spans() * 60
    expected = encode_spans(spans).SerializePartialToString()
    pieces = otlp_encode.encode_pieces(spans)
    assert expected == b"".join(pieces.chunks)
    assert len(expected) == len(pieces)
    largest_span = max(len(otlp_encode._span_field(span)) for span in spans)
    assert len(pieces.chunks) > 1
    assert all(len(chunk) <= otlp_encode.PIECE_SIZE + largest_span for chunk in pieces.chunks)

    def whole(spans: Any) -> bytes:
        raise AssertionError("the batch was joined whole")

    monkeypatch.setattr(otlp_encode, "encode_request", whole)
    with OtlpReceiver() as rx:
        exporter = FastOTLPSpanExporter(endpoint=rx.traces_endpoint)
        assert "SUCCESS" == exporter.export(spans).name
        rx.wait_for_requests(1)
        assert [expected] == rx.raw_bodies
        assert str(len(expected)) == rx.headers[0]["content-length"]
        exporter.shutdown()
