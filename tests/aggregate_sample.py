"""A real multiprocess aggregate for tests: files written by prometheus_client
under hookkit's slot identities, read back by hookkit's collectors.

``write_hookkit_series`` touches every series of every metric hookkit
defines (``hookkit._sinks.prometheus.metrics.Metrics``), from two worker
slots, so that each family has samples in more than one file;
``collected`` reads the directory as a scrape does: ``FileCollector`` and a
``MasterCollector`` over a stand-in arbiter whose one worker is this
process (its /proc entries are real).

The caller sets ``PROMETHEUS_MULTIPROC_DIR`` (``monkeypatch.setenv``);
``hookkit.testing.reset()`` (conftest) puts prometheus_client back after.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from gunicorn.workers.sync import SyncWorker
from prometheus_client.metrics_core import Metric

from hookkit._aggregate.collect import FileCollector, MasterCollector
from hookkit._aggregate.directory import set_identity, slot_identity, use_slot_identities
from hookkit._sinks.prometheus.metrics import Metrics

MASTER_PID = 4242
ROUTE = "/users/{id}"
BUILD = {"gunicorn_version": "23.0.0", "hookkit_version": "0.0.0", "worker_class": "sync"}


def slot(number: int) -> None:
    """Write from now on as the worker in slot ``number`` (the file's identity)."""
    set_identity(slot_identity(MASTER_PID, number))


def write_hookkit_series(timeout: float = 30) -> Metrics:
    """Every hookkit metric, every label it takes, from slots 0 and 1."""
    use_slot_identities()
    slot(0)
    m = Metrics(timeout=timeout)
    m.start_series(("metrics", "logs", "tracing"))
    m.request_duration.labels("GET", "200", ROUTE, "", "http").observe(0.003)
    m.request_duration.labels("GET", "200", ROUTE, "", "http").observe(0.2)
    m.request_duration.labels("POST", "500", "_OTHER", "ValueError", "https").observe(12)
    m.request_duration.labels("GET", "", "", "aborted", "http").observe(1.5)
    m.active_requests.labels("GET").inc()
    m.active_websockets.inc()
    m.websocket_duration.labels(ROUTE).observe(42)
    m.queue_duration.labels("GET").observe(0.004)
    m.queue_header_errors.labels("negative").inc()
    m.request_body.labels("POST").observe(512)
    m.response_body.labels("GET").observe(2048)
    m.spawns.inc()
    m.exits.labels("max_requests").inc()
    m.boot_duration.observe(0.3)
    m.lifetime.observe(120)
    m.busy.inc(0.5)
    m.reloads.inc()
    m.sink_errors.labels("logs").inc()
    slot(1)
    m.request_duration.labels("GET", "200", ROUTE, "", "http").observe(0.2)
    m.active_requests.labels("GET").inc()
    m.spawns.inc()
    m.busy.inc(0.25)
    return m


class _Listener:
    def __init__(self, name: str, backlog: int) -> None:
        self.name, self.backlog = name, backlog

    def __str__(self) -> str:
        return self.name

    def get_backlog(self) -> int:
        return self.backlog


def arbiter() -> Any:
    """A stand-in arbiter: one sync worker (this process, age 1), two
    desired, one listener with 3 connections waiting."""
    worker = SimpleNamespace(age=1, tmp=SimpleNamespace(last_update=lambda: time.monotonic() - 2))
    return SimpleNamespace(
        WORKERS={os.getpid(): worker},
        num_workers=2,
        worker_class=SyncWorker,
        cfg=SimpleNamespace(threads=1, worker_connections=1000),
        LISTENERS=[_Listener("127.0.0.1:8000", 3)],
    )


def collected(directory: Path | str) -> list[Metric]:
    """The families a scrape of ``directory`` reads: files, then master."""
    files = FileCollector(str(directory))
    master = MasterCollector(arbiter(), lambda age: 0, files, BUILD)
    return [*files.collect(), *master.collect()]
