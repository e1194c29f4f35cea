"""WebSocket sessions on ASGI workers: ``http_server_active_websockets`` and
``http_server_websocket_duration_seconds``.

A session opens when the app sends ``websocket.accept`` and ends, once, at
the first of: the app sends ``websocket.close``, the app receives
``websocket.disconnect``, the app returns, raises or is cancelled. A
handshake the app refuses is no session. A session is no request: no
request count, no busy time, no access line, no span.

In-process: ``RequestEvents`` driven with ``asyncio.run`` and hand-made
apps (the events are the real runtime's, captured), and the Prometheus
sink fed those events. Integration: real gunicorn with the drop-in config,
``UvicornWorker`` and gunicorn's own ASGI worker, a FastAPI app
(``apps.websocket_app``), a hand-written RFC 6455 client, real scrapes of
the master's /metrics. Everything listens and connects on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from hookkit._core import events as ev
from hookkit._core.asgi import Message, Receive, RequestEvents, Scope, Send
from hookkit._core.events import Event
from hookkit._core.runtime import RUNTIME
from hookkit._core.settings import Settings
from hookkit._face.gunicorn_process import Gunicorn, match
from hookkit.testing import FakeWorker, capture_events
from tests.otlp import OtlpReceiver
from tests.scrape import scrape_text, total
from tests.traced import request, server_spans, start_traced

APP = "apps.websocket_app:app"
ACTIVE = "http_server_active_websockets"
SESSIONS = "http_server_websocket_duration_seconds_count"
SESSION_SECONDS = "http_server_websocket_duration_seconds_sum"
REQUESTS = "http_server_request_duration_seconds_count"
BUSY = "gunicorn_worker_busy_seconds_total"
ROOM = "/ws/{room}"

WORKERS = {"uvicorn": "uvicorn_worker.UvicornWorker", "asgi": "asgi"}
BOTH = pytest.mark.parametrize("worker", list(WORKERS))


# -- in-process: the middleware's sessions ---------------------------------------


def ws_scope(path: str = "/ws/lobby", **extra: Any) -> Scope:
    """An ASGI ``websocket`` scope as a server builds it."""
    scope: Scope = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "scheme": "ws",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver"), (b"sec-websocket-key", b"x")],
        "client": ("10.0.0.7", 51000),
        "server": ("127.0.0.1", 8000),
        "subprotocols": [],
    }
    scope.update(extra)
    return scope


class Peer:
    """The server's side: ``receive`` gives the connect, then ``incoming``,
    then waits (a client that stays) or disconnects; ``send`` keeps every
    message, and raises for the types in ``failing``."""

    def __init__(self, *incoming: Message, stays: bool = False, failing: str = "") -> None:
        self.incoming: list[Message] = [{"type": "websocket.connect"}, *incoming]
        self.stays = stays
        self.failing = failing
        self.sent: list[str] = []

    async def receive(self) -> Message:
        if self.incoming:
            return self.incoming.pop(0)
        if self.stays:
            await asyncio.Event().wait()
        return {"type": "websocket.disconnect", "code": 1000}

    async def send(self, message: Message) -> None:
        if message["type"] == self.failing:
            raise OSError("the client went away")
        self.sent.append(message["type"])


AsgiApp = Callable[[Scope, Receive, Send], Any]


def run(app: AsgiApp, peer: Peer, scope: Scope | None = None, cancel_after: float = 0) -> None:
    """``app`` behind hookkit's middleware, in a task of its own; cancelled
    after ``cancel_after`` seconds if that is set."""
    middleware = RequestEvents(app, RUNTIME, FakeWorker(), True)

    async def main() -> None:
        task = asyncio.ensure_future(middleware(scope or ws_scope(), peer.receive, peer.send))
        if cancel_after:
            await asyncio.sleep(cancel_after)
            task.cancel()
        await task

    asyncio.run(main())


class AppError(Exception):
    """The application's own exception."""


class Route:
    """Starlette's matched route, as far as ``route_from_scope`` reads it."""

    path = ROOM


