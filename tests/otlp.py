"""An OTLP/HTTP trace receiver for tests: spans as plain Python values.

Why the suite has its own receiver: the part worth testing for real is what
runs in production, the official OpenTelemetry exporter
(``opentelemetry-exporter-otlp-proto-http``) in real gunicorn workers,
encoding protobuf and sending it over real HTTP. Only the far end is
replaced: a real OpenTelemetry Collector binary is not available on these
machines, so this small server in the test process takes its place. It
answers like a collector (``POST /v1/traces``, an empty
``ExportTraceServiceResponse``) and decodes each request with the official
protobuf classes (``opentelemetry-proto``) into frozen ``Span`` values that
tests can compare with ``==``.

``OtlpReceiver`` binds a free port of 127.0.0.1 only and serves from a daemon
thread::

    with OtlpReceiver() as rx:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": rx.endpoint}  # exporter adds /v1/traces
        ...
        (span,) = rx.wait_for(lambda span: span.kind == "SERVER")

Modes: ``"ok"`` accepts and decodes; ``"error"`` answers 500 (not retried by
the exporter) and stores no spans; ``"hang"`` reads the request and never
answers until the receiver closes. ``refused_endpoint()`` is a base URL on
which nothing listens. Requests are counted, and their (decompressed) bodies
and headers kept, in every mode.
"""

from __future__ import annotations

import contextlib
import gzip
import socket
import sys
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan
from opentelemetry.proto.trace.v1.trace_pb2 import Status as ProtoStatus

from hookkit._face.gunicorn_process import free_port

Mode = Literal["ok", "error", "hang"]
MODES: tuple[Mode, ...] = ("ok", "error", "hang")
TRACES_PATH = "/v1/traces"

# How long closing waits for each connection's handler thread to finish.
_JOIN_TIMEOUT = 5.0


@dataclass(frozen=True)
class SpanEvent:
    """One event of a span: its name, attributes and time (ns since epoch)."""

    name: str
    attributes: dict[str, Any]
    time_ns: int


@dataclass(frozen=True)
class Span:
    """One decoded span.

    ``kind`` is ``"SERVER"``, ``"INTERNAL"``, ``"CLIENT"``... and
    ``status_code`` ``"UNSET"``, ``"OK"`` or ``"ERROR"`` (the proto enum names
    without their prefix). Ids are lowercase hex, ``parent_span_id`` is ``""``
    for a root span. ``resource`` holds the resource's attributes and
    ``scope_name`` the instrumentation scope (the tracer's name).
    """

    name: str
    kind: str
    trace_id: str
    span_id: str
    parent_span_id: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    status_code: str
    status_message: str
    events: tuple[SpanEvent, ...]
    resource: dict[str, Any]
    scope_name: str

    @property
    def duration(self) -> float:
        """End minus start, in seconds."""
        return (self.end_ns - self.start_ns) / 1e9


def _value(value: AnyValue) -> Any:
    """An ``AnyValue`` as a Python value: str, bool, int, float, bytes, list,
    dict (for a key-value list) or None (no value set)."""
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [_value(item) for item in value.array_value.values]
    if which == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    return getattr(value, which)


def _attributes(pairs: Any) -> dict[str, Any]:
    """Repeated ``KeyValue`` as a dict."""
    result: dict[str, Any] = {}
    pair: KeyValue
    for pair in pairs:
        result[pair.key] = _value(pair.value)
    return result


def _strip(name: str, prefix: str) -> str:
    return name.removeprefix(prefix)


def decode_spans(body: bytes) -> list[Span]:
    """Decode a serialized ``ExportTraceServiceRequest`` (uncompressed) into
    spans, in the order they appear. Raises ``google.protobuf.message.DecodeError``
    when ``body`` is not one."""
    request = ExportTraceServiceRequest.FromString(body)
    spans: list[Span] = []
    for resource_spans in request.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            scope_name = scope_spans.scope.name
            for span in scope_spans.spans:
                spans.append(
                    Span(
                        name=span.name,
                        kind=_strip(ProtoSpan.SpanKind.Name(span.kind), "SPAN_KIND_"),
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex(),
                        start_ns=span.start_time_unix_nano,
                        end_ns=span.end_time_unix_nano,
                        attributes=_attributes(span.attributes),
                        status_code=_strip(
                            ProtoStatus.StatusCode.Name(span.status.code), "STATUS_CODE_"
                        ),
                        status_message=span.status.message,
                        events=tuple(
                            SpanEvent(
                                name=event.name,
                                attributes=_attributes(event.attributes),
                                time_ns=event.time_unix_nano,
                            )
                            for event in span.events
                        ),
                        resource=dict(resource),
                        scope_name=scope_name,
                    )
                )
    return spans


