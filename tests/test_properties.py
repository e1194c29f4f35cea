"""Property-based tests (hypothesis) against real gunicorn: bad input never
breaks hookkit, random traffic adds no Prometheus series, and secrets sent by
clients never leave the process.

Real gunicorn processes are expensive, so the module starts one server per
worker class (``served``, module-scoped) and each test drives its hypothesis
examples against it. The server runs the drop-in config with the access log
on and gunicorn's ``--log-level debug`` (the most that is ever logged),
exports its spans over OTLP/HTTP to an ``OtlpReceiver`` and serves
``/metrics``; one worker, so the log lines of one example are all written
before those of the request that closes it (``sentinel``). Requests go over
raw sockets, so the tests control every byte (non-UTF-8 bytes, quotes,
percent-escapes); gunicorn answers what it cannot parse with a 4xx itself,
which is fine: hookkit must not break either way. Everything listens and
connects on 127.0.0.1, and the fixture stops every process it started.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import random
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, Phase, event, example, given, settings
from hypothesis import strategies as st

from hookkit._core.http import KNOWN_METHODS
from hookkit._face.gunicorn_process import Gunicorn, LogLine, free_port, match
from tests.conftest import clean_env, no_control_socket
from tests.otlp import OtlpReceiver, Span
from tests.scrape import samples, scrape_text, series, total
from tests.traced import ASGI_APP, WSGI_APP, export_env

pytestmark = pytest.mark.integration

COUNT = "http_server_request_duration_seconds_count"

# The worker classes, each with the tracing test app it serves (both apps
# answer /, /status/CODE and /raise the same way; /users/ID names a route in
# the WSGI app).
WORKER_CLASSES: dict[str, tuple[str, tuple[str, ...]]] = {
    "sync": (WSGI_APP, ()),
    "gthread": (WSGI_APP, ("--threads", "4")),
    "asgi": (ASGI_APP, ()),
}

# deadline=None: each example is a round trip to a real server. The
# function-scoped fixture is conftest's autouse ``fresh_runtime``, which
# resets hookkit's state in this process only and is harmless between
# examples. No example database and a fixed seed: CI runs the same examples;
# no explain phase (it replays each failure many times against the server).
PROPERTY = settings(
    deadline=None,
    phases=[Phase.explicit, Phase.generate, Phase.shrink],
    derandomize=True,
    database=None,
    print_blob=False,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)

_ids = itertools.count(1)


def unique() -> int:
    """A number no other example of this run uses (paths, secrets)."""
    return next(_ids)


# -- the server ---------------------------------------------------------------


@dataclass
class Served:
    """One real gunicorn (one worker) exporting spans to ``rx``."""

    worker_class: str
    server: Gunicorn
    rx: OtlpReceiver
    port: int
    metrics_port: int

    def mark(self) -> tuple[int, int]:
        """Where the log and the received bodies stand now."""
        return len(self.server.events()), self.rx.requests

    def lines_since(self, mark: tuple[int, int]) -> list[LogLine]:
        """Every output line (stdout and stderr) since ``mark``."""
        return self.server.events()[mark[0] :]

    def bodies_since(self, mark: tuple[int, int]) -> list[bytes]:
        """Every OTLP request body received since ``mark``."""
        return self.rx.raw_bodies[mark[1] :]


@pytest.fixture(scope="module", params=list(WORKER_CLASSES))
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    """One gunicorn per worker class for the whole module, with the access
    log on, gunicorn's debug level and spans exported to a receiver."""
    worker_class: str = request.param
    app, extra = WORKER_CLASSES[worker_class]
    port, metrics_port = free_port(), free_port()
    with OtlpReceiver() as rx:
        env = clean_env(
            **export_env(rx.endpoint),
            HOOKKIT_ACCESS_LOG="on",
            HOOKKIT_METRICS_BIND=f"127.0.0.1:{metrics_port}",
        )
        argv = [
            "-c",
            "python:hookkit.conf",
            "-b",
            f"127.0.0.1:{port}",
            "--graceful-timeout",
            "3",
            *no_control_socket(),
            "-k",
            worker_class,
            "-w",
            "1",
            *extra,
            "--log-level",
            "debug",
            app,
        ]
        cwd: Path = tmp_path_factory.mktemp(f"properties-{worker_class}")
        server = Gunicorn(argv, env=env, cwd=str(cwd))
        try:
            server.start()
            server.wait_for(match(event="worker_booted"), timeout=20)
            yield Served(worker_class, server, rx, port, metrics_port)
        finally:
            server.stop()


# -- raw HTTP -----------------------------------------------------------------