def app_doing(*steps: str) -> AsgiApp:
    """An app that notes its route (as Starlette does, before the endpoint
    runs), then does ``steps`` in order: ``accept``, ``close``, ``send``,
    ``receive``, ``raise``, ``wait``, ``deny`` (an HTTP response instead
    of accepting)."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        scope["route"] = Route()
        for step in steps:
            if step in ("accept", "close", "send"):
                await send({"type": f"websocket.{step}", "text": "x"})
            elif step == "receive":
                await receive()
            elif step == "raise":
                raise AppError("boom")
            elif step == "wait":
                await asyncio.sleep(0.05)
            elif step == "deny":
                await send({"type": "websocket.http.response.start", "status": 401, "headers": []})
                await send({"type": "websocket.http.response.body", "body": b""})

    return app


@pytest.fixture
def events() -> Iterator[list[Event]]:
    """The events the real runtime emits during the test."""
    with capture_events() as captured:
        yield captured


def sessions(events: list[Event]) -> list[tuple[str, object]]:
    """(name, route) of each websocket event, in order."""
    return [
        (e.name, e.fields["route"])
        for e in events
        if e.name in (ev.WEBSOCKET_OPENED, ev.WEBSOCKET_CLOSED)
    ]


ONE_SESSION = [(ev.WEBSOCKET_OPENED, ROOM), (ev.WEBSOCKET_CLOSED, ROOM)]


@pytest.mark.parametrize(
    "steps",
    [
        ("receive", "accept", "receive", "send", "receive"),
        ("receive", "accept", "wait", "close", "receive", "close"),
        ("receive", "accept", "receive", "send", "receive", "receive", "send"),
        ("accept", "send"),
    ],
    ids=["client-disconnects", "app-closes-twice", "app-reads-past-the-end", "app-returns"],
)
def test_a_session_is_one_opened_and_one_closed_event(
    events: list[Event], steps: tuple[str, ...]
) -> None:
    """However a session ends, it ends once: one ``websocket_opened`` and
    one ``websocket_closed``, debug level, no hook, with the route, the
    duration on the close; no request event."""
    run(app_doing(*steps), Peer({"type": "websocket.receive", "text": "hi"}))
    assert ONE_SESSION == sessions(events)
    assert [ev.WEBSOCKET_OPENED, ev.WEBSOCKET_CLOSED] == [e.name for e in events]
    opened, closed = events
    assert ("debug", None, "debug", None) == (opened.level, opened.hook, closed.level, closed.hook)
    assert isinstance(closed.fields["duration_seconds"], float)
    assert closed.fields["duration_seconds"] >= 0


def test_the_duration_runs_from_accept_to_the_end(events: list[Event]) -> None:
    """The app waits 0.05 s after accepting: the session lasted that long,
    and no longer than the whole call."""
    started = time.monotonic()
    run(app_doing("accept", "wait", "close"), Peer())
    elapsed = time.monotonic() - started
    (closed,) = [e for e in events if e.name == ev.WEBSOCKET_CLOSED]
    assert 0.05 <= closed.fields["duration_seconds"] <= elapsed  # type: ignore[operator]


@pytest.mark.parametrize(
    "steps",
    [
        ("close", "accept"),
        ("deny",),
        ("raise", "accept"),
        ("receive", "receive", "accept"),
        ("receive",),
    ],
    ids=["closes-first", "denial-response", "raises-first", "client-gone-first", "returns"],
)
def test_a_refused_handshake_is_no_session(events: list[Event], steps: tuple[str, ...]) -> None:
    """An app that closes, answers over HTTP, raises or returns before it
    accepts, or a client gone before the accept: no event, even for an
    accept sent after the end (an app error the server rejects)."""
    with contextlib.suppress(AppError):
        run(app_doing(*steps), Peer())
    assert [] == events


def test_an_accept_that_fails_opens_nothing(events: list[Event]) -> None:
    """The server's accept raised (the client went away): no session."""
    with pytest.raises(OSError, match="went away"):
        run(app_doing("accept", "receive"), Peer(failing="websocket.accept"))
    assert [] == events


def test_an_app_that_raises_ends_its_session_once(events: list[Event]) -> None:
    """The app raises mid-session: the session ends, once, and the exception
    reaches the server unchanged."""
    with pytest.raises(AppError):
        run(app_doing("accept", "send", "raise"), Peer())
    assert ONE_SESSION == sessions(events)


def test_a_failing_close_still_ends_the_session(events: list[Event]) -> None:
    """The server's close raised: the session ended all the same, once."""
    with pytest.raises(OSError, match="went away"):
        run(app_doing("accept", "close"), Peer(failing="websocket.close"))
    assert ONE_SESSION == sessions(events)


def test_a_cancelled_session_ends_once(events: list[Event]) -> None:
    """The server cancels the app's task (shutting down) while the app
    waits for a message: the session ends, once."""
    with pytest.raises(asyncio.CancelledError):
        run(app_doing("accept", "receive", "receive"), Peer(stays=True), cancel_after=0.05)
    assert ONE_SESSION == sessions(events)


def test_messages_pass_through_unchanged(events: list[Event]) -> None:
    """The app sees every message the server gives, the server every
    message the app sends."""
    seen: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(await receive())
        await send({"type": "websocket.accept"})
        seen.append(await receive())
        await send({"type": "websocket.send", "bytes": b"\x00"})
        seen.append(await receive())

    peer = Peer({"type": "websocket.receive", "bytes": b"\x01"})
    run(app, peer)
    assert [
        {"type": "websocket.connect"},
        {"type": "websocket.receive", "bytes": b"\x01"},
        {"type": "websocket.disconnect", "code": 1000},
    ] == seen
    assert ["websocket.accept", "websocket.send"] == peer.sent


