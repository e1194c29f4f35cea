"""A first end-to-end check: the drop-in serves and logs JSON."""

import pytest

from hookkit._face.gunicorn_process import http_get, match

pytestmark = [pytest.mark.integration, pytest.mark.compat]


def test_dropin_serves_and_logs_server_ready(serve):
    """`gunicorn -c python:hookkit.conf` serves requests and logs when_ready as JSON."""
    server = serve("apps.wsgi:app", "-w", "1")
    server.wait_for(match(event="worker_booted"))
    assert http_get(server.port, "/")[0] == 200
    ready = server.events(match(event="server_ready"))[0]
    assert ready["hook"] == "when_ready"
    assert ready["workers"] == 1
