"""hookkit.testing: unit-testing gunicorn hooks, hookkit's and the user's own,
without starting gunicorn."""

from __future__ import annotations

import doctest
import os
from typing import Any

import pytest

import hookkit.hooks
import hookkit.testing
from hookkit import chain
from hookkit._core.events import Event
from hookkit._core.runtime import RUNTIME, Runtime
from hookkit.hooks import post_fork, post_request, pre_request
from hookkit.testing import (
    CapturingSink,
    FakeArbiter,
    FakeConfig,
    FakeLog,
    FakeRequest,
    FakeResponse,
    FakeWorker,
    capture_events,
)


def test_the_module_docstring_example_runs() -> None:
    """The example in hookkit.testing's docstring runs as written."""
    results = doctest.testmod(hookkit.testing, verbose=False, report=False)

    expected = (0, True)
    assert expected == (results.failed, results.attempted > 0)


def test_docstring_example_as_a_user_writes_it() -> None:
    """pre_request and post_request through hookkit.hooks with the fakes,
    inside capture_events, give one request_finished with status, method and path."""
    worker, req = FakeWorker(), FakeRequest("GET", "/hello")

    with capture_events() as events:
        pre_request(worker, req)
        post_request(worker, req, {}, FakeResponse("200 OK"))

    finished = [e for e in events if e.name == "request_finished"]
    expected = [(200, "GET", "/hello", "post_request")]
    actual = [(e.fields["status"], e.fields["method"], e.fields["path"], e.hook) for e in finished]
    assert expected == actual


def test_captured_events_are_in_order_with_the_pid() -> None:
    """Events are captured in the order the hooks ran, each with this process's pid."""
    worker, req = FakeWorker(), FakeRequest("POST", "/items", query="page=2")

    with capture_events() as events:
        pre_request(worker, req)
        post_request(worker, req, {}, FakeResponse("201 Created", sent=12))

    expected = [
        ("request_started", "pre_request", "debug", os.getpid()),
        ("request_finished", "post_request", "info", os.getpid()),
    ]
    assert expected == [(e.name, e.hook, e.level, e.pid) for e in events]
    expected_fields = {"method": "POST", "path": "/items", "status": 201, "response_bytes": 12}
    assert expected_fields == {k: events[1].fields[k] for k in expected_fields}


def test_capture_events_restores_the_sinks() -> None:
    """After the block the runtime has its sinks and its configured state back."""
    mine = CapturingSink()
    RUNTIME.dispatcher.sinks = (mine,)
    RUNTIME.configured = False

    with capture_events() as events:
        pre_request(FakeWorker(), FakeRequest())

    expected: tuple[object, ...] = ((mine,), False, [], ["request_started"])
    actual = (
        RUNTIME.dispatcher.sinks,
        RUNTIME.configured,
        mine.events,
        [e.name for e in events],
    )
    assert expected == actual


def test_capture_events_restores_the_sinks_when_the_block_raises() -> None:
    """The sinks are restored even when the test's block fails."""
    mine = CapturingSink()
    RUNTIME.dispatcher.sinks = (mine,)

    with pytest.raises(AssertionError), capture_events():
        raise AssertionError("the test failed")

    expected = (mine,)
    assert expected == RUNTIME.dispatcher.sinks


def test_events_after_the_block_are_not_captured() -> None:
    """The list holds only what happened inside the block."""
    RUNTIME.dispatcher.sinks = ()

    with capture_events() as events:
        pre_request(FakeWorker(), FakeRequest("GET", "/inside"))
    pre_request(FakeWorker(), FakeRequest("GET", "/outside"))

    expected = ["/inside"]
    assert expected == [e.fields["path"] for e in events]


