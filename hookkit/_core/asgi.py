"""Request events for ASGI apps, from the app's side of the worker.

Two jobs, one middleware, wrapped around the worker's ASGI app once it is
loaded (``post_worker_init``):

- **Worker classes that never call the request hooks.** uvicorn-worker's
  ``UvicornWorker`` hands its sockets to uvicorn's own server, which knows
  nothing of gunicorn's ``pre_request`` and ``post_request``. There the
  middleware calls hookkit's ``pre_request`` and ``post_request`` itself,
  with request and response objects shaped like gunicorn's, so metrics,
  spans and the access line are the same as on every other worker class.
- **The route template.** Starlette and FastAPI put the matched route in
  the ASGI scope (``scope["route"]``), which gunicorn's own ASGI worker does
  not pass to ``post_request``. The middleware notes it on the request's
  scope for ``post_request``.

Only ``http`` scopes are requests: ``lifespan`` is not one, and a WebSocket
connection is not an HTTP request (neither makes a request event, a span or
busy time). A WebSocket is a *session* instead, on every ASGI worker class
(neither gunicorn's ASGI worker nor uvicorn calls the request hooks for it):
it opens when the app sends ``websocket.accept`` and ends, once, at the
first of the app sending ``websocket.close``, the app receiving
``websocket.disconnect``, or the app returning, raising or being cancelled.
A handshake the app refuses (``websocket.close`` or an HTTP response before
accepting, or an exception) is no session. Each session is two events,
``websocket_opened`` and ``websocket_closed`` (with its duration), at debug
level: their cost is per session, never per message.

Whether a worker class calls the request hooks is read from the class: a
method of it (or of a base class) that refers to ``pre_request``. gunicorn's
ASGI worker calls them from its protocol module rather than from the class,
so it is named. Should the reading be wrong for some class, the
middleware still checks, per request, whether ``pre_request`` already opened
the request, so a request is never counted twice.
"""

from __future__ import annotations

import asyncio
import inspect
import sys
import time
import types
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from hookkit._core import events as ev
from hookkit._core.http import header_pairs

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

# The ASGI worker classes whose request hooks are called outside the class.
_HOOKS_OUTSIDE_THE_CLASS = ("gunicorn.workers.gasgi.ASGIWorker",)


def calls_request_hooks(worker_class: type) -> bool:
    """Whether ``worker_class`` calls gunicorn's ``pre_request`` itself."""
    for cls in worker_class.__mro__:
        if f"{cls.__module__}.{cls.__qualname__}" in _HOOKS_OUTSIDE_THE_CLASS:
            return True
        for value in vars(cls).values():
            code = getattr(getattr(value, "__func__", value), "__code__", None)
            if isinstance(code, types.CodeType) and _mentions(code, "pre_request"):
                return True
    return False


def _mentions(code: types.CodeType, name: str) -> bool:
    if name in code.co_names:
        return True
    return any(
        isinstance(const, types.CodeType) and _mentions(const, name) for const in code.co_consts
    )


def is_asgi_app(app: object) -> bool:
    """Whether ``app`` is an ASGI 3 callable (a coroutine function, or an
    object whose ``__call__`` is one)."""
    if inspect.iscoroutinefunction(app):
        return True
    # An instance's __call__ is looked up on its class, as Python calls it.
    call = vars(type(app)).get("__call__") or next(
        (vars(cls)["__call__"] for cls in type(app).__mro__ if "__call__" in vars(cls)), None
    )
    return call is not None and inspect.iscoroutinefunction(call)


def route_from_scope(scope: Scope) -> str | None:
    """The route template an ASGI app matched: ``scope["hookkit.route"]``
    (any app can set it), or Starlette's and FastAPI's ``scope["route"]``
    prefixed with the path it is mounted under (``root_path``)."""
    route = scope.get("hookkit.route")
    if isinstance(route, str):
        return route
    matched = scope.get("route")
    path = getattr(matched, "path", None)
    if not isinstance(path, str):
        return None
    root = scope.get("root_path") or ""
    if not isinstance(root, str):
        return path
    if _is_mount(matched):
        # A plain app mounted in Starlette (StaticFiles, a sub-app): the
        # Mount stays in scope["route"], and root_path already ends with
        # the path it matched.
        return root if root.endswith(path) else path
    return f"{root}{path}"


