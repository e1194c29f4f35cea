"""hookkit._core.requests: a request's scope from pre_request to post_request, and
the status the client really received."""

from __future__ import annotations

import threading

import pytest
from gunicorn.http.errors import InvalidRequestLine

import hookkit.hooks
from hookkit._core.requests import InFlight, resolve_status
from hookkit.testing import FakeRequest, FakeResponse, FakeWorker, capture_events


class AppError(Exception):
    """An application's own exception."""


def raised_after_headers(app_error: BaseException) -> StopIteration:
    """What gunicorn's sync worker raises when the app failed after the
    headers were sent: StopIteration, with the app's exception as context."""
    try:
        raise app_error
    except BaseException:
        try:
            raise StopIteration  # the implicit __context__ is the app's exception
        except StopIteration as stop:
            return stop


# -- resolve_status: no exception ----------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("200 OK", (200, None)),
        ("204 No Content", (204, None)),
        ("302 Found", (302, None)),
        ("404 Not Found", (404, None)),
        ("499 Client Closed", (499, None)),
        ("500 Internal Server Error", (500, "500")),
        ("503 Service Unavailable", (503, "503")),
        (201, (201, None)),
        (500, (500, "500")),
    ],
)
def test_no_exception_gives_the_responses_status(
    status: str | int, expected: tuple[int, str | None]
) -> None:
    """Without an exception the status is the response's, text or number (an
    ASGI worker reports the 500 it sent for an app that raised); a 5xx has
    its status code as error type (OpenTelemetry's convention)."""
    assert expected == resolve_status(FakeResponse(status), None)


@pytest.mark.parametrize("status", [None, "", "OK", "abc 200"])
def test_no_exception_and_no_usable_status_is_unknown(status: str | None) -> None:
    """No status to read: the status is not known and stays None, no error type."""
    expected = (None, None)
    assert expected == resolve_status(FakeResponse(status), None)


def test_no_response_object_is_an_unknown_status() -> None:
    """gunicorn's ASGI worker passes ``resp=None`` when the access log is
    off: the status is not known and stays None."""
    expected = (None, None)
    assert expected == resolve_status(None, None)


# -- resolve_status: an exception before the headers were sent ----------------


@pytest.mark.parametrize("app_status", ["200 OK", "404 Not Found", None])
def test_exception_before_headers_is_a_500(app_status: str | None) -> None:
    """An exception before the headers were sent: gunicorn answers 500
    itself, whatever status the app passed to start_response."""
    resp = FakeResponse(app_status, headers_sent=False)

    expected = (500, "ValueError")
    assert expected == resolve_status(resp, ValueError("boom"))


def test_exception_without_a_response_is_a_500() -> None:
    """The app raised before it made any response: 500."""
    expected = (500, "KeyError")
    assert expected == resolve_status(None, KeyError("k"))


def test_parse_error_is_a_400() -> None:
    """A request gunicorn could not parse is answered 400."""
    error = InvalidRequestLine("GARBAGE")

    expected = (400, "gunicorn.http.errors.InvalidRequestLine")
    assert expected == resolve_status(None, error)


def test_error_type_of_an_application_exception_is_qualified() -> None:
    """An exception that is not a builtin is named with its module."""
    expected = (500, f"{AppError.__module__}.AppError")
    assert expected == resolve_status(FakeResponse(headers_sent=False), AppError())


# -- resolve_status: an exception after the headers were sent -----------------


def test_exception_after_headers_keeps_the_apps_status() -> None:
    """After the headers were sent the client got the app's status and a
    truncated body; the error type is the app's exception, not the
    StopIteration gunicorn re-raises it as."""
    resp = FakeResponse("200 OK", headers_sent=True)

    expected = (200, "ValueError")
    assert expected == resolve_status(resp, raised_after_headers(ValueError("mid-body")))


def test_exception_after_headers_of_an_application_exception() -> None:
    """The app's own exception type is reported with its module."""
    resp = FakeResponse("206 Partial Content", headers_sent=True)

    expected = (206, f"{AppError.__module__}.AppError")
    assert expected == resolve_status(resp, raised_after_headers(AppError()))


