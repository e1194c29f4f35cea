"""hookkit._core.client_address: the client behind trusted proxies, from
``X-Forwarded-For``, ``Forwarded`` and gunicorn's PROXY protocol info, by
uvicorn's rule (from the right, the first hop that is not trusted); and
what the tracing and log sinks make of it. Real gunicorn, every header
through a real socket: tests/test_client_address_live.py."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from opentelemetry import propagate
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from hookkit._core.asgi import AsgiRequest
from hookkit._core.client_address import (
    MAX_HOPS,
    client_address,
    client_address_from_environ,
    node_address,
)
from hookkit._core.dispatch import Dispatcher
from hookkit._core.request_path import RequestPath
from hookkit._core.settings import Settings
from hookkit._core.sink import RequestFinished
from hookkit._core.trust import TrustedPeers
from hookkit._sinks.logs import pipeline
from hookkit._sinks.logs.sink import LogSink
from hookkit._sinks.tracing.sink import TracingSink
from hookkit.testing import FakeRequest, FakeResponse

LOOPBACK = TrustedPeers(["127.0.0.1", "::1"])  # gunicorn's default
PROXIES = TrustedPeers(["127.0.0.1", "10.0.0.0/8"])
PROXY = ("127.0.0.1", 40000)  # a trusted peer
STRANGER = ("198.51.100.4", 40000)  # an untrusted one


def req(*headers: tuple[str, str], peer: object = PROXY, **extra: Any) -> FakeRequest:
    """gunicorn's WSGI request: UPPER-CASE header names."""
    request = FakeRequest(headers=list(headers), peer_addr=peer)
    for name, value in extra.items():
        setattr(request, name, value)
    return request


def xff(*values: str, peer: object = PROXY) -> FakeRequest:
    return req(*(("X-FORWARDED-FOR", value) for value in values), peer=peer)


def fwd(*values: str, peer: object = PROXY) -> FakeRequest:
    return req(*(("FORWARDED", value) for value in values), peer=peer)


# -- X-Forwarded-For ---------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["203.0.113.7"], "203.0.113.7"),
        (["203.0.113.7, 10.0.0.1"], "203.0.113.7"),  # 10.0.0.1: a trusted proxy
        (["192.0.2.1, 203.0.113.7, 10.0.0.1, 10.0.0.2"], "203.0.113.7"),  # 192.0.2.1 said so
        (["10.0.0.9, 10.0.0.1"], "10.0.0.9"),  # every hop trusted: the leftmost
        (["203.0.113.7", "10.0.0.1"], "203.0.113.7"),  # repeated lines: one list
        (["192.0.2.1", "203.0.113.7, 10.0.0.1"], "203.0.113.7"),
        (["203.0.113.7:5555"], "203.0.113.7"),  # the port is dropped
        (["[2001:db8::1]:4711"], "2001:db8::1"),
        (["2001:db8::1"], "2001:db8::1"),
        (['"203.0.113.7"'], "203.0.113.7"),
        (["203.0.113.7, unknown"], "203.0.113.7"),  # unknown: passed over
        (["203.0.113.7, _hidden"], "203.0.113.7"),  # obfuscated: passed over
        (["203.0.113.7,, "], "203.0.113.7"),  # empty hops: passed over
        (["proxy.internal"], "proxy.internal"),  # a name is kept, as uvicorn keeps it
    ],
)
def test_x_forwarded_for_gives_the_rightmost_untrusted_hop(
    values: list[str], expected: str
) -> None:
    assert expected == client_address(xff(*values), PROXIES)


@pytest.mark.parametrize("values", [[""], [" , ,"], ["unknown"], ["_a, _b"], ["[", "[::1"]])
def test_a_header_without_an_address_leaves_the_peer(values: list[str]) -> None:
    assert "127.0.0.1" == client_address(xff(*values), PROXIES)


def test_an_untrusted_peer_is_the_client_whatever_it_sends() -> None:
    assert "198.51.100.4" == client_address(xff("203.0.113.7", peer=STRANGER), PROXIES)
    assert "198.51.100.4" == client_address(fwd("for=203.0.113.7", peer=STRANGER), PROXIES)


