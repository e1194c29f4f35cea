"""hookkit._core.asgi in-process: which worker classes call the request hooks,
what an ASGI app is, the route an ASGI scope names, and the ``RequestEvents``
middleware driven with ``asyncio.run`` and hand-made apps, ``receive`` and
``send`` (no gunicorn, no server). The events are the real runtime's
(``hookkit._core.runtime.RUNTIME``), captured with ``capture_events``.

Also Flask's route, noted from its ``request_started`` signal
(``hookkit._core.routes``), through a real Flask app's WSGI callable.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry import propagate
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanContext, SpanKind

from hookkit._core import routes as _frameworks
from hookkit._core.asgi import (
    App,
    AsgiRequest,
    AsgiResponse,
    Message,
    RequestEvents,
    Scope,
    _defer_to_hookkit_span,
    calls_request_hooks,
    is_asgi_app,
    route_from_scope,
    wrap_worker_app,
)
from hookkit._core.events import Event
from hookkit._core.requests import RequestScope
from hookkit._core.runtime import RUNTIME
from hookkit._core.settings import Settings
from hookkit._sinks.tracing.sink import TracingSink
from hookkit.testing import FakeRequest, FakeResponse, FakeWorker, capture_events

# A caller's W3C trace context: trace id, parent span id, sampled.
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


class AppError(Exception):
    """An application's own exception."""


# -- helpers -------------------------------------------------------------------


def http_scope(path: str = "/items/1", method: str = "GET", **extra: Any) -> Scope:
    """An ASGI ``http`` scope as a server builds it."""
    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver")],
        "client": ("10.0.0.7", 51000),
        "server": ("127.0.0.1", 8000),
    }
    scope.update(extra)
    return scope


class Client:
    """The server's side of one ASGI call: ``receive`` gives an empty request
    body (then a disconnect), ``send`` keeps every message."""

    def __init__(self, *incoming: Message) -> None:
        self.incoming = list(incoming) or [{"type": "http.request", "body": b""}]
        self.sent: list[Message] = []

    async def receive(self) -> Message:
        """The next message for the app."""
        if self.incoming:
            return self.incoming.pop(0)
        await asyncio.sleep(0)
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        """Keep what the app sends."""
        self.sent.append(message)

    def body(self) -> bytes:
        """The response body the app sent."""
        return b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")


def call(app: Any, scope: Scope, client: Client | None = None) -> Client:
    """Run ``app(scope, receive, send)`` in an asyncio task of its own
    (``asyncio.run``); returns the client. The app's exception propagates."""
    client = Client() if client is None else client
    asyncio.run(app(scope, client.receive, client.send))
    return client


def middleware(app: App, make_events: bool = True) -> RequestEvents:
    """``app`` behind hookkit's middleware on the real runtime."""
    return RequestEvents(app, RUNTIME, FakeWorker(), make_events)


def finished(events: list[Event]) -> list[dict[str, Any]]:
    """The fields of every ``request_finished`` event."""
    return [dict(e.fields) for e in events if e.name == "request_finished"]


def only_finished(events: list[Event]) -> dict[str, Any]:
    """The fields of the one ``request_finished`` event."""
    found = finished(events)
    assert 1 == len(found), events
    return found[0]


class Routed:
    """A route object as Starlette and FastAPI put it in ``scope["route"]``."""

    def __init__(self, path: str) -> None:
        self.path = path


def answering(
    status: int = 200,
    chunks: tuple[bytes, ...] = (b"hello",),
    route: str | None = "/items/{item_id}",
    pause: float = 0.0,
) -> App:
    """An app that notes ``route`` in ``scope["route"]`` (as Starlette's router
    does) and answers ``status`` with ``chunks``, ``pause`` seconds apart."""

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if route is not None:
            scope["route"] = Routed(route)
        await send({"type": "http.response.start", "status": status, "headers": []})
        for n, chunk in enumerate(chunks):
            if n and pause:
                await asyncio.sleep(pause)
            more = n < len(chunks) - 1
            await send({"type": "http.response.body", "body": chunk, "more_body": more})

    return app


@pytest.fixture
def events() -> Iterator[list[Event]]:
    """The events the real runtime emits during the test."""
    with capture_events() as captured:
        yield captured
    assert {} == RUNTIME.in_flight.scopes, "a request was left in flight"


# -- calls_request_hooks -------------------------------------------------------


def test_gunicorns_sync_and_thread_workers_call_the_request_hooks() -> None:
    """gunicorn's sync and gthread workers call ``pre_request`` from a method
    of theirs (or of a base class)."""
    from gunicorn.workers.gthread import ThreadWorker
    from gunicorn.workers.sync import SyncWorker

    expected = (True, True)
    assert expected == (calls_request_hooks(SyncWorker), calls_request_hooks(ThreadWorker))


