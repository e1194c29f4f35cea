"""The /metrics endpoint against what a hostile or broken client does, on a
real gunicorn.

- **Where it listens**: 127.0.0.1:9191 when nothing says otherwise, never a
  wildcard address.
- **Slow and malformed clients** on the metrics port (connections that send
  nothing, half a request line, bytes that are not HTTP): scrapes stay
  prompt, the app keeps serving, the master keeps forking, and the server
  closes each such connection within ``CLIENT_TIMEOUT``; the issue's
  slowloris (200 connections trickling a byte every 2-3 s for ~10 s) does
  not make a scrape fail or take 1 s.
- **Basic auth**: a refused request (no, wrong or malformed credentials;
  any path; any method) gets no metrics, only a 401 (501 for a method the
  endpoint does not serve); over TLS with a test certificate too.

Already covered elsewhere, not repeated here: the default address in
``Settings`` (``test_settings.py``); TLS with basic auth scraped by a real
Prometheus, 401 with ``WWW-Authenticate: Basic`` for no, wrong and unknown
credentials, plain HTTP and untrusting clients on the TLS port
(``test_prometheus_server.py``, which needs the prometheus binary); the
credential parsing and the bcrypt cache (``test_webconfig.py``); 404 for
other paths and OpenMetrics (``test_metrics_integration.py``).
"""

from __future__ import annotations

import contextlib
import errno
import http.client
import select
import shutil
import signal
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hookkit._core.settings import Settings, split_host_port
from hookkit._face.gunicorn_process import Gunicorn, free_port, match
from hookkit._master_http.server import CLIENT_TIMEOUT
from tests.conftest import ServeFactory, clean_env, no_control_socket
from tests.test_master_http_endpoint import Tricklers, scrape_while, slow_ones
from tests.test_prometheus_server import PASSWORD, USER, basic, make_pki, web_config_yaml
from tests.test_webconfig import hashed

pytestmark = pytest.mark.integration

APP = "apps.metrics_app:app"
# What a scrape, a request to the app, and a worker's boot after TTIN may take.
SCRAPE_BOUND = 2.0
APP_BOUND = 1.0
BOOT_BOUND = 3.0
# Slack on the server's client timeout before a connection must be closed.
CLOSE_SLACK = 2.0
METRIC_MARKERS = ("http_server_", "gunicorn_", "hookkit_", "# HELP", "# TYPE")


# -- helpers ---------------------------------------------------------------------


def fetch(
    port: int,
    path: str = "/metrics",
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    context: ssl.SSLContext | None = None,
    timeout: float = 10.0,
) -> tuple[int, str | None, bytes]:
    """(status, WWW-Authenticate, body) of one request to 127.0.0.1:``port``,
    over TLS with ``context``; never through a proxy."""
    conn: http.client.HTTPConnection
    if context is None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    else:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=context)
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.getheader("WWW-Authenticate"), response.read()
    finally:
        conn.close()


def timed_get(port: int, path: str, timeout: float) -> tuple[int, float]:
    """(status, seconds) of a GET; status 0 if it failed or timed out."""
    started = time.monotonic()
    try:
        status = fetch(port, path, timeout=timeout)[0]
    except (OSError, http.client.HTTPException):
        status = 0
    return status, time.monotonic() - started


def has_metrics(body: bytes) -> list[str]:
    """The metric markers found in ``body``."""
    text = body.decode("utf-8", "replace")
    return [marker for marker in METRIC_MARKERS if marker in text]


@dataclass
class Client:
    """A connection to the metrics port that never completes a request."""

    kind: str
    sock: socket.socket
    opened: float = field(default_factory=time.monotonic)


