"""An OTLP/HTTP logs receiver for tests: ``POST /v1/logs``, decoded.

The logs counterpart of ``tests/otlp.py``'s trace receiver and
``tests/otlp_metrics_receiver.py``: it answers as a collector does (an
empty ``ExportLogsServiceResponse``) and decodes each request with the
official protobuf classes (``opentelemetry-proto``) into frozen ``Record``
values, so that tests check what the official ``OTLPLogExporter`` really
sent over HTTP from real gunicorn processes::

    with LogsReceiver() as rx:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": rx.endpoint}  # exporter adds /v1/logs
        ...
        (booted,) = rx.wait_for(lambda r: r.event_name == "worker_booted")

Binds a free port of 127.0.0.1 only. Modes: ``"ok"`` answers 200;
``"error"`` answers 500 (the exporter does not retry it; the request is
still decoded and kept); ``"hang"`` reads the request and answers nothing
until the receiver closes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)

from tests.otlp import _attributes, _decompress, _value

LOGS_PATH = "/v1/logs"
Mode = Literal["ok", "error", "hang"]


@dataclass(frozen=True)
class Record:
    """One decoded log record.

    ``severity_number`` is the proto enum's number (9 INFO, 13 WARN, 17
    ERROR...); ``body`` and ``attributes`` are plain Python values (a key-value
    list is a dict, an array a list, an unset value None); ids are lower-case
    hex, ``""`` when the record has none. ``resource`` holds the resource's
    attributes, ``scope_name`` the instrumentation scope (the logger's name).
    """

    event_name: str
    severity_number: int
    severity_text: str
    body: Any
    attributes: dict[str, Any]
    trace_id: str
    span_id: str
    time_unix_nano: int
    resource: dict[str, Any]
    scope_name: str

    @property
    def pid(self) -> Any:
        """The ``process.pid`` of the process that sent it (its resource)."""
        return self.resource.get("process.pid")


def decode_records(request: ExportLogsServiceRequest) -> list[Record]:
    """Every record of one export request, in order."""
    records: list[Record] = []
    for resource_logs in request.resource_logs:
        resource = _attributes(resource_logs.resource.attributes)
        for scope_logs in resource_logs.scope_logs:
            for log in scope_logs.log_records:
                records.append(
                    Record(
                        event_name=log.event_name,
                        severity_number=int(log.severity_number),
                        severity_text=log.severity_text,
                        body=_value(log.body),
                        attributes=_attributes(log.attributes),
                        trace_id=log.trace_id.hex(),
                        span_id=log.span_id.hex(),
                        time_unix_nano=log.time_unix_nano,
                        resource=resource,
                        scope_name=scope_logs.scope.name,
                    )
                )
    return records


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: no access log on stderr."""

    def do_POST(self) -> None:
        """Decode and keep the request; answer per mode."""
        receiver = self.server.receiver
        raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path.split("?", 1)[0] != LOGS_PATH:
            receiver._record(None, f"POST {self.path}: not {LOGS_PATH}")
            self._respond(404, b"")
            return
        try:
            body = _decompress(raw, self.headers.get("Content-Encoding", ""))
            request = ExportLogsServiceRequest.FromString(body)
        except Exception as exc:
            receiver._record(None, f"undecodable request: {exc!r}")
            self._respond(400, b"")
            return
        receiver._record(request, None)
        if receiver.mode == "hang":
            receiver._release.wait()
            self.close_connection = True
            return
        if receiver.mode == "error":
            self._respond(500, b"")
            return
        self._respond(200, ExportLogsServiceResponse().SerializeToString())

    def _respond(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, receiver: LogsReceiver) -> None:
        self.receiver = receiver
        super().__init__(("127.0.0.1", 0), _Handler)


class LogsReceiver:
    """``POST /v1/logs`` on 127.0.0.1, decoded; for one test."""

    def __init__(self, mode: Mode = "ok") -> None:
        self.mode: Mode = mode
        self._lock = threading.Condition()
        self.requests: list[ExportLogsServiceRequest] = []
        self.records: list[Record] = []
        self.errors: list[str] = []
        self._release = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> LogsReceiver:
        """Bind a free port and serve from a daemon thread."""
        self._server = _Server(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="otlp-logs-receiver",
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
    def endpoint(self) -> str:
        """The base URL, ``http://127.0.0.1:PORT``, as ``OTEL_EXPORTER_OTLP_ENDPOINT``."""
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def logs_endpoint(self) -> str:
        """The full URL, ``http://127.0.0.1:PORT/v1/logs``."""
        return self.endpoint + LOGS_PATH

    def _record(self, request: ExportLogsServiceRequest | None, error: str | None) -> None:
        with self._lock:
            if request is not None:
                self.requests.append(request)
                self.records.extend(decode_records(request))
            if error is not None:
                self.errors.append(error)
            self._lock.notify_all()

    def snapshot(self) -> list[Record]:
        """The records received so far."""
        with self._lock:
            return list(self.records)

    def wait_for(
        self, pred: Callable[[Record], bool], count: int = 1, timeout: float = 10.0
    ) -> list[Record]:
        """The records that satisfy ``pred``, once there are ``count`` of
        them; AssertionError after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                found = [record for record in self.records if pred(record)]
                if len(found) >= count:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    names = [record.event_name or record.body for record in self.records]
                    raise AssertionError(
                        f"{len(found)} of {count} matching record(s) in {timeout} s; "
                        f"received: {names}; errors: {self.errors}"
                    )
                self._lock.wait(remaining)


def named(name: str) -> Callable[[Record], bool]:
    """A predicate: the record of the hookkit event ``name``."""
    return lambda record: record.event_name == name