# -- in-process: the Prometheus sink -------------------------------------------------


def test_the_prometheus_sink_counts_sessions_under_the_route_cap() -> None:
    """The gauge goes up and down with the events; each session's duration
    is observed under its route, capped by the same per-process bound as the
    request routes (``HOOKKIT_MAX_ROUTES``): past it, ``_OTHER``."""
    from hookkit._sinks.prometheus.metrics import Metrics
    from hookkit._sinks.prometheus.sink import PrometheusSink

    sink = PrometheusSink(Settings(max_routes=2))
    sink.metrics = m = Metrics(timeout=30)
    sink.routes.label("/items/{id}")  # a request's route took one place

    def closed(route: str | None, seconds: float) -> Event:
        fields = {"route": route, "duration_seconds": seconds}
        return Event(ev.WEBSOCKET_CLOSED, None, "debug", fields)

    for _ in range(3):
        sink.handle(Event(ev.WEBSOCKET_OPENED, None, "debug", {"route": ROOM}))
    assert 3 == m.active_websockets._value.get()
    sink.handle(closed(ROOM, 2.0))
    sink.handle(closed("/chat", 20.0))
    sink.handle(closed(None, 0.5))
    assert 0 == m.active_websockets._value.get()
    counts = {
        s.labels["http_route"]: s.value
        for metric in m.websocket_duration.collect()
        for s in metric.samples
        if s.name.endswith("_count")
    }
    assert {ROOM: 1, "_OTHER": 1, "": 1} == counts
    buckets = {
        s.labels["le"]: s.value
        for metric in m.websocket_duration.collect()
        for s in metric.samples
        if s.name.endswith("_bucket") and s.labels["http_route"] == ROOM
    }
    assert (0, 1) == (buckets["1.0"], buckets["5.0"])
    assert ["1.0", "5.0", "15.0", "30.0", "60.0", "300.0", "900.0", "1800.0", "3600.0", "+Inf"] == [
        *buckets
    ]


# -- integration: real gunicorn, a real client ------------------------------------