@pytest.mark.integration
def test_gunicorns_gevent_worker_calls_the_request_hooks() -> None:
    """gunicorn's gevent worker calls them too. It is imported in a child
    interpreter: importing it loads ``gevent.monkey``, which changes how
    hookkit tells requests apart in this process for the tests after."""
    pytest.importorskip("gevent")
    code = (
        "from gunicorn.workers.ggevent import GeventWorker\n"
        "from hookkit._core.asgi import calls_request_hooks\n"
        "print(calls_request_hooks(GeventWorker))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert ("True\n", 0) == (result.stdout, result.returncode), result.stderr


def test_gunicorns_asgi_worker_calls_the_request_hooks() -> None:
    """gunicorn's ASGI worker calls them from its protocol module, not from
    the class: it is named, and so are its subclasses."""
    from gunicorn.workers.gasgi import ASGIWorker

    class OwnASGIWorker(ASGIWorker):  # type: ignore[misc]
        """A user's subclass."""

    expected = (True, True)
    assert expected == (calls_request_hooks(ASGIWorker), calls_request_hooks(OwnASGIWorker))


def test_uvicorn_workers_never_call_the_request_hooks() -> None:
    """uvicorn-worker's classes hand requests to uvicorn, which knows nothing
    of gunicorn's request hooks."""
    uvicorn_worker = pytest.importorskip("uvicorn_worker")

    expected = (False, False)
    assert expected == (
        calls_request_hooks(uvicorn_worker.UvicornWorker),
        calls_request_hooks(uvicorn_worker.UvicornH11Worker),
    )


def test_a_worker_class_of_ones_own_is_read_from_its_methods() -> None:
    """A made-up worker class calls the hooks when one of its methods (or a
    function nested in one, or a base class's) refers to ``pre_request``; a
    mention in a string does not count."""
    from gunicorn.workers.base import Worker

    class Calling(Worker):  # type: ignore[misc]
        def handle_request(self, req: Any) -> None:
            self.cfg.pre_request(self, req)

    class CallingNested(Worker):  # type: ignore[misc]
        def handle(self, req: Any) -> Callable[[], None]:
            def later() -> None:
                self.cfg.pre_request(self, req)

            return later

    class CallingInherited(Calling):
        pass

    class NotCalling(Worker):  # type: ignore[misc]
        def handle_request(self, req: Any) -> str:
            return "pre_request is not called here"

    expected = {
        "Calling": True,
        "CallingNested": True,
        "CallingInherited": True,
        "NotCalling": False,
    }
    actual = {
        cls.__name__: calls_request_hooks(cls)
        for cls in (Calling, CallingNested, CallingInherited, NotCalling)
    }
    assert expected == actual


def test_a_subclass_of_the_uvicorn_worker_that_calls_the_hooks() -> None:
    """A UvicornWorker subclass whose method calls ``pre_request`` does."""
    pytest.importorskip("uvicorn_worker")
    from uvicorn_worker import UvicornWorker  # type: ignore[import-untyped]

    class Calling(UvicornWorker):  # type: ignore[misc]
        def note(self, req: Any) -> None:
            self.cfg.pre_request(self, req)

    assert calls_request_hooks(Calling)


# -- is_asgi_app ----------------------------------------------------------------


async def asgi_function(scope: Scope, receive: Any, send: Any) -> None:
    """An ASGI 3 app as a coroutine function."""


def wsgi_function(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """A WSGI app."""
    start_response("200 OK", [])
    return [b""]


class AsgiObject:
    """An ASGI 3 app as an object with an async ``__call__``."""

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        """Serve one ASGI connection."""


class InheritedAsgiObject(AsgiObject):
    """Its ``__call__`` comes from the base class."""


class SyncCallObject:
    """A class whose ``__call__`` is synchronous (a WSGI app object)."""

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        """Serve one WSGI request."""
        return []


@pytest.mark.parametrize(
    ("app", "expected"),
    [
        pytest.param(asgi_function, True, id="async-function"),
        pytest.param(AsgiObject(), True, id="async-call"),
        pytest.param(InheritedAsgiObject(), True, id="inherited-async-call"),
        pytest.param(wsgi_function, False, id="wsgi-function"),
        pytest.param(SyncCallObject(), False, id="sync-call"),
    ],
)
def test_is_asgi_app(app: object, expected: bool) -> None:
    """A coroutine function or an object whose class has an async
    ``__call__`` (its own or a base class's) is an ASGI app; a WSGI function
    or an object with a synchronous ``__call__`` is not."""
    assert expected == is_asgi_app(app)


def test_real_frameworks_apps_are_told_apart() -> None:
    """Starlette's and FastAPI's apps are ASGI apps; Flask's is not."""
    from fastapi import FastAPI
    from flask import Flask
    from starlette.applications import Starlette

    expected = (True, True, False)
    assert expected == (
        is_asgi_app(Starlette()),
        is_asgi_app(FastAPI()),
        is_asgi_app(Flask(__name__)),
    )


def test_an_async_call_set_on_the_instance_is_not_what_python_calls() -> None:
    """Python looks ``__call__`` up on the class: an async function set on
    an instance of a class with a synchronous one does not make it ASGI."""
    app = SyncCallObject()
    app.__call__ = asgi_function  # type: ignore[method-assign,assignment]
    assert not is_asgi_app(app)


# -- route_from_scope ----------------------------------------------------------


def test_route_from_hookkits_own_scope_key() -> None:
    """``scope["hookkit.route"]`` wins: any app can set it."""
    scope = http_scope(route=Routed("/ignored"))
    scope["hookkit.route"] = "/orders/{order_id}"
    assert "/orders/{order_id}" == route_from_scope(scope)


def test_route_from_a_starlette_route_under_the_root_path() -> None:
    """Starlette's and FastAPI's ``scope["route"]`` (here a real Starlette
    ``Route``), prefixed with the path the app is mounted under."""
    from starlette.routing import Route

    async def endpoint(request: Any) -> None:
        """Never called."""

    route = Route("/items/{item_id}", endpoint)
    expected = ["/items/{item_id}", "/v1/items/{item_id}", "/items/{item_id}"]
    actual = [
        route_from_scope(http_scope(route=route)),
        route_from_scope(http_scope(route=route, root_path="/v1")),
        route_from_scope(http_scope(route=route, root_path=None)),
    ]
    assert expected == actual


@pytest.mark.parametrize(
    "scope",
    [
        pytest.param(http_scope(), id="no-route"),
        pytest.param(http_scope(route=object()), id="route-without-path"),
        pytest.param(http_scope(route=Routed(None)), id="path-not-text"),  # type: ignore[arg-type]
        pytest.param({"type": "http", "hookkit.route": 42}, id="hookkit-route-not-text"),
    ],
)
def test_no_route_in_the_scope(scope: Scope) -> None:
    """Nothing usable in the scope: no route."""
    assert route_from_scope(scope) is None


def starlette_app_with_mounts() -> Any:
    """A Starlette app with a route, a router mounted under ``/v1`` and a
    plain ASGI app (like ``StaticFiles``) mounted under ``/static``."""
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Mount, Route

    async def item(request: Any) -> PlainTextResponse:
        return PlainTextResponse(request.path_params["item_id"])

    async def files(scope: Scope, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"body { }"})

    return Starlette(
        routes=[
            Route("/items/{item_id}", item),
            Mount("/v1", routes=[Route("/items/{item_id}", item)]),
            Mount("/static", app=files),
        ]
    )


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/items/3", "/items/{item_id}"),
        ("/v1/items/3", "/v1/items/{item_id}"),
        ("/nope", None),
    ],
)
def test_route_of_a_real_starlette_app(path: str, expected: str | None) -> None:
    """Through a real Starlette router: the matched route, a mounted route
    with its mount's prefix, no route for a 404."""
    scope = http_scope(path)
    call(starlette_app_with_mounts(), scope)
    assert expected == route_from_scope(scope)


