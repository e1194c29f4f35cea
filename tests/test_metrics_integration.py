"""The Prometheus sink and /metrics, against real gunicorn processes.

Counts must be exact (nothing lost, nothing counted twice) through worker
kills and recycling, the multiprocess directory bounded, scrapes never
failing on bad files, and labels bounded whatever clients send.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
from pathlib import Path

import pytest

from hookkit._core.exits import REASONS
from hookkit._face.gunicorn_process import free_port, gunicorn_command, http_get, match
from tests.conftest import clean_env
from tests.scrape import samples, scrape_text, series, total

pytestmark = [pytest.mark.integration, pytest.mark.compat]

APP = "apps.metrics_app:app"
COUNT = "http_server_request_duration_seconds_count"


def wait_count(server, expected: float, timeout: float = 10.0, metric: str = COUNT) -> str:
    """Scrape until the request count (or ``metric``) reaches ``expected``
    (post_request runs after the client has its response); return the last
    scrape."""
    deadline = time.monotonic() + timeout
    while True:
        text = scrape_text(server.metrics_port)
        if total(text, metric) >= expected or time.monotonic() > deadline:
            return text
        time.sleep(0.05)


def wait_workers(server, count: int, timeout: float = 15.0) -> None:
    """Wait until /metrics answers and shows ``count`` live workers (for
    servers run with HOOKKIT_LOGS=off, whose log has no events to wait on)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if total(scrape_text(server.metrics_port), "gunicorn_workers") >= count:
                return
        except OSError:
            pass
        assert time.monotonic() < deadline, f"never saw {count} live workers"
        time.sleep(0.05)


def test_n_requests_give_exactly_n(serve):
    """N requests: exactly N in the duration histogram's count, by status."""
    server = serve(APP, "-w", "2")
    server.wait_for(match(event="worker_booted"), count=2)
    statuses = [
        http_get(server.port, path)[0] for path in ["/"] * 7 + ["/status/404"] * 2 + ["/raise"]
    ]
    assert [200] * 7 + [404] * 2 + [500] == statuses
    text = wait_count(server, 10)
    time.sleep(0.3)
    text = scrape_text(server.metrics_port)
    assert 10 == total(text, COUNT)
    assert 7 == total(text, COUNT, http_response_status_code="200", http_request_method="GET")
    assert 2 == total(text, COUNT, http_response_status_code="404")
    assert 1 == total(text, COUNT, http_response_status_code="500", error_type="RuntimeError")
    assert 0 == total(text, "http_server_active_requests")


def test_counts_survive_a_sigkilled_worker(serve):
    """A worker SIGKILLed between requests: its counts stay in the total."""
    server = serve(APP, "-w", "1")
    pid = server.wait_for(match(event="worker_booted"))[0]["worker_pid"]
    for _ in range(5):
        assert 200 == http_get(server.port, "/")[0]
    assert 5 == total(wait_count(server, 5), COUNT)
    os.kill(pid, signal.SIGKILL)
    server.wait_for(match(event="worker_booted"), count=2)
    for _ in range(3):
        assert 200 == http_get(server.port, "/")[0]
    text = wait_count(server, 8)
    assert 8 == total(text, COUNT)
    assert 1 == total(text, "gunicorn_worker_exits_total", reason="killed")


def test_in_flight_gauge_of_a_killed_worker_does_not_stick(serve):
    """A worker killed in the middle of a request: the in-flight gauge goes back to 0."""
    server = serve(APP, "-w", "1")
    pid = server.wait_for(match(event="worker_booted"))[0]["worker_pid"]
    client = threading.Thread(target=http_get, args=(server.port, "/sleep?30", 30))
    client.start()
    deadline = time.monotonic() + 10
    while total(scrape_text(server.metrics_port), "http_server_active_requests") != 1:
        assert time.monotonic() < deadline, "the request never showed as in flight"
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    client.join(10)
    server.wait_for(match(event="worker_exited", worker_pid=pid))
    assert 0 == total(scrape_text(server.metrics_port), "http_server_active_requests")


def kept_files(directory: Path) -> set[str]:
    """The names of the directory's files that outlive their worker."""
    return {p.name for p in directory.glob("*.db")} - live_files(directory)


def live_files(directory: Path) -> set[str]:
    """The names of the live-gauge files (dropped when their worker dies)."""
    return {p.name for p in directory.glob("gauge_live*.db")}


