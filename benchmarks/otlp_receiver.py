"""A minimal OTLP/HTTP receiver for the benchmarks, run as a process of its
own: it answers 200 to ``POST /v1/traces`` after reading the body, counts
requests and bytes (and, asked to, the spans in them, by decoding the
protobuf: that costs the receiver CPU, so ``make bench``, which reports the
receiver's CPU, does not ask), and says so far as JSON on ``GET /stats``.
"""

from __future__ import annotations

import gzip
import json
import signal
import sys
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar


class OtlpHandler(BaseHTTPRequestHandler):
    """The receiver's requests."""

    protocol_version = "HTTP/1.1"
    count_spans: ClassVar[bool] = False
    counts: ClassVar[dict[str, int]] = {"requests": 0, "bytes": 0, "spans": 0}
    lock: ClassVar[threading.Lock] = threading.Lock()

    def do_POST(self) -> None:
        """Read the body, count it, answer an empty 200."""
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        spans = 0
        if self.count_spans and self.path == "/v1/traces":
            spans = _count_spans(body, self.headers.get("Content-Encoding", ""))
        with self.lock:
            self.counts["requests"] += 1
            self.counts["bytes"] += len(body)
            self.counts["spans"] += max(spans, 0)
        self.send_response(200 if self.path == "/v1/traces" else 404)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        """The counts so far, as JSON."""
        with self.lock:
            body = json.dumps(self.counts).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Log nothing."""


def _count_spans(body: bytes, encoding: str) -> int:
    """Spans in an OTLP/HTTP protobuf export request (-1 if undecodable)."""
    try:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        if encoding.strip().lower() == "gzip":
            body = gzip.decompress(body)
        message = ExportTraceServiceRequest()
        message.ParseFromString(body)
    except Exception:
        return -1
    return sum(len(scope.spans) for spans in message.resource_spans for scope in spans.scope_spans)


def serve(count_spans: bool = False) -> None:
    """Serve on a free loopback port, printed first; until SIGTERM."""
    OtlpHandler.count_spans = count_spans
    server = ThreadingHTTPServer(("127.0.0.1", 0), OtlpHandler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server.serve_forever()


def counts(port: int) -> dict[str, int]:
    """What the receiver on ``port`` got so far."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{port}/stats", timeout=10) as response:
        got: dict[str, int] = json.loads(response.read())
    return got
