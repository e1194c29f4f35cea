"""The slow-request watchdog (HOOKKIT_SLOW_REQUEST_SECONDS).

gunicorn's timeout only catches a worker whose main loop stops: a hung
request in a gthread worker is never aborted. The watchdog logs one
`request_slow` line per request still running past the threshold, with the
stack of the code running it.
"""

from __future__ import annotations

import threading
import time

import pytest

from hookkit._face.gunicorn_process import http_get, match

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("worker_args", "app"),
    [
        (["-k", "sync"], "apps.wsgi:app"),
        (["-k", "gthread", "--threads", "2"], "apps.wsgi:app"),
        (["-k", "gevent"], "apps.wsgi:app"),
        (["-k", "asgi"], "apps.asgi:app"),
    ],
    ids=["sync", "gthread", "gevent", "asgi"],
)
def test_slow_request_logged_once_with_its_stack(serve, worker_args, app):
    """A request running past the threshold gets exactly one `request_slow`
    line naming the function it is stuck in, on every worker class."""
    server = serve(app, "-w", "1", *worker_args, env={"HOOKKIT_SLOW_REQUEST_SECONDS": "0.5"})
    server.wait_for(match(event="worker_booted"))
    client = threading.Thread(target=http_get, args=(server.port, "/sleep?2", 10))
    client.start()
    line = server.wait_for(match(event="request_slow"), timeout=10)[0]
    client.join(10)
    assert ("GET", "/sleep") == (line["method"], line["path"])
    assert line["elapsed_seconds"] >= 0.5
    assert "stuck_in_sleep" in (line["stack"] or "")
    time.sleep(0.3)
    assert 1 == len(server.events(match(event="request_slow")))


def test_watchdog_is_off_by_default(serve):
    """Without the setting no `request_slow` line is written, however long a request runs."""
    server = serve("apps.wsgi:app", "-w", "1")
    server.wait_for(match(event="worker_booted"))
    assert 200 == http_get(server.port, "/sleep?1.2")[0]
    assert [] == server.events(match(event="request_slow"))
    assert not [t for t in server.events() if "hookkit-watchdog" in str(t)]


class _UnreadableTask:
    """An asyncio-like task whose coroutine cannot be read (it raises)."""

    def get_coro(self) -> object:
        raise RuntimeError("the task is gone")


def test_a_stack_that_cannot_be_read_still_reports_the_request_once() -> None:
    """The request is still slow when its stack cannot be read: the line is
    written without a stack, and only once."""
    from hookkit._core.requests import InFlight
    from hookkit._core.stacks import Watchdog

    in_flight = InFlight()
    scope = in_flight.begin(object())
    scope.task = _UnreadableTask()
    scope.started -= 1.0
    reported: list[tuple[str, str | None]] = []
    watchdog = Watchdog(in_flight, 0.5, lambda s, stack: reported.append((s.method, stack)))
    assert (1, 0) == (watchdog.check(), watchdog.check())
    assert [("UNKNOWN", None)] == reported
