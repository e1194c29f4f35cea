"""The master's standard process metrics (``process_*``, ``python_info``) and
each worker's open file descriptors (``gunicorn_worker_open_fds{slot}``).

Against a real gunicorn: the standard names are there exactly once, describe
the master, and have sane values; the per-slot series follow the live
workers, and a worker that vanished, or is a zombie, is skipped.
"""

from __future__ import annotations

import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from hookkit._aggregate.collect import FileCollector, MasterCollector
from hookkit._face.gunicorn_process import match
from tests.scrape import samples, scrape_text, total

APP = "apps.metrics_app:app"
PROCESS = (
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_open_fds",
    "process_max_fds",
    "process_start_time_seconds",
)


def slots_with_open_fds(text: str) -> dict[str, float]:
    """``gunicorn_worker_open_fds`` by slot."""
    return {
        s.labels["slot"]: s.value for s in samples(text) if s.name == "gunicorn_worker_open_fds"
    }


def wait_scrape(server, done, timeout: float = 15.0) -> str:
    """Scrape until ``done(text)``; return the last scrape."""
    deadline = time.monotonic() + timeout
    while True:
        text = scrape_text(server.metrics_port)
        if done(text) or time.monotonic() > deadline:
            return text
        time.sleep(0.05)


@pytest.mark.integration
def test_the_master_has_the_standard_process_metrics_once(serve):
    """With two workers, each process metric and python_info is in /metrics
    exactly once, unlabelled, and describes the master: it started when the
    master did, used CPU, has open fds within its limit, and runs the
    Python the tests run."""
    before = time.time()
    server = serve(APP, "-w", "2")
    server.wait_for(match(event="worker_booted"), count=2)
    text = scrape_text(server.metrics_port)
    found = samples(text)
    for name in (*PROCESS, "python_info"):
        assert 1 == len([s for s in found if s.name == name]), name
    values = {s.name: s.value for s in found if s.name in PROCESS}
    assert all({} == s.labels for s in found if s.name in PROCESS)
    started = values["process_start_time_seconds"]
    # /proc/stat's boot time is whole seconds: the start is within about 1 s.
    assert before - 1.5 <= started <= time.time() + 1.5
    master_started = total(text, "gunicorn_master_start_time_seconds")
    assert -1.5 <= master_started - started < 15, "hookkit starts in the master, after imports"
    assert values["process_cpu_seconds_total"] > 0
    assert 0 < values["process_open_fds"] <= values["process_max_fds"]
    assert values["process_resident_memory_bytes"] > 1_000_000
    # The master's own start, to the clock tick: a worker forks later (after
    # the master's interpreter has started and imported gunicorn).
    assert abs(_start_time(server.pid) - started) < 0.005
    (info,) = [s for s in found if s.name == "python_info"]
    assert 1 == info.value
    assert platform.python_version() == info.labels["version"]
    assert platform.python_implementation() == info.labels["implementation"]


@pytest.mark.integration
def test_open_fds_per_live_slot_follow_scale_down(serve):
    """Two workers: two slots with their open fds; after TTOU, one."""
    server = serve(APP, "-w", "2")
    server.wait_for(match(event="worker_booted"), count=2)
    fds = slots_with_open_fds(wait_scrape(server, lambda t: len(slots_with_open_fds(t)) == 2))
    assert {"0", "1"} == set(fds)
    # A worker holds at least its listener, its heartbeat file and stdio.
    assert all(value >= 3 for value in fds.values())
    server.signal(signal.SIGTTOU)
    server.wait_for(match(event="worker_exited", reason="scaled_down"))
    text = wait_scrape(server, lambda t: total(t, "gunicorn_workers") == 1)
    assert 1 == total(text, "gunicorn_workers")
    remaining = slots_with_open_fds(text)
    assert 1 == len(remaining)
    assert set(remaining) < {"0", "1"}
    assert 1 == len([s for s in samples(text) if s.name == "process_open_fds"])


def open_fds_by_slot(tmp_path: Path, workers: dict[int, int]) -> dict[str, float]:
    """``gunicorn_worker_open_fds`` of a MasterCollector whose arbiter lists
    ``workers`` (pid: slot)."""
    from gunicorn.workers.sync import SyncWorker

    arbiter = SimpleNamespace(
        WORKERS={
            pid: SimpleNamespace(age=slot, tmp=SimpleNamespace(last_update=time.monotonic))
            for pid, slot in workers.items()
        },
        num_workers=len(workers),
        worker_class=SyncWorker,
        cfg=SimpleNamespace(threads=1, worker_connections=1),
        LISTENERS=[],
    )
    collector = MasterCollector(arbiter, lambda age: age, FileCollector(str(tmp_path)), {})
    (family,) = [m for m in collector.collect() if m.name == "gunicorn_worker_open_fds"]
    return {s.labels["slot"]: s.value for s in family.samples}


def test_a_vanished_worker_is_skipped(tmp_path: Path):
    """A worker gone since the master listed its workers has no open-fds
    sample and fails nothing; a live one (here, this process) has its own."""
    with open("/proc/sys/kernel/pid_max") as pid_max:
        never = int(pid_max.read()) + 1  # no process can have it
    found = open_fds_by_slot(tmp_path, {os.getpid(): 0, never: 1})
    assert ["0"] == list(found)
    assert found["0"] > 0


@pytest.mark.integration
def test_a_zombie_worker_is_skipped(tmp_path: Path):
    """A worker that exited and is not reaped yet (a zombie: its fd table is
    empty) has no open-fds sample; a live one has its own."""
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = time.monotonic() + 10
        while _state(zombie.pid) != "Z":
            assert time.monotonic() < deadline, "the child never became a zombie"
            time.sleep(0.01)
        found = open_fds_by_slot(tmp_path, {live.pid: 0, zombie.pid: 1})
        assert {"0": len(os.listdir(f"/proc/{live.pid}/fd"))} == found
    finally:
        live.kill()
        live.wait()
        zombie.wait()


def _start_time(pid: int) -> float:
    """When ``pid`` started, in seconds since the epoch, from /proc."""
    with open("/proc/stat") as stat:
        boot = next(float(line.split()[1]) for line in stat if line.startswith("btime "))
    with open(f"/proc/{pid}/stat") as stat:
        ticks = int(stat.read().rsplit(")", 1)[1].split()[19])
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0]
