"""An ASGI app for the metrics tests, served by gunicorn's own ASGI worker
(the routes of ``apps.metrics_app`` that apply):

- ``/``: 200;
- ``/status/CODE``: answers CODE;
- ``/raise``: raises before the response starts (gunicorn sends 500);
- ``/sleep?S``: sleeps S seconds, then 200.
"""

import asyncio

from apps.asgi import lifespan


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    path = scope["path"]
    status = 200
    if path.startswith("/status/"):
        status = int(path.rsplit("/", 1)[1])
    elif path == "/raise":
        raise RuntimeError("fails before the response starts")
    elif path == "/sleep":
        await asyncio.sleep(float(scope.get("query_string", b"").decode() or "60"))
    body = b"ok\n"
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"3")],
        }
    )
    await send({"type": "http.response.body", "body": body})
