"""OTLP metrics from the master: the one multiprocess aggregate, as OTLP.

Work in progress (issue 14): ``convert`` turns the metric families hookkit's
collectors yield into the OpenTelemetry SDK's ``MetricsData``, for the
official ``OTLPMetricExporter`` to send; ``names`` is the table of OTLP names
and units. No sink yet: nothing here is wired into the drop-in.
"""