def test_without_a_forwarding_header_the_client_is_the_peer() -> None:
    assert "127.0.0.1" == client_address(req(("HOST", "shop.test")), PROXIES)
    assert "::1" == client_address(req(peer=("::1", 5000, 0, 0)), LOOPBACK)


def test_a_unix_socket_peer_is_trusted_and_has_no_address() -> None:
    """gunicorn trusts a peer on a UNIX socket unconditionally."""
    assert "203.0.113.7" == client_address(xff("203.0.113.7", peer=""), LOOPBACK)
    assert "203.0.113.7" == client_address(xff("203.0.113.7", peer=None), LOOPBACK)
    assert None is client_address(req(peer=""), LOOPBACK)


def test_everyone_trusted_gives_the_leftmost() -> None:
    """``forwarded_allow_ips = *``: as uvicorn, the first address."""
    everyone = TrustedPeers(["*"])
    assert "192.0.2.1" == client_address(xff("192.0.2.1, 203.0.113.7"), everyone)


def test_only_the_last_hops_are_read() -> None:
    """A hostile header costs at most MAX_HOPS hops: past them, the last hop
    read stands for the leftmost."""
    trusted_hops = ", ".join(f"10.0.{n // 256}.{n % 256}" for n in range(2000))
    assert "10.0.7.176" == client_address(xff(f"203.0.113.7, {trusted_hops}"), PROXIES)
    assert "10.0.7.176" == f"10.0.{(2000 - MAX_HOPS) // 256}.{(2000 - MAX_HOPS) % 256}"
    lines = [f"10.0.0.{n}" for n in range(MAX_HOPS + 5)]
    assert f"10.0.0.{5}" == client_address(xff("203.0.113.7", *lines), PROXIES)


# -- Forwarded -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["for=203.0.113.7"], "203.0.113.7"),
        (["For=203.0.113.7;proto=https;by=10.0.0.1"], "203.0.113.7"),
        (['for="[2001:db8::1]:4711"'], "2001:db8::1"),
        (['for="203.0.113.7:4711"'], "203.0.113.7"),
        (["for=203.0.113.7, for=10.0.0.1"], "203.0.113.7"),
        (["for=192.0.2.1, for=203.0.113.7, for=10.0.0.1"], "203.0.113.7"),
        (["for=203.0.113.7", "for=10.0.0.1"], "203.0.113.7"),  # repeated lines
        (["for=203.0.113.7, for=unknown"], "203.0.113.7"),
        (["for=203.0.113.7, for=_hidden"], "203.0.113.7"),
        (['for=203.0.113.7, for="_gazonk"'], "203.0.113.7"),
        (['for="[2001:db8::1]:_port"'], "2001:db8::1"),  # obfuscated port
        (["for=203.0.113.7, proto=https"], "203.0.113.7"),  # an element without for
        # Quoted strings: their commas and semicolons separate nothing.
        (['for=203.0.113.7;ext="a, for=192.0.2.66"'], "203.0.113.7"),
        (['for=203.0.113.7;ext="x;for=192.0.2.66"'], "203.0.113.7"),
        (['ext="x;for=192.0.2.66";for=203.0.113.7'], "203.0.113.7"),
        (['ext="a,for=192.0.2.66";for=203.0.113.7'], "203.0.113.7"),
        (['for=192.0.2.1, for=203.0.113.7;ext="a,b", for=10.0.0.1'], "203.0.113.7"),
        (["for=10.0.0.9, for=10.0.0.1"], "10.0.0.9"),  # all trusted: the leftmost
    ],
)
def test_forwarded_gives_the_rightmost_untrusted_for(values: list[str], expected: str) -> None:
    assert expected == client_address(fwd(*values), PROXIES)