def test_route_of_a_plain_app_mounted_in_starlette_is_the_mount_path() -> None:
    """A plain ASGI app mounted under ``/static`` (``StaticFiles``, a
    sub-app): Starlette leaves its ``Mount`` in ``scope["route"]`` and has
    already added the mount's path to ``root_path``. The route is the
    mount's path, once: ``/static``, not ``/static/static``."""
    scope = http_scope("/static/site.css")
    client = call(starlette_app_with_mounts(), scope)
    assert b"body { }" == client.body()
    assert "/static" == route_from_scope(scope)


# -- AsgiRequest and AsgiResponse ------------------------------------------------


def test_asgi_request_reads_like_gunicorns() -> None:
    """The scope's method, path, query, scheme, version, client and headers,
    with header names upper-cased as gunicorn's requests have them."""
    scope = http_scope(
        "/search",
        method="POST",
        query_string=b"q=caf\xe9",
        scheme="https",
        http_version="2",
        headers=[(b"content-type", b"text/plain"), (b"x-name", b"\xe9")],
    )
    request = AsgiRequest(scope)
    expected = (
        "POST",
        "/search",
        "q=café",
        "https",
        "2",
        ("10.0.0.7", 51000),
        [("CONTENT-TYPE", "text/plain"), ("X-NAME", "é")],
    )
    actual = (
        request.method,
        request.path,
        request.query,
        request.scheme,
        request.version,
        request.peer_addr,
        request.headers,
    )
    assert expected == actual


