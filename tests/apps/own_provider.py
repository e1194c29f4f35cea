"""A WSGI app that installs its own OpenTelemetry SDK tracer provider at
import (in the worker, after fork), as ``opentelemetry-instrument`` or an
app's own set-up does; it exports to ``APP_OTLP_ENDPOINT``."""

import os

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

provider = TracerProvider(resource=Resource.create({"service.name": "own-provider-app"}))
provider.add_span_processor(
    BatchSpanProcessor(
        OTLPSpanExporter(endpoint=os.environ["APP_OTLP_ENDPOINT"]), schedule_delay_millis=50
    )
)
trace.set_tracer_provider(provider)


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "3")])
    return [b"ok\n"]
