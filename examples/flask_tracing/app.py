"""Flask under hookkit's tracing, with the contrib Flask instrumentation.

Run it from this directory (it is self-contained: no gunicorn.conf.py here,
so only the drop-in's defaults and the environment apply)::

    pip install hookkit flask opentelemetry-instrumentation-flask
    cd examples/flask_tracing
    OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 OTEL_SERVICE_NAME=flask-tracing \\
        gunicorn -c python:hookkit.conf app:app
    curl http://127.0.0.1:8000/hello/ada

Each request then gives one trace of three spans:

- ``GET /hello/<name>``, SERVER, from hookkit: it starts in gunicorn's
  ``pre_request`` (continuing the caller's ``traceparent``, if any) and
  ends in ``post_request``; hookkit names it from Flask's matched rule, and
  sets ``http.route`` from it;
- ``GET /hello/<name>``, INTERNAL, from ``FlaskInstrumentor``: a span is
  current when Flask's instrumentation starts its own, so it makes an
  INTERNAL child instead of a second SERVER span;
- ``greet``, INTERNAL, this app's own span, a child of Flask's.

hookkit builds the tracer provider in each worker once the app is loaded
(``post_worker_init``), and makes it the global one: the tracers asked for
here at import time, before it exists, are proxies that use it from then on.
Do not install a provider in this module unless you mean to: hookkit would
then use yours, with your exporters.
"""

from flask import Flask
from opentelemetry import trace
from opentelemetry.instrumentation.flask import FlaskInstrumentor

app = Flask(__name__)
FlaskInstrumentor().instrument_app(app)

tracer = trace.get_tracer("examples.flask_tracing")


@app.get("/hello/<name>")
def hello(name: str) -> dict[str, str]:
    with tracer.start_as_current_span("greet") as span:
        span.set_attribute("greeting.name", name)
        return {"message": f"hello, {name}"}