def test_asgi_request_of_a_bare_scope() -> None:
    """A scope with almost nothing in it still gives a request."""
    request = AsgiRequest({"type": "http"})
    no_headers: list[tuple[str, str]] = []
    expected = ("", "", "", "http", "1.1", None, no_headers)
    actual = (
        request.method,
        request.path,
        request.query,
        request.scheme,
        request.version,
        request.peer_addr,
        request.headers,
    )
    assert expected == actual


def test_asgi_response_notes_what_was_sent() -> None:
    """The status from the start message, the body bytes, and whether the
    last body message went out."""
    response = AsgiResponse()
    before = (response.started, response.status, response.sent, response.complete)
    response.note({"type": "http.response.start", "status": 201, "headers": [(b"a", b"b")]})
    response.note({"type": "http.response.body", "body": b"abc", "more_body": True})
    middle = (response.started, response.status, response.sent, response.complete)
    response.note({"type": "http.response.body", "body": b"de"})
    after = (response.started, response.status, response.sent, response.complete)
    expected = [(False, None, 0, False), (True, 201, 3, False), (True, 201, 5, True)]
    assert expected == [before, middle, after]
    assert [(b"a", b"b")] == response.headers


# -- RequestEvents: the middleware makes the events -------------------------------


def test_a_200_gives_one_request_finished_event(events: list[Event]) -> None:
    """One ``request_started`` and one ``request_finished`` per request, with
    the method, path, status, route from ``scope["route"]``, the body's
    length and the request's Content-Length; what the app sent reaches the
    client unchanged."""
    scope = http_scope("/items/42", method="PUT")
    scope["headers"] = [(b"host", b"testserver"), (b"content-length", b"11")]
    client = call(middleware(answering(200, (b"hello", b" world"))), scope)

    assert b"hello world" == client.body()
    assert ["request_started", "request_finished"] == [e.name for e in events]
    fields = only_finished(events)
    expected = {
        "method": "PUT",
        "path": "/items/42",
        "status": 200,
        "route": "/items/{item_id}",
        "response_bytes": 11,
        "request_bytes": 11,
        "error_type": None,
    }
    assert expected == {key: fields[key] for key in expected}


def test_the_duration_covers_a_streamed_body(events: list[Event]) -> None:
    """Three chunks 0.05 s apart: the request lasts until the last one."""
    app = answering(200, (b"a", b"bb", b"ccc"), pause=0.05)
    client = call(middleware(app), http_scope())
    fields = only_finished(events)
    assert (b"abbccc", 6) == (client.body(), fields["response_bytes"])
    assert fields["duration_seconds"] >= 0.1


def test_an_app_status_of_5xx_is_its_own_error_type(events: list[Event]) -> None:
    """The app answers 503: status 503, error type ``503``."""
    call(middleware(answering(503)), http_scope())
    fields = only_finished(events)
    assert (503, "503") == (fields["status"], fields["error_type"])


def test_an_app_raising_before_it_starts_is_a_500(events: list[Event]) -> None:
    """The server answers 500 for an app that raised before the response
    started: status 500, the exception's class as error type, and the
    exception still reaches the server."""

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        scope["route"] = Routed("/items/{item_id}")
        raise AppError("before the response")

    with pytest.raises(AppError, match="before the response"):
        call(middleware(app), http_scope())
    fields = only_finished(events)
    expected = (500, "tests.test_asgi.AppError", "/items/{item_id}", 0)
    assert expected == (
        fields["status"],
        fields["error_type"],
        fields["route"],
        fields["response_bytes"],
    )


def test_an_app_raising_after_it_started_keeps_its_status(events: list[Event]) -> None:
    """The response had started: the client got the app's status and part of
    the body; the error type is the exception's class."""

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
        raise RuntimeError("in the middle of the body")

    with pytest.raises(RuntimeError):
        call(middleware(app), http_scope())
    fields = only_finished(events)
    expected = (200, "RuntimeError", 5)
    assert expected == (fields["status"], fields["error_type"], fields["response_bytes"])


def test_an_app_that_sends_nothing_is_a_500(events: list[Event]) -> None:
    """An app that returns without starting a response: the server answers
    500, and so does the event."""

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        return None

    call(middleware(app), http_scope())
    fields = only_finished(events)
    assert (500, "500") == (fields["status"], fields["error_type"])


def test_a_cancelled_request_is_finished_once(events: list[Event]) -> None:
    """The server cancels the app's task (shutting down) before the response
    started: one event, no status, the cancellation as error type; the
    cancellation goes on to the server."""
    started = asyncio.Event()

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        started.set()
        await asyncio.sleep(30)

    async def server() -> None:
        client = Client()
        task = asyncio.ensure_future(middleware(app)(http_scope(), client.receive, client.send))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(server())
    fields = only_finished(events)
    assert (None, "asyncio.exceptions.CancelledError") == (fields["status"], fields["error_type"])


