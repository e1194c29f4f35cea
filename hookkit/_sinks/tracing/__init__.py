"""The tracing sink: an OpenTelemetry SERVER span per request."""