def test_x_forwarded_for_wins_over_forwarded() -> None:
    """Both present: X-Forwarded-For alone is read (what uvicorn reads, and
    what proxies write; Forwarded is often passed through untouched)."""
    both = req(("FORWARDED", "for=192.0.2.66"), ("X-FORWARDED-FOR", "203.0.113.7"))
    assert "203.0.113.7" == client_address(both, PROXIES)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "for",
        "for=",
        'for="',
        'for="[2001:db8::1',
        "for=[",
        ";;;,,,===",
        '"""',
        'for="\\"',
        "for=" + "9" * 5000,
        "\x00\xff for=\udcff",
        ",".join(["for=10.0.0.1"] * 3000),
        'a="' + ",".join(["x"] * 3000),
    ],
)
def test_malformed_values_never_raise(value: str) -> None:
    for request in (fwd(value), xff(value)):
        found = client_address(request, PROXIES)
        assert found is None or isinstance(found, str)


@pytest.mark.parametrize(
    "value",
    [
        "a" * 200_000,  # a regular expression over parameters backtracks on this
        '"' + "a" * 200_000,
        "\\" * 200_000,
        '";' * 100_000,
        ",".join(['"'] * 100_000),
        'for="' + ";" * 200_000,
        ", ".join(['for=10.0.0.1;x="a,b"'] * 10_000),
    ],
)
def test_a_hostile_header_costs_time_linear_in_its_length(value: str) -> None:
    """200 KB (25 times gunicorn's default limit for a header line) in
    well under a second: quadratic work would take minutes."""
    started = time.perf_counter()
    for request in (fwd(value), xff(value)):
        client_address(request, PROXIES)
    assert time.perf_counter() - started < 1.0


@pytest.mark.parametrize(
    ("hop", "expected"),
    [
        (" 203.0.113.7 ", "203.0.113.7"),
        ("[::1]", "::1"),
        ("[::1]:80", "::1"),
        ("::ffff:192.0.2.1", "::ffff:192.0.2.1"),
        ("UNKNOWN", None),
        ("unknown:80", None),
        ("_hidden", None),
        ('"_hidden"', None),
        ('"', None),  # a quoted string a comma cut
        ('b"', None),
        (":80", None),
        ("x" * 254, None),
    ],
)
def test_one_hop(hop: str, expected: str | None) -> None:
    assert expected == node_address(hop)


# -- the PROXY protocol ------------------------------------------------------


def proxied(client: str | None, *headers: tuple[str, str], peer: object = STRANGER) -> Any:
    info = {"proxy_protocol": "TCP4", "client_addr": client, "client_port": 5555}
    return req(*headers, peer=peer, proxy_protocol_info=info)


def test_the_proxy_protocols_client_is_the_client() -> None:
    """gunicorn accepted the PROXY line from a peer of proxy_allow_ips: the
    proxied client it names is the client, though the peer is not in
    forwarded_allow_ips."""
    assert "203.0.113.7" == client_address(proxied("203.0.113.7"), LOOPBACK)


def test_headers_are_judged_by_the_proxied_client() -> None:
    """An L4 proxy does not touch HTTP headers: a client's own
    X-Forwarded-For counts only if that client is a trusted proxy."""
    spoof = ("X-FORWARDED-FOR", "192.0.2.66")
    assert "203.0.113.7" == client_address(proxied("203.0.113.7", spoof, peer=PROXY), PROXIES)
    assert "192.0.2.66" == client_address(proxied("10.0.0.3", spoof), PROXIES)


def test_a_proxy_line_without_addresses_leaves_the_peer() -> None:
    """PROXY v2 LOCAL and UNSPEC have no client; a later request on a kept
    connection has an empty info (gunicorn's async workers)."""
    assert "198.51.100.4" == client_address(proxied(None), PROXIES)
    assert "198.51.100.4" == client_address(req(peer=STRANGER, proxy_protocol_info={}), PROXIES)


# -- ASGI requests -------------------------------------------------------------


class NoPeer:
    """gunicorn's ASGI request: raw lower-case header bytes, no ``peer_addr``."""

    method, path, query, scheme, version = "GET", "/", "", "http", (1, 1)

    def __init__(self, *headers: tuple[bytes, bytes]) -> None:
        self.headers_bytes = list(headers)