def test_plain_exception_after_headers() -> None:
    """An exception that is not wrapped in StopIteration, after the headers."""
    resp = FakeResponse("200 OK", headers_sent=True)

    expected = (200, "RuntimeError")
    assert expected == resolve_status(resp, RuntimeError("late"))


def test_bare_stop_iteration_is_no_error() -> None:
    """A StopIteration with no exception behind it is how gunicorn's async
    workers close the connection after a good response
    (base_async.handle_request): the request did not fail."""
    resp = FakeResponse("200 OK", headers_sent=True)

    expected = (200, None)
    assert expected == resolve_status(resp, StopIteration())


class AsgiResponse:
    """gunicorn's ASGIResponseInfo: a status, bytes sent, no headers_sent."""

    def __init__(self, status: int) -> None:
        self.status = status
        self.sent = 0


@pytest.mark.parametrize(
    ("status", "expected"), [(200, (200, "RuntimeError")), (500, (500, "RuntimeError"))]
)
def test_asgi_response_holds_what_the_client_got(status, expected) -> None:
    """The ASGI worker's response already says what the client got (the app's
    status for a body cut short, gunicorn's 500 when the response never
    started); the exception gunicorn logged gives the error type."""
    assert expected == resolve_status(AsgiResponse(status), RuntimeError("x"))


def test_timeout_abort_without_a_500_page_is_no_status() -> None:
    """A request aborted by the timeout (SystemExit) before its headers: only
    the sync worker writes a 500; for the others the client gets nothing."""
    resp = FakeResponse(None, headers_sent=False)
    assert (500, "SystemExit") == resolve_status(resp, SystemExit(1), answers_system_exit=True)
    assert (None, "SystemExit") == resolve_status(resp, SystemExit(1), answers_system_exit=False)


# -- resolve_status: a connection error ----------------------------------------


@pytest.mark.parametrize("headers_sent", [True, False])
@pytest.mark.parametrize(
    "error", [BrokenPipeError(), ConnectionResetError(), OSError("socket closed")]
)
def test_connection_error_means_nothing_was_received(headers_sent: bool, error: OSError) -> None:
    """A connection error (OSError): the client is gone and received nothing."""
    resp = FakeResponse("200 OK", headers_sent=headers_sent)

    expected = (None, type(error).__name__)
    assert expected == resolve_status(resp, error)


def test_connection_error_wrapped_in_stop_iteration() -> None:
    """A connection error while sending the body is still the client gone."""
    resp = FakeResponse("200 OK", headers_sent=True)

    expected = (None, "BrokenPipeError")
    assert expected == resolve_status(resp, raised_after_headers(BrokenPipeError()))


# -- InFlight ---------------------------------------------------------------------


def test_begin_then_finish_gives_the_scope_and_outcome() -> None:
    """finish() returns the request's method and path with what the client got."""
    in_flight = InFlight()
    req = FakeRequest("POST", "/items")

    in_flight.begin(req)
    finished = in_flight.finish(req, FakeResponse("201 Created", sent=17))

    assert finished is not None
    scope, outcome = finished
    expected = ("POST", "/items", 201, None, 17)
    actual = (scope.method, scope.path, outcome.status, outcome.error_type, outcome.response_bytes)
    assert expected == actual
    assert outcome.duration >= 0


def test_finish_twice_counts_once() -> None:
    """gunicorn calls post_request twice for a request aborted by a timeout:
    the second finish() returns None, so the request is counted once."""
    in_flight = InFlight()
    req = FakeRequest()
    in_flight.begin(req)

    first = in_flight.finish(req, FakeResponse())
    second = in_flight.finish(req, FakeResponse())

    assert first is not None
    assert second is None
    expected: dict[int, object] = {}
    assert expected == in_flight.scopes


def test_finish_without_begin_is_none() -> None:
    """A request whose pre_request hookkit never saw is not counted."""
    assert InFlight().finish(FakeRequest(), FakeResponse()) is None