def _is_mount(route: object) -> bool:
    routing = sys.modules.get("starlette.routing")
    mount = getattr(routing, "Mount", None)
    return isinstance(mount, type) and isinstance(route, mount)


class AsgiRequest:
    """An ASGI ``http`` scope with the attributes hookkit reads from
    gunicorn's request objects."""

    __slots__ = ("headers_bytes", "method", "path", "peer_addr", "query", "scheme", "version")

    def __init__(self, scope: Scope) -> None:
        self.method = str(scope.get("method") or "")
        self.path = str(scope.get("path") or "")
        self.query = bytes(scope.get("query_string") or b"").decode("latin-1")
        self.scheme = str(scope.get("scheme") or "http")
        self.version = str(scope.get("http_version") or "1.1")
        self.headers_bytes = list(scope.get("headers") or ())
        client = scope.get("client")
        self.peer_addr = tuple(client) if client else None

    @property
    def headers(self) -> list[tuple[str, str]]:
        """(UPPER-CASE name, value) pairs, as gunicorn's requests have them."""
        return [(name.upper(), value) for name, value in header_pairs(self.headers_bytes)]


class AsgiResponse:
    """What the client was sent, noted from the app's ``send`` messages:
    the attributes hookkit reads from gunicorn's ASGI response info."""

    __slots__ = ("complete", "headers", "sent", "started", "status")

    def __init__(self) -> None:
        self.status: int | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.sent = 0
        self.started = False
        self.complete = False

    def note(self, message: Message) -> None:
        """Note one message the app sends."""
        kind = message.get("type")
        if kind == "http.response.start":
            self.started = True
            self.status = int(message.get("status", 200))
            self.headers = list(message.get("headers") or ())
        elif kind == "http.response.body":
            self.sent += len(message.get("body") or b"")
            if not message.get("more_body", False):
                self.complete = True