def test_lifespan_passes_through_without_an_event(events: list[Event]) -> None:
    """The lifespan protocol reaches the app unchanged and is no request."""
    seen: list[str] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        assert "lifespan" == scope["type"]
        while True:
            message = await receive()
            seen.append(message["type"])
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return

    client = Client({"type": "lifespan.startup"}, {"type": "lifespan.shutdown"})
    call(middleware(app), {"type": "lifespan", "asgi": {"version": "3.0"}}, client)
    assert ["lifespan.startup", "lifespan.shutdown"] == seen
    assert ["lifespan.startup.complete", "lifespan.shutdown.complete"] == [
        m["type"] for m in client.sent
    ]
    assert [] == events


def test_a_websocket_passes_through_without_a_request_event(events: list[Event]) -> None:
    """A WebSocket connection is not an HTTP request: no request event, even
    with a route in its scope; only its session's opened and closed events
    (``tests/test_websockets.py``)."""

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        scope["route"] = Routed("/ws")
        assert "websocket.connect" == (await receive())["type"]
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": "hi"})
        await send({"type": "websocket.close", "code": 1000})

    scope = http_scope("/ws", type="websocket", scheme="ws")
    client = call(middleware(app), scope, Client({"type": "websocket.connect"}))
    assert ["websocket.accept", "websocket.send", "websocket.close"] == [
        m["type"] for m in client.sent
    ]
    assert ["websocket_opened", "websocket_closed"] == [e.name for e in events]


def test_a_request_the_worker_opened_is_never_counted_twice(events: list[Event]) -> None:
    """The worker class did call ``pre_request`` for this request, in the
    task that runs the app (the middleware was told otherwise): the
    middleware makes no events of its own, notes the route on the opened
    request, and the worker's ``post_request`` finishes it, once."""
    worker = FakeWorker()

    async def worker_task() -> None:
        req = FakeRequest("GET", "/items/1")
        RUNTIME.pre_request(worker, req)
        client = Client()
        await middleware(answering(200), make_events=True)(
            http_scope(), client.receive, client.send
        )
        RUNTIME.post_request(worker, req, {}, FakeResponse(200, sent=5))

    asyncio.run(worker_task())
    assert ["request_started", "request_finished"] == [e.name for e in events]
    assert ("/items/{item_id}", 200) == (
        only_finished(events)["route"],
        only_finished(events)["status"],
    )


def test_a_request_opened_in_another_task_does_not_count(events: list[Event]) -> None:
    """Requests are told apart by their asyncio task: a request the worker
    opened in another task, still in flight, does not stop the middleware
    from making this request's events. Both are counted once."""
    worker = FakeWorker()
    opened = asyncio.Event()
    release = asyncio.Event()

    async def other_request() -> None:
        req = FakeRequest("GET", "/other")
        RUNTIME.pre_request(worker, req)
        opened.set()
        await release.wait()
        RUNTIME.post_request(worker, req, {}, FakeResponse(204))

    async def server() -> None:
        other = asyncio.ensure_future(other_request())
        await opened.wait()
        client = Client()
        await middleware(answering(200))(http_scope("/items/9"), client.receive, client.send)
        release.set()
        await other

    asyncio.run(server())
    expected = [("/items/9", 200, "/items/{item_id}"), ("/other", 204, None)]
    assert expected == [(f["path"], f["status"], f["route"]) for f in finished(events)]


def test_concurrent_requests_through_the_middleware(events: list[Event]) -> None:
    """Five requests at once, each in its own task, interleaved: five
    events, each with its own path and body size."""

    def app_for(n: int) -> App:
        return answering(200, (b"x" * n, b"y"), pause=0.01)

    async def server() -> None:
        clients = [Client() for _ in range(5)]
        await asyncio.gather(
            *(
                middleware(app_for(n))(http_scope(f"/items/{n}"), c.receive, c.send)
                for n, c in enumerate(clients, 1)
            )
        )

    asyncio.run(server())
    expected = {(f"/items/{n}", n + 1) for n in range(1, 6)}
    assert expected == {(f["path"], f["response_bytes"]) for f in finished(events)}
    assert 5 == len(finished(events))


# -- RequestEvents: the worker makes the events (gunicorn's ASGI worker) ------------


def test_the_route_is_noted_on_the_request_the_worker_opened(events: list[Event]) -> None:
    """With ``make_events=False``, after ``pre_request`` in the same task the
    middleware notes the route on the opened request, and the worker's
    ``post_request`` (whose environ has no route) reports it."""
    worker = FakeWorker()
    noted: list[str | None] = []

    async def worker_task() -> None:
        req = FakeRequest("GET", "/items/1")
        RUNTIME.pre_request(worker, req)
        opened = RUNTIME.in_flight.current()
        assert opened is not None
        client = Client()
        await middleware(answering(200), make_events=False)(
            http_scope(), client.receive, client.send
        )
        noted.append(opened.route)
        RUNTIME.post_request(worker, req, {}, FakeResponse(200, sent=5))

    asyncio.run(worker_task())
    assert ["/items/{item_id}"] == noted
    fields = only_finished(events)
    assert ("/items/{item_id}", 200) == (fields["route"], fields["status"])


