"""hookkit against each of gunicorn's worker classes, with real gunicorn processes.

Worker classes: ``sync``, ``gthread``, ``gevent`` and gunicorn's own ASGI
worker (``asgi``, serving ``apps.asgi``). For each one these tests specify
which gunicorn hooks hookkit sees over a server's life, that the access log
line (``request_finished``) records what the client actually received, that
every request is logged exactly once, and what a worker timeout looks like.

Clients here speak raw HTTP/1.1 over a socket (``raw_get``), so a test knows
exactly what reached the client: the status line, and whether the body was
complete or cut short. Everything listens and connects on 127.0.0.1 only.
"""

from __future__ import annotations

import importlib.util
import signal
import socket
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest

from hookkit._face.gunicorn_process import Gunicorn, LogLine, match

pytestmark = [pytest.mark.integration, pytest.mark.compat]

WSGI_APP = "apps.wsgi:app"
ASGI_APP = "apps.asgi:app"

# How to run each worker class: its app and gunicorn arguments (one worker).
WORKER_CLASSES: dict[str, tuple[str, tuple[str, ...]]] = {
    "sync": (WSGI_APP, ("-k", "sync")),
    "gthread": (WSGI_APP, ("-k", "gthread", "--threads", "4")),
    "gevent": (WSGI_APP, ("-k", "gevent")),
    "asgi": (ASGI_APP, ("-k", "asgi")),
}
WSGI_CLASSES = ("sync", "gthread", "gevent")

_NO_GEVENT = pytest.mark.skipif(
    importlib.util.find_spec("gevent") is None, reason="gevent is not installed"
)


def _class_params(names: tuple[str, ...] = tuple(WORKER_CLASSES)) -> list[Any]:
    return [
        pytest.param(name, id=name, marks=[_NO_GEVENT] if name == "gevent" else [])
        for name in names
    ]


ALL_CLASSES = _class_params()


def start(serve: Any, worker_class: str, *args: str, app: str | None = None) -> Gunicorn:
    """One worker of ``worker_class``, hookkit's access log on; returns once
    the worker has booted."""
    default_app, class_args = WORKER_CLASSES[worker_class]
    server: Gunicorn = serve(
        app or default_app, *class_args, "-w", "1", *args, env={"HOOKKIT_ACCESS_LOG": "1"}
    )
    server.wait_for(match(event="worker_booted"))
    return server


# -- a raw HTTP/1.1 client ---------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """What the client received."""

    status: int  # 0: the connection closed without a status line
    body: bytes  # the body, de-chunked
    complete: bool  # the body ended where its framing said it would


def raw_get(port: int, path: str, timeout: float = 10.0) -> Reply:
    """GET ``path`` from 127.0.0.1:``port`` with ``Connection: close`` and
    read until the server closes the connection."""
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    data = bytearray()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request.encode("ascii"))
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except OSError:  # reset by the peer, or timed out: keep what arrived
            pass
    return parse_reply(bytes(data))


def parse_reply(data: bytes) -> Reply:
    """The status, body and completeness of a raw HTTP/1.1 response."""
    head, sep, rest = data.partition(b"\r\n\r\n")
    if not sep:
        return Reply(0, b"", False)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = bytearray()
        while True:
            size_line, sep, rest = rest.partition(b"\r\n")
            if not sep:
                return Reply(status, bytes(body), False)
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                return Reply(status, bytes(body), rest.startswith(b"\r\n"))
            if len(rest) < size + 2:
                return Reply(status, bytes(body) + rest[:size], False)
            body += rest[:size]
            rest = rest[size + 2 :]
    if "content-length" in headers:
        length = int(headers["content-length"])
        return Reply(status, rest[:length], len(rest) >= length)
    return Reply(status, rest, True)  # delimited by the close


def finished(server: Gunicorn) -> list[LogLine]:
    """The access log lines so far."""
    return server.events(match(event="request_finished"))


def hook_lines(server: Gunicorn) -> list[LogLine]:
    """hookkit's own lines (each names the gunicorn hook it came from)."""
    return [line for line in server.events() if line.get("hook")]


# -- 1. which hooks fire -------------------------------------------------------

# Where each hook that a server's ordinary life fires runs.
EXPECTED_HOOKS = {
    "on_starting": "master",
    "nworkers_changed": "master",
    "when_ready": "master",
    "pre_fork": "master",
    "post_fork": "worker",
    "post_worker_init": "worker",
    "pre_request": "worker",
    "post_request": "worker",
    "worker_exit": "worker",
    "child_exit": "master",
    "on_exit": "master",
}


