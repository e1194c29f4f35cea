"""The client's address on a real gunicorn, behind a trusted proxy and from
an untrusted peer, on the sync worker and on gunicorn's own ASGI worker
(whose request object carries no peer: hookkit reads it from the environ
``post_request`` gets); the PROXY protocol with a v1 line written by hand;
and what UvicornWorker lets hookkit see. Checked in the span exported over
OTLP/HTTP to an ``OtlpReceiver`` and in the access line.

The tests play the proxy from 127.0.0.1, which gunicorn trusts by default
(``forwarded_allow_ips``); ``--forwarded-allow-ips 10.9.9.9`` makes the same
client untrusted. Everything listens and connects on 127.0.0.1.
"""

from __future__ import annotations

import socket
from typing import Any

import pytest

from hookkit._face.gunicorn_process import Gunicorn, match
from tests.otlp import OtlpReceiver, Span
from tests.traced import request, server_spans, start_traced

pytestmark = pytest.mark.integration

WORKERS = {
    "sync": ("apps.wsgi:app", ()),
    "asgi": ("apps.asgi:app", ("-k", "asgi")),
}
ALL = pytest.mark.parametrize("worker", list(WORKERS))

# Per path: the headers a proxy chain sent, and the client behind
# ``--forwarded-allow-ips 127.0.0.1,10.0.0.0/8``.
XFF = "X-Forwarded-For"
CASES: dict[str, tuple[list[tuple[str, str]], str]] = {
    "/hops": ([(XFF, "192.0.2.1, 203.0.113.7, 10.0.0.1")], "203.0.113.7"),
    "/repeated": ([(XFF, "192.0.2.1"), (XFF, "203.0.113.7, 10.0.0.1")], "203.0.113.7"),
    "/forwarded": (
        [("Forwarded", 'for="[2001:db8::1]:4711";proto=https, for=10.0.0.1')],
        "2001:db8::1",
    ),
    "/both": ([("Forwarded", "for=192.0.2.66"), (XFF, "203.0.113.8")], "203.0.113.8"),
    "/all-trusted": ([(XFF, "10.0.0.9, 10.0.0.1")], "10.0.0.9"),
    "/unknown": ([(XFF, "203.0.113.7, unknown, _hidden")], "203.0.113.7"),
    "/none": ([], "127.0.0.1"),
}


def start(serve: Any, rx: OtlpReceiver, worker: str, *args: str, **env: str) -> Gunicorn:
    """One worker of class ``worker``, exporting spans to ``rx``."""
    app, worker_args = WORKERS[worker]
    return start_traced(serve, rx, *worker_args, *args, app=app, env=env)


def by_path(spans: list[Span]) -> dict[str, tuple[object, object]]:
    """Per path: the span's client.address and network.peer.address."""
    return {
        span.attributes["url.path"]: (
            span.attributes.get("client.address"),
            span.attributes.get("network.peer.address"),
        )
        for span in spans
    }


@ALL
def test_behind_trusted_proxies_the_client_is_the_rightmost_untrusted_hop(
    serve: Any, worker: str
) -> None:
    """From 127.0.0.1 (trusted), with 10.0.0.0/8 trusted too: the span's
    client.address, and the access line's client_address with
    HOOKKIT_ACCESS_LOG_CLIENT on, are the first hop from the right that is
    not trusted (every hop trusted: the leftmost); network.peer.address
    stays the connection's peer."""
    with OtlpReceiver() as rx:
        server = start(
            serve,
            rx,
            worker,
            "--forwarded-allow-ips",
            "127.0.0.1,10.0.0.0/8",
            HOOKKIT_ACCESS_LOG="on",
            HOOKKIT_ACCESS_LOG_CLIENT="on",
        )
        statuses = {
            path: request(server.port, path, headers)[0] for path, (headers, _) in CASES.items()
        }
        spans = server_spans(rx, count=len(CASES))
        lines = server.wait_for(match(event="request_finished"), count=len(CASES))
    assert dict.fromkeys(CASES, 200) == statuses
    expected = {path: (client, "127.0.0.1") for path, (_, client) in CASES.items()}
    assert expected == by_path(spans)
    in_lines = {line["path"]: line.get("client_address") for line in lines}
    assert {path: client for path, (_, client) in CASES.items()} == in_lines


