"""An ASGI app for the tracing tests on gunicorn's ASGI worker, with the
routes of ``apps.traced_wsgi`` that apply. Each body is ``TRACE_ID SPAN_ID``
as seen inside the app.

- ``/``: 200, with a span of the app's own (``app.work``);
- ``/status/CODE``: answers CODE;
- ``/raise``: raises before the response starts (gunicorn sends 500);
- ``/sleep?S``: awaits S seconds;
- ``/stream?N``: N chunks, 0.1 s apart;
- a WebSocket connection to any path: accepted, each text message echoed
  until the client closes.
"""

import asyncio

from apps.asgi import lifespan
from opentelemetry import trace

tracer = trace.get_tracer("tests.apps.traced_asgi")


def current_ids():
    context = trace.get_current_span().get_span_context()
    return f"{context.trace_id:032x} {context.span_id:016x}\n".encode()


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    if scope["type"] == "websocket":
        await echo(receive, send)
        return
    path = scope["path"]
    query = scope.get("query_string", b"").decode()
    body = current_ids()
    status = 200
    if path == "/":
        with tracer.start_as_current_span("app.work"):
            await asyncio.sleep(0)
    elif path.startswith("/status/"):
        status = int(path.rsplit("/", 1)[1])
    elif path == "/raise":
        raise RuntimeError("fails before the response starts")
    elif path == "/sleep":
        await asyncio.sleep(float(query or "60"))
    elif path == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body, "more_body": True})
        for _ in range(int(query or "3")):
            await asyncio.sleep(0.1)
            await send({"type": "http.response.body", "body": b"chunk\n", "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def echo(receive, send):
    while True:
        message = await receive()
        if message["type"] == "websocket.connect":
            await send({"type": "websocket.accept"})
        elif message["type"] == "websocket.receive":
            await send({"type": "websocket.send", "text": message.get("text") or ""})
        else:
            return