def recycle(server, times: int) -> None:
    for _ in range(times):
        assert 200 == http_get(server.port, "/")[0]


def test_recycling_keeps_counts_exact_and_the_directory_bounded(serve, tmp_path):
    """max_requests=1 recycles a worker after every request: the count stays
    exact, and after 1,000 recycles the directory holds no file it did not
    hold after 10 (but for at most one live-gauge file per slot), and a
    scrape reads no more than that."""
    directory = tmp_path / "mp"
    directory.mkdir()
    server = serve(
        APP,
        "-w",
        "2",
        "--max-requests",
        "1",
        env={"PROMETHEUS_MULTIPROC_DIR": str(directory), "HOOKKIT_LOGS": "off"},
        wait=False,
    )
    wait_workers(server, 2)
    recycle(server, 10)
    text = wait_count(server, 10)
    assert 10 == total(text, COUNT)
    # A slot's live-gauge file (requests in flight) is removed when its worker
    # dies and made again by the next one's first request, so at any moment
    # each slot may or may not have one: the bound counts them per slot.
    kept_after_10 = kept_files(directory)
    recycle(server, 990)
    text = wait_count(server, 1000, timeout=30)
    assert 1000 == total(text, COUNT)
    assert kept_files(directory) <= kept_after_10
    # One per slot, and the master's (http_server_active_websockets, at 0).
    assert len(live_files(directory)) <= 3
    assert total(text, "hookkit_multiprocess_files") <= len(kept_after_10) + 3
    assert total(text, "gunicorn_worker_exits_total", reason="max_requests") >= 998


def test_zero_byte_file_is_skipped_and_counted(serve, tmp_path):
    """A zero-byte .db file (a worker killed while creating it): the scrape
    still succeeds and hookkit_scrape_errors_total counts it."""
    directory = tmp_path / "mp"
    directory.mkdir()
    server = serve(APP, "-w", "1", env={"PROMETHEUS_MULTIPROC_DIR": str(directory)})
    server.wait_for(match(event="worker_booted"))
    assert 200 == http_get(server.port, "/")[0]
    wait_count(server, 1)
    (directory / "counter_w1s9.db").write_bytes(b"")
    (directory / "histogram_w1s9.db").write_bytes(b"\x10\x00\x00\x00trunc")
    text = scrape_text(server.metrics_port)
    assert 1 == total(text, COUNT)
    assert 2 == total(text, "hookkit_scrape_errors_total")


def test_random_paths_add_no_series(serve):
    """5,000 requests to distinct random paths and odd methods leave the
    number of series unchanged: no path label, methods folded to _OTHER."""
    server = serve(APP, "-w", "2", env={"HOOKKIT_LOGS": "off"}, wait=False)
    wait_workers(server, 2)
    http_get(server.port, "/status/404")
    http_get(server.port, "/first-random-path")
    before = series(wait_count(server, 2), "http_server")
    rng = random.Random(7)
    for n in range(5000):
        http_get(server.port, f"/status/404?n={n}" if n % 2 else f"/x{rng.getrandbits(64):x}/{n}")
    after = series(wait_count(server, 5002, timeout=60), "http_server")
    assert before == after


def test_routes_from_the_app_are_capped(serve):
    """An app that supplies a route is labelled by it, but never beyond
    HOOKKIT_MAX_ROUTES distinct values per worker: the rest are _OTHER."""
    server = serve(
        APP, "-w", "1", env={"HOOKKIT_MAX_ROUTES": "5", "HOOKKIT_LOGS": "off"}, wait=False
    )
    wait_workers(server, 1)
    for n in range(40):
        http_get(server.port, f"/routed/{n}")
    text = wait_count(server, 40)
    routes = {s.labels.get("http_route") for s in samples(text) if s.name == COUNT}
    assert 5 == len(routes - {"_OTHER"})
    assert "_OTHER" in routes
    assert 40 == total(text, COUNT)