def exchange(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    """Send ``data`` on a new connection and read until the server closes it
    (every request the tests send asks for ``Connection: close``)."""
    received: list[bytes] = []
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        # gunicorn may answer (a 4xx) and close before it read everything.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)
        try:
            while chunk := sock.recv(65536):
                received.append(chunk)
        except ConnectionResetError:
            pass  # what was read before the reset is kept
    return b"".join(received)


def status_of(response: bytes) -> int | None:
    """The status code of an HTTP/1.x response, None if it is not one."""
    found = re.match(rb"HTTP/1\.[01] (\d{3}) ", response)
    return int(found.group(1)) if found else None


def simple(method: str, target: str, headers: Sequence[tuple[str, str]] = ()) -> bytes:
    """A well-formed request (latin-1), closing the connection."""
    lines = [f"{method} {target} HTTP/1.1", "Host: properties.test", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def sentinel(served: Served, wait_span: bool = False) -> None:
    """One plain request after an example's requests; returns once its
    access line (and, with ``wait_span``, its span) arrived. The server has
    one worker, which logs and exports in order: everything the example's
    requests wrote is in by then."""
    path = f"/sentinel-{unique()}"
    assert 200 == status_of(exchange(served.port, simple("GET", path)))
    served.server.wait_for(match(event="request_finished", path=path), timeout=10)
    if wait_span:
        served.rx.wait_for(lambda span: span.attributes.get("url.path") == path, timeout=10)


def assert_hookkit_intact(served: Served, mark: tuple[int, int]) -> None:
    """What hookkit must keep whatever clients send: every line the server
    wrote since ``mark`` is one JSON object, hookkit counted no error of its
    own, and the master and its worker are the ones that started."""
    lines = served.lines_since(mark)
    failures = [line["raw"] for line in lines if "raw" in line and "hookkit:" in line["raw"]]
    assert not failures, f"hookkit reported internal errors: {failures[:5]}"
    not_json = [line["raw"] for line in lines if set(line) == {"raw"}]
    assert not not_json, f"{len(not_json)} line(s) are not one JSON object: {not_json[:5]}"
    text = scrape_text(served.metrics_port)
    errors = {
        sample.labels.get("sink"): sample.value
        for sample in samples(text)
        if sample.name == "hookkit_sink_errors_total"
    }
    assert not any(errors.values()), f"hookkit_sink_errors_total: {errors}"
    assert served.server.proc is not None
    assert served.server.proc.poll() is None, "the master exited"
    exited = served.server.events(match(event="worker_exited"))
    assert not exited, f"a worker exited: {exited}"


# -- 1. bad input ---------------------------------------------------------------

TOKEN = "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# Headers that change the framing of the exchange (a Content-Length with no
# body would have the server wait for it) and the trace-context headers,
# which have tests of their own below.
NOT_RANDOM_HEADERS = {
    "connection",
    "content-length",
    "transfer-encoding",
    "expect",
    "upgrade",
    "te",
    "trailer",
    "keep-alive",
    "http2-settings",
    "traceparent",
    "tracestate",
    "baggage",
}


def mostly(good: st.SearchStrategy[Any], rare: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``good`` three times in four, else ``rare``; shrinks towards ``good``."""
    return st.integers(0, 3).flatmap(lambda n: rare if n == 3 else good)


# Pieces of paths and query strings that gunicorn accepts and that are
# awkward for logs and URL handling: escapes of newlines and NUL, stray and
# invalid escapes, quotes, backslashes, escaped non-UTF-8 bytes, separators.
PIECES = [
    b"%0a",
    b"%0d%0a",
    b"%00",
    b"%",
    b"%zz",
    b"%ff",
    b"%C3%A9",
    b"%ED%A0%80",  # an escaped UTF-16 surrogate
    b"%22",
    b"%5C",
    b"%2F",
    b'"',
    b"'",
    b"\\",
    b"\\n",
    b"\\u0000",
    b"/",
    b"//",
    b"..",
    b"?",
    b"#",
    b"&",
    b"=",
    b";",
    b"+",
    b"{",
    b"}",
    b"<",
    b">",
    b"|",
    b"`",
    b"^",
    b"~",
    b"a",
    b"Z",
    b"0",
]
url_text = st.lists(st.sampled_from(PIECES), max_size=20).map(b"".join)
printable = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=30).map(
    str.encode
)
queries = st.one_of(
    st.just(b""),
    url_text.map(lambda text: b"?" + text),
    st.lists(st.tuples(printable, printable), max_size=6).map(
        lambda pairs: b"?" + b"&".join(name + b"=" + value for name, value in pairs)
    ),
)
methods = st.one_of(
    st.sampled_from(sorted(KNOWN_METHODS)).map(str.encode),
    st.sampled_from([b"PURGE", b"FOO", b"PROPFIND", b"M-SEARCH", b"BREW"]),
    # gunicorn takes tokens of 3 to 20 characters, no lower case, no "#"
    st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_!$%&'*+.^`|~", min_size=3, max_size=20).map(
        str.encode
    ),
)
header_names = st.one_of(
    st.sampled_from([b"User-Agent", b"Accept", b"Cookie", b"X-Forwarded-For", b"Forwarded"]),
    st.text(TOKEN, min_size=1, max_size=30).map(str.encode),
).filter(lambda name: name.decode().lower() not in NOT_RANDOM_HEADERS | {"host"})
header_values = st.one_of(
    # Visible ASCII, blanks and bytes past ASCII (obs-text), not UTF-8.
    st.binary(max_size=64).map(
        lambda b: bytes(c for c in b if c in (0x09, 0x20) or 0x21 <= c <= 0x7E or c >= 0x80)
    ),
    st.text(st.characters(min_codepoint=0x20, exclude_categories=["Cc", "Cs"]), max_size=40).map(
        str.encode
    ),
    # Very long values, n bytes (gunicorn's limit on a header line is 8190).
    st.builds(
        lambda n, fill: (fill * n)[:n],
        st.integers(1000, 8200),
        st.sampled_from([b"v", b"\xff", b'"', b"\\", b"%0a", b"\t"]),
    ),
)
headers = st.lists(st.tuples(header_names, header_values), max_size=30)
# Many headers: gunicorn's limit is 100 fields.
many_headers = mostly(st.just(0), st.integers(0, 105))
# The request line padded to about gunicorn's limit (4094 bytes), on both
# sides of it (past it gunicorn answers 414 itself).
line_lengths = mostly(st.none(), st.integers(4000, 4100))
# Bytes gunicorn refuses in a request line: not ASCII, controls, blanks.
RAW_BYTES = [b"\xff", b"\x80", b"\xc3\xa9", b"\xe2\x80\xa8", b"\x00", b"\x7f", b"\t", b" "]
raw_bytes = st.one_of(st.sampled_from(RAW_BYTES), st.binary(min_size=1, max_size=3))
# What a request breaks, if anything: gunicorn answers such a request with a
# 4xx itself, without running the request hooks.
FAULTS = [
    "method",
    "separator",
    "byte in path",
    "byte in query",
    "version",
    "header name",
    "byte in header value",
]
faults = mostly(st.none(), st.sampled_from(FAULTS))


@st.composite
def bad_requests(draw: st.DrawFn) -> bytes:
    """One request with awkward parts (quotes, backslashes, percent-escapes,
    ``%0a``, bytes past ASCII in header values, long lines, long values,
    many headers) and, one time in four, one part broken."""
    fault = draw(faults, label="fault")
    method = draw(methods)
    if fault == "method":
        method = draw(
            st.one_of(
                st.sampled_from([b"get", b"G\xc3\xa9T", b"", b"GE", b"M" * 21, b"GE#T"]),
                st.binary(min_size=1, max_size=8).filter(lambda b: b" " not in b),
            )
        )
    sep = draw(st.sampled_from([b"  ", b"\t", b""])) if fault == "separator" else b" "
    # Awkward paths, or one of the app's that fail (gunicorn then logs the
    # request line itself), with an awkward query.
    route = draw(st.sampled_from([None, b"/raise", b"/status/500", b"/status/404"]), label="route")
    path = route or b"/" + draw(url_text)
    if fault == "byte in path":
        at = draw(st.integers(0, len(path)))
        path = path[:at] + draw(raw_bytes) + path[at:]
    query = draw(queries)
    if fault == "byte in query":
        query += b"?" + draw(raw_bytes)
    version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.0"]))
    if fault == "version":
        version = draw(st.sampled_from([b"HTTP/2.0", b"HTTP/0.9", b"HTTP/1.1x", b"http/1.1", b""]))
    length = draw(line_lengths)
    if length is not None:
        path += b"a" * max(0, length - len(method + path + query + version) - 2 * len(sep))
    fields = [b"Connection: close"]
    host = draw(st.one_of(st.none(), header_values), label="Host")
    fields += [b"Host: " + host] if host is not None else []
    fields += [name + b": " + value for name, value in draw(headers)]
    fields += [b"X-Filler-%d: v" % n for n in range(draw(many_headers))]
    if fault == "header name":
        name = draw(
            st.binary(min_size=1, max_size=10).filter(lambda b: not re.search(b"[\r\n:]", b))
        )
        fields.append(name + b": value")
    if fault == "byte in header value":
        control = draw(st.sampled_from([b"\x00", b"\x01", b"\x1b", b"\x7f", b"\r"]))
        fields.append(b"X-Control: a" + control + b"b")
    line = method + sep + path + query + sep + version
    return b"".join(part + b"\r\n" for part in [line, *fields]) + b"\r\n"


@settings(PROPERTY, max_examples=100)
@given(request=bad_requests())
# Pinned: a query of escaped newlines, quotes and backslashes to an app that
# raises (gunicorn logs the request line), and a request line of exactly
# gunicorn's limit.
@example(request=b'GET /raise?%0a%0d%0a"\\%00 HTTP/1.1\r\nConnection: close\r\n\r\n')
@example(request=simple("GET", "/" + "a" * (4094 - len("GET / HTTP/1.1"))))
def test_bad_requests_never_break_hookkit(served: Served, request: bytes) -> None:
    """Random request lines, paths, query strings, methods and headers
    (non-UTF-8 bytes, quotes, backslashes, percent-escapes, ``%0a``, very
    long paths and values, many headers): each gets an HTTP response, any
    status gunicorn chooses, and hookkit stays intact (one JSON object per
    line, no internal error, the server up)."""
    mark = served.mark()
    response = exchange(served.port, request)
    status = status_of(response)
    assert status is not None, f"no HTTP response: {response[:200]!r}"
    event(f"status {status}")
    sentinel(served)
    assert_hookkit_intact(served, mark)


def test_a_head_request_keeps_one_json_object_per_line(served: Served) -> None:
    """HEAD to an app that writes a body anyway (most plain WSGI apps do):
    gunicorn drops the body and warns, and the warning is a JSON line like
    every other."""
    mark = served.mark()
    for path in ("/", "/status/404", "/status/500"):
        assert status_of(exchange(served.port, simple("HEAD", path))) is not None
    sentinel(served)
    assert_hookkit_intact(served, mark)


# -- 1b. trace context ------------------------------------------------------------

HEX = "0123456789abcdef"


def latin1_text(max_size: int) -> st.SearchStrategy[str]:
    """Text gunicorn accepts in a header value: latin-1, no controls but tab."""
    return st.text(
        st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
        max_size=max_size,
    )


TRACEPARENT = re.compile(r"[ \t]*[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}(-.*)?[ \t]*")


@dataclass(frozen=True)
class Caller:
    """A caller's valid W3C trace context."""

    trace_id: str
    span_id: str

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-01"


callers = st.builds(
    Caller,
    st.text(HEX, min_size=32, max_size=32).filter(lambda s: s.strip("0")),
    st.text(HEX, min_size=16, max_size=16).filter(lambda s: s.strip("0")),
)
NOT_HEX = ["g", "z", "G", "A", "F", "-", "_", ".", " ", "\xff", "\u00e9", "x"]


@st.composite
def malformed_traceparents(draw: st.DrawFn, caller: Caller) -> list[str]:
    """``traceparent`` header lines that W3C Trace Context calls invalid,
    each made from ``caller``'s valid one."""
    good = caller.traceparent
    kind = draw(
        st.sampled_from(
            [
                "not-hex",
                "truncated",
                "longer-id",
                "version-ff",
                "version-00-extra",
                "zero-trace-id",
                "zero-span-id",
                "separator",
                "empty",
                "garbage",
                "two-differing",
            ]
        )
    )
    if kind == "not-hex":  # an id or the flags with a character that is not lower-case hex
        position = draw(st.sampled_from([i for i, c in enumerate(good) if c != "-" and i > 2]))
        return [good[:position] + draw(st.sampled_from(NOT_HEX)) + good[position + 1 :]]
    if kind == "truncated":
        return [good[: draw(st.integers(0, len(good) - 1))]]
    if kind == "longer-id":
        position = draw(st.sampled_from([3, 36]))  # inside the trace id or the span id
        return [good[:position] + draw(st.sampled_from(HEX)) + good[position:]]
    if kind == "version-ff":
        return ["ff" + good[2:]]
    if kind == "version-00-extra":
        return [good + "-" + draw(st.text(HEX, max_size=8))]
    if kind == "zero-trace-id":
        return [f"00-{'0' * 32}-{caller.span_id}-01"]
    if kind == "zero-span-id":
        return [f"00-{caller.trace_id}-{'0' * 16}-01"]
    if kind == "separator":
        position = draw(st.sampled_from([2, 35, 52]))
        return [
            good[:position]
            + draw(st.sampled_from(["", "_", " ", "--", ":"]))
            + good[position + 1 :]
        ]
    if kind == "empty":
        return [""]
    if kind == "garbage":
        text = draw(latin1_text(80))
        return [draw(st.just(text).filter(lambda t: not TRACEPARENT.fullmatch(t.strip())))]
    # two-differing: two valid lines that disagree (W3C: invalid as a whole)
    other = caller.trace_id[:-1] + ("1" if caller.trace_id[-1] != "1" else "2")
    return [good, f"00-{other}-{caller.span_id}-01"]


def header_lines(name: str, values: list[str]) -> list[tuple[str, str]]:
    return [(name, value) for value in values]


def exported_span(served: Served, path: str) -> Span:
    """The SERVER span of the request to ``path``."""
    (span,) = served.rx.wait_for(
        lambda span: span.kind == "SERVER" and span.attributes.get("url.path") == path,
        timeout=10,
    )
    return span


@settings(PROPERTY, max_examples=40)
@given(data=st.data(), caller=callers)
def test_a_malformed_traceparent_starts_a_new_trace(
    served: Served, data: st.DataObject, caller: Caller
) -> None:
    """A malformed ``traceparent`` (not hex, wrong lengths, version ff, zero
    ids, extra fields on version 00, two lines that differ): the request is
    served, its span is the root of a new trace, and nothing fails."""
    traceparents = data.draw(malformed_traceparents(caller), label="traceparent lines")
    tracestate = data.draw(st.sampled_from([[], ["congo=t61rcWkgMzE"]]), label="tracestate")
    mark = served.mark()
    path = f"/traceparent-{unique()}"
    request = simple(
        "GET",
        path,
        header_lines("traceparent", traceparents) + header_lines("tracestate", tracestate),
    )
    assert 200 == status_of(exchange(served.port, request))
    span = exported_span(served, path)
    assert "" == span.parent_span_id
    assert caller.trace_id != span.trace_id
    assert re.fullmatch(r"[0-9a-f]{32}", span.trace_id)
    assert span.trace_id.strip("0")
    sentinel(served)
    assert_hookkit_intact(served, mark)


tracestate_values = st.one_of(
    st.sampled_from(
        [
            "",
            ",,,",
            "=",
            "a=",
            "=b",
            "UPPER=1",
            "k=v,k=w",
            "a=b c",
            "congo=t61rcWkgMzE",
            ",".join(f"k{n}=v" for n in range(40)),  # more than 32 members
            "k=" + "v" * 600,  # longer than 512 characters
        ]
    ),
    latin1_text(60),
)
baggage_values = st.one_of(
    st.sampled_from(
        [
            "",
            "%%%",
            "=",
            ";;;",
            "k",
            "k=v;",
            "k=%zz",
            "k=v;p=%",
            "caf\u00e9=1",
            "k=\u00ff",
            ",".join(f"k{n}=v" for n in range(200)),  # more than 180 members
            "k=" + "v" * 5000,  # longer than 4096 bytes per member
        ]
    ),
    latin1_text(60),
)


def assert_the_trace_continues(
    served: Served, caller: Caller, lines: list[tuple[str, str]]
) -> None:
    """A request with ``caller``'s valid ``traceparent`` and ``lines``: its
    span continues the caller's trace, nothing fails, every line is JSON."""
    mark = served.mark()
    path = f"/trace-context-{unique()}"
    request = simple("GET", path, [("traceparent", caller.traceparent), *lines])
    assert 200 == status_of(exchange(served.port, request))
    span = exported_span(served, path)
    assert (caller.trace_id, caller.span_id) == (span.trace_id, span.parent_span_id)
    sentinel(served)
    assert_hookkit_intact(served, mark)


@settings(PROPERTY, max_examples=30)
@given(caller=callers, tracestates=st.lists(tracestate_values, min_size=1, max_size=3))
def test_a_malformed_tracestate_keeps_the_trace_and_the_log(
    served: Served, caller: Caller, tracestates: list[str]
) -> None:
    """A valid ``traceparent`` with malformed ``tracestate`` lines (invalid
    members, too many, too long, non-ASCII): the caller's trace continues,
    nothing fails, and every line stays one JSON object."""
    assert_the_trace_continues(served, caller, header_lines("tracestate", tracestates))


@settings(PROPERTY, max_examples=30)
@given(caller=callers, baggages=st.lists(baggage_values, min_size=1, max_size=3))
def test_a_malformed_baggage_keeps_the_trace_and_the_log(
    served: Served, caller: Caller, baggages: list[str]
) -> None:
    """A valid ``traceparent`` with malformed ``baggage`` lines (invalid
    members, too many, too long, non-ASCII): the caller's trace continues,
    nothing fails, and every line stays one JSON object."""
    assert_the_trace_continues(served, caller, header_lines("baggage", baggages))


# -- 2. bounded series ----------------------------------------------------------

SERIES_REQUESTS = 10_000
CLIENTS = 8
# Paths of the test apps whose status the warm-up exercises: 2xx, 3xx, 4xx,
# 5xx (the app's and an exception's), and a route the app names.
WARM_UP_PATHS = ["/r/warm-up", "/status/302", "/status/404", "/status/500", "/raise", "/users/1"]
GUNICORN_REJECTS = {400, 414, 431}  # answered by gunicorn's parser: no request hooks run


def random_request(rng: random.Random) -> tuple[str, bytes]:
    """(method, request) for the load: a known method or a random token
    (some of which gunicorn rejects), a random path whose status the
    warm-up already saw, and a random query string."""
    method = rng.choice(
        [
            rng.choice(sorted(KNOWN_METHODS)),
            rng.choice(["PURGE", "FOO", "PROPFIND", "M-SEARCH", "get"]),
            "".join(rng.choices("ABCDEFGHIJKLMNOPQRSTUVWXYZ-_!", k=rng.randint(1, 16))),
        ]
    )
    noise = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 24)))
    path = rng.choice(
        [
            "/r/" + quote(noise, safe=""),
            "/r/" + "".join(rng.choices("abc%\"'\\{}|^`~;=&+/.", k=rng.randint(0, 40))),
            "/users/" + quote(noise, safe=""),
            rng.choice(WARM_UP_PATHS[1:]),
        ]
    )
    names = ["q", "page", "token", "x" * rng.randint(1, 9)]
    query = "?" + "&".join(
        f"{quote(rng.choice(names))}={rng.getrandbits(32)}" for _ in range(rng.randint(0, 4))
    )
    target = (path + query).encode()
    if rng.random() < 0.02:  # now and then a raw byte gunicorn refuses
        target += b"\xff"
    return method, (
        method.encode()
        + b" "
        + target
        + b" HTTP/1.1\r\nHost: series.test\r\nConnection: keep-alive\r\n\r\n"
    )


