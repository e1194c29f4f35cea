"""structlog processors that users can put into their own chains.

```pycon
>>> import structlog, hookkit.processors
>>> structlog.configure(processors=[
...     hookkit.processors.add_pid,
...     hookkit.processors.add_worker_info,
...     structlog.processors.JSONRenderer(),
... ])
```

``add_trace_context`` adds ``trace_id`` and ``span_id`` (lower-case hex, as
OpenTelemetry shows them) while a recording span is current: inside a
request that hookkit traces, the request's span or the app's own.

``add_worker_info`` adds ``worker_pid`` and ``worker_age`` (gunicorn's spawn
counter for the worker, ``worker.age``) in a gunicorn worker where hookkit's
``post_fork`` ran, and nothing elsewhere.

``add_timestamp`` adds ``timestamp``, ISO-8601 in UTC.

Importing this module costs what structlog costs: it imports nothing of
Prometheus, the OpenTelemetry SDK or gunicorn.
"""

from __future__ import annotations

from hookkit._sinks.logs.processors import (
    add_pid,
    add_timestamp,
    add_trace_context,
    add_worker_info,
)

__all__ = [
    "add_pid",
    "add_timestamp",
    "add_trace_context",
    "add_worker_info",
]
