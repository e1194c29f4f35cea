"""The master's HTTP server: ``/metrics``, and the routes other backends add.

It must hold against clients that are slow on purpose: ``/metrics`` is
bound to a pod address in Kubernetes so that Prometheus reaches it, so any
pod of the cluster reaches it too. Its parts, each in a module of its own:

- ``connections``: one selector thread does all socket I/O. It accepts,
  does the TLS handshake and reads request heads on non-blocking sockets,
  with a deadline for the whole head (``CLIENT_TIMEOUT``, the handshake
  included) and a size bound (``MAX_HEAD``, else 431); it writes each
  response within ``WRITE_TIMEOUT``. The table holds ``MAX_CONNECTIONS``;
  when it is full, the connection whose head is oldest and incomplete
  makes room, so a new scraper always gets in.
- ``pool``: ``WORKERS`` threads answer complete requests only: the password
  check, the collection, a route's handler. No thread ever waits on a client.
- ``routes``: what is answered (basic auth first, ``/metrics`` with gzip,
  ``HEAD`` and ``name[]`` as prometheus_client's handler has them, the
  routes added with ``MetricsEndpoint.route``, 404).
- ``messages``: the ``Request`` and ``Response`` values a route's handler
  sees and returns, parsing and rendering.
- ``published``: the master's endpoint, for the backends that add routes.

One request per connection (every response says ``Connection: close``).

Fork safety: collecting the metrics of a scrape is done under the master's
``ForkGuard`` (``hookkit._aggregate.fork_guard``, shared with every other
reader of the aggregate): no fork while a scrape collects. Nothing else
is: a fork never waits on a client or a route's handler. The threads do
not exist in the child; each worker closes its copies of the server's
descriptors in ``post_fork`` (``close_in_child``).

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
from typing import Any

from prometheus_client import CollectorRegistry

from hookkit._aggregate.fork_guard import ForkGuard
from hookkit._master_http.connections import Connections
from hookkit._master_http.messages import Handler, Request, Response
from hookkit._master_http.pool import Pool
from hookkit._master_http.published import current_endpoint, publish_endpoint
from hookkit._master_http.routes import Router, private_allowed
from hookkit._master_http.webconfig import WebConfig

__all__ = [
    "CLIENT_TIMEOUT",
    "ENV_FD",
    "MAX_CONNECTIONS",
    "MAX_HEAD",
    "WORKERS",
    "WRITE_TIMEOUT",
    "Handler",
    "MetricsEndpoint",
    "Request",
    "Response",
    "current_endpoint",
    "private_allowed",
    "publish_endpoint",
]

ENV_FD = "_HOOKKIT_METRICS_FD"
# A request head, TLS handshake included, must be complete this long after
# the connection is accepted; else the connection is closed.
CLIENT_TIMEOUT = 5.0
# A response must be written (read by the client) within this long.
WRITE_TIMEOUT = 10.0
# Bytes of a request head; a longer one is answered with 431.
MAX_HEAD = 16 * 1024
# Connections held at once: heads being read, requests being answered,
# responses being written.
MAX_CONNECTIONS = 256
# Threads answering complete requests.
WORKERS = 4


class MetricsEndpoint:
    """``/metrics`` and added routes on one socket, served by daemon threads:
    ``listen``, then ``start``; ``close`` at the master's exit."""

    def __init__(
        self,
        registry: CollectorRegistry,
        web: WebConfig,
        fork_guard: ForkGuard | None = None,
        *,
        workers: int = WORKERS,
        head_timeout: float = CLIENT_TIMEOUT,
        write_timeout: float = WRITE_TIMEOUT,
        max_head: int = MAX_HEAD,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self.registry = registry
        self.web = web
        self.owner = os.getpid()
        # Collections of the master's aggregate, scrapes and other readers,
        # wait for forks and forks for them (one guard per master).
        self.fork_guard = fork_guard or ForkGuard()
        self.router = Router(registry, web, self.fork_guard, lambda: self.address[0])
        self.head_timeout = head_timeout
        self.write_timeout = write_timeout
        self.max_head = max_head
        self.max_connections = max_connections
        self._pool = Pool(workers, "hookkit-metrics-client")
        self._connections: Connections | None = None
        self._address: tuple[str, int] | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) it listens on."""
        assert self._address is not None
        return self._address

    @property
    def refused(self) -> int:
        """New connections closed because every slot held a request being answered."""
        return self._connections.refused if self._connections is not None else 0

    @property
    def evicted(self) -> int:
        """Connections dropped to make room for a new one (slow heads first)."""
        return self._connections.evicted if self._connections is not None else 0

    def route(self, path: str, handler: Handler, *, private: bool = False) -> None:
        """Answer GET and HEAD of ``path`` with ``handler``, in the worker
        pool, outside the fork guard; a handler that raises is a 500. Basic
        auth, when configured, applies as on /metrics. ``private``: only
        where strangers cannot reach it (a loopback bind, or basic auth
        configured); elsewhere 403, saying why and how."""
        self.router.route(path, handler, private)

    def listen(self, bind: tuple[str, int], setting: str, environ: Any) -> None:
        """Take the socket the old master handed over (USR2), else bind."""
        inherited = environ.pop(ENV_FD, None)
        if inherited is not None and inherited.isdigit():
            sock = socket.socket(fileno=int(inherited))
            os.set_inheritable(sock.fileno(), False)
        else:
            sock = _bind(bind, setting)
        host, port = sock.getsockname()[:2]
        self._address = (host, port)
        self._connections = Connections(
            sock,
            self.web.ssl_context(),
            self.router.answer,
            self._pool,
            head_timeout=self.head_timeout,
            write_timeout=self.write_timeout,
            max_head=self.max_head,
            max_connections=self.max_connections,
        )

    def start(self) -> None:
        """Serve: the selector thread and the worker pool, daemon threads."""
        assert self._connections is not None
        self._pool.start()
        self._thread = threading.Thread(
            target=self._connections.run, name="hookkit-metrics", daemon=True
        )
        self._thread.start()

    def hand_over(self, env_orig: dict[str, str]) -> None:
        """In the USR2 child, just before exec: let the new master inherit
        the listening socket."""
        if self._connections is None:
            return
        fd = self._connections.listener.fileno()
        if fd == -1:
            return
        os.set_inheritable(fd, True)
        env_orig[ENV_FD] = str(fd)

    def close_in_child(self) -> None:
        """In a worker: drop the inherited copies of the server's sockets.
        Called in the process that serves (hooks run without a fork, as
        ``benchmarks/request_path.py`` runs them), the threads are there
        too: stop them, as ``close`` does."""
        if os.getpid() == self.owner and self._thread is not None:
            self.close(0.0)
            self._connections = None
            return
        if self._connections is not None:
            self._connections.close_in_child()
            self._connections = None

    def close(self, wait: float = 1.0) -> None:
        """Stop answering (the master exits): accept no more connections,
        and give the requests in hand up to ``wait`` seconds to be answered
        (after a USR2, the new master takes the next ones)."""
        connections = self._connections
        if connections is None:
            return
        if self._thread is None:
            with contextlib.suppress(OSError):
                connections.listener.close()
            return
        connections.stop(wait)
        self._thread.join(wait + 1.0)
        self._pool.stop(0.5)


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
    sock.listen(128)
    return sock