def test_the_apps_exception_is_noted_on_the_request_the_worker_opened(
    events: list[Event],
) -> None:
    """The app raises: the middleware notes the exception on the opened
    request (the worker catches it before ``post_request``, and a framework
    may have answered 500 itself) and the route; the exception goes on."""
    worker = FakeWorker()
    error = AppError("boom")
    noted: list[tuple[BaseException | None, str | None]] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        scope["route"] = Routed("/items/{item_id}")
        raise error

    async def worker_task() -> None:
        req = FakeRequest("GET", "/items/1")
        RUNTIME.pre_request(worker, req)
        opened = RUNTIME.in_flight.current()
        assert opened is not None
        client = Client()
        with pytest.raises(AppError):
            await middleware(app, make_events=False)(http_scope(), client.receive, client.send)
        noted.append((opened.error, opened.route))
        RUNTIME.post_request(worker, req, {}, FakeResponse(500))

    asyncio.run(worker_task())
    assert [(error, "/items/{item_id}")] == noted
    fields = only_finished(events)
    expected = (500, "tests.test_asgi.AppError", "/items/{item_id}")
    assert expected == (fields["status"], fields["error_type"], fields["route"])


def test_an_error_the_worker_already_noted_is_kept() -> None:
    """An exception noted earlier (gunicorn logged one) is not replaced."""
    worker = FakeWorker()
    earlier = AppError("earlier")
    noted: list[BaseException | None] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        raise RuntimeError("later")

    async def worker_task() -> None:
        req = FakeRequest("GET", "/items/1")
        with capture_events():
            RUNTIME.pre_request(worker, req)
            opened = RUNTIME.in_flight.current()
            assert opened is not None
            opened.error = earlier
            client = Client()
            with pytest.raises(RuntimeError):
                await middleware(app, make_events=False)(http_scope(), client.receive, client.send)
            noted.append(opened.error)
            RUNTIME.post_request(worker, req, {}, FakeResponse(500))

    asyncio.run(worker_task())
    assert [earlier] == noted


def test_without_pre_request_the_middleware_only_passes_through(events: list[Event]) -> None:
    """With ``make_events=False`` and no request opened in this task, the
    middleware makes nothing and the app answers unchanged."""
    client = call(middleware(answering(200), make_events=False), http_scope())
    assert b"hello" == client.body()
    assert [] == events


# -- the request's span ---------------------------------------------------------


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    """hookkit's tracing on the real runtime, on a provider of the test's own
    (never the global one), exporting to memory."""
    provider = TracerProvider(shutdown_on_exit=False)
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    sink = TracingSink(Settings(), {})
    sink.provider = provider
    sink.tracer = provider.get_tracer("hookkit")
    sink._propagator = propagate.get_global_textmap()
    # Beside the sinks in place (capture_events'), first on request_started
    # and last on request_finished, as the drop-in orders them.
    others = RUNTIME.dispatcher.sinks
    RUNTIME.dispatcher.set_sinks([*others, sink], [sink, *others], [*others, sink])
    yield memory
    provider.shutdown()


def tracing_sink() -> TracingSink:
    """The tracing sink the ``exporter`` fixture added to the runtime."""
    (sink,) = [sink for sink in RUNTIME.dispatcher.sinks if isinstance(sink, TracingSink)]
    return sink


def traced_scope(path: str) -> Scope:
    """An http scope whose request carries ``TRACEPARENT``."""
    return http_scope(
        path, headers=[(b"host", b"testserver"), (b"traceparent", TRACEPARENT.encode())]
    )


def server_spans(spans: list[ReadableSpan]) -> list[ReadableSpan]:
    """The SERVER spans among ``spans``."""
    return [span for span in spans if span.kind == SpanKind.SERVER]


