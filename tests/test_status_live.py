"""``/status.json`` on a real gunicorn: a worker seen busy with the request
it is stuck in, the others idle, a killed worker's exit, two requests in
one gthread worker, and basic auth guarding the status paths."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ServeFactory

pytestmark = [pytest.mark.integration]

# The requests hang as long as the test needs them; under a loaded CI
# machine that can pass gunicorn's default 30 s timeout, which would abort
# the workers (state "stopping") in the middle of the test.
NO_TIMEOUT = ("--timeout", "300")

APP = "apps.hanging:app"


def get(
    port: int, path: str = "/status.json", auth: tuple[str, str] | None = None
) -> tuple[int, bytes, Any]:
    """(status, body, headers) of GET ``path`` on the metrics port."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=10) as response:
            return response.status, response.read(), response.headers
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers


def status(port: int, auth: tuple[str, str] | None = None) -> dict[str, Any]:
    code, body, _ = get(port, auth=auth)
    assert 200 == code, body
    document: dict[str, Any] = json.loads(body)
    return document


def wait_status(
    port: int, pred: Callable[[dict[str, Any]], bool], timeout: float = 20.0, **kw: Any
) -> dict[str, Any]:
    """The first document ``pred`` accepts, polled; fails with the last."""
    deadline = time.monotonic() + timeout
    while True:
        document = status(port, **kw)
        if pred(document):
            return document
        if time.monotonic() > deadline:
            raise AssertionError(f"status never matched: {json.dumps(document, indent=1)}")
        time.sleep(0.1)


@contextmanager
def hanging(server: Any, *paths: str) -> Iterator[list[socket.socket]]:
    """Send a request per path (left in flight: the app waits for the
    ``release`` file); at the end, release them and close the sockets."""
    sockets: list[socket.socket] = []
    try:
        for path in paths:
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
            sockets.append(sock)
        yield sockets
    finally:
        Path(server.cwd, "release").touch()
        for sock in sockets:
            try:
                sock.settimeout(10)
                sock.recv(1024)
            except OSError:
                pass
            sock.close()


def busy_workers(document: dict[str, Any]) -> list[dict[str, Any]]:
    return [w for w in document["workers"] if w["state"] == "busy"]


def test_sync_workers_busy_idle_elapsed_and_a_killed_exit(
    serve: ServeFactory, tmp_path: Path
) -> None:
    """Three sync workers, one request hanging in the app: that worker is
    busy with the request's method and path (no query string), its elapsed
    time grows between two reads, the others are idle; a SIGKILLed worker's
    exit is listed with reason killed."""
    server = serve(APP, "-w", "3", *NO_TIMEOUT)
    server.cwd = tmp_path  # type: ignore[attr-defined]
    port = server.metrics_port  # type: ignore[attr-defined]
    wait_status(
        port, lambda d: len(d["workers"]) == 3 and all(w["state"] == "idle" for w in d["workers"])
    )
    with hanging(server, "/hang/order/42?token=s3cret"):
        first = wait_status(
            port, lambda d: len(busy_workers(d)) == 1 and busy_workers(d)[0]["requests"]
        )
        (busy,) = busy_workers(first)
        (request,) = busy["requests"]
        assert ("GET", "/hang/order/42") == (request["method"], request["path"])
        assert "s3cret" not in json.dumps(first)
        idle = [w for w in first["workers"] if w is not busy]
        assert ["idle", "idle"] == [w["state"] for w in idle]
        time.sleep(0.5)
        second = status(port)
        (again,) = [w for w in second["workers"] if w["pid"] == busy["pid"]]
        assert again["requests"][0]["elapsed_seconds"] >= request["elapsed_seconds"] + 0.4
        master = second["master"]
        assert (3, 3, 3, "sync") == (
            master["workers_live"],
            master["workers_desired"],
            master["capacity"],
            master["worker_class"],
        )
        assert True is master["paths_shown"]  # bound to 127.0.0.1
        for worker in second["workers"]:
            assert worker["rss_bytes"] > 0
            assert worker["heartbeat_age_seconds"] is not None
            assert worker["slot"] in (0, 1, 2)
        victim = idle[0]["pid"]
        os.kill(victim, signal.SIGKILL)
        done = wait_status(port, lambda d: any(e["pid"] == victim for e in d["recent_exits"]))
        (exit,) = [e for e in done["recent_exits"] if e["pid"] == victim]
        assert ("killed", "SIGKILL") == (exit["reason"], exit.get("signal"))
        assert isinstance(exit["time"], (int, float))


