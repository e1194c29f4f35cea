"""An OTLP/HTTP metrics receiver for tests: ``POST /v1/metrics``, decoded.

The metrics counterpart of ``tests/otlp.py``'s trace receiver (kept apart:
that one's handler, modes and span values are about traces). It answers as
a collector does (an empty ``ExportMetricsServiceResponse``) and keeps each
request decoded with the official protobuf classes, for tests that send
with the official ``OTLPMetricExporter``::

    with MetricsReceiver() as rx:
        exporter = OTLPMetricExporter(endpoint=rx.metrics_endpoint, timeout=2)
        exporter.export(data)
        (request,) = rx.wait_for_requests(1)

Modes: ``"ok"`` answers 200; ``"hang"`` reads the request and answers
nothing until the receiver closes (for the exporter's timeout).
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)

from tests.otlp import _decompress

METRICS_PATH = "/v1/metrics"
Mode = Literal["ok", "hang"]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: no access log on stderr."""

    def do_POST(self) -> None:
        """Decode and keep the request; answer per mode."""
        receiver = self.server.receiver
        raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path.split("?", 1)[0] != METRICS_PATH:
            receiver._record(None, f"POST {self.path}: not {METRICS_PATH}")
            self._respond(404, b"")
            return
        try:
            body = _decompress(raw, self.headers.get("Content-Encoding", ""))
            request = ExportMetricsServiceRequest.FromString(body)
        except Exception as exc:
            receiver._record(None, f"undecodable request: {exc!r}")
            self._respond(400, b"")
            return
        receiver._record(request, None)
        if receiver.mode == "hang":
            receiver._release.wait()
            self.close_connection = True
            return
        self._respond(200, ExportMetricsServiceResponse().SerializeToString())

    def _respond(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, receiver: MetricsReceiver) -> None:
        self.receiver = receiver
        super().__init__(("127.0.0.1", 0), _Handler)


class MetricsReceiver:
    """``POST /v1/metrics`` on 127.0.0.1, decoded; for one test."""

    def __init__(self, mode: Mode = "ok") -> None:
        self.mode: Mode = mode
        self._lock = threading.Condition()
        self._requests: list[ExportMetricsServiceRequest] = []
        self.errors: list[str] = []
        self._release = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> MetricsReceiver:
        """Bind a free port and serve from a daemon thread."""
        self._server = _Server(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="otlp-metrics-receiver",
            daemon=True,
        )
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Release hanging handlers, stop serving, close the socket."""
        assert self._server is not None
        assert self._thread is not None
        self._release.set()
        self._server.shutdown()
        self._thread.join(5)
        self._server.server_close()

    @property
    def metrics_endpoint(self) -> str:
        """The full URL, ``http://127.0.0.1:PORT/v1/metrics``."""
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}{METRICS_PATH}"

    def _record(self, request: ExportMetricsServiceRequest | None, error: str | None) -> None:
        with self._lock:
            if request is not None:
                self._requests.append(request)
            if error is not None:
                self.errors.append(error)
            self._lock.notify_all()

    def wait_for_requests(self, n: int, timeout: float = 10.0) -> list[ExportMetricsServiceRequest]:
        """The first ``n`` requests decoded; AssertionError after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self._requests) < n:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"{len(self._requests)} of {n} request(s) in {timeout} s; "
                        f"errors: {self.errors}"
                    )
                self._lock.wait(remaining)
            return list(self._requests[:n])
