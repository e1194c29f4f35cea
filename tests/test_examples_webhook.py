"""examples/webhook_sink: a user sink that POSTs events from its own thread.

The unit tests drive ``WebhookSink`` without gunicorn against a local
receiver (a ``ThreadingHTTPServer`` on 127.0.0.1, in a thread of the test):
order, overflow, failed POSTs, bounded stops and forks. ``report_error`` is
recorded by a subclass (the base's version needs hookkit's runtime). The
integration test runs the example's ``gunicorn.conf.py`` under the drop-in
with a real gunicorn, SIGKILLs a worker and reads the POST that says so.
Everything listens and connects on 127.0.0.1 only; every process a test
starts is stopped by the test, by its pid.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import threading
import time
import urllib.error
import warnings
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

import hookkit
from hookkit._face.gunicorn_process import free_port, match

EXAMPLES = Path(__file__).parent.parent / "examples"
EXAMPLE = EXAMPLES / "webhook_sink"

sys.path.insert(0, str(EXAMPLE))
from webhook_sink import WebhookSink  # noqa: E402

Body = dict[str, Any]


class Receiver:
    """A webhook receiver on 127.0.0.1: records each POSTed JSON body as it
    arrives, holds the answer to a body that ``hold`` picks until ``release``
    (or the end), then answers ``status``."""

    def __init__(self, status: int = 200, hold: Callable[[Body], bool] = lambda _: False) -> None:
        self.received: list[Body] = []
        self.cond = threading.Condition()
        self.gate = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with receiver.cond:
                    receiver.received.append(body)
                    receiver.cond.notify_all()
                if hold(body):
                    receiver.gate.wait(30)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def release(self) -> None:
        """Answer the held requests, and hold no more."""
        self.gate.set()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Body]:
        """The bodies received once there are ``count``; TimeoutError otherwise."""
        with self.cond:
            if not self.cond.wait_for(lambda: len(self.received) >= count, timeout):
                raise TimeoutError(f"{count} POST(s) awaited, {len(self.received)} came")
            return list(self.received)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


class RecordingSink(WebhookSink):
    """WebhookSink whose ``report_error`` records its calls."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.errors: list[tuple[str, BaseException]] = []
        self.errors_cond = threading.Condition()

    def report_error(self, where: str, exc: BaseException) -> None:
        with self.errors_cond:
            self.errors.append((where, exc))
            self.errors_cond.notify_all()

    def wait_for_errors(self, count: int, timeout: float = 10.0) -> list[tuple[str, BaseException]]:
        with self.errors_cond:
            if not self.errors_cond.wait_for(lambda: len(self.errors) >= count, timeout):
                raise TimeoutError(f"{count} error(s) awaited, {len(self.errors)} came")
            return list(self.errors)


@pytest.fixture
def make_sink() -> Iterator[Callable[..., RecordingSink]]:
    """``make_sink(url, ...)``: a RecordingSink whose thread the test's end stops."""
    sinks: list[RecordingSink] = []

    def make(*args: Any, **kwargs: Any) -> RecordingSink:
        sink = RecordingSink(*args, **kwargs)
        sinks.append(sink)
        return sink

    yield make
    for sink in sinks:
        sink.stop(5)


def exited(n: int, pid: int = 100) -> hookkit.Event:
    """A ``worker_exited`` event numbered ``n`` (its ``worker_pid``)."""
    return hookkit.Event(
        name="worker_exited",
        hook="child_exit",
        level="warning",
        fields={"worker_pid": n, "reason": "killed"},
        pid=pid,
    )


def body(n: int, pid: int = 100) -> Body:
    """The JSON a receiver gets for ``exited(n, pid)``."""
    return {
        "name": "worker_exited",
        "level": "warning",
        "pid": pid,
        "fields": {"worker_pid": n, "reason": "killed"},
    }


