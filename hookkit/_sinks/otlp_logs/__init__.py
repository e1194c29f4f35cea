"""OTLP logs: hookkit's events and gunicorn's error lines as OpenTelemetry
log records, each sent by the process that produced it.

``sink`` is ``OtlpLogsSink`` (``HOOKKIT_OTLP_LOGS=on``); ``config`` checks,
in the master at start-up, the SDK's release and the ``OTEL_*`` variables;
``records`` maps an event or a stdlib log line to a record; ``export`` is
one process's pipeline (the SDK's provider, batch processor and OTLP/HTTP
exporter, failures counted, waits bounded); ``handler`` takes gunicorn's
``gunicorn.error`` lines.
"""