@pytest.mark.parametrize("worker_class", ALL_CLASSES)
def test_hooks_fired_over_a_servers_life(serve, worker_class):
    """Over a life of start, a few requests, scaling up and down (TTIN, TTOU)
    and a stop (TERM), every worker class fires the same hooks, each in its
    process: on_starting, nworkers_changed, when_ready, pre_fork, child_exit
    and on_exit in the master; post_fork, post_worker_init, pre_request,
    post_request and worker_exit in the worker. No other hook fires (no
    on_reload, worker_int, worker_abort or pre_exec). The worker scaled down
    by TTOU is reported as ``scaled_down``, and no line names the query
    string."""
    server = start(serve, worker_class, "--log-level", "debug")
    for path in ("/", "/?secret=1", "/raise-before"):
        raw_get(server.port, path)
    server.wait_for(match(event="request_finished"), count=3)
    server.signal(signal.SIGTTIN)
    server.wait_for(match(event="worker_booted"), count=2)
    server.signal(signal.SIGTTOU)
    server.wait_for(match(event="worker_exited"))
    server.stop()

    lines = hook_lines(server)
    fired = {line["hook"]: ("master" if line["pid"] == server.pid else "worker") for line in lines}
    assert EXPECTED_HOOKS == fired
    # Every line of a hook ran in the same kind of process.
    assert [] == [
        line
        for line in lines
        if (line["pid"] == server.pid) != (EXPECTED_HOOKS[line["hook"]] == "master")
    ]
    changes = [
        (line["old_value"], line["new_value"])
        for line in server.events(match(event="workers_changed"))
    ]
    assert [(None, 1), (1, 2), (2, 1)] == changes
    reasons = sorted(line["reason"] for line in server.events(match(event="worker_exited")))
    assert ["scaled_down", "shutdown"] == reasons
    assert [] == [line for line in lines if "secret" in str(line)]


# -- 2. the access log records what the client received ------------------------


def client_view(reply: Reply) -> dict[str, object]:
    return {"status": reply.status, "complete": reply.complete}


def log_view(line: LogLine) -> dict[str, object]:
    return {
        "method": line["method"],
        "path": line["path"],
        "status": line["status"],
        "failed": bool(line["error_type"]),
    }


# path requested -> (what the client gets, what the access log must say)
OK = (
    {"status": 200, "complete": True},
    {"method": "GET", "path": "/", "status": 200, "failed": False},
)
STATUS_ROWS: dict[str, tuple[dict[str, object], dict[str, object]]] = {
    "/": OK,
    "/?secret=1": OK,
    "/raise-before": (
        {"status": 500, "complete": True},
        {"method": "GET", "path": "/raise-before", "status": 500, "failed": True},
    ),
    # WSGI only (the ASGI app has no such route): the app raised after
    # start_response but before any byte was sent, gunicorn answers 500.
    "/raise-after-start": (
        {"status": 500, "complete": True},
        {"method": "GET", "path": "/raise-after-start", "status": 500, "failed": True},
    ),
}


@pytest.mark.parametrize("worker_class", ALL_CLASSES)
def test_access_log_status_is_what_the_client_received(serve, worker_class):
    """For each worker class, the access line of a request records the status
    the client received and the path without its query string: 200 and no
    error for ``/`` and ``/?secret=1`` (logged as ``/``); 500 and an error
    type for an app that raised before its response started (and, for WSGI,
    after ``start_response`` but before any byte of the body, which gunicorn
    also answers with a 500); for a successful response, ``response_bytes``
    is the size of the body the client received."""
    server = start(serve, worker_class)
    paths = [p for p in STATUS_ROWS if worker_class in WSGI_CLASSES or p != "/raise-after-start"]
    expected: dict[str, object] = {}
    actual: dict[str, object] = {}
    for count, path in enumerate(paths, start=1):
        reply = raw_get(server.port, path)
        line = server.wait_for(match(event="request_finished"), count=count)[count - 1]
        expected[path] = STATUS_ROWS[path]
        actual[path] = (client_view(reply), log_view(line))
        if reply.status == 200:
            assert len(reply.body) == line["response_bytes"], line
        assert line["duration_seconds"] >= 0, line
    logged = [(line["path"], line["status"], line["error_type"]) for line in finished(server)]
    assert expected == actual, logged
    assert [] == [line for line in hook_lines(server) if "secret" in str(line)]


@pytest.mark.parametrize("worker_class", ALL_CLASSES)
def test_access_log_of_a_body_cut_short(serve, worker_class):
    """When the app raises in the middle of its body (``/raise-mid-body``:
    headers and a first 12-byte chunk sent, then an exception), the client
    gets a 200 and a truncated body (the chunked body never ends); the
    access line must say 200, the 12 bytes sent, and name an error type, for
    every worker class."""
    server = start(serve, worker_class)
    reply = raw_get(server.port, "/raise-mid-body")
    line = server.wait_for(match(event="request_finished"))[0]
    assert (200, False, b"first chunk\n") == (reply.status, reply.complete, reply.body)
    expected = {"path": "/raise-mid-body", "status": 200, "response_bytes": 12, "failed": True}
    actual = {
        "path": line["path"],
        "status": line["status"],
        "response_bytes": line["response_bytes"],
        "failed": bool(line["error_type"]),
    }
    assert expected == actual, (line["status"], line["error_type"])