# kind -> (bytes sent after connecting, how many)
SLOW_CLIENTS = {
    "idle": (b"", 20),  # connects and sends nothing
    "partial-request-line": (b"GET /metr", 3),
    "garbage": (b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\xff\x00", 3),  # no newline
    "garbage-line": (b"\x00\xff\xfe not http at all\r\n\r\n", 2),  # a whole bad request
}


@contextlib.contextmanager
def slow_clients(
    port: int, kinds: dict[str, tuple[bytes, int]] = SLOW_CLIENTS
) -> Iterator[list[Client]]:
    """Open the slow and malformed connections; close them all on exit (so the
    server's thread is freed before the server is stopped)."""
    clients: list[Client] = []
    try:
        for kind, (payload, count) in kinds.items():
            for _ in range(count):
                sock = socket.create_connection(("127.0.0.1", port), timeout=5)
                clients.append(Client(kind, sock))
                if payload:
                    sock.sendall(payload)
        yield clients
    finally:
        for client in clients:
            client.sock.close()


def seconds_until_closed(clients: list[Client], deadline: float) -> dict[int, float]:
    """Read every connection until the server closes it or ``deadline``:
    for each closed one (by index), seconds from its opening to its close."""
    pending = dict(enumerate(clients))
    closed: dict[int, float] = {}
    while pending and time.monotonic() < deadline:
        socks = {client.sock: index for index, client in pending.items()}
        readable, _, _ = select.select(list(socks), [], [], 0.05)
        for sock in readable:
            try:
                data = sock.recv(65536)
            except OSError:  # reset by the server
                data = b""
            if not data:
                index = socks[sock]
                closed[index] = time.monotonic() - pending.pop(index).opened
    return closed


# -- (a) where it listens by default -------------------------------------------


def listening_addresses(port: int) -> set[str]:
    """The local addresses of TCP sockets listening on ``port`` (from
    /proc/net/tcp and tcp6), as text."""
    found: set[str] = set()
    for table, width in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 16)):
        with contextlib.suppress(OSError), open(table) as rows:
            for row in list(rows)[1:]:
                local, state = row.split()[1], row.split()[3]
                address, port_hex = local.split(":")
                if state != "0A" or int(port_hex, 16) != port:
                    continue
                raw = bytes.fromhex(address)
                # The kernel prints each 32-bit word in host (little-endian) order.
                words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
                family = socket.AF_INET if width == 4 else socket.AF_INET6
                found.add(socket.inet_ntop(family, words))
    return found


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise
    return not listening_addresses(port)


def test_without_the_setting_metrics_are_served_on_loopback_only(tmp_path: Path) -> None:
    """No HOOKKIT_METRICS_BIND: server_ready says http://127.0.0.1:9191/metrics,
    it answers there, and the only socket listening on 9191 is bound to
    127.0.0.1 (never 0.0.0.0 or ::). Skipped when something else holds 9191."""
    host, port = split_host_port(Settings().metrics_bind)
    assert ("127.0.0.1", 9191) == (host, port)
    if not port_is_free(host, port) or not port_is_free("0.0.0.0", port):
        pytest.skip(f"port {port} is in use on this machine: the default cannot be tried")
    argv = ["-c", "python:hookkit.conf", "-b", f"127.0.0.1:{free_port()}", "-w", "1"]
    env = clean_env()
    assert "HOOKKIT_METRICS_BIND" not in env
    with Gunicorn(
        [*argv, "--graceful-timeout", "3", *no_control_socket(), APP], env=env, cwd=str(tmp_path)
    ) as server:
        try:
            (ready,) = server.wait_for(match(event="server_ready"), timeout=20)
        except TimeoutError:
            if "already in use" in str(server.events()):
                pytest.skip(f"port {port} was taken by something else meanwhile")
            raise
        assert "http://127.0.0.1:9191/metrics" == ready["metrics_endpoint"]
        assert 200 == fetch(port)[0]
        assert {"127.0.0.1"} == listening_addresses(port)


# -- (b) slow and malformed clients ----------------------------------------------


def test_slow_and_malformed_clients_do_not_delay_scrapes(serve: ServeFactory) -> None:
    """With 28 slow or malformed connections open on the metrics port, every
    scrape is answered, each within SCRAPE_BOUND."""
    server = serve(APP, "-w", "1")
    with slow_clients(server.metrics_port):
        for _ in range(3):
            status, seconds = timed_get(server.metrics_port, "/metrics", SCRAPE_BOUND)
            assert (200, True) == (status, seconds < SCRAPE_BOUND)


