"""Every sink's error series exists at 0 from start-up, derived from the
configured sinks (hookkit's own and a user's), so that the shipped
``HookkitSinkErrors`` alert's ``increase()`` sees the first error.

The failures are injected by the user's ``gunicorn.conf.py``, which the
drop-in runs in the master before the first fork: each sink's
``request_finished`` raises once, for the request to ``/fail``, after doing
its work (so the span still ends and its context is left).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from hookkit._face.gunicorn_process import http_get, match
from tests.otlp import OtlpReceiver
from tests.scrape import samples, scrape_text
from tests.traced import export_env

pytestmark = pytest.mark.integration

USER_CONFIG = """\
import hookkit
from hookkit._sinks.logs.sink import LogSink
from hookkit._sinks.prometheus.sink import PrometheusSink
from hookkit._sinks.tracing.sink import TracingSink


class Faulty(Exception):
    pass


def failing_on_fail(method):
    def request_finished(self, request):
        method(self, request)
        if request.path == "/fail":
            raise Faulty(f"{self.name} fails for /fail")
    return request_finished


for cls in (LogSink, PrometheusSink, TracingSink):
    cls.request_finished = failing_on_fail(cls.request_finished)


class Mine(hookkit.Sink):
    name = "mine"

    def request_finished(self, request):
        if request.path == "/fail":
            raise Faulty("mine fails for /fail")


hookkit.configure(sinks=[Mine()])
"""

SINKS = ("logs", "metrics", "tracing", "mine", "hookkit")


def error_series(port: int) -> dict[str, float]:
    """``hookkit_sink_errors_total`` by sink, as scraped now."""
    return {
        sample.labels["sink"]: sample.value
        for sample in samples(scrape_text(port))
        if sample.name == "hookkit_sink_errors_total"
    }


def test_each_sinks_error_series_is_0_then_counts(serve, tmp_path: Path) -> None:
    """Right after start-up (tracing configured, a user sink registered),
    ``/metrics`` has ``hookkit_sink_errors_total`` at 0 for every sink; after
    one request on which each sink fails, each of the failing sinks' series
    is 1 or more, hookkit's own still 0, and the request was answered."""
    (tmp_path / "gunicorn.conf.py").write_text(USER_CONFIG)
    with OtlpReceiver() as rx:
        # The access line on: the log sink has work on every request.
        env = export_env(rx.endpoint, HOOKKIT_ACCESS_LOG="on")
        server = serve("apps.wsgi:app", env=env)
        server.wait_for(match(event="worker_booted"))
        before = error_series(server.metrics_port)

        assert 200 == http_get(server.port, "/fail")[0]
        deadline = time.monotonic() + 10
        after = error_series(server.metrics_port)
        while min(after.get(sink, 0) for sink in SINKS[:-1]) < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
            after = error_series(server.metrics_port)

    # The status sink (on by default) has a series too, and no error.
    assert dict.fromkeys((*SINKS, "status"), 0.0) == before
    assert dict.fromkeys(SINKS[:-1], True) == {sink: after[sink] >= 1 for sink in SINKS[:-1]}
    assert 0.0 == after["hookkit"]
    assert 0.0 == after["status"]
