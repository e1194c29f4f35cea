"""A minimal OTLP/HTTP receiver for the benchmarks, run as a process of its
own: it answers 200 to ``POST /v1/traces``, ``/v1/logs`` and ``/v1/metrics``
after reading the body (404 to any other path), counts requests and bytes in
all and per signal (``traces``, ``logs``, ``metrics``: the POSTs each got),
and says so far as JSON on ``GET /stats``.

Asked to (``count_spans``), it also counts the spans in each trace export by
decoding the protobuf: that costs the receiver CPU, so ``make bench``'s
measured runs, which report the receiver's CPU, do not ask. Asked to
(``inspect``), it also counts the spans by what ``make bench`` checks in
them (``span_kinds``: name, ``client.address``, ``http.route``, whether
``gunicorn.request.queue_duration`` is there) and keeps the last log record
(``last_log``): its check that the requests' forwarding headers and route
took effect.
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

SIGNALS = {"/v1/traces": "traces", "/v1/logs": "logs", "/v1/metrics": "metrics"}


class OtlpHandler(BaseHTTPRequestHandler):
    """The receiver's requests."""

    protocol_version = "HTTP/1.1"
    count_spans: ClassVar[bool] = False
    inspect: ClassVar[bool] = False
    counts: ClassVar[dict[str, Any]] = {
        "requests": 0,
        "bytes": 0,
        "spans": 0,
        "traces": 0,
        "logs": 0,
        "metrics": 0,
        "other": 0,
    }
    lock: ClassVar[threading.Lock] = threading.Lock()

    def do_POST(self) -> None:
        """Read the body, count it, answer an empty 200 (404 off OTLP's paths)."""
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        kind = SIGNALS.get(self.path, "other")
        encoding = self.headers.get("Content-Encoding", "")
        spans = 0
        if (self.count_spans or self.inspect) and kind == "traces":
            spans, kinds = _decode_spans(body, encoding)
            if self.inspect:
                with self.lock:
                    known = self.counts.setdefault("span_kinds", {})
                    for key, number in kinds.items():
                        known[key] = known.get(key, 0) + number
        if self.inspect and kind == "logs":
            last = _decode_last_log(body, encoding)
            if last is not None:
                with self.lock:
                    self.counts["last_log"] = last
        with self.lock:
            self.counts["requests"] += 1
            self.counts["bytes"] += len(body)
            self.counts["spans"] += max(spans, 0)
            self.counts[kind] += 1
        self.send_response(200 if kind != "other" else 404)
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


def _any_value(value: Any) -> Any:
    """An OTLP AnyValue as a Python value (arrays and maps as text)."""
    which = value.WhichOneof("value")
    if which in ("array_value", "kvlist_value"):
        return str(getattr(value, which))
    return getattr(value, which) if which else None


def _attributes(pairs: Any) -> dict[str, Any]:
    return {pair.key: _any_value(pair.value) for pair in pairs}


def _body(data: bytes, encoding: str) -> bytes:
    return gzip.decompress(data) if encoding.strip().lower() == "gzip" else data


def span_kind(name: str, attributes: dict[str, Any]) -> str:
    """What ``span_kinds`` counts a span under."""
    queued = "gunicorn.request.queue_duration" in attributes
    return (
        f"{name} | client.address={attributes.get('client.address')} | "
        f"http.route={attributes.get('http.route')} | queue_duration={'yes' if queued else 'no'}"
    )


def _decode_spans(body: bytes, encoding: str) -> tuple[int, dict[str, int]]:
    """(spans in an OTLP/HTTP protobuf trace export, their count by
    ``span_kind``); -1 spans if undecodable."""
    try:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        message = ExportTraceServiceRequest()
        message.ParseFromString(_body(body, encoding))
    except Exception:
        return -1, {}
    spans = [span for rs in message.resource_spans for ss in rs.scope_spans for span in ss.spans]
    kinds: dict[str, int] = {}
    for span in spans:
        key = span_kind(span.name, _attributes(span.attributes))
        kinds[key] = kinds.get(key, 0) + 1
    return len(spans), kinds


def _decode_last_log(body: bytes, encoding: str) -> dict[str, Any] | None:
    """The last log record of an OTLP/HTTP protobuf log export: its body and
    attributes."""
    try:
        from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
            ExportLogsServiceRequest,
        )

        message = ExportLogsServiceRequest()
        message.ParseFromString(_body(body, encoding))
    except Exception:
        return None
    records = [r for rl in message.resource_logs for sl in rl.scope_logs for r in sl.log_records]
    if not records:
        return None
    last = records[-1]
    return {"body": _any_value(last.body), "attributes": _attributes(last.attributes)}


def _count_spans(body: bytes, encoding: str) -> int:
    """Spans in an OTLP/HTTP protobuf export request (-1 if undecodable)."""
    return _decode_spans(body, encoding)[0]


def serve(count_spans: bool = False, inspect: bool = False) -> None:
    """Serve on a free loopback port, printed first; until SIGTERM."""
    OtlpHandler.count_spans = count_spans
    OtlpHandler.inspect = inspect
    server = ThreadingHTTPServer(("127.0.0.1", 0), OtlpHandler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server.serve_forever()


def counts(port: int) -> dict[str, Any]:
    """What the receiver on ``port`` got so far."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{port}/stats", timeout=10) as response:
        got: dict[str, Any] = json.loads(response.read())
    return got
