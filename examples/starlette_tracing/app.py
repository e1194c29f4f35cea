"""Starlette on gunicorn's own ASGI worker, under hookkit's tracing.

Run it from this directory (it is self-contained: no gunicorn.conf.py here,
so only the drop-in's defaults and the environment apply)::

    pip install hookkit starlette
    cd examples/starlette_tracing
    OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 OTEL_SERVICE_NAME=starlette-tracing \\
        gunicorn -k asgi -c python:hookkit.conf app:app
    curl http://127.0.0.1:8000/items/42

``-k asgi`` is gunicorn's own ASGI worker: no uvicorn, and no FastAPI.
Each request gives one SERVER span from hookkit (``pre_request`` to
``post_request``, continuing the caller's ``traceparent``, if any), current
in the request's asyncio task while the app runs; the ``load_item`` span
made here is its child. No ASGI instrumentation is needed for that.
"""

from opentelemetry import trace
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

tracer = trace.get_tracer("examples.starlette_tracing")


async def item(request: Request) -> JSONResponse:
    item_id = request.path_params["item_id"]
    with tracer.start_as_current_span("load_item") as span:
        span.set_attribute("item.id", item_id)
        return JSONResponse({"item_id": item_id})


app = Starlette(routes=[Route("/items/{item_id}", item)])