def test_fastapi_request_gets_one_server_span_named_from_its_route(
    events: list[Event], exporter: InMemorySpanExporter
) -> None:
    """A real FastAPI app behind the middleware, with FastAPI's own
    telemetry on the same provider: exactly one SERVER span, hookkit's,
    continuing the caller's trace and named ``GET /items/{item_id}``; the
    app ran under it and its own span is its child (FastAPI's telemetry
    defers to hookkit's span through ``scope["fastapi.telemetry"]``)."""
    from fastapi import FastAPI
    from opentelemetry import trace

    provider = tracing_sink().provider
    tracer = provider.get_tracer("tests.test_asgi")
    app = FastAPI(telemetry={"tracer_provider": provider, "metrics": False, "logs": False})

    @app.get("/items/{item_id}")
    async def read_item(item_id: int) -> dict[str, Any]:
        context = trace.get_current_span().get_span_context()
        with tracer.start_as_current_span("load_item"):
            await asyncio.sleep(0)
        return {"item_id": item_id, "ids": f"{context.trace_id:032x} {context.span_id:016x}"}

    scope = traced_scope("/items/42")
    client = call(middleware(app), scope)

    spans = list(exporter.get_finished_spans())
    (server,) = server_spans(spans)
    (child,) = [span for span in spans if span.name == "load_item"]
    assert server.context is not None
    assert child.parent is not None
    assert server.parent is not None
    assert (
        "GET /items/{item_id}",
        "/items/{item_id}",
        200,
        TRACE_ID,
        PARENT_ID,
    ) == (
        server.name,
        server.attributes["http.route"] if server.attributes else None,
        server.attributes["http.response.status_code"] if server.attributes else None,
        f"{server.context.trace_id:032x}",
        f"{server.parent.span_id:016x}",
    )
    assert server.context.span_id == child.parent.span_id
    body = json.loads(client.body())
    assert f"{TRACE_ID} {server.context.span_id:016x}" == body["ids"]
    assert "fastapi.telemetry" in scope
    assert "/items/{item_id}" == only_finished(events)["route"]


def test_fastapis_own_span_without_hookkits_is_left_alone(
    events: list[Event], exporter: InMemorySpanExporter
) -> None:
    """The check above can fail: with no hookkit span for the request (no
    tracer), FastAPI's own telemetry makes its SERVER span as usual."""
    from fastapi import FastAPI

    provider = tracing_sink().provider
    tracing_sink().tracer = None
    app = FastAPI(telemetry={"tracer_provider": provider, "metrics": False, "logs": False})

    @app.get("/items/{item_id}")
    async def read_item(item_id: int) -> dict[str, int]:
        return {"item_id": item_id}

    scope = traced_scope("/items/42")
    call(middleware(app), scope)
    assert "fastapi.telemetry" not in scope
    assert 1 == len(server_spans(list(exporter.get_finished_spans())))
    assert 1 == len(finished(events))


def test_fastapis_500_and_exception(events: list[Event], exporter: InMemorySpanExporter) -> None:
    """FastAPI answers 500 itself for an exception, then re-raises it: the
    event has status 500 and the exception's class; the span is an error."""
    from fastapi import FastAPI

    app = FastAPI(telemetry={"tracing": False, "metrics": False, "logs": False})

    @app.get("/raise")
    async def fail() -> None:
        raise RuntimeError("fails before the response starts")

    with pytest.raises(RuntimeError):
        call(middleware(app), traced_scope("/raise"))
    fields = only_finished(events)
    assert (500, "RuntimeError", "/raise") == (
        fields["status"],
        fields["error_type"],
        fields["route"],
    )
    (server,) = server_spans(list(exporter.get_finished_spans()))
    assert ("GET /raise", "ERROR") == (server.name, server.status.status_code.name)


def test_defer_to_hookkit_span_only_when_there_is_one() -> None:
    """The scope key that turns FastAPI's own SERVER span off is set only
    for a request hookkit has a span for, and never overrides a value."""
    with_span = RequestScope("GET", "/", 0.0, 0, ids=SpanContext(1, 2, is_remote=False))
    without = RequestScope("GET", "/", 0.0, 0)
    scopes: list[Scope] = [{}, {}, {"fastapi.telemetry": "upstream"}]
    _defer_to_hookkit_span(with_span, scopes[0])
    _defer_to_hookkit_span(without, scopes[1])
    _defer_to_hookkit_span(with_span, scopes[2])
    expected: list[Scope] = [{"fastapi.telemetry": None}, {}, {"fastapi.telemetry": "upstream"}]
    assert expected == scopes


# -- wrap_worker_app --------------------------------------------------------------


class NoHooksWorker:
    """A worker class that never calls the request hooks."""

    def __init__(self, **apps: Any) -> None:
        for name, app in apps.items():
            setattr(self, name, app)


class HooksWorker(NoHooksWorker):
    """A worker class that calls them."""

    cfg: Any

    def handle_request(self, req: Any) -> None:
        self.cfg.pre_request(self, req)


def test_an_asgi_app_of_a_worker_without_the_hooks_is_wrapped() -> None:
    """The worker's ``asgi`` attribute holds an ASGI app and its class never
    calls the hooks: the app is wrapped, the middleware makes the events."""
    worker = NoHooksWorker(asgi=asgi_function)
    how = wrap_worker_app(worker, RUNTIME)
    wrapped = worker.asgi  # type: ignore[attr-defined]
    assert ("asgi", True, asgi_function, True, worker) == (
        how,
        isinstance(wrapped, RequestEvents),
        wrapped.app,
        wrapped.make_events,
        wrapped.worker,
    )


