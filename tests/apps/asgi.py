"""The ASGI app the integration tests serve with gunicorn's own ASGI worker
(same routes as ``apps.wsgi`` where they apply)."""

import asyncio


async def stuck_in_sleep(seconds):
    await asyncio.sleep(seconds)


async def lifespan(receive, send):
    """Answer the ASGI lifespan protocol: startup and shutdown complete."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    path = scope["path"]
    if path == "/sleep":
        await stuck_in_sleep(float(scope.get("query_string", b"").decode() or "60"))
    elif path == "/raise-before":
        raise RuntimeError("before the response started")
    elif path == "/raise-mid-body":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"first chunk\n", "more_body": True})
        raise RuntimeError("in the middle of the body")
    body = b"hello\n"
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain")],
        }
    )
    await send({"type": "http.response.body", "body": body})