def _decompress(body: bytes, encoding: str) -> bytes:
    """Undo ``Content-Encoding`` (none, gzip or deflate, zlib-wrapped or raw)."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding in ("gzip", "x-gzip"):
        return gzip.decompress(body)
    if encoding == "deflate":
        try:
            return zlib.decompress(body)
        except zlib.error:
            return zlib.decompress(body, -zlib.MAX_WBITS)
    raise ValueError(f"unsupported Content-Encoding {encoding!r}")


def _describe(span: Span) -> str:
    parent = span.parent_span_id or "-"
    return (
        f"  {span.name!r} [{span.kind}] trace={span.trace_id} span={span.span_id} "
        f"parent={parent} status={span.status_code} attributes={span.attributes}"
    )


def refused_endpoint() -> str:
    """A base URL ``http://127.0.0.1:PORT`` on which nothing listens (a port
    taken from a socket bound to port 0, then closed): connections are refused."""
    return f"http://127.0.0.1:{free_port()}"


class _Handler(BaseHTTPRequestHandler):
    """``POST /v1/traces``, answered as the receiver's mode says."""

    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: no access log on stderr."""

    def _respond(
        self, status: int, body: bytes = b"", content_type: str = "application/x-protobuf"
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()  # the CRLF after each chunk
        return self.rfile.read(int(self.headers.get("Content-Length", "0")))

    def do_POST(self) -> None:
        """Record the request, then answer per mode (or hang)."""
        receiver = self.server.receiver
        raw = self._read_body()
        path = self.path.split("?", 1)[0]
        if path != TRACES_PATH:
            receiver._error(f"POST {self.path}: not {TRACES_PATH}")
            self._respond(404, b"not found\n", "text/plain")
            return
        try:
            body = _decompress(raw, self.headers.get("Content-Encoding", ""))
        except (ValueError, OSError, EOFError, zlib.error) as exc:
            receiver._error(f"POST {self.path}: cannot decompress: {exc}")
            self._respond(415, f"{exc}\n".encode(), "text/plain")
            return
        headers = {key.lower(): value for key, value in self.headers.items()}
        mode = receiver._record_request(body, headers)
        if mode == "hang":
            receiver._release.wait()
            self.close_connection = True
            return
        if mode == "error":
            self._respond(500, b"error mode\n", "text/plain")
            return
        try:
            spans = decode_spans(body)
        except Exception as exc:  # DecodeError, or a body this decoder cannot map
            receiver._error(f"POST {self.path}: not an ExportTraceServiceRequest: {exc}")
            self._respond(400, f"{exc}\n".encode(), "text/plain")
            return
        receiver._record_spans(spans)
        self._respond(200, ExportTraceServiceResponse().SerializeToString())


class _Server(ThreadingHTTPServer):
    """A ThreadingHTTPServer that tracks each connection and its thread, so
    closing can shut idle keep-alive connections and join their handlers."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, receiver: OtlpReceiver) -> None:
        self.receiver = receiver
        self._connections: dict[socket.socket, threading.Thread] = {}
        self._connections_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Handle the connection in a daemon thread, tracked until it ends."""
        thread = threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            name="otlp-receiver-connection",
            daemon=True,
        )
        with self._connections_lock:
            self._connections[request] = thread
        thread.start()

    def shutdown_request(self, request: Any) -> None:
        """Forget the connection, then close it."""
        with self._connections_lock:
            self._connections.pop(request, None)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away is not an error; anything else is kept in
        ``receiver.errors`` (shown when a wait times out), not printed."""
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError):
            return
        self.receiver._error(f"handler failed: {exc!r}")

    def close_connections(self) -> None:
        """Shut every open connection (ends handlers idling in keep-alive),
        then wait for their threads."""
        with self._connections_lock:
            connections = list(self._connections.items())
        for request, _ in connections:
            with contextlib.suppress(OSError):  # already closed by its handler
                request.shutdown(socket.SHUT_RDWR)
        for _, thread in connections:
            thread.join(_JOIN_TIMEOUT)