class KeepAliveClient:
    """A raw HTTP/1.1 client that reuses its connection while the server
    keeps it open (gthread, asgi) and reconnects when it does not (sync)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock: socket.socket | None = None
        self.buffer = b""

    def request(self, method: str, data: bytes) -> int:
        """Send ``data``; the response's status."""
        if self.sock is None:
            self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
            self.buffer = b""
        self.sock.sendall(data)
        while b"\r\n\r\n" not in self.buffer:
            self._read()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        status = status_of(head + b"\r\n")
        assert status is not None, f"not an HTTP response: {head[:200]!r}"
        fields = {
            name.strip().lower(): value.strip().lower()
            for name, _, value in (line.partition(b":") for line in head.split(b"\r\n")[1:])
        }
        length = 0 if method == "HEAD" else int(fields.get(b"content-length", b"0"))
        while len(self.buffer) < length:
            self._read()
        self.buffer = self.buffer[length:]
        if fields.get(b"connection") == b"close":
            self.close()
        return status

    def _read(self) -> None:
        assert self.sock is not None
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection mid-response")
        self.buffer += chunk

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def wait_count(served: Served, expected: float, timeout: float = 30.0) -> str:
    """Scrape until the request count reaches ``expected``; the last scrape."""
    deadline = time.monotonic() + timeout
    while True:
        text = scrape_text(served.metrics_port)
        if total(text, COUNT) >= expected or time.monotonic() > deadline:
            return text
        time.sleep(0.05)


