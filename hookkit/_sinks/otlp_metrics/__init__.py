"""OTLP metrics from the master: the one multiprocess aggregate, as OTLP.

``sink`` is ``OtlpMetricsSink`` (``HOOKKIT_OTLP_METRICS=on``): the master
alone, from a thread of its own, sends the aggregate the Prometheus sink
publishes with the official ``OTLPMetricExporter`` over HTTP. ``convert``
turns the metric families hookkit's collectors yield into the OpenTelemetry
SDK's ``MetricsData``; ``names`` is the table of OTLP names and units.
"""