def test_capture_events_does_not_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Inside the block hookkit does not configure itself from HOOKKIT_*
    variables (a typo there would fail the user's unrelated test)."""
    monkeypatch.setenv("HOOKKIT_NOT_A_SETTING", "1")

    with capture_events() as events:
        hookkit.hooks.on_starting(FakeArbiter())

    expected: tuple[list[str], dict[str, int]] = (["master_starting"], {})
    assert expected == ([e.name for e in events], RUNTIME.dispatcher.errors)


def test_capture_events_of_another_runtime() -> None:
    """capture_events can watch a runtime of the test's own."""
    runtime = Runtime()

    with capture_events(runtime) as events:
        runtime.pre_request(FakeWorker(), FakeRequest("GET", "/own"))

    expected = [("request_started", "/own")]
    assert expected == [(e.name, e.fields["path"]) for e in events]


def test_a_users_own_hook_with_the_fakes() -> None:
    """A user's hook is tested with FakeArbiter and FakeWorker: what it logs
    through ``server.log`` is recorded, formatted."""

    def my_post_fork(server: Any, worker: Any) -> None:
        server.log.info("Worker spawned (pid: %s, age: %s)", worker.pid, worker.age)
        if worker.cfg.max_requests:
            server.log.warning("recycling after %s requests", worker.cfg.max_requests)

    server = FakeArbiter()
    worker = FakeWorker(pid=4321, age=3, cfg=FakeConfig(max_requests=1000))

    my_post_fork(server, worker)

    expected = [
        ("info", "Worker spawned (pid: 4321, age: 3)"),
        ("warning", "recycling after 1000 requests"),
    ]
    assert expected == server.log.lines


def test_a_users_hook_chained_with_hookkits() -> None:
    """A user's hook chained with hookkit's: both run, hookkit's event is captured."""
    seen: list[tuple[int, int]] = []

    def my_post_fork(server: Any, worker: Any) -> None:
        seen.append((server.pid, worker.age))

    server, worker = FakeArbiter(pid=1), FakeWorker(age=2)
    hook = chain("post_fork", post_fork, my_post_fork)

    with capture_events() as events:
        hook(server, worker)

    expected = ([(1, 2)], [("worker_forked", {"master_pid": 1})])
    assert expected == (seen, [(e.name, dict(e.fields)) for e in events])


def test_a_users_hook_that_stops_the_master() -> None:
    """FakeArbiter records that a hook asked the master to stop."""

    def on_starting(server: Any) -> None:
        if server.cfg.workers > 8:
            server.stop()

    server = FakeArbiter(cfg=FakeConfig(workers=16))

    on_starting(server)

    assert server.stopped is True


def test_fake_log_records_each_level() -> None:
    """FakeLog keeps (level, message) for every level, formatting args."""
    log = FakeLog()

    log.debug("d %s", 1)
    log.info("i")
    log.warning("w %s %s", "a", "b")
    log.error("e %d%%", 5)
    log.critical("c", exc_info=True)

    expected = [("debug", "d 1"), ("info", "i"), ("warning", "w a b"), ("error", "e 5%")]
    expected.append(("critical", "c"))
    assert expected == log.lines


def test_fake_request_uri_has_the_query_string() -> None:
    """FakeRequest's ``uri`` is path and query string, its ``path`` the path alone."""
    req = FakeRequest("GET", "/search", query="q=1")

    expected = ("/search", "/search?q=1", "/plain")
    assert expected == (req.path, req.uri, FakeRequest(path="/plain").uri)


def test_fakes_describe_this_process() -> None:
    """By default the fakes are this process: a worker with this pid, a master too."""
    expected = (os.getpid(), os.getppid(), os.getpid())
    worker = FakeWorker()
    assert expected == (worker.pid, worker.ppid, FakeArbiter().pid)


def test_capturing_sink_keeps_events_in_order() -> None:
    """CapturingSink keeps every event it is handed, in order."""
    sink = CapturingSink()
    first, second = Event("a", None), Event("b", None)

    sink.handle(first)
    sink.handle(second)

    expected = ("capture", [first, second])
    assert expected == (sink.name, sink.events)


def test_worker_exit_in_the_master_reports_the_exit() -> None:
    """When Arbiter.kill_worker finds a worker already gone (ESRCH) gunicorn
    calls worker_exit in the master instead of child_exit: hookkit reports
    that exit there, once."""
    arbiter = FakeArbiter()
    worker = FakeWorker(age=3, pid=424242)
    with capture_events() as events:
        hookkit.hooks.pre_fork(arbiter, worker)
        hookkit.hooks.worker_exit(arbiter, worker)
    exits = [e for e in events if e.name == "worker_exited"]
    assert [("worker_exit", 424242, 3)] == [
        (e.hook, e.fields["worker_pid"], e.fields["worker_age"]) for e in exits
    ]


def test_reset_restores_what_hookkit_changed_in_the_process() -> None:
    """After hookkit configured itself and started a master's metrics,
    ``reset()`` restores Python's last-resort handler, the ``hookkit``
    logger (no hookkit handler, propagating), prometheus_client's value
    class and the multiprocess directory variable, the stderr drop callback,
    the query redactor and the runtime."""
    import logging

    from prometheus_client import values

    import hookkit
    from hookkit._core import stderr
    from hookkit._sinks.logs import pipeline

    last_resort, value_class = logging.lastResort, values.ValueClass
    multiproc_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    logger = logging.getLogger("hookkit")
    handlers = list(logger.handlers)
    from hookkit._face.gunicorn_process import free_port

    hookkit.configure(tracing=False, metrics_bind=f"127.0.0.1:{free_port()}", redact_query="ssn")
    hookkit.hooks.on_starting(FakeArbiter(cfg=FakeConfig()))
    changed = (
        logging.lastResort is not last_resort,
        values.ValueClass is not value_class,
        stderr._on_drop is not None,
        "ssn=REDACTED" == pipeline._redactor.redact("ssn=1"),
        bool(RUNTIME.dispatcher.sinks),
    )
    hookkit.hooks.on_exit(FakeArbiter(cfg=FakeConfig()))

    hookkit.testing.reset()

    assert (True, True, True, True, True) == changed
    assert (multiproc_dir, last_resort, value_class, None, "ssn=1", (), False, True, handlers) == (
        os.environ.get("PROMETHEUS_MULTIPROC_DIR"),
        logging.lastResort,
        values.ValueClass,
        stderr._on_drop,
        pipeline._redactor.redact("ssn=1"),
        RUNTIME.dispatcher.sinks,
        RUNTIME.configured,
        logger.propagate,
        list(logger.handlers),
    )
