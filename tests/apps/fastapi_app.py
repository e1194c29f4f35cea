"""A FastAPI app for the ASGI request tests, served by uvicorn-worker's
``UvicornWorker`` (which never calls gunicorn's request hooks) and by
gunicorn's own ASGI worker, unchanged. Bodies carry the trace and span id
current inside the app (``"ids": "TRACE SPAN"``).

- ``/items/{item_id}``: 200, with a span of the app's own (``load_item``);
- ``/status/{code}``: answers ``code``;
- ``/raise``: raises before the response starts (the server answers 500);
- ``/raise-mid-body``: starts a 200 streamed response, then raises;
- ``/stream?chunks=N``: N chunks, 0.1 s apart;
- ``/block?seconds=S``: blocks the event loop S seconds (``time.sleep``);
- ``/sleep?seconds=S``: awaits S seconds;
- ``/ws``: a WebSocket that echoes one message.
Its lifespan handler runs at start-up and shutdown (not a request).
"""

import asyncio
import contextlib
import time

from fastapi import FastAPI, Response, WebSocket
from fastapi.responses import StreamingResponse
from opentelemetry import trace

tracer = trace.get_tracer("tests.apps.fastapi_app")


@contextlib.asynccontextmanager
async def lifespan(app):
    yield


app = FastAPI(lifespan=lifespan)


def ids():
    context = trace.get_current_span().get_span_context()
    return f"{context.trace_id:032x} {context.span_id:016x}"


@app.get("/items/{item_id}")
async def read_item(item_id: int):
    seen = ids()
    with tracer.start_as_current_span("load_item"):
        await asyncio.sleep(0)
    return {"item_id": item_id, "ids": seen}


@app.get("/status/{code}")
async def status(code: int):
    return Response(content=ids(), status_code=code)


@app.get("/raise")
async def fail():
    raise RuntimeError("fails before the response starts")


@app.get("/raise-mid-body")
async def fail_mid_body():
    async def body():
        yield b"first chunk\n"
        raise RuntimeError("fails in the middle of the body")

    return StreamingResponse(body(), media_type="text/plain")


@app.get("/stream")
async def stream(chunks: int = 3):
    seen = ids()

    async def body():
        yield (seen + "\n").encode()
        for _ in range(chunks):
            await asyncio.sleep(0.1)
            yield b"chunk\n"

    return StreamingResponse(body(), media_type="text/plain")


@app.get("/block")
async def block(seconds: float = 60.0):
    time.sleep(seconds)
    return {"blocked": seconds}


@app.get("/sleep")
async def sleep(seconds: float = 60.0):
    await asyncio.sleep(seconds)
    return {"slept": seconds}


@app.websocket("/ws")
async def echo(websocket: WebSocket):
    await websocket.accept()
    await websocket.send_text(await websocket.receive_text())
    await websocket.close()
