"""A real Prometheus scrapes real gunicorn + hookkit on 127.0.0.1.

Prometheus 2.x applies its first targets on a 5 s tick, so this module starts
its two Prometheus servers once, at the start, with every target it will
need: the metrics ports are reserved up front (held bound, not listening,
until the test that uses one starts its gunicorn on it; until then the target
is simply down). One Prometheus scrapes plain HTTP; the other scrapes over
HTTPS with a CA file and basic auth, a gunicorn whose /metrics takes its TLS
and users from a web-config file (``HOOKKIT_METRICS_WEB_CONFIG``).

``promtool check metrics`` lints hookkit's exposition after requests, a
SIGKILLed worker and a reload. Every process is stopped by PID: gunicorn by
the ``serve`` fixture, Prometheus by ``tests.prom``.
"""

from __future__ import annotations

import base64
import math
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import bcrypt
import pytest

from hookkit._face.gunicorn_process import Gunicorn, http_get, match
from tests.prom import MISSING, PROMETHEUS, PROMTOOL, PrometheusServer, prometheus
from tests.prom import promtool_check_metrics as promtool
from tests.scrape import scrape_text, total

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(PROMETHEUS is None or PROMTOOL is None, reason=MISSING),
]

APP = "apps.metrics_app:app"
COUNT = "http_server_request_duration_seconds_count"
USER, PASSWORD = "prometheus", "scrape-me"

# Never through a proxy from the environment: everything stays on 127.0.0.1.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ReservedPort:
    """A port on 127.0.0.1 held bound (not listening: connections are
    refused) so that nothing else is given it until ``release``."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.target = f"127.0.0.1:{self.port}"

    def release(self) -> int:
        """Free the port for the gunicorn about to bind it; the port."""
        self.sock.close()
        return self.port


@dataclass
class Pki:
    """A self-signed certificate for IP 127.0.0.1 and its key."""

    cert: Path
    key: Path


def make_pki(directory: Path) -> Pki:
    """A P-256 key and a self-signed certificate for IP 127.0.0.1, for a day,
    from the openssl command line (the venv has no ``cryptography``)."""
    cert, key = directory / "server.pem", directory / "server-key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"),
            *("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
            *("-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return Pki(cert, key)


def web_config_yaml(pki: Pki, password_hash: str) -> str:
    """A web-config file: TLS with ``pki``, one basic-auth user ``USER``."""
    return (
        "tls_server_config:\n"
        f"  cert_file: {pki.cert}\n"
        f"  key_file: {pki.key}\n"
        "basic_auth_users:\n"
        f"  {USER}: {password_hash}\n"
    )


@dataclass
class Stack:
    """The module's Prometheus servers and the ports their targets are on."""

    plain: PrometheusServer  # scrapes ``requests`` and ``kill`` over HTTP
    secure: PrometheusServer  # scrapes ``tls`` over HTTPS, with basic auth
    ports: dict[str, ReservedPort]
    pki: Pki


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Both Prometheus servers, started once for the module (their first
    scrape comes ~5 s after start, the same 5 s for both)."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command line is needed to make a test certificate")
    pki = make_pki(tmp_path_factory.mktemp("pki"))
    ports = {name: ReservedPort() for name in ("requests", "kill", "tls")}
    with ExitStack() as stack:
        for port in ports.values():
            stack.callback(port.sock.close)
        plain = stack.enter_context(prometheus([ports["requests"].target, ports["kill"].target]))
        secure = stack.enter_context(
            prometheus(
                [ports["tls"].target],
                scheme="https",
                tls_ca_file=str(pki.cert),
                basic_auth=(USER, PASSWORD),
            )
        )
        yield Stack(plain, secure, ports, pki)


def serve_on(serve, port: ReservedPort, *args: str, env: dict[str, str] | None = None) -> Gunicorn:
    """gunicorn with its /metrics on the reserved ``port``."""
    metrics_port = port.release()
    server: Gunicorn = serve(
        APP, *args, env={**(env or {}), "HOOKKIT_METRICS_BIND": f"127.0.0.1:{metrics_port}"}
    )
    server.metrics_port = metrics_port  # type: ignore[attr-defined]
    return server


def send(port: int, paths: list[str]) -> list[int]:
    """GET each path in turn: the statuses received."""
    return [http_get(port, path)[0] for path in paths]


def wait_count(server: Gunicorn, expected: float, timeout: float = 10.0) -> str:
    """Scrape until the request count reaches ``expected`` (post_request runs
    after the client has its response), at most ``timeout`` seconds; the
    last scrape."""
    deadline = time.monotonic() + timeout
    while True:
        text = scrape_text(server.metrics_port)
        if total(text, COUNT) >= expected or time.monotonic() > deadline:
            return text
        time.sleep(0.05)


def equals(expected: float):
    """A predicate for ``PrometheusServer.wait_for``: the value is ``expected``."""
    return lambda value: value == expected


# -- a plain-HTTP Prometheus -------------------------------------------------