def test_asgi_raw_headers_are_read_without_the_str_copy() -> None:
    """gunicorn's ASGI request keeps raw lower-case bytes and builds its
    ``headers`` copy only when read: it is never read."""

    class GunicornAsgiRequest(NoPeer):
        peer_addr = PROXY

        @property
        def headers(self) -> list[tuple[str, str]]:
            raise AssertionError("the str copy of the headers was built")

    request = GunicornAsgiRequest(
        (b"host", b"shop.test"),
        (b"x-forwarded-for", b"192.0.2.1"),
        (b"x-forwarded-for", b"203.0.113.7, 10.0.0.1"),
    )
    assert "203.0.113.7" == client_address(request, PROXIES)


def test_hookkits_asgi_request() -> None:
    scope = {
        "type": "http",
        "client": ("127.0.0.1", 5000),
        "headers": [(b"forwarded", b'for="[2001:db8::1]:4711"')],
    }
    assert "2001:db8::1" == client_address(AsgiRequest(scope), LOOPBACK)
    unix = {**scope, "client": None}  # uvicorn on a UNIX socket
    assert "2001:db8::1" == client_address(AsgiRequest(unix), LOOPBACK)


def test_a_request_without_a_peer_attribute_defers_to_the_environ() -> None:
    """gunicorn's ASGI worker: the request object has no ``peer_addr``; the
    environ post_request gets has REMOTE_ADDR (``-`` for a UNIX socket)."""

    assert None is client_address(NoPeer((b"x-forwarded-for", b"203.0.113.7")), LOOPBACK)
    remote = {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "203.0.113.7, 10.0.0.1"}
    assert "203.0.113.7" == client_address_from_environ(remote, PROXIES)
    assert "198.51.100.4" == client_address_from_environ(
        {**remote, "REMOTE_ADDR": "198.51.100.4"}, PROXIES
    )
    assert "203.0.113.7" == client_address_from_environ(
        {"REMOTE_ADDR": "-", "HTTP_FORWARDED": "for=203.0.113.7"}, PROXIES
    )
    assert "127.0.0.1" == client_address_from_environ({"REMOTE_ADDR": "127.0.0.1"}, PROXIES)
    assert None is client_address_from_environ({"REMOTE_ADDR": "-"}, PROXIES)
    assert None is client_address_from_environ({}, PROXIES)
    assert None is client_address_from_environ(None, PROXIES)


# -- the sinks -----------------------------------------------------------------


def worker(allowed: str) -> SimpleNamespace:
    cfg = SimpleNamespace(forwarded_allow_ips=allowed.split(","), proc_name="t")
    return SimpleNamespace(cfg=cfg, ppid=1)


@pytest.fixture
def tracing() -> Iterator[tuple[TracingSink, InMemorySpanExporter, RequestPath]]:
    """The tracing sink on a provider of the test's own, on the request path."""
    # Tracing off: start_worker reads the worker's config (forwarded_allow_ips)
    # and builds no provider; the test's own is put in its place.
    sink = TracingSink(Settings.load({"HOOKKIT_TRACING": "off"}), {})
    sink.start_worker(worker("127.0.0.1,10.0.0.0/8"))
    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    sink.tracer = provider.get_tracer("test")
    sink.provider = provider
    sink._propagator = propagate.get_global_textmap()
    dispatcher = Dispatcher()
    dispatcher.set_sinks([sink])
    path = RequestPath(dispatcher)
    yield sink, exporter, path
    provider.shutdown()


def test_the_span_has_the_client_and_the_peer(
    tracing: tuple[TracingSink, InMemorySpanExporter, RequestPath],
) -> None:
    _sink, exporter, path = tracing
    request = xff("192.0.2.1, 203.0.113.7, 10.0.0.1")
    path.pre_request(request)
    path.post_request(request, {}, FakeResponse())
    (span,) = exporter.get_finished_spans()
    attributes = dict(span.attributes or {})
    assert ("203.0.113.7", "127.0.0.1", 40000) == (
        attributes["client.address"],
        attributes["network.peer.address"],
        attributes["network.peer.port"],
    )


