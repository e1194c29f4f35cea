"""FastAPI on gunicorn with uvicorn-worker, under hookkit's metrics and tracing.

Run it from this directory (it is self-contained: no gunicorn.conf.py here,
so only the drop-in's defaults and the environment apply)::

    pip install hookkit fastapi uvicorn-worker
    cd examples/fastapi_uvicorn
    OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 OTEL_SERVICE_NAME=fastapi-uvicorn \\
        gunicorn -k uvicorn_worker.UvicornWorker -c python:hookkit.conf app:app
    curl http://127.0.0.1:8000/items/42
    curl -N 'http://127.0.0.1:8000/stream?chunks=5'
    curl http://127.0.0.1:9191/metrics   # hookkit's metrics (HOOKKIT_METRICS_BIND)

``UvicornWorker`` hands each connection to uvicorn, which never calls
gunicorn's ``pre_request`` and ``post_request`` hooks. hookkit sees that
from the worker class and, once the app is loaded (``post_worker_init``),
wraps it in a small ASGI middleware that calls them itself: each request is
counted once in ``/metrics`` and logged once, as on gunicorn's other worker
classes, and gives one SERVER span, hookkit's, continuing the caller's
``traceparent``, if any.

- The span and the ``http_route`` label are named from FastAPI's matched
  route, ``GET /items/{item_id}``, never from the raw path;
- the span is current in the request's asyncio task while the app runs:
  the ``load_item`` span made here is its child;
- FastAPI's own telemetry would start a second SERVER span beside hookkit's;
  for the requests hookkit traces, it is told the request is traced upstream;
- ``/stream`` answers in chunks 0.1 s apart: the request's duration and its
  span last until the last chunk went out.

hookkit builds the tracer provider in each worker once the app is loaded,
and makes it the global one: the tracer asked for here at import time,
before it exists, is a proxy that uses it from then on.
"""

import asyncio
from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from opentelemetry import trace

tracer = trace.get_tracer("examples.fastapi_uvicorn")

app = FastAPI()


@app.get("/items/{item_id}")
async def read_item(item_id: int) -> dict[str, int]:
    with tracer.start_as_current_span("load_item") as span:
        span.set_attribute("item.id", item_id)
        await asyncio.sleep(0)  # where a real app would await its database
        return {"item_id": item_id}


@app.get("/stream")
async def stream(chunks: int = 3) -> StreamingResponse:
    async def body() -> AsyncIterator[bytes]:
        for n in range(chunks):
            if n:
                await asyncio.sleep(0.1)
            yield f"chunk {n}\n".encode()

    return StreamingResponse(body(), media_type="text/plain")