def test_scrapes_hold_against_200_trickling_clients(serve: ServeFactory) -> None:
    """The issue's abuse on a real gunicorn: 200 connections held open on the
    metrics port for ~10 s, each trickling a byte every 2-3 s (the old
    server failed every scrape from the first second). A scrape every
    0.5 s meanwhile: each is a 200 within 1 s; the app keeps answering."""
    server = serve(APP, "-w", "1")
    server.wait_for(match(event="worker_booted"))
    with Tricklers(server.metrics_port, 200) as tricklers:
        results = scrape_while(server.metrics_port, 10.0)
        app = timed_get(server.port, "/", APP_BOUND)
    assert [] == slow_ones(results)
    assert len(results) >= 15
    assert tricklers.reopened >= 200  # dropped at the head deadline, and back
    assert 200 == app[0]


def test_slow_clients_do_not_stop_the_master_forking(serve: ServeFactory) -> None:
    """With the slow connections open, a TTIN still gets a new worker booted
    within BOOT_BOUND: the master is not held in its before-fork hook."""
    server = serve(APP, "-w", "1")
    server.wait_for(match(event="worker_booted"))
    with slow_clients(server.metrics_port):
        started = time.monotonic()
        server.signal(signal.SIGTTIN)
        try:
            server.wait_for(match(event="worker_booted"), timeout=BOOT_BOUND, count=2)
        except TimeoutError:
            pytest.fail(f"no worker booted within {BOOT_BOUND} s of TTIN")
        assert time.monotonic() - started < BOOT_BOUND


def test_slow_clients_on_the_metrics_port_do_not_touch_the_app(serve: ServeFactory) -> None:
    """The metrics port is the master's, the app's port the workers': with
    the slow connections open, requests to the app are each answered within
    APP_BOUND."""
    server = serve(APP, "-w", "1")
    server.wait_for(match(event="worker_booted"))
    with slow_clients(server.metrics_port):
        results = [timed_get(server.port, "/", APP_BOUND) for _ in range(20)]
    assert [200] * 20 == [status for status, _ in results]
    assert max(seconds for _, seconds in results) < APP_BOUND


def test_slow_clients_are_closed_within_the_client_timeout(serve: ServeFactory) -> None:
    """Each slow or malformed connection is closed by the server within
    CLIENT_TIMEOUT (plus CLOSE_SLACK) of its opening."""
    server = serve(APP, "-w", "1")
    with slow_clients(server.metrics_port) as clients:
        closed = seconds_until_closed(
            clients, time.monotonic() + CLIENT_TIMEOUT + CLOSE_SLACK + 0.5
        )
        late = [
            (client.kind, round(closed[index], 1) if index in closed else None)
            for index, client in enumerate(clients)
            if closed.get(index, float("inf")) > CLIENT_TIMEOUT + CLOSE_SLACK
        ]
    assert [] == late, f"closed late (seconds) or not at all (None): {late}"


def test_one_silent_client_is_dropped_after_the_client_timeout(serve: ServeFactory) -> None:
    """One at a time, the bound holds: bytes that are not HTTP get a 400
    page at once; a connection that sends nothing is closed after about
    CLIENT_TIMEOUT, neither much sooner nor later; the endpoint then answers
    a scrape at once."""
    server = serve(APP, "-w", "1")
    port = server.metrics_port
    with socket.create_connection(("127.0.0.1", port), timeout=5) as garbage:
        garbage.sendall(SLOW_CLIENTS["garbage-line"][0])
        answer = b"".join(iter(lambda: garbage.recv(65536), b""))  # to the server's close
    # A request line that is not HTTP/1.x: a 400 whose body names it.
    assert b"400 - Bad request syntax" in answer
    assert [] == has_metrics(answer)
    silent = {"idle": (b"", 1)}
    with slow_clients(port, silent) as clients:
        closed = seconds_until_closed(clients, time.monotonic() + CLIENT_TIMEOUT + CLOSE_SLACK)
    assert [0] == list(closed), "the silent connection was not closed"
    assert CLIENT_TIMEOUT - 0.5 < closed[0] < CLIENT_TIMEOUT + CLOSE_SLACK
    status, seconds = timed_get(port, "/metrics", SCRAPE_BOUND)
    assert (200, True) == (status, seconds < SCRAPE_BOUND)


