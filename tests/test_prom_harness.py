"""The Prometheus test harness (``tests/prom.py``) against a real Prometheus.

A tiny exporter made here (``http.server`` on 127.0.0.1, in a thread) serves
fixed exposition text; one Prometheus, shared by the module because its first
scrape comes ~5 s after start, scrapes it alongside two exporters that want
basic auth: one accepts the credentials Prometheus sends, one answers 401.
"""

from __future__ import annotations

import base64
import json
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.prom import (
    MISSING,
    PROMETHEUS,
    PROMTOOL,
    PrometheusServer,
    prometheus,
    promtool_check_metrics,
    scrape_config,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(PROMETHEUS is None or PROMTOOL is None, reason=MISSING),
]

GOOD = """\
# HELP demo_requests_total Requests served.
# TYPE demo_requests_total counter
demo_requests_total 42
# HELP demo_request_duration_seconds Time spent serving requests.
# TYPE demo_request_duration_seconds histogram
demo_request_duration_seconds_bucket{le="0.1"} 10
demo_request_duration_seconds_bucket{le="0.5"} 60
demo_request_duration_seconds_bucket{le="1"} 100
demo_request_duration_seconds_bucket{le="+Inf"} 100
demo_request_duration_seconds_sum 40
demo_request_duration_seconds_count 100
"""

CREDENTIALS = ("hookkit", "s3cret")


class Exporter:
    """Serves ``body`` as /metrics on 127.0.0.1:<free port> from a thread;
    with ``credentials``, answers 401 to requests without exactly those."""

    def __init__(
        self,
        body: str,
        credentials: tuple[str, str] | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        payload = body.encode()
        expected = None
        if credentials is not None:
            expected = "Basic " + base64.b64encode(":".join(credentials).encode()).decode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if expected is not None and self.headers.get("Authorization") != expected:
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="metrics"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.target = f"127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture(scope="module")
def exporters() -> Iterator[dict[str, Exporter]]:
    """An open exporter, one that accepts ``CREDENTIALS``, one that rejects them."""
    started = {
        "open": Exporter(GOOD),
        "locked": Exporter(GOOD, credentials=CREDENTIALS),
        "rejecting": Exporter(GOOD, credentials=("someone", "else")),
    }
    yield started
    for exporter in started.values():
        exporter.close()


@pytest.fixture(scope="module")
def prom(exporters: dict[str, Exporter]) -> Iterator[PrometheusServer]:
    """Prometheus scraping all three exporters with ``CREDENTIALS``, once each
    target has been scraped."""
    targets = [exporter.target for exporter in exporters.values()]
    with prometheus(targets, basic_auth=CREDENTIALS) as server:
        server.wait_targets(
            lambda ts: len(ts) == 3 and all(t["health"] != "unknown" for t in ts), timeout=15
        )
        yield server


def test_open_target_is_up(prom, exporters):
    """Prometheus scrapes the exporter: ``up`` is 1 for it."""
    instance = exporters["open"].target
    assert 1.0 == prom.wait_for(
        f'up{{job="hookkit",instance="{instance}"}}', lambda v: v is not None
    )


def test_counter_is_scraped(prom, exporters):
    """The counter's value arrives as served."""
    instance = exporters["open"].target
    assert 42.0 == prom.wait_for(
        f'demo_requests_total{{instance="{instance}"}}', lambda v: v is not None
    )


def test_histogram_quantile(prom, exporters):
    """``histogram_quantile`` works on the scraped buckets: the median falls
    40/50 of the way into the (0.1, 0.5] bucket."""
    instance = exporters["open"].target
    expr = f'histogram_quantile(0.5, demo_request_duration_seconds_bucket{{instance="{instance}"}})'
    assert pytest.approx(0.42) == prom.wait_for(expr, lambda v: v is not None)


def test_basic_auth_is_sent(prom, exporters):
    """With ``basic_auth``, a target wanting those credentials is up."""
    instance = exporters["locked"].target
    assert 42.0 == prom.wait_for(
        f'demo_requests_total{{instance="{instance}"}}', lambda v: v is not None
    )


def test_target_answering_401_is_down_with_the_error(prom, exporters):
    """A target answering 401 is down, ``up`` is 0, and ``lastError`` says why."""
    instance = exporters["rejecting"].target
    (target,) = [t for t in prom.targets() if t["labels"]["instance"] == instance]
    assert ("down", "server returned HTTP status 401 Unauthorized") == (
        target["health"],
        target["lastError"],
    )
    assert 0.0 == prom.query_value(f'up{{instance="{instance}"}}')
    assert prom.query(f'demo_requests_total{{instance="{instance}"}}') == []


def test_query_value_of_nothing_is_none(prom):
    """``query_value`` is None for a query without samples."""
    assert None is prom.query_value("no_such_metric")


def test_promtool_accepts_good_text():
    """The exporter's text passes ``promtool check metrics`` cleanly."""
    assert (0, "") == promtool_check_metrics(GOOD)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            "# HELP demo_requests Requests.\n# TYPE demo_requests counter\ndemo_requests 1\n",
            'demo_requests counter metrics should have "_total" suffix',
        ),
        ("# TYPE demo_workers gauge\ndemo_workers 2\n", "demo_workers no help text"),
        (
            "# HELP demo_latency_milliseconds L.\n"
            "# TYPE demo_latency_milliseconds gauge\ndemo_latency_milliseconds 3\n",
            'demo_latency_milliseconds use base unit "seconds" instead of "milliseconds"',
        ),
    ],
    ids=["counter-without-total", "no-help", "non-base-unit"],
)
def test_promtool_flags_lint_problems(text, problem):
    """promtool exits 3 on lint problems and names each one."""
    code, output = promtool_check_metrics(text)
    assert (3, problem) == (code, output.strip())


def test_promtool_rejects_unparsable_text():
    """Text that does not parse makes promtool exit 1 with the parse error."""
    code, output = promtool_check_metrics("demo_requests_total{ 1\n")
    assert 1 == code
    assert "parsing error" in output


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl to make a cert")
def test_tls_target_with_ca_file(tmp_path):
    """Over https with ``tls_ca_file``, a target with a self-signed cert for
    127.0.0.1 is up; on exit the server is stopped (SIGTERM, exit code 0)."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"),
            *("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"),
            *("-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    exporter = Exporter(GOOD, tls=context)
    try:
        with prometheus([exporter.target], scheme="https", tls_ca_file=str(cert)) as server:
            targets = server.wait_healthy(timeout=15)
            assert [f"https://{exporter.target}/metrics"] == [t["scrapeUrl"] for t in targets]
            assert 42.0 == server.query_value("demo_requests_total")
        assert 0 == server.proc.returncode
    finally:
        exporter.close()


def test_config_passes_promtool(tmp_path):
    """The generated prometheus.yml, with every option, is valid for promtool."""
    ca = tmp_path / "ca.pem"
    ca.write_text("")
    config = tmp_path / "prometheus.yml"
    config.write_text(
        json.dumps(scrape_config(["127.0.0.1:1"], "2s", ("u", "p"), str(ca), "https"))
    )
    proc = subprocess.run(
        [str(PROMTOOL), "check", "config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert 0 == proc.returncode, proc.stdout + proc.stderr