def test_prometheus_sees_every_request_by_status(stack, serve):
    """N requests (200s, 404s, a 500 from an exception): Prometheus's sum of
    the request counts is N, and right per status code; ``up`` is 1, the
    p99 from the buckets' rate is a number, and gunicorn_workers is the
    worker count."""
    server = serve_on(serve, stack.ports["requests"], "-w", "2")
    server.wait_for(match(event="worker_booted"), count=2)
    prom, instance = stack.plain, f'instance="{stack.ports["requests"].target}"'
    first = ["/"] * 5 + ["/status/404"] * 3 + ["/raise"]
    assert [200] * 5 + [404] * 3 + [500] == send(server.port, first)
    # Once Prometheus holds every series, more requests: rate() then has an
    # increase to see, and the p99 below is a number, not NaN.
    prom.wait_for(f"sum(http_server_request_duration_seconds_count{{{instance}}})", equals(9))
    second = ["/"] * 6 + ["/status/404"] * 2 + ["/raise"] * 2
    assert [200] * 6 + [404] * 2 + [500] * 2 == send(server.port, second)
    n = len(first) + len(second)
    assert n == prom.wait_for(
        f"sum(http_server_request_duration_seconds_count{{{instance}}})", equals(n)
    )
    by_status = {
        sample["metric"]["http_response_status_code"]: float(sample["value"][1])
        for sample in prom.query(
            "sum by (http_response_status_code) "
            f"(http_server_request_duration_seconds_count{{{instance}}})"
        )
    }
    assert {"200": 11.0, "404": 5.0, "500": 3.0} == by_status
    assert 3.0 == prom.query_value(
        f'sum(http_server_request_duration_seconds_count{{{instance},error_type="RuntimeError"}})'
    )
    p99 = prom.query_value(
        "histogram_quantile(0.99, sum by (le) "
        f"(rate(http_server_request_duration_seconds_bucket{{{instance}}}[1m])))"
    )
    assert p99 is not None
    assert math.isfinite(p99)
    assert 0 < p99 <= 10
    assert 1.0 == prom.query_value(f'up{{job="hookkit",{instance}}}')
    assert 2.0 == prom.query_value(f"gunicorn_workers{{{instance}}}")


def test_prometheus_sees_a_sigkilled_worker(stack, serve):
    """gunicorn_worker_exits_total{reason="killed"} is in Prometheus at 0
    from the start, and becomes 1 after a worker is SIGKILLed; the worker
    count goes back to what it was."""
    server = serve_on(serve, stack.ports["kill"], "-w", "2")
    booted = server.wait_for(match(event="worker_booted"), count=2)
    prom, instance = stack.plain, f'instance="{stack.ports["kill"].target}"'
    killed = f'gunicorn_worker_exits_total{{{instance},reason="killed"}}'
    assert 0.0 == prom.wait_for(killed, lambda value: value is not None)
    assert 2.0 == prom.wait_for(f"gunicorn_workers{{{instance}}}", equals(2))
    os.kill(booted[0]["worker_pid"], signal.SIGKILL)
    server.wait_for(match(event="worker_exited", worker_pid=booted[0]["worker_pid"]))
    assert 1.0 == prom.wait_for(killed, equals(1))
    assert 2.0 == prom.wait_for(f"gunicorn_workers{{{instance}}}", equals(2))
    assert 1.0 == prom.query_value(f'up{{job="hookkit",{instance}}}')


# -- promtool ------------------------------------------------------------------


def test_promtool_accepts_the_exposition(serve):
    """``promtool check metrics`` finds nothing to say about hookkit's
    exposition after requests of every kind, a SIGKILLed worker and a
    reload."""
    server = serve(APP, "-w", "2", "-k", "gthread", "--threads", "2")
    booted = server.wait_for(match(event="worker_booted"), count=2)
    send(server.port, ["/", "/status/404", "/raise", "/user", "/routed/a", "/burn?0.05"])
    wait_count(server, 6)
    os.kill(booted[0]["worker_pid"], signal.SIGKILL)
    server.wait_for(match(event="worker_booted"), count=3)
    server.signal(signal.SIGHUP)
    server.wait_for(match(event="worker_exited", reason="reload"), count=2)
    server.wait_for(match(event="worker_booted"), count=5)
    send(server.port, ["/", "/status/503"])
    text = wait_count(server, 8)
    assert 8 == total(text, COUNT)
    assert 1 == total(text, "gunicorn_worker_exits_total", reason="killed")
    assert 1 == total(text, "gunicorn_reloads_total")
    assert (0, "") == promtool(text)


# -- TLS and basic auth, from a web-config file ------------------------------


