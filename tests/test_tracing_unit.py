"""hookkit._sinks.tracing.sink in-process: the SERVER span of a request, driven through
``Tracing.begin`` / ``end`` / ``abort`` / ``slow`` with an SDK tracer
provider of the test's own (never the global one) and an in-memory exporter."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry import baggage, propagate, trace
from opentelemetry import context as otel_context
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from hookkit._core.dispatch import Dispatcher
from hookkit._core.request_path import RequestPath, span_fields
from hookkit._core.requests import RequestScope
from hookkit._core.settings import Settings
from hookkit._sinks.tracing.sink import TracingSink
from hookkit.processors import add_trace_context
from hookkit.testing import FakeRequest, FakeResponse

# A caller's W3C trace context: trace id, parent span id, sampled.
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
OTHER_TRACEPARENT = "00-11111111111111111111111111111111-2222222222222222-01"


class AppError(Exception):
    """An application's own exception."""


@dataclass
class TracedRequest(FakeRequest):
    """FakeRequest with the attributes of gunicorn's request the span reads."""

    scheme: str = "http"
    peer_addr: tuple[str, int] | None = ("10.0.0.7", 51000)
    version: tuple[int, int] = (1, 1)


@dataclass
class Harness:
    """A ``TracingSink`` on a provider of the test's own, on hookkit's
    request path."""

    tracing: TracingSink
    provider: TracerProvider
    exporter: InMemorySpanExporter
    path: RequestPath

    def begin(self, req: object) -> RequestScope:
        """What hookkit's pre_request does."""
        self.path.pre_request(req)
        return self.path.in_flight.scopes[id(req)]

    def end(
        self,
        req: object,
        resp: FakeResponse | None = None,
        environ: dict[str, Any] | None = None,
    ) -> RequestScope:
        """What hookkit's post_request does (``sys.exc_info()`` included)."""
        resp = FakeResponse("200 OK") if resp is None else resp
        scope = self.path.in_flight.scopes[id(req)]
        self.path.post_request(req, {} if environ is None else environ, resp)
        return scope

    def live_span(self, req: object) -> Any:
        """The span the sink holds for ``req`` in flight (None: ended or none)."""
        return self.tracing._spans.get(id(req), (None, None))[0]

    def token(self, req: object) -> Any:
        """The token of the context the sink attached for ``req``."""
        return self.tracing._spans.get(id(req), (None, None))[1]

    def abort(self, scopes: list[RequestScope], stack: Any, timeout: object) -> bool:
        """What the sink does on ``worker_aborted`` for these requests."""
        requests = [{"stack": stack(scope), **span_fields(scope)} for scope in scopes]
        return self.tracing.abort({"timeout": timeout, "requests_in_flight": requests})

    def slow(self, scope: RequestScope, stack: str | None, threshold: float) -> None:
        """What the sink does on ``request_slow`` for this request."""
        self.tracing.slow(
            {
                "elapsed_seconds": round(scope.elapsed(), 6),
                "threshold_seconds": threshold,
                "stack": stack,
                **span_fields(scope),
            }
        )

    def spans(self) -> list[ReadableSpan]:
        """The spans ended so far."""
        return list(self.exporter.get_finished_spans())

    def span(self) -> ReadableSpan:
        """The one span ended so far."""
        spans = self.spans()
        assert 1 == len(spans), spans
        return spans[0]


@pytest.fixture(autouse=True)
def empty_context() -> Iterator[None]:
    """Each test starts with an empty OpenTelemetry context, and whatever it
    left attached is dropped afterwards."""
    token = otel_context.attach(Context())
    yield
    otel_context.detach(token)


@pytest.fixture
def make_harness() -> Iterator[Any]:
    """``make_harness(environ, max_routes=100)``: a TracingSink configured from
    ``environ`` (as ``TracingConfig.load`` reads it), exporting to memory."""
    providers: list[TracerProvider] = []

    def make(environ: dict[str, str] | None = None, max_routes: int = 100) -> Harness:
        environ = {} if environ is None else environ
        provider = TracerProvider(shutdown_on_exit=False)
        exporter = InMemorySpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        providers.append(provider)
        tracing = TracingSink(Settings.load(environ).replace(max_routes=max_routes), environ)
        tracing.provider = provider
        tracing.tracer = provider.get_tracer("hookkit")
        tracing._propagator = propagate.get_global_textmap()
        dispatcher = Dispatcher()
        dispatcher.set_sinks([tracing])
        return Harness(tracing, provider, exporter, RequestPath(dispatcher))

    yield make
    for provider in providers:
        provider.shutdown()