def test_without_a_peer_on_the_request_the_span_reads_the_environ(
    tracing: tuple[TracingSink, InMemorySpanExporter, RequestPath],
) -> None:
    """gunicorn's ASGI worker: client.address and network.peer.address when
    the request ends, from REMOTE_ADDR (the peer, without the PROXY protocol)."""
    _sink, exporter, path = tracing

    request = NoPeer((b"x-forwarded-for", b"192.0.2.66"))
    path.pre_request(request)
    environ = {"REMOTE_ADDR": "198.51.100.4", "HTTP_X_FORWARDED_FOR": "192.0.2.66"}
    path.post_request(request, environ, FakeResponse())
    (span,) = exporter.get_finished_spans()
    attributes = dict(span.attributes or {})
    assert ("198.51.100.4", "198.51.100.4") == (
        attributes["client.address"],
        attributes["network.peer.address"],
    )


def test_with_the_proxy_protocol_remote_addr_is_not_the_peer(
    tracing: tuple[TracingSink, InMemorySpanExporter, RequestPath],
) -> None:
    sink, exporter, path = tracing
    sink.start_worker(SimpleNamespace(cfg=SimpleNamespace(proxy_protocol="v1"), ppid=1))
    sink.tracer = sink.provider.get_tracer("test")

    request = NoPeer()
    path.pre_request(request)
    path.post_request(request, {"REMOTE_ADDR": "203.0.113.7"}, FakeResponse())
    (span,) = exporter.get_finished_spans()
    attributes = dict(span.attributes or {})
    assert "203.0.113.7" == attributes["client.address"]
    assert "network.peer.address" not in attributes


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(record.getMessage()))


@pytest.fixture
def lines() -> Iterator[Lines]:
    """hookkit's logger, into a list, for one test."""
    logger = pipeline.stdlib_logger()
    handler = Lines()
    saved = logger.handlers[:], logger.level, logger.propagate
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield handler
    logger.handlers[:], level, logger.propagate = saved[0], saved[1], saved[2]
    logger.setLevel(level)


def access_line(settings: Settings, request: Any, environ: Any, lines: Lines) -> dict[str, Any]:
    sink = LogSink(settings)
    sink.start_worker(worker("127.0.0.1,10.0.0.0/8"))
    dispatcher = Dispatcher()
    dispatcher.set_sinks([sink])
    path = RequestPath(dispatcher)
    path.pre_request(request)
    path.post_request(request, environ, FakeResponse())
    (line,) = [line for line in lines.lines if line["event"] == "request_finished"]
    return line


def test_the_access_line_has_the_client_only_when_asked(lines: Lines) -> None:
    request = xff("203.0.113.7, 10.0.0.1")
    without = access_line(Settings(access_log=True), request, {}, lines)
    assert "client_address" not in without
    lines.lines.clear()
    asked = Settings(access_log=True, access_log_client=True)
    line = access_line(asked, xff("203.0.113.7, 10.0.0.1"), {}, lines)
    assert "203.0.113.7" == line["client_address"]


def test_the_access_lines_client_from_the_environ_when_the_request_has_no_peer(
    lines: Lines,
) -> None:
    asked = Settings(access_log=True, access_log_client=True)
    environ = {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "203.0.113.7"}
    line = access_line(asked, NoPeer((b"x-forwarded-for", b"203.0.113.7")), environ, lines)
    assert "203.0.113.7" == line["client_address"]


def test_the_log_sink_keeps_no_client_past_the_request(lines: Lines) -> None:
    sink = LogSink(Settings(access_log=True, access_log_client=True))
    assert sink.wants("request_started")
    dispatcher = Dispatcher()
    dispatcher.set_sinks([sink])
    path = RequestPath(dispatcher)
    for _ in range(3):
        request = xff("203.0.113.7")
        path.pre_request(request)
        path.post_request(request, {}, FakeResponse())
    assert {} == sink._clients
    assert not LogSink(Settings(access_log=True)).wants("request_started")


def test_a_finished_request_is_a_named_tuple_without_the_client() -> None:
    """The client address is in no value every sink gets (nor a metric label)."""
    assert "client_address" not in RequestFinished._fields