class WebSocketClient:
    """An RFC 6455 client, by hand (the tests have no WebSocket client):
    ``WebSocketClient(port, path)`` opens the connection; ``status`` is the
    handshake's HTTP status (101 when the app accepted)."""

    def __init__(self, port: int, path: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            byte = self.sock.recv(1)
            if not byte:
                break
            head += byte
        self.status = int(head.split(b" ", 2)[1]) if head else 0

    def send(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
        self.sock.sendall(bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked)

    def frame(self) -> tuple[int, bytes]:
        """The next frame from the server: (opcode, payload); (0, b"") at EOF."""
        head = self._exactly(2)
        if len(head) < 2:
            return 0, b""
        return head[0] & 0x0F, self._exactly(head[1] & 0x7F)

    def _exactly(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                break
            data += chunk
        return data

    def echo(self, text: str) -> str:
        self.send(0x1, text.encode())
        opcode, payload = self.frame()
        assert 0x1 == opcode, (opcode, payload)
        return payload.decode()

    def close(self) -> None:
        """The client closes (1000) and waits for the server's close."""
        self.send(0x8, b"\x03\xe8")
        while self.frame()[0] not in (0x8, 0):
            pass
        self.sock.close()

    def answer_close(self) -> None:
        """The server closed first: answer its close frame."""
        while self.frame()[0] not in (0x8, 0):
            pass
        self.send(0x8, b"\x03\xe8")
        self.sock.close()


def start(serve: Any, rx: OtlpReceiver, worker: str, *args: str) -> Gunicorn:
    """One worker of class ``worker`` serving the WebSocket app, exporting
    spans to ``rx``, with the access log on."""
    return start_traced(
        serve, rx, "-k", WORKERS[worker], *args, app=APP, env={"HOOKKIT_ACCESS_LOG": "on"}
    )


def scrape_until(server: Gunicorn, name: str, value: float, timeout: float = 10.0) -> str:
    """Scrape until ``name`` sums to ``value``; the last scrape."""
    deadline = time.monotonic() + timeout
    while True:
        text = scrape_text(server.metrics_port)  # type: ignore[attr-defined]
        if total(text, name) == value or time.monotonic() > deadline:
            return text
        time.sleep(0.05)


@pytest.mark.integration
@BOTH
def test_a_session_moves_the_gauge_and_records_one_duration_and_no_request(
    serve: Any, worker: str
) -> None:
    """Open a session and keep it open: the active gauge is 1 (it was 0
    before). The client closes: the gauge is 0, and there is one duration
    under the route template, as long as the client held the session (at
    least 0.3 s, at most the time from its connect to its close), and no
    request: no count, no busy time, no access line, no hookkit span. With
    gunicorn's default log level the session's debug events are not
    logged."""
    with OtlpReceiver() as rx:
        server = start(serve, rx, worker)
        assert 0 == total(scrape_text(server.metrics_port), ACTIVE)  # type: ignore[attr-defined]
        held = time.monotonic()
        client = WebSocketClient(server.port, "/ws/lobby")  # type: ignore[attr-defined]
        assert 101 == client.status
        assert "lobby:hi" == client.echo("hi")
        opened = scrape_until(server, ACTIVE, 1)
        time.sleep(0.3)
        client.close()
        held = time.monotonic() - held
        closed = scrape_until(server, SESSIONS, 1)
        time.sleep(0.3)
        after = scrape_text(server.metrics_port)  # type: ignore[attr-defined]
        # One HTTP request afterwards: its span is the only hookkit span.
        assert 200 == request(server.port, "/items/1")[0]  # type: ignore[attr-defined]
        server_spans(rx)
        time.sleep(0.3)
        spans = rx.spans
    assert 1 == total(opened, ACTIVE)
    assert (0, 1, 1) == (
        total(closed, ACTIVE),
        total(closed, SESSIONS, http_route=ROOM),
        total(after, SESSIONS),
    )
    assert 0.3 <= total(after, SESSION_SECONDS) <= held
    assert (0, 0, 0) == (total(opened, REQUESTS), total(after, REQUESTS), total(after, BUSY))
    assert ["/items/1"] == [s.attributes["url.path"] for s in spans if s.scope_name == "hookkit"]
    assert ["/items/1"] == [line["path"] for line in server.events(match(event="request_finished"))]
    assert [] == [line for line in server.events() if str(line["event"]).startswith("websocket")]


@pytest.mark.integration
@BOTH
def test_refused_handshakes_record_nothing_and_every_ending_ends_once(
    serve: Any, worker: str
) -> None:
    """A handshake refused by closing before accept (403) or by raising
    before accept (500) records nothing. A session the app closes and one
    where it raises each end once: the gauge is back at 0, never below, two
    durations. With ``--log-level debug`` each session is one
    ``websocket_opened`` and one ``websocket_closed`` line, with the route."""
    with OtlpReceiver() as rx:
        server = start(serve, rx, worker, "--log-level", "debug")
        port = server.port  # type: ignore[attr-defined]
        refused = [WebSocketClient(port, path) for path in ("/refuse", "/refuse-raise")]
        assert [403, 500] == [client.status for client in refused]
        for client in refused:
            client.sock.close()
        for ending in ("close", "raise"):
            client = WebSocketClient(port, f"/ws/{ending}")
            assert 101 == client.status
            client.send(0x1, ending.encode())
            client.answer_close()
        text = scrape_until(server, SESSIONS, 2)
        time.sleep(0.3)
        again = scrape_text(server.metrics_port)  # type: ignore[attr-defined]
    assert (0, 2) == (total(text, ACTIVE), total(text, SESSIONS, http_route=ROOM))
    assert (0, 2, 0) == (total(again, ACTIVE), total(again, SESSIONS), total(again, REQUESTS))
    lines = [
        (line["event"], line["route"], "duration_seconds" in line)
        for line in server.events()
        if str(line["event"]).startswith("websocket")
    ]
    assert [
        ("websocket_opened", ROOM, False),
        ("websocket_closed", ROOM, True),
    ] * 2 == lines


@pytest.mark.integration
@BOTH
def test_a_worker_killed_with_sessions_open_leaves_no_active_session(
    serve: Any, worker: str
) -> None:
    """Two sessions open, the worker SIGKILLed: nothing ended them, but
    the master drops a dead worker's live gauges, so the gauge is back at 0
    (and no duration was recorded)."""
    with OtlpReceiver() as rx:
        server = start(serve, rx, worker)
        port = server.port  # type: ignore[attr-defined]
        clients = [WebSocketClient(port, f"/ws/{n}") for n in range(2)]
        assert [f"{n}:x" for n in range(2)] == [c.echo("x") for c in clients]
        assert 2 == total(scrape_until(server, ACTIVE, 2), ACTIVE)
        (pid,) = server.live_workers()
        os.kill(pid, signal.SIGKILL)
        server.wait_for(match(event="worker_exited", worker_pid=pid))
        text = scrape_text(server.metrics_port)  # type: ignore[attr-defined]
        for client in clients:
            client.sock.close()
    assert (0, 0) == (total(text, ACTIVE), total(text, SESSIONS))