def test_random_paths_and_methods_add_no_series(served: Served) -> None:
    """After a warm-up that saw each status class on every known method and
    on an unknown one, 10,000 requests to random paths with random methods
    and query strings add no Prometheus series: methods outside the known
    set are ``_OTHER`` and paths never become labels."""
    warm_up = KeepAliveClient(served.port)
    counted = total(scrape_text(served.metrics_port), COUNT)
    for method in [*sorted(KNOWN_METHODS), "PURGE"]:
        for path in WARM_UP_PATHS:
            request = f"{method} {path} HTTP/1.1\r\nHost: series.test\r\n\r\n".encode()
            if warm_up.request(method, request) not in GUNICORN_REJECTS:
                counted += 1
    warm_up.close()
    before = series(wait_count(served, counted))

    statuses: list[int] = []
    failures: list[BaseException] = []

    def load(seed: int, count: int) -> None:
        rng = random.Random(seed)
        client = KeepAliveClient(served.port)
        try:
            for _ in range(count):
                method, request = random_request(rng)
                statuses.append(client.request(method, request))
        except BaseException as exc:  # reported by the test thread
            failures.append(exc)
        finally:
            client.close()

    started = time.monotonic()
    threads = [
        threading.Thread(target=load, args=(seed, SERIES_REQUESTS // CLIENTS))
        for seed in range(CLIENTS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    elapsed = time.monotonic() - started
    assert not failures, failures[:3]
    assert SERIES_REQUESTS == len(statuses)
    counted += sum(1 for status in statuses if status not in GUNICORN_REJECTS)
    text = wait_count(served, counted)
    after = series(text)
    by_status = dict(sorted(Counter(statuses).items()))
    print(f"{served.worker_class}: {SERIES_REQUESTS} requests in {elapsed:.1f} s: {by_status}")

    assert counted == total(text, COUNT)
    assert [] == sorted(after - before), "series added by random paths and methods"
    assert [] == sorted(before - after)
    assert 0 == total(text, "http_server_active_requests")
    methods_seen = {s.labels["http_request_method"] for s in samples(text) if s.name == COUNT}
    assert {*KNOWN_METHODS, "_OTHER"} >= methods_seen
    routes = {s.labels["http_route"] for s in samples(text) if s.name == COUNT}
    assert {"", "/users/{id}"} >= routes
    assert 0 == total(text, "hookkit_sink_errors_total")


# -- 3. secrets -----------------------------------------------------------------

# Query parameters that carry credentials, as clients name them.
SECRET_PARAMETERS = [
    "password",
    "passwd",
    "token",
    "secret",
    "key",
    "signature",
    "code",
    "api_key",
    "apikey",
    "access_token",
    "refresh_token",
    "id_token",
    "X-Amz-Signature",
    "X-Amz-Credential",
    "X-Amz-Security-Token",
    "X-Goog-Signature",
    "AWSAccessKeyId",
    "Signature",
    "sig",
    "client_secret",
    "authorization",
    "auth",
    "session_id",
    "PHPSESSID",
    "jwt",
    "otp",
]
AUTH_SCHEMES = ["Bearer", "Basic", "Digest", "token", "AWS4-HMAC-SHA256 Credential="]
tokens = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=8, max_size=40)


@st.composite
def parameter_names(draw: st.DrawFn) -> str:
    """A sensitive name as a client may spell it: another case, a prefix or
    suffix, or one character percent-encoded."""
    name = draw(st.sampled_from(SECRET_PARAMETERS))
    how = draw(st.sampled_from(["as-is", "upper", "lower", "title", "affix", "escaped"]))
    if how == "upper":
        return name.upper()
    if how == "lower":
        return name.lower()
    if how == "title":
        return name.title()
    if how == "affix":
        return (
            draw(st.sampled_from(["", "my_", "x-", "user"]))
            + name
            + draw(st.sampled_from(["", "2", "s", "_hash", "[]"]))
        )
    if how == "escaped":
        position = draw(st.integers(0, len(name) - 1))
        return name[:position] + f"%{ord(name[position]):02X}" + name[position + 1 :]
    return name


@dataclass(frozen=True)
class Secrets:
    """One request's secrets: each value starts with a marker unique to its
    place in this run (``S3CRET<n>h<i>`` for headers, ``S3CRET<n>q<i>`` for
    the query), so a substring search can only find what leaked."""

    request: bytes
    markers: tuple[str, ...]
    probe: str  # a parameter that finds the request's span
    in_query: int  # how many of the secrets are query parameters


@st.composite
def secret_requests(draw: st.DrawFn, paths: list[str], raw_byte: bool = False) -> Secrets:
    """A request to one of ``paths`` carrying secrets in its headers and
    query; with ``raw_byte``, a query parameter holds a raw byte gunicorn
    refuses in a request line (as sloppy clients send UTF-8 unescaped)."""
    n = unique()
    markers: list[str] = []

    def secret(place: str) -> str:
        marker = f"S3CRET{n:05d}{place}{len(markers)}"
        markers.append(marker)
        return marker + draw(tokens, label=f"token {marker}")

    fields: list[tuple[str, str]] = []
    if draw(st.booleans(), label="Authorization"):
        fields.append(("Authorization", f"{draw(st.sampled_from(AUTH_SCHEMES))} {secret('h')}"))
    if draw(st.booleans(), label="Proxy-Authorization"):
        fields.append(
            ("Proxy-Authorization", f"{draw(st.sampled_from(AUTH_SCHEMES))} {secret('h')}")
        )
    for _ in range(draw(st.integers(0, 2), label="Cookie lines")):
        cookies = [
            "theme=dark",
            f"{draw(st.sampled_from(['session', 'sid', 'csrftoken', 'id']))}={secret('h')}",
        ]
        fields.append(("Cookie", "; ".join(draw(st.permutations(cookies)))))
    probe = f"probe={n}"
    parameters = [probe, "page=2"]
    for _ in range(draw(st.integers(0 if fields else 1, 4), label="secret parameters")):
        parameters.append(f"{draw(parameter_names())}={quote(secret('q'), safe='')}")
    if raw_byte:
        parameters.append(
            "q=caf" + draw(st.sampled_from(["\u00c3\u00a9", "\u00ff", "\u0080", "\x7f"]))
        )
    query = "&".join(draw(st.permutations(parameters)))
    method = draw(st.sampled_from(["GET", "POST", "DELETE", "PURGE"]))
    path = draw(st.sampled_from(paths))
    lines = [f"{method} {path}?{query} HTTP/1.1", "Host: secrets.test", "Connection: close"]
    if method == "POST":
        lines.append("Content-Length: 0")
    lines += [f"{name}: {value}" for name, value in fields]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    in_query = sum(1 for marker in markers if marker.rstrip("0123456789").endswith("q"))
    return Secrets(request, tuple(markers), probe, in_query)


def leaks(served: Served, mark: tuple[int, int], markers: tuple[str, ...]) -> dict[str, list[str]]:
    """Where each marker shows: exported spans (raw OTLP bytes), /metrics,
    and every line the server wrote since ``mark``."""
    bodies = served.bodies_since(mark)
    metrics = scrape_text(served.metrics_port)
    lines = [json.dumps(line, ensure_ascii=False) for line in served.lines_since(mark)]
    found: dict[str, list[str]] = {}
    for marker in markers:
        places = [f"span export #{i}" for i, body in enumerate(bodies) if marker.encode() in body]
        places += ["/metrics"] if marker in metrics else []
        places += [f"log: {line[:300]}" for line in lines if marker in line]
        if places:
            found[marker] = places
    return found


@settings(PROPERTY, max_examples=40)
@given(secrets=secret_requests(["/", "/status/200", "/status/404", "/status/503", "/users/42"]))
def test_secrets_are_in_no_span_metric_or_log_line(served: Served, secrets: Secrets) -> None:
    """Random credentials in ``Authorization``, ``Proxy-Authorization``,
    ``Cookie`` and in sensitive query parameters (``password``, ``token``,
    ``X-Amz-Signature``... in any case, with affixes, percent-encoded)
    appear in no exported span, no metric and no log line, under the
    default settings with the access log on and gunicorn at debug level."""
    mark = served.mark()
    status = status_of(exchange(served.port, secrets.request))
    assert status in {200, 404, 503}, status
    sentinel(served, wait_span=True)
    assert {} == leaks(served, mark, secrets.markers)
    (span,) = [
        span
        for span in served.rx.spans
        if secrets.probe in str(span.attributes.get("url.query", "")).split("&")
    ]
    query = str(span.attributes["url.query"])
    assert secrets.in_query == query.count("=REDACTED")


@settings(PROPERTY, max_examples=25)
@given(secrets=secret_requests(["/raise"]))
def test_secrets_stay_out_of_the_log_when_the_app_raises(served: Served, secrets: Secrets) -> None:
    """The same credentials on a request whose app raises (gunicorn answers
    500 and logs the error): still in no span, metric or log line."""
    mark = served.mark()
    assert 500 == status_of(exchange(served.port, secrets.request))
    sentinel(served, wait_span=True)
    assert {} == leaks(served, mark, secrets.markers)


@settings(PROPERTY, max_examples=25)
@given(secrets=secret_requests(["/", "/users/42"], raw_byte=True))
def test_secrets_stay_out_of_the_log_when_gunicorn_refuses_the_request(
    served: Served, secrets: Secrets
) -> None:
    """The same credentials on a request line gunicorn refuses (a raw byte
    in the query): gunicorn answers 400 and logs why, the app never runs;
    still in no span, metric or log line."""
    mark = served.mark()
    assert 400 == status_of(exchange(served.port, secrets.request))
    sentinel(served, wait_span=True)
    assert {} == leaks(served, mark, secrets.markers)