@pytest.fixture
def harness(make_harness: Any) -> Harness:
    """A Harness with the default configuration."""
    made: Harness = make_harness()
    return made


def hex_id(value: int, width: int) -> str:
    """An OpenTelemetry id as lower-case hex."""
    return format(value, f"0{width}x")


def current_span_id() -> int | None:
    """The id of the span current in this context, if a valid one is."""
    context = trace.get_current_span().get_span_context()
    return context.span_id if context.is_valid else None


# -- the span ----------------------------------------------------------------------


def test_traceparent_continues_the_trace_with_the_stable_attributes(harness: Harness) -> None:
    """A request with a ``traceparent`` gives one SERVER span in the caller's
    trace, its parent the caller's span, with the stable HTTP attributes
    (query redacted)."""
    req = TracedRequest(
        "GET",
        "/shop",
        query="token=abc123&page=2",
        headers=[
            ("HOST", "shop.test:8443"),
            ("TRACEPARENT", TRACEPARENT),
            ("USER-AGENT", "tests/1.0"),
        ],
    )

    harness.begin(req)
    harness.end(req, FakeResponse("200 OK"))

    span = harness.span()
    assert span.parent is not None
    expected_ids = (TRACE_ID, PARENT_ID, True)
    assert expected_ids == (
        hex_id(span.context.trace_id, 32),
        hex_id(span.parent.span_id, 16),
        span.parent.is_remote,
    )
    assert (SpanKind.SERVER, "GET", StatusCode.UNSET) == (
        span.kind,
        span.name,
        span.status.status_code,
    )
    expected = {
        "http.request.method": "GET",
        "url.scheme": "http",
        "url.path": "/shop",
        "url.query": "token=REDACTED&page=2",
        "server.address": "shop.test",
        "server.port": 8443,
        "client.address": "10.0.0.7",
        "network.peer.address": "10.0.0.7",
        "network.peer.port": 51000,
        "network.protocol.version": "1.1",
        "user_agent.original": "tests/1.0",
        "http.response.status_code": 200,
    }
    assert expected == dict(span.attributes or {})


def test_asgi_request_headers_are_read_from_the_raw_bytes(harness: Harness) -> None:
    """gunicorn's ASGI request keeps its headers as lower-case bytes: the
    trace context and Host are read from them."""

    @dataclass
    class AsgiRequest:
        method: str
        path: str
        headers_bytes: list[tuple[bytes, bytes]]
        scheme: str = "https"

    req = AsgiRequest(
        "POST", "/api", [(b"host", b"shop.test"), (b"traceparent", TRACEPARENT.encode())]
    )

    harness.begin(req)
    harness.end(req)

    span = harness.span()
    assert TRACE_ID == hex_id(span.context.trace_id, 32)
    attributes = span.attributes or {}
    expected = ("POST", "https", "shop.test", 443)
    assert expected == (
        attributes["http.request.method"],
        attributes["url.scheme"],
        attributes["server.address"],
        attributes["server.port"],
    )


@pytest.mark.parametrize(
    ("scheme", "host", "version", "expected"),
    [
        ("http", "shop.test", (1, 1), ("shop.test", 80, "1.1")),
        ("https", "shop.test", (1, 0), ("shop.test", 443, "1.0")),
        ("https", "[::1]:8443", (2, 0), ("::1", 8443, "2")),
    ],
)
def test_server_port_defaults_to_the_schemes(
    harness: Harness,
    scheme: str,
    host: str,
    version: tuple[int, int],
    expected: tuple[str, int, str],
) -> None:
    """Without a port in Host, ``server.port`` is the scheme's default;
    HTTP/2 is ``network.protocol.version`` ``2``."""
    req = TracedRequest(headers=[("HOST", host)], scheme=scheme, version=version)

    harness.begin(req)
    harness.end(req)

    attributes = harness.span().attributes or {}
    assert expected == (
        attributes["server.address"],
        attributes["server.port"],
        attributes["network.protocol.version"],
    )


