"""The log sink: structured lines of gunicorn's life (structlog)."""