class OtlpReceiver:
    """An OTLP/HTTP trace receiver on 127.0.0.1, for one test.

    ``with OtlpReceiver(mode="ok") as rx:`` starts it; ``rx.endpoint`` is the
    base URL for ``OTEL_EXPORTER_OTLP_ENDPOINT``, ``rx.traces_endpoint`` the
    full ``/v1/traces`` URL for ``OTLPSpanExporter(endpoint=...)``. Leaving the
    block releases hanging handlers, closes open connections and the socket.
    ``mode`` may be changed while it runs (e.g. from ``"error"`` to ``"ok"``).
    """

    def __init__(self, mode: Mode = "ok") -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        self.mode: Mode = mode
        self._lock = threading.Condition()
        self._spans: list[Span] = []
        self._bodies: list[bytes] = []
        self._headers: list[dict[str, str]] = []
        self._errors: list[str] = []
        self._release = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # Lifecycle

    def start(self) -> OtlpReceiver:
        """Bind 127.0.0.1:0 and serve from a daemon thread."""
        if self._server is not None:
            raise RuntimeError("OtlpReceiver already started")
        self._release.clear()
        self._server = _Server(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="otlp-receiver",
            daemon=True,
        )
        self._thread.start()
        return self

    def close(self) -> None:
        """Release hanging handlers, stop serving, shut open connections and
        close the listening socket. Safe to call twice."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self._release.set()
        server.shutdown()
        thread.join(_JOIN_TIMEOUT)
        server.close_connections()
        server.server_close()
        self._server = self._thread = None

    def __enter__(self) -> OtlpReceiver:
        """Start; the receiver is the context value."""
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Close."""
        self.close()

    # Addresses

    @property
    def port(self) -> int:
        """The port bound on 127.0.0.1."""
        if self._server is None:
            raise RuntimeError("OtlpReceiver not started")
        port: int = self._server.server_address[1]
        return port

    @property
    def endpoint(self) -> str:
        """The base URL ``http://127.0.0.1:PORT`` (``OTEL_EXPORTER_OTLP_ENDPOINT``)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def traces_endpoint(self) -> str:
        """The full traces URL ``http://127.0.0.1:PORT/v1/traces``."""
        return self.endpoint + TRACES_PATH

    # What was received

    @property
    def spans(self) -> list[Span]:
        """Every span decoded so far ("ok" mode only), in arrival order (a copy)."""
        with self._lock:
            return list(self._spans)

    @property
    def requests(self) -> int:
        """How many export requests (``POST /v1/traces``) arrived, in any mode."""
        with self._lock:
            return len(self._bodies)

    @property
    def raw_bodies(self) -> list[bytes]:
        """Each request's body, decompressed, in arrival order (a copy)."""
        with self._lock:
            return list(self._bodies)

    @property
    def headers(self) -> list[dict[str, str]]:
        """Each request's headers (names lowercased), in arrival order (a copy)."""
        with self._lock:
            return [dict(headers) for headers in self._headers]

    @property
    def errors(self) -> list[str]:
        """Problems met serving: wrong paths, undecodable bodies, handler errors."""
        with self._lock:
            return list(self._errors)

    def clear(self) -> None:
        """Forget every span, request, body and error received so far."""
        with self._lock:
            self._spans.clear()
            self._bodies.clear()
            self._headers.clear()
            self._errors.clear()

    def wait_for(
        self,
        predicate: Callable[[Span], bool] | None = None,
        count: int = 1,
        timeout: float = 10.0,
    ) -> list[Span]:
        """Wait until at least ``count`` spans satisfy ``predicate`` (default:
        any span) and return all the matching ones; on timeout, raise
        AssertionError listing what was received."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                matching = [span for span in self._spans if predicate is None or predicate(span)]
                if len(matching) >= count:
                    return matching
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"expected at least {count} matching span(s) within {timeout} s, "
                        f"{len(matching)} matched; {self._summary()}"
                    )
                self._lock.wait(remaining)

    def wait_for_requests(self, n: int = 1, timeout: float = 10.0) -> int:
        """Wait until at least ``n`` export requests arrived; return the count.
        On timeout, raise AssertionError listing what was received."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                if len(self._bodies) >= n:
                    return len(self._bodies)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"expected at least {n} export request(s) within {timeout} s; "
                        f"{self._summary()}"
                    )
                self._lock.wait(remaining)

    # Called from handler threads

    def _summary(self) -> str:
        """What was received, for failure messages (lock held)."""
        lines = [
            f"mode {self.mode!r}, received {len(self._bodies)} request(s) "
            f"and {len(self._spans)} span(s)" + (":" if self._spans else "")
        ]
        lines += [_describe(span) for span in self._spans[:50]]
        if len(self._spans) > 50:
            lines.append(f"  ... and {len(self._spans) - 50} more")
        if self._errors:
            lines.append("errors:")
            lines += [f"  {error}" for error in self._errors]
        return "\n".join(lines)

    def _record_request(self, body: bytes, headers: dict[str, str]) -> Mode:
        """Count a request; return the mode to answer it in."""
        with self._lock:
            self._bodies.append(body)
            self._headers.append(headers)
            self._lock.notify_all()
            return self.mode

    def _record_spans(self, spans: list[Span]) -> None:
        with self._lock:
            self._spans.extend(spans)
            self._lock.notify_all()

    def _error(self, message: str) -> None:
        with self._lock:
            self._errors.append(message)
            self._lock.notify_all()