def test_an_asgi_app_in_the_wsgi_attribute_is_wrapped() -> None:
    """uvicorn-worker loads the app into ``wsgi`` (gunicorn's base class
    does): an ASGI app there is wrapped too."""
    worker = NoHooksWorker(wsgi=asgi_function)
    how = wrap_worker_app(worker, RUNTIME)
    assert ("asgi", True) == (how, isinstance(worker.wsgi, RequestEvents))  # type: ignore[attr-defined]


def test_wrapping_twice_does_not_wrap_twice() -> None:
    """A second ``post_worker_init`` (or a second call) keeps one wrapper."""
    worker = NoHooksWorker(asgi=asgi_function)
    first = wrap_worker_app(worker, RUNTIME)
    wrapped = worker.asgi  # type: ignore[attr-defined]
    second = wrap_worker_app(worker, RUNTIME)
    assert ("asgi", "asgi", True, asgi_function) == (
        first,
        second,
        worker.asgi is wrapped,  # type: ignore[attr-defined]
        wrapped.app,
    )


def test_a_worker_that_calls_the_hooks_gets_the_route_only_middleware() -> None:
    """A worker class that calls the hooks: its ASGI app is wrapped all the
    same, for the route, with ``make_events=False``."""
    worker = HooksWorker(asgi=AsgiObject())
    how = wrap_worker_app(worker, RUNTIME)
    wrapped = worker.asgi  # type: ignore[attr-defined]
    assert ("hooks", True, False) == (
        how,
        isinstance(wrapped, RequestEvents),
        wrapped.make_events,
    )


@pytest.mark.parametrize(
    ("worker", "expected"),
    [
        pytest.param(NoHooksWorker(wsgi=wsgi_function), "none", id="wsgi-app"),
        pytest.param(NoHooksWorker(wsgi=SyncCallObject()), "none", id="wsgi-object"),
        pytest.param(NoHooksWorker(), "none", id="no-app"),
        pytest.param(HooksWorker(wsgi=wsgi_function), "hooks", id="wsgi-app-hooks"),
    ],
)
def test_a_wsgi_app_is_not_wrapped(worker: NoHooksWorker, expected: str) -> None:
    """A WSGI app (or none) is left alone."""
    before = getattr(worker, "wsgi", None)
    how = wrap_worker_app(worker, RUNTIME)
    assert (expected, before) == (how, getattr(worker, "wsgi", None))


# -- Flask's route -------------------------------------------------------------------


@pytest.fixture
def flask_routes() -> Iterator[None]:
    """hookkit listens to Flask's ``request_started``; disconnected after."""
    import flask

    assert _frameworks.watch_flask_routes()
    yield
    flask.request_started.disconnect(_frameworks._note_flask_route)


def flask_request(path: str) -> tuple[str, dict[str, Any]]:
    """``path`` through a real Flask app's WSGI callable: (status, environ)."""
    from flask import Flask
    from werkzeug.test import EnvironBuilder

    app = Flask(__name__)

    @app.route("/hello/<name>")
    def hello(name: str) -> str:
        return f"hello, {name}"

    environ = EnvironBuilder(path=path).get_environ()
    statuses: list[str] = []

    def start_response(status: str, headers: Any, exc_info: Any = None) -> None:
        statuses.append(status)

    responder: Any = start_response
    body = app.wsgi_app(environ, responder)
    b"".join(body)
    getattr(body, "close", lambda: None)()
    return statuses[0], environ


def test_flask_rule_is_left_in_the_environ(flask_routes: None) -> None:
    """After the request, Flask's matched rule is in ``hookkit.route`` (Flask
    has cleared its own request from the environ by then)."""
    status, environ = flask_request("/hello/ada")
    assert ("200 OK", "/hello/<name>") == (status, environ.get("hookkit.route"))


def test_flask_404_has_no_route(flask_routes: None) -> None:
    """No rule matched: no route."""
    status, environ = flask_request("/nope")
    assert ("404 NOT FOUND", False) == (status, "hookkit.route" in environ)


def hookkits_listeners() -> int:
    """How many of Flask's ``request_started`` receivers are hookkit's."""
    import flask

    targets = [
        receiver() if isinstance(receiver, weakref.ref) else receiver
        for receiver in flask.request_started.receivers.values()
    ]
    return sum(1 for target in targets if target is _frameworks._note_flask_route)


def test_watching_flask_routes_twice_connects_once(flask_routes: None) -> None:
    """Connecting twice is harmless: blinker keeps one receiver."""
    assert _frameworks.watch_flask_routes()
    assert 1 == hookkits_listeners()


def test_without_flask_nothing_is_connected(monkeypatch: pytest.MonkeyPatch) -> None:
    """The app never imported Flask: nothing to listen to."""
    monkeypatch.delitem(sys.modules, "flask", raising=False)
    assert not _frameworks.watch_flask_routes()