def test_post_request_twice_emits_one_request_finished() -> None:
    """Through hookkit's hooks: post_request twice for one request is one
    ``request_finished``."""
    worker, req = FakeWorker(), FakeRequest("GET", "/twice")

    with capture_events() as events:
        hookkit.hooks.pre_request(worker, req)
        hookkit.hooks.post_request(worker, req, {}, FakeResponse("200 OK"))
        hookkit.hooks.post_request(worker, req, {}, FakeResponse("500 Internal Server Error"))

    finished = [e.fields["status"] for e in events if e.name == "request_finished"]
    expected = [200]
    assert expected == finished


def test_path_excludes_the_query_string() -> None:
    """The scope's path is the request's path: no query string (it may hold secrets)."""
    in_flight = InFlight()
    req = FakeRequest("GET", "/search", query="q=secret&token=abc")

    scope = in_flight.begin(req)

    expected = ("/search", "/search?q=secret&token=abc")
    assert expected == (scope.path, req.uri)


def test_bytes_are_decoded_as_latin_1() -> None:
    """A method or path given as bytes is decoded as latin-1, as WSGI does."""
    req = FakeRequest(b"GET", b"/caf\xe9")  # type: ignore[arg-type]

    scope = InFlight().begin(req)

    expected = ("GET", "/caf\xe9")
    assert expected == (scope.method, scope.path)


def test_a_request_without_method_or_path() -> None:
    """A request object without method or path still gets a scope."""
    scope = InFlight().begin(object())

    expected = ("UNKNOWN", "")
    assert expected == (scope.method, scope.path)


def test_request_objects_with_slots() -> None:
    """The ASGI worker's request has ``__slots__``: nothing is stored on it."""

    class SlottedRequest:
        __slots__ = ("method", "path")

        def __init__(self, method: str, path: str) -> None:
            self.method, self.path = method, path

    in_flight = InFlight()
    req = SlottedRequest("PUT", "/slots")

    in_flight.begin(req)
    finished = in_flight.finish(req, FakeResponse("204 No Content"))

    assert finished is not None
    expected = ("PUT", "/slots", 204)
    assert expected == (finished[0].method, finished[0].path, finished[1].status)


def test_response_bytes_only_when_known() -> None:
    """``response_bytes`` is the response's ``sent`` count, None without a response."""
    in_flight = InFlight()
    req = FakeRequest()
    in_flight.begin(req)

    finished = in_flight.finish(req, None)

    assert finished is not None
    expected = (None, None, None)
    outcome = finished[1]
    assert expected == (outcome.status, outcome.error_type, outcome.response_bytes)


def test_finish_reads_the_exception_being_handled() -> None:
    """post_request runs in the worker's ``finally`` while the app's
    exception propagates: finish() sees it (a 500 when no header was sent)."""
    in_flight = InFlight()
    req = FakeRequest()
    in_flight.begin(req)

    try:
        raise ValueError("app failed")
    except ValueError:
        finished = in_flight.finish(req, FakeResponse("200 OK", headers_sent=False))

    assert finished is not None
    expected = (500, "ValueError")
    assert expected == (finished[1].status, finished[1].error_type)


def test_concurrent_scopes_from_threads_do_not_mix() -> None:
    """Requests running at once on several threads (gthread) each keep
    their own scope: every thread finishes its own method, path and status."""
    in_flight = InFlight()
    count = 8
    all_begun = threading.Barrier(count)
    results: dict[int, tuple[str, str, int | None, int]] = {}
    open_while_all_in_flight: list[int] = []
    errors: list[BaseException] = []

    def handle(n: int) -> None:
        try:
            req = FakeRequest("GET" if n % 2 else "POST", f"/thread/{n}")
            in_flight.begin(req)
            all_begun.wait(timeout=10)
            open_while_all_in_flight.append(len(in_flight.snapshot()))
            all_begun.wait(timeout=10)
            finished = in_flight.finish(req, FakeResponse(f"{200 + n} Custom"))
            assert finished is not None
            scope, outcome = finished
            results[n] = (scope.method, scope.path, outcome.status, scope.thread_id)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=handle, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    no_errors: list[BaseException] = []
    assert no_errors == errors
    expected = {
        n: ("GET" if n % 2 else "POST", f"/thread/{n}", 200 + n, threads[n].ident)
        for n in range(count)
    }
    assert expected == results
    assert [count] * count == open_while_all_in_flight
    assert in_flight.snapshot() == []