def test_the_url_scheme_is_a_label(serve):
    """``url_scheme`` (OpenTelemetry's Required ``url.scheme``) as gunicorn
    judged it: https behind a trusted proxy's X-Forwarded-Proto (gunicorn's
    secure_scheme_headers; 127.0.0.1 is in forwarded_allow_ips by default),
    http otherwise; a client's claim from an untrusted peer is not taken."""
    server = serve(APP, "-w", "1")
    assert 200 == http_get(server.port, "/", headers={"X-Forwarded-Proto": "https"})[0]
    assert 200 == http_get(server.port, "/")[0]
    text = wait_count(server, 2)
    assert (1, 1) == (total(text, COUNT, url_scheme="https"), total(text, COUNT, url_scheme="http"))

    untrusting = serve(APP, "-w", "1", "--forwarded-allow-ips", "192.0.2.1")
    assert 200 == http_get(untrusting.port, "/", headers={"X-Forwarded-Proto": "https"})[0]
    text = wait_count(untrusting, 1)
    assert (0, 1) == (
        total(text, COUNT, url_scheme="https"),
        total(text, COUNT, url_scheme="http"),
    )


def test_unknown_methods_become_other(serve):
    """A method outside the standard set is counted as _OTHER."""
    server = serve(APP, "-w", "1")
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as conn:
        conn.sendall(b"FROBNICATE / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        conn.recv(1024)
    text = wait_count(server, 1)
    assert 1 == total(text, COUNT, http_request_method="_OTHER")


def test_lifecycle_metrics(serve):
    """Workers, spawns, reloads, exits by reason (every reason from the start),
    boot durations, capacity, heartbeat and memory per slot, build info."""
    server = serve(APP, "-w", "2", "-k", "gthread", "--threads", "3")
    server.wait_for(match(event="worker_booted"), count=2)
    # The worker_booted line can be out before the same event's boot duration
    # is in the worker's metrics file (seen on a loaded machine): wait for both.
    text = wait_count(server, 2, metric="gunicorn_worker_boot_duration_seconds_count")
    assert (2, 2, 6) == (
        total(text, "gunicorn_workers"),
        total(text, "gunicorn_workers_desired"),
        total(text, "gunicorn_worker_capacity"),
    )
    assert 2 == total(text, "gunicorn_worker_spawns_total")
    reasons = {s.labels["reason"] for s in samples(text) if s.name == "gunicorn_worker_exits_total"}
    assert set(REASONS) == reasons  # the ten, pinned in test_exits
    assert 2 == total(text, "gunicorn_worker_boot_duration_seconds_count")
    slots = {
        s.labels["slot"] for s in samples(text) if s.name == "gunicorn_worker_heartbeat_age_seconds"
    }
    assert {"0", "1"} == slots
    memory = [s.value for s in samples(text) if s.name == "gunicorn_worker_resident_memory_bytes"]
    assert 2 == len(memory)
    assert all(value > 1_000_000 for value in memory)
    assert 1 == total(text, "gunicorn_build_info", worker_class="gthread")
    assert 200 == http_get(server.port, "/burn?0.3")[0]
    assert total(scrape_text(server.metrics_port), "gunicorn_workers_cpu_seconds_total") >= 0.2
    server.signal(signal.SIGHUP)
    server.wait_for(match(event="worker_exited", reason="reload"), count=2)
    text = wait_count(server, 2, metric="gunicorn_worker_lifetime_seconds_count")
    assert 1 == total(text, "gunicorn_reloads_total")
    assert 2 == total(text, "gunicorn_worker_exits_total", reason="reload")
    assert 2 == total(text, "gunicorn_worker_lifetime_seconds_count")


def test_endpoint_paths_and_formats(serve):
    """/metrics answers in the text format, or OpenMetrics when asked; any
    other path is 404."""
    server = serve(APP, "-w", "1")
    assert 404 == http_get(server.metrics_port, "/")[0]
    assert 200 == http_get(server.port, "/")[0]
    text = wait_count(server, 1)
    assert "# TYPE http_server_request_duration_seconds histogram" in text
    open_metrics = scrape_text(
        server.metrics_port, accept="application/openmetrics-text; version=1.0.0"
    )
    assert open_metrics.rstrip().endswith("# EOF")


def test_app_metrics_in_the_same_scrape(serve):
    """An app's own prometheus_client counter, made at import in the worker,
    is in hookkit's scrape, summed over workers."""
    server = serve(APP, "-w", "2")
    for _ in range(4):
        assert 200 == http_get(server.port, "/user")[0]
    assert 4 == total(wait_count(server, 4), "app_widgets_total")


def test_metrics_port_in_use_stops_a_fresh_start(serve):
    """A metrics port already taken: gunicorn does not start, and says which
    port and which setting."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        server = serve(APP, env={"HOOKKIT_METRICS_BIND": f"127.0.0.1:{port}"}, wait=False)
        assert 1 == server.proc.wait(20)
        server.stream.wait_closed(5)
    text = "\n".join(str(line) for line in server.events())
    assert f"HOOKKIT_METRICS_BIND=127.0.0.1:{port}" in text
    assert "already in use" in text


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"HOOKKIT_METRICS_BIND": "localhost"}, "HOOKKIT_METRICS_BIND"),
        ({"HOOKKIT_METRICS_BIND": "127.0.0.1:99999"}, "HOOKKIT_METRICS_BIND"),
        ({"HOOKKIT_MAX_ROUTES": "many"}, "HOOKKIT_MAX_ROUTES"),
        ({"HOOKKIT_METRICS": "perhaps"}, "HOOKKIT_METRICS"),
        ({"PROMETHEUS_MULTIPROC_DIR": "/nonexistent/hookkit"}, "PROMETHEUS_MULTIPROC_DIR"),
    ],
)
def test_bad_metrics_configuration_fails_fast(serve, env, named):
    """Malformed addresses and numbers, or a missing multiprocess directory,
    stop gunicorn at start-up with exit status 1 and the setting's name."""
    server = serve(APP, env=env, wait=False)
    assert 1 == server.proc.wait(20)
    server.stream.wait_closed(5)
    assert named in "\n".join(str(line) for line in server.events())


def test_unwritable_directory_fails_fast():
    """An unwritable PROMETHEUS_MULTIPROC_DIR stops start-up with exit status 1,
    naming it. Root may write anywhere, so as root gunicorn runs as nobody
    (in a directory under /tmp that nobody can reach, unlike pytest's)."""
    base = Path(tempfile.mkdtemp(prefix="hookkit-ro-"))
    base.chmod(0o755)
    directory = base / "ro"
    directory.mkdir(mode=0o555)
    try:
        _start_with_unwritable_directory(directory)
    finally:
        shutil.rmtree(base)


def _start_with_unwritable_directory(directory: Path) -> None:
    command = [*gunicorn_command()]
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip("running as root and setpriv (util-linux) is missing to drop to nobody")
        command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command]
    done = subprocess.run(
        [*command, "-c", "python:hookkit.conf", "-b", f"127.0.0.1:{free_port()}", APP],
        env=clean_env(
            PROMETHEUS_MULTIPROC_DIR=str(directory),
            HOOKKIT_METRICS_BIND=f"127.0.0.1:{free_port()}",
        ),
        cwd="/",
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert 1 == done.returncode
    assert "PROMETHEUS_MULTIPROC_DIR" in done.stderr
    assert "not writable" in done.stderr


def test_metrics_off(serve):
    """HOOKKIT_METRICS=off: no endpoint, requests still served and logged."""
    server = serve(APP, "-w", "1", env={"HOOKKIT_METRICS": "off"})
    assert 200 == http_get(server.port, "/")[0]
    with pytest.raises(urllib.error.URLError):
        scrape_text(server.metrics_port)


def test_endpoint_answers_through_a_usr2_reexec(serve, tmp_path):
    """USR2: /metrics keeps answering while both masters run and after the
    old one exits; the counts carry on."""
    server = serve(APP, "-w", "1")
    server.wait_for(match(event="worker_booted"))
    for _ in range(3):
        http_get(server.port, "/")
    wait_count(server, 3)
    old = server.pid
    failures = []
    stop = threading.Event()

    def keep_scraping():
        while not stop.is_set():
            try:
                scrape_text(server.metrics_port)
            except OSError as exc:
                failures.append(repr(exc))
            time.sleep(0.02)

    scraper = threading.Thread(target=keep_scraping)
    scraper.start()
    try:
        server.signal(signal.SIGUSR2)
        new = server.wait_for(
            lambda line: line.get("event") == "server_ready" and line.get("master_pid") != old
        )[0]["master_pid"]
        server.wait_for(match(event="worker_booted"), count=2)  # the old master's, the new one's
        os.kill(old, signal.SIGTERM)
        server.wait_for(match(event="master_exiting", master_pid=old), timeout=15)
        time.sleep(0.5)
    finally:
        stop.set()
        scraper.join(10)
    assert [] == failures
    for _ in range(2):
        http_get(server.port, "/")
    text = wait_count(server, 5)
    assert 5 == total(text, COUNT)
    os.kill(new, signal.SIGTERM)
    server.wait_for(match(event="master_exiting", master_pid=new), timeout=15)


def test_stale_files_are_cleared_on_a_fresh_start(serve, tmp_path):
    """Files left in PROMETHEUS_MULTIPROC_DIR by a previous run are removed at
    a fresh start: their counts do not leak into the new run."""
    directory = tmp_path / "mp"
    directory.mkdir()
    first = serve(APP, "-w", "1", env={"PROMETHEUS_MULTIPROC_DIR": str(directory)})
    for _ in range(3):
        http_get(first.port, "/")
    wait_count(first, 3)
    os.kill(first.pid, signal.SIGKILL)  # no clean exit: its files stay behind
    first.proc.wait(10)
    first.stop()
    assert list(directory.glob("*.db"))
    second = serve(APP, "-w", "1", env={"PROMETHEUS_MULTIPROC_DIR": str(directory)})
    second.wait_for(match(event="worker_booted"))
    http_get(second.port, "/")
    assert 1 == total(wait_count(second, 1), COUNT)


def test_counts_carry_on_across_reloads(serve):
    """SIGHUP re-executes the config: the metrics carry on, nothing is counted twice."""
    server = serve(APP, "-w", "2")
    server.wait_for(match(event="worker_booted"), count=2)
    for _ in range(4):
        http_get(server.port, "/")
    wait_count(server, 4)
    for reload in range(1, 4):
        server.signal(signal.SIGHUP)
        server.wait_for(match(event="worker_exited", reason="reload"), count=2 * reload)
    for _ in range(4):
        http_get(server.port, "/")
    text = wait_count(server, 8)
    time.sleep(0.2)
    text = scrape_text(server.metrics_port)
    assert (8, 3, 6) == (
        total(text, COUNT),
        total(text, "gunicorn_reloads_total"),
        total(text, "gunicorn_worker_exits_total", reason="reload"),
    )
    assert 8 == total(text, "gunicorn_worker_spawns_total")


def test_scrapes_succeed_while_workers_come_and_go(serve):
    """Scraping without pause while max_requests=1 forks and reaps a worker
    per request: every scrape succeeds (the endpoint thread is paused around
    each fork, never broken by it)."""
    server = serve(APP, "-w", "2", "--max-requests", "1", env={"HOOKKIT_LOGS": "off"}, wait=False)
    wait_workers(server, 2)
    failures: list[str] = []
    scrapes = 0
    stop = threading.Event()

    def keep_scraping() -> None:
        nonlocal scrapes
        while not stop.is_set():
            try:
                scrape_text(server.metrics_port)
                scrapes += 1
            except OSError as exc:
                failures.append(repr(exc))

    scraper = threading.Thread(target=keep_scraping)
    scraper.start()
    try:
        recycle(server, 100)
    finally:
        stop.set()
        scraper.join(10)
    assert [] == failures
    assert scrapes > 50
    assert 100 == total(wait_count(server, 100), COUNT)


def test_private_directory_is_removed_when_the_master_exits(serve):
    """Without PROMETHEUS_MULTIPROC_DIR hookkit's private directory (named in
    server_ready, mode 0700) is removed when the master exits, also after a
    USR2 re-exec handed it to a new master."""
    server = serve(APP, "-w", "1")
    ready = server.events(match(event="server_ready"))[0]
    directory = Path(ready["metrics_directory"])
    assert f"http://127.0.0.1:{server.metrics_port}/metrics" == ready["metrics_endpoint"]
    assert 0o700 == directory.stat().st_mode & 0o777
    old = server.pid
    server.signal(signal.SIGUSR2)
    new = server.wait_for(
        lambda line: line.get("event") == "server_ready" and line.get("master_pid") != old
    )[0]
    assert str(directory) == new["metrics_directory"]
    os.kill(old, signal.SIGTERM)
    server.wait_for(match(event="master_exiting", master_pid=old), timeout=15)
    assert directory.is_dir(), "the new master still uses it"
    os.kill(new["master_pid"], signal.SIGTERM)
    server.wait_for(match(event="master_exiting", master_pid=new["master_pid"]), timeout=15)
    deadline = time.monotonic() + 5
    while directory.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not directory.exists()