def test_gthread_two_requests_in_flight_in_one_worker(serve: ServeFactory, tmp_path: Path) -> None:
    """One gthread worker with four threads: two hanging requests are both
    listed on it, oldest first, and the worker is busy."""
    server = serve(APP, "-w", "1", "-k", "gthread", "--threads", "4", *NO_TIMEOUT)
    server.cwd = tmp_path  # type: ignore[attr-defined]
    port = server.metrics_port  # type: ignore[attr-defined]
    wait_status(port, lambda d: len(d["workers"]) == 1 and d["workers"][0]["state"] == "idle")
    with hanging(server, "/hang/first"):
        time.sleep(0.3)
        with hanging(server, "/hang/second"):
            document = wait_status(port, lambda d: len(d["workers"][0]["requests"]) == 2)
            (worker,) = document["workers"]
            assert "busy" == worker["state"]
            assert ["/hang/first", "/hang/second"] == [r["path"] for r in worker["requests"]]
            first, second = worker["requests"]
            assert first["elapsed_seconds"] > second["elapsed_seconds"]
            assert 4 == document["master"]["capacity"]
            assert "gthread" == document["master"]["worker_class"]


def test_status_off_answers_404(serve: ServeFactory) -> None:
    """HOOKKIT_STATUS=off: the paths are not served; /metrics still is."""
    server = serve(APP, env={"HOOKKIT_STATUS": "off"})
    port = server.metrics_port  # type: ignore[attr-defined]
    assert 404 == get(port)[0]
    assert 404 == get(port, "/status")[0]
    assert 200 == get(port, "/metrics")[0]


def test_without_a_metrics_server_the_start_says_so(serve: ServeFactory) -> None:
    """HOOKKIT_METRICS_BIND=none: no server, so no status; master_starting
    says so, and gunicorn serves."""
    server = serve(APP, env={"HOOKKIT_METRICS_BIND": "none"})
    (starting,) = server.events(lambda line: line.get("event") == "master_starting")
    assert starting["status"].startswith("off: no HTTP server")


def test_the_page_is_served_with_its_csp(serve: ServeFactory) -> None:
    """GET /status: the HTML page, with the Content-Security-Policy."""
    from hookkit._sinks.status import page

    server = serve(APP)
    code, body, headers = get(server.metrics_port)  # type: ignore[attr-defined]
    assert 200 == code
    code, body, headers = get(server.metrics_port, "/status")  # type: ignore[attr-defined]
    assert (200, page.PAGE) == (code, body)
    assert page.CSP == headers["Content-Security-Policy"]
    assert headers["Content-Type"].startswith("text/html")


def test_basic_auth_guards_status_and_stacks(serve: ServeFactory, tmp_path: Path) -> None:
    """With basic auth configured, /status.json and /stacks.json without
    credentials are 401; with them, 200."""
    import bcrypt

    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode()
    web = tmp_path / "web.yml"
    web.write_text(f"basic_auth_users:\n  ops: '{hashed}'\n")
    server = serve(APP, env={"HOOKKIT_METRICS_WEB_CONFIG": str(web)})
    port = server.metrics_port  # type: ignore[attr-defined]
    for path in ("/status.json", "/stacks.json", "/status"):
        assert 401 == get(port, path)[0], path
        assert 401 == get(port, path, auth=("ops", "wrong"))[0], path
    assert 200 == get(port, "/status.json", auth=("ops", "pw"))[0]
    assert 200 == get(port, "/stacks.json", auth=("ops", "pw"))[0]