# -- 3. one access line per request -------------------------------------------


@pytest.mark.parametrize("worker_class", ALL_CLASSES)
def test_one_access_line_per_request(serve, worker_class):
    """N requests, four at a time, some failing before or during the
    response, make exactly N access lines for every worker class, one per
    request path sent, and the worker's exit record counts the same N."""
    server = start(serve, worker_class)
    paths = ["/", "/raise-before", "/raise-mid-body", "/?secret=1"] * 4
    with ThreadPoolExecutor(max_workers=4) as pool:
        replies = list(pool.map(lambda path: raw_get(server.port, path), paths))
    assert [] == [reply for reply in replies if reply.status == 0]
    server.wait_for(match(event="request_finished"), count=len(paths))
    server.stop()  # every line of the worker is in once the master reports its exit

    lines = finished(server)
    expected = Counter(path.split("?")[0] for path in paths)
    assert expected == Counter(line["path"] for line in lines)
    exited = server.events(match(event="worker_exited"))
    assert [len(paths)] == [line["requests_served"] for line in exited]


# -- 4. timeouts ---------------------------------------------------------------


def expected_log_status(client_status: int) -> int | None:
    """The status an access line records for what the client got: the status
    line it read, or none when the connection closed without a response."""
    return client_status or None


@dataclass(frozen=True)
class AbortCase:
    """A request that blocks a worker of ``worker_class`` in ``function``."""

    worker_class: str
    app: str
    path: str
    function: str
    client_status: int  # what gunicorn sends the client when it aborts the worker


ABORT_CASES = [
    # SyncWorker.handle catches the SystemExit of the abort and answers 500
    # (Worker.handle_error) before the worker exits.
    pytest.param(AbortCase("sync", WSGI_APP, "/sleep?30", "stuck_in_sleep", 500), id="sync"),
    # GeventWorker.handle_request swallows the SystemExit: the connection is
    # closed with no response at all.
    pytest.param(
        AbortCase("gevent", "apps.blocking:app", "/spin?30", "stuck_in_spin", 0),
        id="gevent",
        marks=[_NO_GEVENT],
    ),
]


@pytest.mark.parametrize("case", ABORT_CASES)
def test_timeout_abort(serve, case):
    """A request that blocks its worker past ``--timeout 2`` (a sleep for the
    sync worker; a busy loop that starves the gevent hub) gets the worker
    aborted: a ``worker_aborted`` line whose thread stacks show the function
    the request was stuck in and whose in-flight request is the one sent, a
    ``worker_exited`` line with reason ``timeout``, and exactly one access
    line for the request (gunicorn may run post_request twice for an aborted
    request), recording the status the client received and an error type."""
    server = start(serve, case.worker_class, "--timeout", "2", app=case.app)
    started = time.monotonic()
    reply = raw_get(server.port, case.path, timeout=20)
    assert time.monotonic() - started < 15
    assert case.client_status == reply.status
    # The master reports the exit after the worker wrote its last line.
    server.wait_for(match(event="worker_exited", reason="timeout"), timeout=20)
    # Let the replacement boot: a TERM that reaches a gevent worker before it
    # set its signal handlers is lost, and the stop would then wait it out.
    server.wait_for(match(event="worker_booted"), count=2)

    aborted = server.events(match(event="worker_aborted"))
    assert 1 == len(aborted)
    stacks = aborted[0]["threads"]
    assert isinstance(stacks, dict)
    assert [] != [name for name, stack in stacks.items() if case.function in stack]
    route = case.path.split("?")[0]
    assert [("GET", route)] == [
        (request["method"], request["path"]) for request in aborted[0]["requests_in_flight"]
    ]
    lines = [line for line in finished(server) if line["path"] == route]
    assert [(expected_log_status(reply.status), True)] == [
        (line["status"], bool(line["error_type"])) for line in lines
    ]


@pytest.mark.parametrize("worker_class", _class_params(("gthread", "gevent", "asgi")))
def test_a_request_that_waits_is_not_aborted(serve, worker_class):
    """gthread, gevent and asgi workers keep beating while a request waits
    (in a pool thread, a patched sleep, an awaited sleep): a request longer
    than ``--timeout 2`` is not aborted, completes with 200 and is logged
    once with 200; no ``worker_aborted`` line."""
    server = start(serve, worker_class, "--timeout", "2")
    reply = raw_get(server.port, "/sleep?3", timeout=20)
    assert (200, True) == (reply.status, reply.complete)
    server.wait_for(match(event="request_finished"))
    assert [] == server.events(match(event="worker_aborted"))
    assert [] == server.events(match(event="worker_exited"))
    lines = finished(server)
    assert [("/sleep", 200)] == [(line["path"], line["status"]) for line in lines]
    assert lines[0]["duration_seconds"] >= 3