def test_an_unknown_method_is_other_and_the_span_is_named_http(harness: Harness) -> None:
    """A method outside the known set is ``_OTHER`` with the original kept,
    and the span is named ``HTTP``."""
    req = TracedRequest("PURGE", "/cache")

    harness.begin(req)
    harness.end(req, environ={"hookkit.route": "/cache"})

    span = harness.span()
    attributes = span.attributes or {}
    expected = ("HTTP /cache", "_OTHER", "PURGE")
    assert expected == (
        span.name,
        attributes["http.request.method"],
        attributes["http.request.method_original"],
    )


def test_client_address_falls_back_to_remote_addr(harness: Harness) -> None:
    """Without the request's peer address, ``client.address`` is the
    environ's ``REMOTE_ADDR``."""
    req = TracedRequest(peer_addr=None)

    harness.begin(req)
    harness.end(req, environ={"REMOTE_ADDR": "192.0.2.9"})

    assert "192.0.2.9" == (harness.span().attributes or {})["client.address"]


# -- context -----------------------------------------------------------------------


def test_the_span_is_current_between_begin_and_end(harness: Harness) -> None:
    """Between begin and end the request's span is current, so an app span
    made with the same provider's tracer is its child; after end it is not."""
    req = TracedRequest()

    harness.begin(req)
    server_span: Any = harness.live_span(req)
    assert server_span is not None
    assert server_span.get_span_context().span_id == current_span_id()
    with harness.provider.get_tracer("app").start_as_current_span("app.work"):
        pass
    harness.end(req)

    assert current_span_id() is None
    by_name = {span.name: span for span in harness.spans()}
    app, server = by_name["app.work"], by_name["GET"]
    assert app.parent is not None
    expected = (server.context.trace_id, server.context.span_id, SpanKind.INTERNAL)
    assert expected == (app.context.trace_id, app.parent.span_id, app.kind)


def test_a_request_without_traceparent_starts_a_trace(harness: Harness) -> None:
    """No incoming context: a new trace, the span a root."""
    req = TracedRequest()

    harness.begin(req)
    harness.end(req)

    span = harness.span()
    assert span.parent is None
    assert span.context.is_valid


@pytest.mark.parametrize(
    ("traceparents", "continued"),
    [
        ([TRACEPARENT, OTHER_TRACEPARENT], False),
        ([TRACEPARENT, TRACEPARENT], True),
    ],
    ids=["differing", "identical"],
)
def test_repeated_traceparent_headers(
    harness: Harness, traceparents: list[str], continued: bool
) -> None:
    """Two differing ``traceparent`` lines are invalid (W3C Trace Context):
    a new trace starts. The same line twice is that one context."""
    req = TracedRequest(headers=[("TRACEPARENT", value) for value in traceparents])

    harness.begin(req)
    harness.end(req)

    span = harness.span()
    trace_ids = {TRACE_ID, OTHER_TRACEPARENT.split("-")[1]}
    assert continued == (span.parent is not None)
    assert continued == (hex_id(span.context.trace_id, 32) == TRACE_ID)
    assert continued or hex_id(span.context.trace_id, 32) not in trace_ids


@pytest.mark.parametrize(
    "traceparent",
    [
        "garbage",
        "00-zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz-b7ad6b7169203331-01",
        f"00-{'0' * 32}-{PARENT_ID}-01",
        f"00-{TRACE_ID}-{'0' * 16}-01",
        "",
    ],
)
def test_a_malformed_traceparent_starts_a_new_trace(harness: Harness, traceparent: str) -> None:
    """A malformed ``traceparent`` is ignored without raising: a new trace."""
    req = TracedRequest(headers=[("TRACEPARENT", traceparent)])

    harness.begin(req)
    harness.end(req)

    span = harness.span()
    assert span.parent is None
    assert TRACE_ID != hex_id(span.context.trace_id, 32)


def test_repeated_baggage_headers_both_reach_the_context(harness: Harness) -> None:
    """Repeated ``baggage`` lines are one list (RFC 9110 5.3): every entry
    is in the context the app runs in."""
    req = TracedRequest(headers=[("BAGGAGE", "tenant=acme"), ("BAGGAGE", "region=eu,tier=gold")])

    harness.begin(req)
    entries = dict(baggage.get_all())
    harness.end(req)

    expected = {"tenant": "acme", "region": "eu", "tier": "gold"}
    assert expected == entries
    assert {} == dict(baggage.get_all())


# -- status and errors -------------------------------------------------------------


