"""hookkit.processors: structlog processors users put into their own chains."""

from __future__ import annotations

import json
import os
from collections.abc import MutableMapping
from datetime import datetime, timedelta, timezone
from typing import Any

import structlog
from structlog.testing import CapturingLogger, LogCapture

from hookkit._core.identity import clear_worker, set_worker
from hookkit.processors import (
    add_pid,
    add_timestamp,
    add_worker_info,
)


def run(processor: Any, event_dict: dict[str, Any] | None = None) -> dict[str, Any]:
    """Call a processor as structlog does."""
    result: dict[str, Any] = processor(None, "info", dict(event_dict or {"event": "hello"}))
    return result


def test_add_pid_adds_this_process() -> None:
    """``add_pid`` adds the pid of the process that logged."""
    expected = {"event": "hello", "pid": os.getpid()}
    assert expected == run(add_pid)


def test_add_pid_keeps_a_pid_already_there() -> None:
    """A ``pid`` the caller bound is kept."""
    expected = {"event": "hello", "pid": 1}
    assert expected == run(add_pid, {"event": "hello", "pid": 1})


def test_add_worker_info_adds_nothing_outside_a_worker() -> None:
    """Before hookkit's post_fork ran (the master, a plain process) nothing is added."""
    expected = {"event": "hello"}
    assert expected == run(add_worker_info)


def test_add_worker_info_in_the_worker() -> None:
    """After ``set_worker_identity`` in this process, ``worker_pid`` and
    ``worker_age`` (gunicorn's spawn counter) are added."""
    set_worker(os.getpid(), 4)

    expected = {"event": "hello", "worker_pid": os.getpid(), "worker_age": 4}
    assert expected == run(add_worker_info)


def test_add_worker_info_only_in_the_workers_own_pid() -> None:
    """An identity recorded for another pid (inherited across a fork by a
    process that is not that worker) adds nothing."""
    set_worker(os.getpid() + 1, 4)

    expected = {"event": "hello"}
    assert expected == run(add_worker_info)


def test_add_worker_info_keeps_bound_values() -> None:
    """Values the caller bound are kept."""
    set_worker(os.getpid(), 4)

    expected = {"event": "hello", "worker_pid": 7, "worker_age": 4}
    assert expected == run(add_worker_info, {"event": "hello", "worker_pid": 7})


def test_clear_worker() -> None:
    """After ``clear_worker_identity`` nothing is added any more."""
    set_worker(os.getpid(), 4)
    clear_worker()

    expected = {"event": "hello"}
    assert expected == run(add_worker_info)


def test_hookkits_post_fork_sets_the_identity() -> None:
    """hookkit's post_fork hook records the worker's identity in its process."""
    from hookkit.hooks import post_fork
    from hookkit.testing import FakeArbiter, FakeWorker, capture_events

    with capture_events():
        post_fork(FakeArbiter(pid=1), FakeWorker(age=9))

    expected = {"event": "hello", "worker_pid": os.getpid(), "worker_age": 9}
    assert expected == run(add_worker_info)


def test_add_timestamp_is_iso_8601_utc_with_z() -> None:
    """``add_timestamp`` adds ``timestamp``: ISO-8601 in UTC, ending with Z."""
    before = datetime.now(timezone.utc)
    timestamp = run(add_timestamp)["timestamp"]
    after = datetime.now(timezone.utc)

    assert timestamp.endswith("Z")
    parsed = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    expected = timedelta(0)
    assert expected == parsed.utcoffset()
    assert before - timedelta(seconds=1) <= parsed <= after + timedelta(seconds=1)


def test_processors_in_a_users_structlog_chain() -> None:
    """The processors work in a user's own structlog chain (no global
    structlog configuration needed or changed)."""
    set_worker(os.getpid(), 2)
    capture = LogCapture()
    config_before = structlog.get_config()
    log = structlog.wrap_logger(
        CapturingLogger(),
        processors=[add_pid, add_worker_info, add_timestamp, capture],
    )

    log.info("user_event", user="ada")

    [entry] = capture.entries
    expected = {
        "event": "user_event",
        "user": "ada",
        "pid": os.getpid(),
        "worker_pid": os.getpid(),
        "worker_age": 2,
        "log_level": "info",
    }
    assert expected == {k: v for k, v in entry.items() if k != "timestamp"}
    assert entry["timestamp"].endswith("Z")
    assert config_before == structlog.get_config()


def test_processors_before_a_json_renderer() -> None:
    """A chain ending in structlog's JSONRenderer logs one JSON object
    carrying hookkit's fields."""
    set_worker(os.getpid(), 5)
    logger = CapturingLogger()
    log = structlog.wrap_logger(
        logger,
        processors=[
            add_pid,
            add_worker_info,
            add_timestamp,
            structlog.processors.JSONRenderer(),
        ],
    )

    log.warning("disk_low", free_mb=12)

    [call] = logger.calls
    line = json.loads(call.args[0])
    expected = {
        "method": "warning",
        "event": "disk_low",
        "free_mb": 12,
        "pid": os.getpid(),
        "worker_pid": os.getpid(),
        "worker_age": 5,
    }
    actual = {k: v for k, v in line.items() if k != "timestamp"}
    assert expected == {"method": call.method_name, **actual}


def test_processors_in_a_list_collecting_chain() -> None:
    """With a list-collecting last processor, what hookkit adds is plain data."""
    collected: list[dict[str, Any]] = []

    def collect(_logger: object, _method: str, event_dict: MutableMapping[str, Any]) -> str:
        collected.append(dict(event_dict))
        raise structlog.DropEvent

    log = structlog.wrap_logger(CapturingLogger(), processors=[add_pid, add_worker_info, collect])

    log.info("first")
    set_worker(os.getpid(), 1)
    log.info("second")

    expected = [
        {"event": "first", "pid": os.getpid()},
        {"event": "second", "pid": os.getpid(), "worker_pid": os.getpid(), "worker_age": 1},
    ]
    assert expected == collected