class RequestEvents:
    """The middleware: see the module docstring. ``make_events`` is True for
    worker classes that never call the request hooks."""

    def __init__(self, app: App, runtime: Any, worker: Any, make_events: bool) -> None:
        self.app = app
        self.runtime = runtime
        self.worker = worker
        self.make_events = make_events

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "http":
            if scope.get("type") == "websocket":
                await self._websocket(scope, receive, send)
            else:
                await self.app(scope, receive, send)
            return
        opened = self.runtime.in_flight.current() if self.runtime.in_flight.scopes else None
        if opened is not None or not self.make_events:
            await self._noting_route(opened, scope, receive, send)
            return
        await self._with_events(scope, receive, send)

    async def _noting_route(self, opened: Any, scope: Scope, receive: Receive, send: Send) -> None:
        """The worker called pre_request: note the route and the app's
        exception (a framework may have answered 500 itself, and the worker
        then sees a complete response and logs nothing)."""
        if opened is not None:
            _defer_to_hookkit_span(opened, scope)
        try:
            await self.app(scope, receive, send)
        except Exception as exc:
            if opened is not None and opened.error is None:
                opened.error = exc
            raise
        finally:
            if opened is not None:
                opened.route = route_from_scope(scope)

    async def _with_events(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = AsgiRequest(scope)
        response = AsgiResponse()

        async def noting_send(message: Message) -> None:
            response.note(message)
            await send(message)

        # gunicorn's worker classes count requests in worker.nr (the exit
        # reason max_requests reads it); uvicorn counts its own.
        self.worker.nr = getattr(self.worker, "nr", 0) + 1
        self.runtime.pre_request(self.worker, request)
        opened = self.runtime.in_flight.current()
        if opened is not None:
            _defer_to_hookkit_span(opened, scope)
        try:
            await self.app(scope, receive, noting_send)
        except asyncio.CancelledError:
            # The server cancelled the request (shutting down): a client
            # still there got nothing unless the response had started.
            self._finish(request, response, scope)
            raise
        except BaseException:
            # The server answers 500 for an app that raised before it
            # started the response. post_request runs here, inside the
            # except clause, so that it sees the exception.
            if not response.started:
                response.status = 500
            self._finish(request, response, scope)
            raise
        if not response.started:
            response.status = 500  # the server's answer to an app that sent nothing
        self._finish(request, response, scope)

    def _finish(self, request: AsgiRequest, response: AsgiResponse, scope: Scope) -> None:
        route = route_from_scope(scope)
        environ = {"hookkit.route": route} if route else {}
        self.runtime.post_request(self.worker, request, environ, response)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A WebSocket connection: a session from the app's accept to its
        end (see the module docstring). Every message passes through
        unchanged; only accept, close and disconnect are looked at."""
        session = WebSocketSession(self.runtime, scope)

        async def noting_receive() -> Message:
            message = await receive()
            if message.get("type") == "websocket.disconnect":
                session.end()
            return message

        async def noting_send(message: Message) -> None:
            kind = message.get("type")
            if kind == "websocket.accept":
                await send(message)  # a failed accept opens nothing
                session.start()
            elif kind == "websocket.close":
                try:
                    await send(message)  # the close handshake is part of it
                finally:
                    session.end()
            else:
                await send(message)

        try:
            await self.app(scope, noting_receive, noting_send)
        finally:
            session.end()


class WebSocketSession:
    """One WebSocket connection, as the app handles it: ``start`` on the
    app's accept, ``end`` (any number of times) when it is over. A
    connection ended before it started was refused: nothing is emitted, and
    a later accept (an app error) opens nothing. Emits ``websocket_opened``
    and ``websocket_closed`` once each, never raising into the app."""

    __slots__ = ("opened_at", "runtime", "scope", "state")

    NEW, OPEN, OVER = 0, 1, 2

    def __init__(self, runtime: Any, scope: Scope) -> None:
        self.runtime = runtime
        self.scope = scope
        self.state = self.NEW
        self.opened_at = 0.0

    def start(self) -> None:
        """The app accepted the connection: the session opens."""
        if self.state != self.NEW:
            return
        self.state = self.OPEN
        self.opened_at = time.monotonic()
        self._emit(ev.WEBSOCKET_OPENED, route=route_from_scope(self.scope))

    def end(self) -> None:
        """The session is over (or, not opened, was refused); once."""
        if self.state == self.OVER:
            return
        opened, self.state = self.state == self.OPEN, self.OVER
        if opened:
            self._emit(
                ev.WEBSOCKET_CLOSED,
                route=route_from_scope(self.scope),
                duration_seconds=round(time.monotonic() - self.opened_at, 6),
            )

    def _emit(self, name: str, **fields: object) -> None:
        try:
            self.runtime.emit(name, None, "debug", **fields)
        except Exception as exc:  # the sinks' errors never get here; hookkit's own
            self.runtime.dispatcher.internal_error(name, exc)


def _defer_to_hookkit_span(opened: Any, scope: Scope) -> None:
    """FastAPI's native telemetry starts a SERVER span of its own for each
    request, parented only from the request headers: beside hookkit's, a
    second SERVER span, a sibling rather than a child. The scope key it
    reads as "telemetry is handled upstream" (as for a mounted app) turns it
    off for requests hookkit traces; the app's own spans still nest under
    hookkit's span, which is current."""
    if opened.ids is not None:
        scope.setdefault("fastapi.telemetry", None)


def wrap_worker_app(worker: Any, runtime: Any) -> str:
    """Wrap the worker's ASGI app, if it has one; returns how the request
    events are made: ``hooks`` (the worker class calls the request hooks),
    ``asgi`` (hookkit's middleware calls them) or ``none``."""
    hooks = calls_request_hooks(type(worker))
    for attribute in ("asgi", "wsgi"):  # gunicorn's ASGI worker, others
        app = getattr(worker, attribute, None)
        if app is not None and is_asgi_app(app):
            if not isinstance(app, RequestEvents):
                setattr(worker, attribute, RequestEvents(app, runtime, worker, not hooks))
            return "hooks" if hooks else "asgi"
    return "hooks" if hooks else "none"