def test_a_500_is_an_error(harness: Harness) -> None:
    """A 5xx makes the span ERROR, with its status code as ``error.type``."""
    req = TracedRequest()

    harness.begin(req)
    harness.end(req, FakeResponse("500 Internal Server Error"))

    span = harness.span()
    attributes = span.attributes or {}
    expected = (StatusCode.ERROR, "500", 500)
    assert expected == (
        span.status.status_code,
        attributes["error.type"],
        attributes["http.response.status_code"],
    )


@pytest.mark.parametrize(
    ("status", "code"), [("404 Not Found", 404), ("400 Bad Request", 400), ("302 Found", 302)]
)
def test_a_4xx_is_not_an_error(harness: Harness, status: str, code: int) -> None:
    """A 4xx is the client's error, not the server's: the status stays
    UNSET and there is no ``error.type``."""
    req = TracedRequest()

    harness.begin(req)
    harness.end(req, FakeResponse(status))

    span = harness.span()
    attributes = span.attributes or {}
    assert StatusCode.UNSET == span.status.status_code
    assert "error.type" not in attributes
    assert code == attributes["http.response.status_code"]


def test_an_exception_is_an_error_with_an_exception_event(harness: Harness) -> None:
    """An app exception before the headers were sent (gunicorn answers
    500) makes the span ERROR, ``error.type`` the exception's class, with an
    ``exception`` event."""
    req = TracedRequest()

    harness.begin(req)
    try:
        raise AppError("boom")
    except AppError:
        harness.end(req, FakeResponse("200 OK", headers_sent=False))

    span = harness.span()
    attributes = span.attributes or {}
    expected = (StatusCode.ERROR, f"{__name__}.AppError", 500)
    assert expected == (
        span.status.status_code,
        attributes["error.type"],
        attributes["http.response.status_code"],
    )
    [event] = [event for event in span.events if event.name == "exception"]
    event_attributes = event.attributes or {}
    assert "boom" == event_attributes["exception.message"]
    assert str(event_attributes["exception.type"]).endswith("AppError")
    assert "AppError" in str(event_attributes["exception.stacktrace"])


# -- route -------------------------------------------------------------------------


def test_the_route_names_the_span(harness: Harness) -> None:
    """The app's route (environ ``hookkit.route``) renames the span
    ``GET /users/{id}`` and sets ``http.route``."""
    req = TracedRequest("GET", "/users/42")

    harness.begin(req)
    harness.end(req, environ={"hookkit.route": "/users/{id}"})

    span = harness.span()
    expected = ("GET /users/{id}", "/users/{id}")
    assert expected == (span.name, (span.attributes or {}).get("http.route"))


def test_routes_beyond_max_routes_are_not_recorded(make_harness: Any) -> None:
    """Past ``max_routes`` distinct routes, a new route gives no
    ``http.route`` and the span keeps the method as its name; a route seen
    before the cap still does."""
    harness: Harness = make_harness(max_routes=2)
    routes = ["/a/{id}", "/b/{id}", "/c/{id}", "/a/{id}"]

    for route in routes:
        req = TracedRequest("GET", route.replace("{id}", "1"))
        harness.begin(req)
        harness.end(req, environ={"hookkit.route": route})

    expected = [
        ("GET /a/{id}", "/a/{id}"),
        ("GET /b/{id}", "/b/{id}"),
        ("GET", None),
        ("GET /a/{id}", "/a/{id}"),
    ]
    assert expected == [
        (span.name, (span.attributes or {}).get("http.route")) for span in harness.spans()
    ]


def test_no_route_keeps_the_method_as_the_name(harness: Harness) -> None:
    """Without a route the span is named by its method, with no ``http.route``."""
    req = TracedRequest("POST", "/submit")

    harness.begin(req)
    harness.end(req, environ={})

    span = harness.span()
    assert ("POST", None) == (span.name, (span.attributes or {}).get("http.route"))


# -- excluded URLs -----------------------------------------------------------------


@pytest.mark.parametrize(
    "environ",
    [
        {"HOOKKIT_TRACING_EXCLUDED_URLS": "/healthz"},
        {"HOOKKIT_TRACING_EXCLUDED_URLS": r"^http://shop\.test/healthz$"},
    ],
)
def test_an_excluded_url_gets_no_span(make_harness: Any, environ: dict[str, str]) -> None:
    """A request whose URL matches an excluded pattern gets no span and
    nothing is attached; other requests still do."""
    harness: Harness = make_harness(environ)
    excluded = TracedRequest("GET", "/healthz", headers=[("HOST", "shop.test")])
    kept = TracedRequest("GET", "/users", headers=[("HOST", "shop.test")])

    harness.begin(excluded)
    assert (None, None, None) == (
        harness.live_span(excluded),
        harness.token(excluded),
        current_span_id(),
    )
    harness.end(excluded)
    assert [] == harness.spans()

    harness.begin(kept)
    harness.end(kept)
    assert "/users" == (harness.span().attributes or {})["url.path"]