def test_chosen_events_are_posted_in_order(make_sink) -> None:
    """Twenty worker_exited events arrive as twenty POSTs, in order, as
    JSON (name, level, pid, fields); events not chosen are not sent."""
    with Receiver() as rx:
        sink = make_sink(rx.url)
        for n in range(20):
            sink.handle(exited(n))
            sink.handle(hookkit.Event(name="worker_booted", hook="post_worker_init"))

        received = rx.wait_for(20)
        assert sink.stop(5)

    assert [body(n) for n in range(20)] == received
    assert ([], 0) == (sink.errors, sink.dropped)


def test_a_full_queue_drops_and_counts(make_sink, capsys) -> None:
    """Against a receiver that holds its answer, queue_size=3: the first
    event is being posted, three wait, the next seven are dropped, counted
    in ``dropped``, and handle() never waits; once the receiver answers, the
    four arrive in order and stderr says seven were dropped."""
    with Receiver(hold=lambda _: True) as rx:
        sink = make_sink(rx.url, queue_size=3, timeout=10)
        sink.handle(exited(0))
        rx.wait_for(1)
        started = time.monotonic()
        for n in range(1, 11):
            sink.handle(exited(n))
        handling = time.monotonic() - started

        assert (7, True) == (sink.dropped, handling < 0.5)
        rx.release()
        received = rx.wait_for(4)
        assert sink.stop(5)

    assert [body(n) for n in range(4)] == received
    assert "7 event(s) dropped" in capsys.readouterr().err


def test_an_error_status_is_reported(make_sink) -> None:
    """A receiver answering 500: each POST calls report_error("posting an
    event", HTTPError 500)."""
    with Receiver(status=500) as rx:
        sink = make_sink(rx.url)
        sink.handle(exited(1))
        sink.handle(exited(2))
        errors = sink.wait_for_errors(2)

    assert [("posting an event", urllib.error.HTTPError, 500)] * 2 == [
        (where, type(exc), getattr(exc, "code", None)) for where, exc in errors
    ]


def test_a_closed_port_is_reported(make_sink) -> None:
    """Nothing listening at the URL: report_error("posting an event",
    URLError) per event, and the thread goes on."""
    sink = make_sink(f"http://127.0.0.1:{free_port()}/hook")
    sink.handle(exited(1))
    sink.handle(exited(2))
    errors = sink.wait_for_errors(2)

    assert [("posting an event", urllib.error.URLError)] * 2 == [
        (where, type(exc)) for where, exc in errors
    ]
    assert isinstance(errors[0][1].reason, ConnectionRefusedError)


def test_stop_sends_what_is_queued(make_sink) -> None:
    """stop_worker right after five events: the thread sends all five
    before it ends."""
    with Receiver() as rx:
        sink = make_sink(rx.url)
        for n in range(5):
            sink.handle(exited(n))
        sink.stop_worker(5)
        alive = sink._thread is not None and sink._thread.is_alive()

        assert ([body(n) for n in range(5)], False) == (rx.received, alive)


def test_stop_worker_is_bounded_by_its_seconds(make_sink) -> None:
    """A receiver that hangs, a POST timeout of 30 s: stop_worker(0.5)
    returns after about 0.5 s with the thread still stuck in its POST. Once
    the receiver answers, the thread ends without sending the event queued
    behind (its deadline passed); an event after the stop is ignored."""
    with Receiver(hold=lambda _: True) as rx:
        sink = make_sink(rx.url, timeout=30)
        sink.handle(exited(0))
        sink.handle(exited(1))
        rx.wait_for(1)
        started = time.monotonic()
        sink.stop_worker(0.5)
        took = time.monotonic() - started
        stuck = sink._thread.is_alive()
        sink.handle(exited(2))
        rx.release()
        sink._thread.join(5)

        assert (True, True, False) == (0.5 <= took < 2.0, stuck, sink._thread.is_alive())
        assert [body(0)] == rx.received


