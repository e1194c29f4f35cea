"""The ``/metrics`` endpoint, served by threads in the master.

One thread accepts connections; each connection gets a thread of its own, so
a client that connects and sends nothing (or a TLS client that never says
hello) holds up nobody: not another scrape, not the master. At most
``MAX_CLIENTS`` connections are served at once; more are closed at once.
A connection that sends nothing is closed after ``CLIENT_TIMEOUT``.

Fork safety: collecting the metrics of a scrape is done under the master's
``ForkGuard`` (``hookkit._aggregate.fork_guard``, shared with every other
reader of the aggregate): no fork while a scrape collects. Reading a
request from a slow client and writing the body are not collecting: a fork
never waits on a client. The threads do not exist in the child; each
worker closes its copy of the listening socket in ``post_fork``.

USR2: the new master takes the listening socket over from the old one
(gunicorn hands its own listeners over the same way, through
``GUNICORN_FD``): ``pre_exec`` makes the socket inheritable and names its fd
in ``_HOOKKIT_METRICS_FD`` in the new master's environment, so scrapes keep
succeeding while both masters run and after the old one exits. Only a fresh
start binds, and a port already in use stops it with a message naming the
setting.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from hookkit._aggregate.fork_guard import ForkGuard
from hookkit._master_http.webconfig import WebConfig

ENV_FD = "_HOOKKIT_METRICS_FD"
# A connection that sends nothing is closed after this long.
CLIENT_TIMEOUT = 5.0
# Connections served at once; more are closed as they arrive.
MAX_CLIENTS = 64


class _Server(HTTPServer):
    endpoint: MetricsEndpoint

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that broke off, or a failed TLS handshake (a plain-HTTP
        probe of the TLS port): ignored, never printed. socketserver would
        print a traceback to stderr, outside the JSON log stream; the client
        is gone and there is nothing for an operator to act on."""


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = CLIENT_TIMEOUT

    def do_GET(self) -> None:
        endpoint = self.server.endpoint
        if not endpoint.web.authorized(self.headers.get("Authorization")):
            self._answer(401, b"Unauthorized\n", "text/plain", [("WWW-Authenticate", "Basic")])
            return
        if self.path.split("?", 1)[0] != "/metrics":
            self._answer(404, b"Not Found: the metrics are at /metrics\n", "text/plain")
            return
        encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
        try:
            with endpoint.fork_guard.collecting():
                body = encoder(endpoint.registry)
        except Exception as exc:
            self._answer(500, f"collecting metrics failed: {exc!r}\n".encode(), "text/plain")
            return
        self._answer(200, body, content_type)

    def _answer(
        self,
        code: int,
        body: bytes,
        content_type: str,
        headers: list[tuple[str, str]] = (),  # type: ignore[assignment]
    ) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in [*self.server.endpoint.web.headers.items(), *headers]:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not logged: one line per scrape would drown the stream."""


class MetricsEndpoint:
    """``/metrics`` on one socket, answered by daemon threads."""

    def __init__(
        self, registry: CollectorRegistry, web: WebConfig, fork_guard: ForkGuard | None = None
    ) -> None:
        self.registry = registry
        self.web = web
        self.owner = os.getpid()
        # Collections of the master's aggregate, scrapes and other readers,
        # wait for forks and forks for them (one guard per master).
        self.fork_guard = fork_guard or ForkGuard()
        self.refused = 0  # connections closed because MAX_CLIENTS were being served
        self._guard = threading.Condition()
        self._clients = threading.BoundedSemaphore(MAX_CLIENTS)
        self._answering = 0  # connections being answered now
        self._closing = False
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) it listens on."""
        assert self._server is not None
        host, port = self._server.socket.getsockname()[:2]
        return host, port

    def listen(self, bind: tuple[str, int], setting: str, environ: Any) -> None:
        """Take the socket the old master handed over (USR2), else bind."""
        inherited = environ.pop(ENV_FD, None)
        if inherited is not None and inherited.isdigit():
            sock = socket.socket(fileno=int(inherited))
            os.set_inheritable(sock.fileno(), False)
        else:
            sock = _bind(bind, setting)
        context = self.web.ssl_context()
        if context is not None:
            # The handshake happens on the first read, under the client timeout.
            sock = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        server = _Server(bind, _Handler, bind_and_activate=False)
        server.socket.close()
        server.socket = sock
        server.endpoint = self
        self._server = server

    def start(self) -> None:
        """Serve in a daemon thread."""
        assert self._server is not None
        self._thread = threading.Thread(target=self._serve, name="hookkit-metrics", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        """Accept connections, each answered in a thread of its own."""
        server = self._server
        assert server is not None
        while server.socket.fileno() != -1 and not self._closing:
            try:
                readable = server.socket.fileno() != -1 and _wait_readable(server.socket, 0.5)
            except (OSError, ValueError):
                return
            if not readable:
                continue
            # Counted before accept(), under the guard close() takes: a
            # connection accepted here is always waited for at exit.
            with self._guard:
                if self._closing:
                    return
                self._answering += 1
            try:
                connection, address = server.socket.accept()
            except (OSError, ValueError):
                self._answered()
                if server.socket.fileno() == -1:
                    return
                continue
            if not self._clients.acquire(blocking=False):
                self.refused += 1
                with contextlib.suppress(OSError):
                    connection.close()
                self._answered()
                continue
            threading.Thread(
                target=self._answer_client,
                args=(server, connection, address),
                name="hookkit-metrics-client",
                daemon=True,
            ).start()

    def _answer_client(self, server: _Server, connection: Any, address: Any) -> None:
        # One bad client never stops the endpoint.
        try:
            connection.settimeout(CLIENT_TIMEOUT)
            server.finish_request(connection, address)
        except Exception:
            server.handle_error(connection, address)
        finally:
            server.shutdown_request(connection)
            self._clients.release()
            self._answered()

    def _answered(self) -> None:
        with self._guard:
            self._answering -= 1
            self._guard.notify_all()

    def hand_over(self, env_orig: dict[str, str]) -> None:
        """In the USR2 child, just before exec: let the new master inherit
        the listening socket."""
        if self._server is None:
            return
        fd = self._server.socket.fileno()
        os.set_inheritable(fd, True)
        env_orig[ENV_FD] = str(fd)

    def close_in_child(self) -> None:
        """In a worker: drop the inherited copy of the listening socket."""
        if self._server is not None:
            with contextlib.suppress(OSError):
                self._server.socket.close()
            self._server = None

    def close(self, wait: float = 1.0) -> None:
        """Stop answering (the master exits): accept no more connections,
        and give the ones being answered up to ``wait`` seconds to finish
        (after a USR2, the new master takes the next ones)."""
        with self._guard:
            self._closing = True
        if self._server is not None:
            with contextlib.suppress(OSError):
                self._server.socket.close()
        deadline = time.monotonic() + wait
        with self._guard:
            while self._answering and time.monotonic() < deadline:
                self._guard.wait(max(0.0, deadline - time.monotonic()))


def _wait_readable(sock: socket.socket, timeout: float) -> bool:
    import selectors

    with selectors.DefaultSelector() as selector:
        selector.register(sock, selectors.EVENT_READ)
        return bool(selector.select(timeout))


def _bind(bind: tuple[str, int], setting: str) -> socket.socket:
    host, port = bind
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        why = "is already in use" if exc.errno == errno.EADDRINUSE else f"cannot be bound ({exc})"
        raise SystemExit(
            f"hookkit: {setting}={host}:{port}: the metrics port {why}; "
            f"choose another with {setting}=HOST:PORT, or set HOOKKIT_METRICS=off"
        ) from None
    sock.listen(64)
    return sock