# -- abort and slow ----------------------------------------------------------------


def test_abort_ends_the_span_as_a_timeout_once(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """``abort`` ends the span in flight as ERROR, ``error.type`` timeout,
    with the stuck stack in an ``exception`` event; a later ``end`` for the
    same request does not touch or end it again (the SDK would warn) and
    still leaves its context."""
    caplog.set_level(logging.WARNING, logger="opentelemetry")
    req = TracedRequest("GET", "/stuck")
    scope = harness.begin(req)
    stack = 'File "app.py", line 7, in handler\n    time.sleep(60)'

    flushed = harness.abort([scope], lambda aborted: stack, 30)

    assert flushed
    assert harness.live_span(req) is None
    assert current_span_id() is not None  # still attached until post_request
    harness.end(req, FakeResponse("500 Internal Server Error"))

    span = harness.span()
    assert current_span_id() is None
    assert [] == [record.getMessage() for record in caplog.records]
    attributes = span.attributes or {}
    expected = (StatusCode.ERROR, "worker timeout", "timeout")
    assert expected == (span.status.status_code, span.status.description, attributes["error.type"])
    assert "http.response.status_code" not in attributes
    [event] = span.events
    event_attributes = dict(event.attributes or {})
    assert "exception" == event.name
    assert "WorkerTimeout" == event_attributes["exception.type"]
    assert stack == event_attributes["exception.stacktrace"]
    assert "30 s" in str(event_attributes["exception.message"])


def test_abort_with_nothing_in_flight_exports_nothing(harness: Harness) -> None:
    """No span in flight: nothing is ended, and abort reports success."""
    assert harness.abort([], lambda scope: None, 30)
    assert [] == harness.spans()


def test_abort_with_no_stack_gives_an_empty_stacktrace(harness: Harness) -> None:
    """When no stack could be read, the event's stacktrace is empty."""
    req = TracedRequest()
    scope = harness.begin(req)

    harness.abort([scope], lambda aborted: None, 30)
    harness.end(req)

    [event] = harness.span().events
    assert "" == (event.attributes or {})["exception.stacktrace"]


def test_slow_adds_a_request_slow_event(harness: Harness) -> None:
    """``slow`` adds a ``request_slow`` event with the stack, the threshold
    and the elapsed time; the span itself is ended by ``end`` as usual."""
    req = TracedRequest()
    scope = harness.begin(req)

    harness.slow(scope, "File x, line 1", 1.5)
    harness.end(req)

    span = harness.span()
    [event] = span.events
    attributes = dict(event.attributes or {})
    elapsed = attributes.pop("hookkit.elapsed_seconds")
    expected = {"hookkit.threshold_seconds": 1.5, "code.stacktrace": "File x, line 1"}
    assert ("request_slow", expected) == (event.name, attributes)
    assert isinstance(elapsed, float)
    assert elapsed >= 0
    assert StatusCode.UNSET == span.status.status_code


def test_slow_without_a_span_does_nothing(make_harness: Any) -> None:
    """A request with no span (excluded) takes no event, and nothing raises."""
    harness: Harness = make_harness({"HOOKKIT_TRACING_EXCLUDED_URLS": "/healthz"})
    req = TracedRequest("GET", "/healthz")
    scope = harness.begin(req)

    harness.slow(scope, None, 1.0)
    harness.end(req)

    assert [] == harness.spans()


# -- header capture ----------------------------------------------------------------


def test_captured_headers_with_sensitive_ones_redacted(make_harness: Any) -> None:
    """Request and response headers named in the capture variables become
    attributes; Set-Cookie matched by ``.*`` is redacted."""
    harness: Harness = make_harness(
        {
            "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST": "x-request-id",
            "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE": ".*",
        }
    )
    req = TracedRequest(headers=[("X-REQUEST-ID", "r-1"), ("AUTHORIZATION", "Bearer x")])
    resp = FakeResponse("200 OK", headers=[("Content-Type", "text/plain"), ("Set-Cookie", "a=b")])

    harness.begin(req)
    harness.end(req, resp)

    attributes = harness.span().attributes or {}
    captured = {name: value for name, value in attributes.items() if ".header." in name}
    expected = {
        "http.request.header.x-request-id": ("r-1",),
        "http.response.header.content-type": ("text/plain",),
        "http.response.header.set-cookie": ("[REDACTED]",),
    }
    assert expected == captured


# -- add_trace_context -------------------------------------------------------------


def test_add_trace_context_while_a_span_is_current(harness: Harness) -> None:
    """Inside a traced request ``add_trace_context`` adds the span's
    ``trace_id`` (32 hex digits) and ``span_id`` (16); outside, nothing."""
    req = TracedRequest(headers=[("TRACEPARENT", TRACEPARENT)])
    before = add_trace_context(None, "info", {"event": "hello"})

    harness.begin(req)
    inside = add_trace_context(None, "info", {"event": "hello"})
    span: Any = harness.live_span(req)
    harness.end(req)
    after = add_trace_context(None, "info", {"event": "hello"})

    assert {"event": "hello"} == before
    assert {"event": "hello"} == after
    expected = {
        "event": "hello",
        "trace_id": TRACE_ID,
        "span_id": hex_id(span.get_span_context().span_id, 16),
    }
    assert expected == inside
    assert re.fullmatch("[0-9a-f]{32}", inside["trace_id"])
    assert re.fullmatch("[0-9a-f]{16}", inside["span_id"])


def test_add_trace_context_keeps_bound_ids(harness: Harness) -> None:
    """Values the caller bound are kept."""
    req = TracedRequest()
    harness.begin(req)
    event_dict = add_trace_context(None, "info", {"event": "hello", "trace_id": "mine"})
    harness.end(req)

    assert "mine" == event_dict["trace_id"]
    assert re.fullmatch("[0-9a-f]{16}", event_dict["span_id"])


# -- flush and shutdown ------------------------------------------------------------


class HangingProvider:
    """A provider whose force_flush and shutdown wait until released (a
    hanging collector; the SDK does not honour its own timeout)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls: list[str] = []

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Wait until released."""
        self.calls.append("force_flush")
        self.release.wait()
        return True

    def shutdown(self) -> None:
        """Wait until released."""
        self.calls.append("shutdown")
        self.release.wait()


@pytest.fixture
def hanging() -> Iterator[tuple[TracingSink, HangingProvider]]:
    """A TracingSink on a HangingProvider; released at teardown."""
    provider = HangingProvider()
    tracing = TracingSink(Settings(), {})
    tracing.provider = provider
    tracing.tracer = trace.NoOpTracer()
    yield tracing, provider
    provider.release.set()


def test_flush_returns_within_its_bound_when_the_provider_hangs(
    hanging: tuple[TracingSink, HangingProvider],
) -> None:
    """``flush(seconds)`` gives up after ``seconds`` when force_flush never
    returns, and says it did not finish."""
    tracing, provider = hanging
    bound = 0.2

    started = time.monotonic()
    finished = tracing.flush(bound)
    elapsed = time.monotonic() - started

    assert not finished
    assert ["force_flush"] == provider.calls
    assert elapsed < bound + 0.5


def test_shutdown_returns_within_its_bound_when_the_provider_hangs(
    hanging: tuple[TracingSink, HangingProvider],
) -> None:
    """``shutdown(seconds)`` is bounded the same way, and stops hookkit's
    spans: a second shutdown or a flush does not call the provider again."""
    tracing, provider = hanging
    bound = 0.2

    started = time.monotonic()
    finished = tracing.shutdown(bound)
    elapsed = time.monotonic() - started

    assert not finished
    assert elapsed < bound + 0.5
    assert tracing.tracer is None
    assert tracing.shutdown(bound)
    assert tracing.flush(bound)
    assert ["shutdown"] == provider.calls


def test_flush_of_a_working_provider_finishes(harness: Harness) -> None:
    """A provider that flushes in time: ``flush`` reports success."""
    assert harness.tracing.flush(5.0)


def test_flush_without_a_tracer_does_nothing() -> None:
    """Tracing off (no tracer): flush and shutdown return at once, True."""
    tracing = TracingSink(Settings(), {})

    assert (True, True) == (tracing.flush(0.1), tracing.shutdown(0.1))