def basic(user: str, password: str) -> str:
    """An ``Authorization`` header value."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def https_get(
    port: int, context: ssl.SSLContext, authorization: str | None = None
) -> tuple[int, str | None]:
    """GET https://127.0.0.1:``port``/metrics: the status (401 included) and
    the ``WWW-Authenticate`` header."""
    request = urllib.request.Request(f"https://127.0.0.1:{port}/metrics")
    if authorization is not None:
        request.add_header("Authorization", authorization)
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
    )
    try:
        with opener.open(request, timeout=10) as response:
            response.read()
            return int(response.status), response.headers.get("WWW-Authenticate")
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("WWW-Authenticate")


@pytest.fixture(scope="module")
def password_hash() -> str:
    """``PASSWORD`` hashed with bcrypt, cheaply (cost 4)."""
    return bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()


def test_prometheus_scrapes_over_tls_with_basic_auth(stack, serve, tmp_path, password_hash):
    """/metrics with TLS and a basic-auth user from HOOKKIT_METRICS_WEB_CONFIG:
    Prometheus, over https with the CA file and the right password, scrapes
    it (up is 1, the request count is right); plain HTTP, no password and a
    wrong one are refused."""
    web_config = tmp_path / "web.yml"
    web_config.write_text(web_config_yaml(stack.pki, password_hash))
    server = serve_on(
        serve, stack.ports["tls"], "-w", "1", env={"HOOKKIT_METRICS_WEB_CONFIG": str(web_config)}
    )
    assert [200] * 3 + [404] == send(server.port, ["/"] * 3 + ["/status/404"])
    prom, instance = stack.secure, f'instance="{stack.ports["tls"].target}"'
    assert 4.0 == prom.wait_for(
        f"sum(http_server_request_duration_seconds_count{{{instance}}})", equals(4)
    )
    assert 1.0 == prom.query_value(f'up{{job="hookkit",{instance}}}')
    assert 1.0 == prom.query_value(
        f'sum(http_server_request_duration_seconds_count{{{instance},http_response_status_code="404"}})'
    )
    (target,) = prom.targets()
    assert (f"https://{stack.ports['tls'].target}/metrics", "up", "") == (
        target["scrapeUrl"],
        target["health"],
        target["lastError"],
    )

    port = server.metrics_port
    trusting = ssl.create_default_context(cafile=str(stack.pki.cert))
    assert (200, None) == https_get(port, trusting, basic(USER, PASSWORD))
    assert (401, "Basic") == https_get(port, trusting)
    assert (401, "Basic") == https_get(port, trusting, basic(USER, "wrong"))
    assert (401, "Basic") == https_get(port, trusting, basic("someone", PASSWORD))
    # Plain HTTP on the TLS port: no HTTP answer at all, only a dropped connection.
    # (RemoteDisconnected is a ConnectionResetError; a reset while sending
    # comes wrapped in a URLError, as would an HTTP status, which must not.)
    with pytest.raises((ConnectionResetError, urllib.error.URLError)) as info:
        _OPENER.open(f"http://127.0.0.1:{port}/metrics", timeout=10)
    assert not isinstance(info.value, urllib.error.HTTPError)
    # An HTTPS client that does not trust the certificate gets nothing either.
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        https_get(port, ssl.create_default_context(), basic(USER, PASSWORD))
    # The endpoint is still serving after the refused clients.
    assert (200, None) == https_get(port, trusting, basic(USER, PASSWORD))


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            "tls_server_config:\n  cert_file: {cert}\n  key_file: {missing}\n",
            "missing.pem' cannot be read",
        ),
        ("basic_auth_users:\n  prometheus: not-a-bcrypt-hash\n", "prometheus is not a bcrypt hash"),
        (
            "tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\nbogus: 1\n",
            "bogus is not a known key",
        ),
        ("tls_server_config: [\n", "not valid YAML"),
    ],
    ids=["missing-key-file", "bad-hash", "unknown-key", "not-yaml"],
)
def test_a_bad_web_config_stops_gunicorn(serve, tmp_path, text, problem):
    """A bad web-config file stops gunicorn at start-up: exit status 1 and
    a message naming HOOKKIT_METRICS_WEB_CONFIG (and what is wrong)."""
    pki = make_pki(tmp_path)
    web_config = tmp_path / "web.yml"
    web_config.write_text(text.format(cert=pki.cert, key=pki.key, missing=tmp_path / "missing.pem"))
    server = serve(APP, env={"HOOKKIT_METRICS_WEB_CONFIG": str(web_config)}, wait=False)
    assert 1 == server.proc.wait(20)
    server.stream.wait_closed(5)
    output = "\n".join(str(line) for line in server.events())
    assert "HOOKKIT_METRICS_WEB_CONFIG" in output
    assert problem in output
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", server.metrics_port), timeout=2).close()


def test_a_missing_web_config_stops_gunicorn(serve, tmp_path):
    """HOOKKIT_METRICS_WEB_CONFIG naming a file that does not exist stops
    gunicorn at start-up with exit status 1, naming the setting and file."""
    missing = tmp_path / "nowhere.yml"
    server = serve(APP, env={"HOOKKIT_METRICS_WEB_CONFIG": str(missing)}, wait=False)
    assert 1 == server.proc.wait(20)
    server.stream.wait_closed(5)
    output = "\n".join(str(line) for line in server.events())
    assert "HOOKKIT_METRICS_WEB_CONFIG" in output
    assert str(missing) in output
