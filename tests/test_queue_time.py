"""Queue time from ``X-Request-Start`` / ``X-Queue-Start``: the header forms
proxies send, the reasons a value is not observed, and the request path's
side of it (RequestFinished). Real gunicorn behind a
trusted and an untrusted peer: tests/test_queue_time_live.py."""

from __future__ import annotations

import time

import pytest

from hookkit._core.queue_time import queue_header, queue_seconds, start_time
from hookkit._core.runtime import RUNTIME
from hookkit._core.settings import Settings
from hookkit._core.sink import RequestFinished, Sink
from hookkit.hooks import post_request, pre_request
from hookkit.testing import FakeRequest, FakeResponse, FakeWorker

NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (f"t={NOW - 0.25:.3f}", NOW - 0.25),  # nginx ${msec}
        (str(int((NOW - 0.25) * 1000)), NOW - 0.25),  # Heroku, milliseconds
        (f"t={int((NOW - 0.25) * 1000)}", NOW - 0.25),  # HAProxy t=%Ts%ms
        (f"t={int((NOW - 0.25) * 1_000_000)}", NOW - 0.25),  # Apache t=%t, microseconds
        (f"{NOW - 0.25:.6f}", NOW - 0.25),  # bare seconds
        (f"  t={NOW:.3f} ", NOW),
    ],
)
def test_each_form_gives_the_epoch_seconds(value: str, expected: float) -> None:
    started = start_time(value)
    assert started is not None
    assert abs(expected - started) < 0.002


@pytest.mark.parametrize(
    "value", ["", "t=", "soon", "t=abc", "nan", "inf", "-5", "0", "12345", "t=1e400"]
)
def test_what_does_not_parse(value: str) -> None:
    assert start_time(value) is None
    assert (None, "unparsable") == queue_seconds(value, NOW)


def test_the_reasons_a_value_is_not_observed() -> None:
    assert (None, "negative") == queue_seconds(f"t={NOW + 2:.3f}", NOW)
    assert (None, "too_old") == queue_seconds(f"t={NOW - 3601:.3f}", NOW)
    waited, reason = queue_seconds(f"t={NOW - 3599:.3f}", NOW)
    assert reason is None
    assert waited is not None
    assert abs(waited - 3599) < 0.01


def test_x_request_start_wins_and_a_repeated_x_queue_start_counts_once() -> None:
    both = FakeRequest(headers=[("X-QUEUE-START", "1"), ("X-REQUEST-START", "2")])
    repeated = FakeRequest(headers=[("X-QUEUE-START", "3"), ("X-QUEUE-START", "4")])
    assert ("2", "3", None) == (
        queue_header(both),
        queue_header(repeated),
        queue_header(FakeRequest(headers=[("HOST", "x")])),
    )

    class AsgiRequest:  # gunicorn's ASGI request: lower-case raw bytes
        headers_bytes = ((b"x-queue-start", b"5"), (b"x-request-start", b"t=6"))

    assert "t=6" == queue_header(AsgiRequest())


class Keeper(Sink):
    name = "keeper"

    def __init__(self) -> None:
        self.finished: list[RequestFinished] = []

    def request_finished(self, request: RequestFinished) -> None:
        self.finished.append(request)


def one(headers: list[tuple[str, str]], peer: object = ("127.0.0.1", 5000)) -> Keeper:
    keeper = Keeper()
    RUNTIME.use(Settings(), [keeper])
    worker, req = FakeWorker(), FakeRequest(headers=headers, peer_addr=peer)
    pre_request(worker, req)
    post_request(worker, req, {}, FakeResponse())
    return keeper


def test_a_trusted_stamp_reaches_request_finished() -> None:
    keeper = one([("X-REQUEST-START", f"t={time.time() - 0.25:.3f}")])
    (finished,) = keeper.finished
    assert finished.queue_error is None
    assert finished.queue_seconds is not None
    assert 0.2 < finished.queue_seconds < 5


def test_an_untrusted_peers_stamp_is_only_counted() -> None:
    """FakeWorker's config trusts gunicorn's default, 127.0.0.1 and ::1."""
    keeper = one([("X-REQUEST-START", f"t={time.time():.3f}")], peer=("203.0.113.9", 5000))
    (finished,) = keeper.finished
    assert (None, "untrusted") == (finished.queue_seconds, finished.queue_error)


def test_without_a_stamp_there_is_nothing() -> None:
    keeper = one([("HOST", "shop.test")])
    (finished,) = keeper.finished
    assert (None, None) == (finished.queue_seconds, finished.queue_error)


def test_a_malformed_stamp_never_fails_the_request() -> None:
    keeper = one([("X-REQUEST-START", "t=\x00garbage")])
    (finished,) = keeper.finished
    assert (None, "unparsable", 200) == (
        finished.queue_seconds,
        finished.queue_error,
        finished.status,
    )


class PeerlessRequest:
    """gunicorn's ASGI request: raw lower-case header bytes, and no
    ``peer_addr`` (the worker names the peer in the environ's REMOTE_ADDR)."""

    method = "GET"
    path = "/"
    query = ""
    scheme = "http"

    def __init__(self, stamp: str) -> None:
        self.headers_bytes = [(b"x-request-start", stamp.encode())]


@pytest.mark.parametrize(
    ("remote", "expected"),
    [("127.0.0.1", None), ("203.0.113.9", "untrusted"), ("-", None)],
    ids=["trusted", "untrusted", "unix-socket"],
)
def test_without_a_peer_on_the_request_the_environ_decides(
    remote: str, expected: str | None
) -> None:
    """The stamp is judged at post_request by REMOTE_ADDR ("-" is a UNIX
    socket, trusted as gunicorn trusts one), with the time the worker took
    the request, not the time it finished."""
    keeper = Keeper()
    RUNTIME.use(Settings(), [keeper])
    worker, req = FakeWorker(), PeerlessRequest(f"t={time.time() - 0.25:.3f}")
    pre_request(worker, req)
    time.sleep(0.3)
    post_request(worker, req, {"REMOTE_ADDR": remote}, FakeResponse())
    (finished,) = keeper.finished
    assert expected == finished.queue_error
    if expected is None:
        assert finished.queue_seconds is not None
        assert 0.24 < finished.queue_seconds < 0.5
    else:
        assert finished.queue_seconds is None