def test_stop_master_is_bounded_by_the_timeout(make_sink) -> None:
    """A receiver that hangs, timeout=1: stop_master returns within about a
    second; the stuck POST then times out and is reported."""
    with Receiver(hold=lambda _: True) as rx:
        sink = make_sink(rx.url, timeout=1.0)
        sink.handle(exited(0))
        rx.wait_for(1)
        started = time.monotonic()
        sink.stop_master(object())
        took = time.monotonic() - started
        errors = sink.wait_for_errors(1)

        assert (True, "posting an event") == (took < 2.0, errors[0][0])


def test_a_forked_child_gets_its_own_thread_and_queue(make_sink) -> None:
    """The parent's thread is stuck posting event 0 with events 1 and 2
    queued when the process forks: the child starts with no thread and an
    empty queue, its first event starts a new thread that posts it, and the
    parent's events are sent once, by the parent."""
    with Receiver(hold=lambda b: b["fields"]["worker_pid"] == 0) as rx:
        sink = make_sink(rx.url)
        sink.handle(exited(0))
        rx.wait_for(1)
        sink.handle(exited(1))
        sink.handle(exited(2))
        parent_thread = sink._thread
        read_end, write_end = os.pipe()
        with warnings.catch_warnings():
            # Python 3.12+ warns that forking a process with threads may deadlock.
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # the child: never return into pytest
            code = 0
            try:
                os.close(read_end)
                before = (sink._thread is None, sink._queue.qsize())
                sink.handle(exited(3, pid=os.getpid()))
                thread = sink._thread
                facts = {
                    "before": before,
                    "new_thread": thread is not None and thread is not parent_thread,
                    "alive": thread is not None and thread.is_alive(),
                    "thread_pid": sink._thread_pid,
                    "stopped": sink.stop(10),
                }
                os.write(write_end, json.dumps(facts).encode())
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as pipe:
            facts = json.loads(pipe.read() or b"{}")
        _, status = os.waitpid(pid, 0)
        child_posted = rx.wait_for(2)
        rx.release()
        received = rx.wait_for(4)
        assert sink.stop(5)

    assert {
        "before": [True, 0],
        "new_thread": True,
        "alive": True,
        "thread_pid": pid,
        "stopped": True,
    } == facts
    assert 0 == os.waitstatus_to_exitcode(status)
    assert [body(0), body(3, pid=pid)] == child_posted
    assert [body(0), body(3, pid=pid), body(1), body(2)] == received
    assert [] == sink.errors


@pytest.mark.integration
def test_a_sigkilled_worker_arrives_as_a_post(serve, tmp_path) -> None:
    """The example's gunicorn.conf.py under the drop-in, 2 workers: SIGKILL
    one and the receiver gets one POST, the master's ``worker_exited`` with
    reason ``killed`` and that worker's pid; on shutdown the master sends
    the two remaining workers' exits (reason ``shutdown``) before it ends."""
    shutil.copy(EXAMPLE / "gunicorn.conf.py", tmp_path / "gunicorn.conf.py")
    with Receiver() as rx:
        server = serve(
            "app:app",
            env={
                "WEBHOOK_URL": rx.url,
                "PYTHONPATH": os.pathsep.join([str(EXAMPLE), str(EXAMPLES)]),
            },
        )
        booted = server.wait_for(match(event="worker_booted"), count=2)
        victim = booted[0]["worker_pid"]
        os.kill(victim, signal.SIGKILL)
        server.wait_for(match(event="worker_exited", worker_pid=victim))
        killed = rx.wait_for(1)
        server.wait_for(match(event="worker_booted"), count=3)
        time.sleep(0.3)
        assert 1 == len(rx.received)
        server.stop()
        at_exit = rx.wait_for(3)

    first = killed[0]
    assert ("worker_exited", "warning", server.pid, "killed", victim, "SIGKILL") == (
        first["name"],
        first["level"],
        first["pid"],
        first["fields"]["reason"],
        first["fields"]["worker_pid"],
        first["fields"]["signal"],
    )
    assert 2 == len(booted)
    assert ["shutdown", "shutdown"] == [b["fields"]["reason"] for b in at_exit[1:]]
