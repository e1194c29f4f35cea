"""gunicorn's config for the webhook example: hookkit's drop-in applies it.

    cd examples/webhook_sink
    WEBHOOK_URL=http://127.0.0.1:9000/gunicorn PYTHONPATH=.:.. \\
        gunicorn -c python:hookkit.conf app:app

(``PYTHONPATH``: ``webhook_sink`` from here, the examples' ``app`` from
``examples/``.)

Every ``worker_exited`` event (a worker recycled, killed, crashed, ...) is
POSTed as JSON to ``$WEBHOOK_URL``; hookkit's own logs, metrics and tracing
run as usual beside it.
"""

import os

from webhook_sink import WebhookSink

import hookkit

workers = 2

hookkit.configure(
    sinks=[
        WebhookSink(
            os.environ.get("WEBHOOK_URL", "http://127.0.0.1:9000/gunicorn"),
            events=("worker_exited",),
            queue_size=1000,
            timeout=2.0,
        )
    ]
)
