"""An ASGI app with one request that hangs in a coroutine with a known name,
for the stacks-on-demand tests (tests/test_status_stacks_live.py).

- ``/hang``: writes this worker's pid to ``hung.pid`` in the server's
  working directory, then awaits in ``stuck_in_here`` (30 s; the test stops
  the server long before). The loop stays free: the request is a pending
  asyncio task, listed with its await chain.
- anything else: 200 ok at once.
"""

import asyncio
import os


async def stuck_in_here():
    await asyncio.sleep(30)


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["path"] == "/hang":
        with open("hung.pid.tmp", "w") as out:
            out.write(str(os.getpid()))
        os.replace("hung.pid.tmp", "hung.pid")
        await stuck_in_here()
    body = b"ok\n"
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"text/plain"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