# -- (c) basic auth: refused means no metrics -------------------------------------


REFUSED_HEADERS = {
    "none": {},
    "wrong-password": {"Authorization": basic(USER, "wrong")},
    "unknown-user": {"Authorization": basic("someone", PASSWORD)},
    "empty-password": {"Authorization": basic(USER, "")},
    "not-base64": {"Authorization": "Basic !!!not-base64!!!"},
    "no-colon": {"Authorization": "Basic cHJvbWV0aGV1cw=="},  # "prometheus"
    "bearer": {"Authorization": f"Bearer {PASSWORD}"},
    "password-in-user-field": {"Authorization": basic(PASSWORD, USER)},
}


@pytest.fixture(scope="module")
def password_hash() -> str:
    """``PASSWORD``, hashed cheaply."""
    return hashed(PASSWORD)


def test_refused_credentials_get_a_401_and_no_metrics(
    serve: ServeFactory, tmp_path: Path, password_hash: str
) -> None:
    """Basic auth without TLS: no, wrong or malformed credentials, on
    /metrics or any other path, get 401 asking for Basic and a body without
    a metric; another method gets no metrics either. The right ones get
    them."""
    web_config = tmp_path / "web.yml"
    web_config.write_text(f"basic_auth_users:\n  {USER}: {password_hash}\n")
    server = serve(APP, "-w", "1", env={"HOOKKIT_METRICS_WEB_CONFIG": str(web_config)})
    port = server.metrics_port
    for name, headers in REFUSED_HEADERS.items():
        for path in ("/metrics", "/metrics?name[]=gunicorn_workers", "/", "/../metrics"):
            status, challenge, body = fetch(port, path, headers=headers)
            assert (name, path, 401, "Basic", []) == (
                name,
                path,
                status,
                challenge,
                has_metrics(body),
            )
    for method in ("POST", "HEAD", "PUT"):
        status, _, body = fetch(port, method=method)
        assert (method, False, []) == (method, status == 200, has_metrics(body))
    status, _, body = fetch(port, headers={"Authorization": basic(USER, PASSWORD)})
    assert 200 == status
    assert "gunicorn_workers" in body.decode()


def test_tls_with_a_test_certificate_and_refusals_without_metrics(
    serve: ServeFactory, tmp_path: Path, password_hash: str
) -> None:
    """TLS from the web config, with a self-signed certificate for 127.0.0.1:
    server_ready gives an https URL; a client trusting the certificate with
    the right credentials gets the metrics; refused ones get 401 and no
    metric. (Needs the openssl command line, as test_prometheus_server.)"""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command line is needed to make a test certificate")
    pki = make_pki(tmp_path)
    web_config = tmp_path / "web.yml"
    web_config.write_text(web_config_yaml(pki, password_hash))
    server = serve(APP, "-w", "1", env={"HOOKKIT_METRICS_WEB_CONFIG": str(web_config)})
    (ready,) = server.events(match(event="server_ready"))
    port = server.metrics_port
    assert f"https://127.0.0.1:{port}/metrics" == ready["metrics_endpoint"]
    trusting = ssl.create_default_context(cafile=str(pki.cert))
    status, _, body = fetch(
        port, headers={"Authorization": basic(USER, PASSWORD)}, context=trusting
    )
    assert 200 == status
    assert "gunicorn_workers" in body.decode()
    for name, headers in REFUSED_HEADERS.items():
        status, challenge, body = fetch(port, headers=headers, context=trusting)
        assert (name, 401, "Basic", []) == (name, status, challenge, has_metrics(body))