@ALL
def test_from_an_untrusted_peer_the_client_is_the_peer(serve: Any, worker: str) -> None:
    """With ``--forwarded-allow-ips 10.9.9.9``, 127.0.0.1 is not trusted:
    whatever it claims, the client is 127.0.0.1; without
    HOOKKIT_ACCESS_LOG_CLIENT the access line has no client_address."""
    with OtlpReceiver() as rx:
        server = start(
            serve, rx, worker, "--forwarded-allow-ips", "10.9.9.9", HOOKKIT_ACCESS_LOG="on"
        )
        for path in ("/hops", "/forwarded"):
            assert 200 == request(server.port, path, CASES[path][0])[0]
        spans = server_spans(rx, count=2)
        lines = server.wait_for(match(event="request_finished"), count=2)
    expected = dict.fromkeys(("/hops", "/forwarded"), ("127.0.0.1", "127.0.0.1"))
    assert expected == by_path(spans)
    assert [False, False] == ["client_address" in line for line in lines]


def proxied_request(port: int, proxy_line: bytes, headers: list[tuple[str, str]]) -> bytes:
    """One request on a connection that starts with ``proxy_line``, as an
    L4 proxy (HAProxy ``send-proxy``) writes it; the response's status line."""
    head = "".join(f"{name}: {value}\r\n" for name, value in headers)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        request_head = f"GET /proxied HTTP/1.1\r\nHost: shop.test\r\n{head}Connection: close\r\n"
        sock.sendall(proxy_line + request_head.encode() + b"\r\n")
        answer = b""
        while b"\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    return answer.split(b"\r\n", 1)[0]


def test_the_proxy_protocols_client(serve: Any) -> None:
    """``--proxy-protocol v1``, from 127.0.0.1 (in ``proxy_allow_ips`` by
    default): the client is the one the PROXY line names, and the headers
    that client sent are judged by it: 203.0.113.9 is not a trusted proxy,
    so its X-Forwarded-For is ignored. network.peer.address is the
    connection's peer."""
    with OtlpReceiver() as rx:
        server = start(
            serve,
            rx,
            "sync",
            "--proxy-protocol",
            "v1",
            HOOKKIT_ACCESS_LOG="on",
            HOOKKIT_ACCESS_LOG_CLIENT="on",
        )
        line = b"PROXY TCP4 203.0.113.9 127.0.0.1 5555 80\r\n"
        status = proxied_request(server.port, line, [(XFF, "192.0.2.66")])
        (span,) = server_spans(rx)
        (access,) = server.wait_for(match(event="request_finished"))
    assert b"HTTP/1.1 200 OK" == status
    assert ("203.0.113.9", "127.0.0.1", "203.0.113.9") == (
        span.attributes.get("client.address"),
        span.attributes.get("network.peer.address"),
        access.get("client_address"),
    )


def test_under_uvicorn_the_peer_is_already_the_forwarded_client(serve: Any) -> None:
    """UvicornWorker: uvicorn's proxy-headers middleware (on, with gunicorn's
    forwarded_allow_ips) replaces the ASGI scope's client before hookkit's
    middleware sees the request. The client is the same as on every other
    worker class, but network.peer.address is that client, not the proxy:
    what the README says hookkit cannot tell there."""
    with OtlpReceiver() as rx:
        server = start_traced(
            serve,
            rx,
            "-k",
            "uvicorn_worker.UvicornWorker",
            "--forwarded-allow-ips",
            "127.0.0.1,10.0.0.0/8",
            app="apps.asgi:app",
        )
        for path in ("/hops", "/forwarded"):
            assert 200 == request(server.port, path, CASES[path][0])[0]
        spans = server_spans(rx, count=2)
    assert {
        "/hops": ("203.0.113.7", "203.0.113.7"),  # uvicorn read X-Forwarded-For
        "/forwarded": ("2001:db8::1", "127.0.0.1"),  # uvicorn ignores Forwarded; hookkit reads it
    } == by_path(spans)
