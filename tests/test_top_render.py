"""``hookkit top``'s view as text: ordering, control characters, narrow
terminals, and the one snapshot a pipe gets (no escape code)."""

from __future__ import annotations

import argparse
import io
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest

from hookkit._face import top


def worker(
    slot: int, pid: int, state: str, *requests: dict[str, Any], **fields: Any
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "slot": slot,
        "pid": pid,
        "age": slot + 1,
        "state": state,
        "uptime_seconds": 100.0,
        "requests_served": 12,
        "rss_bytes": 50 * 1048576,
        "cpu_seconds": 2.0,
        "heartbeat_age_seconds": 0.5,
        "requests": list(requests),
        "requests_not_shown": 0,
    }
    entry.update(fields)
    return entry


def req(path: str | None, elapsed: float, route: str | None = None) -> dict[str, Any]:
    return {
        "method": "GET",
        "path": path,
        "route": route,
        "elapsed_seconds": elapsed,
        "trace_id": None,
    }


def document(*workers: dict[str, Any]) -> dict[str, Any]:
    return {
        "master": {
            "pid": 100,
            "uptime_seconds": 200.0,
            "worker_class": "sync",
            "workers_live": len(workers),
            "workers_desired": 3,
            "capacity": len(workers),
            "busy_seconds_total": 10.0,
            "requests_total": 400,
            "listen_backlog": [
                {"listener": "127.0.0.1:8000", "backlog": 4},
                {"listener": "unix:x", "backlog": None},
            ],
            "reloads": 0,
            "paths_shown": True,
            "time": 0.0,
        },
        "workers": list(workers),
        "dirty_workers": [],
        "recent_exits": [],
    }


DOC = document(
    worker(0, 201, "idle"),
    worker(1, 202, "busy", req("/short", 1.0)),
    worker(2, 203, "busy", req("/slow/report", 9.5), req("/b", 0.2)),
)


def test_master_line_then_busy_workers_oldest_request_first() -> None:
    """The master's line (workers live/desired, backlog, utilization,
    requests per second), then busy workers, the oldest request first."""
    lines = top.render(DOC, 120, top.Rates().update(DOC, 0.0))
    assert lines[0].startswith("gunicorn 100 sync")
    assert "workers 3/3" in lines[0]
    assert "backlog 4" in lines[0]
    assert "2.0 req/s" in lines[0]  # 400 over 200 s, the first frame's average
    assert "util 100%" in lines[0]  # 3 requests in flight, capacity 3
    rows = [line for line in lines if line[:1].isdigit()]
    assert ["2", "1", "0"] == [row.split()[0] for row in rows]
    assert "GET /slow/report 9.5s +1" in rows[0]
    assert "203" in rows[0]
    assert "busy" in rows[0]


def test_rates_from_two_snapshots() -> None:
    """Requests per second, utilization and CPU % from the difference of
    two snapshots a second apart."""
    rates = top.Rates()
    rates.update(DOC, 10.0)
    later = json.loads(json.dumps(DOC))
    later["master"]["requests_total"] = 420
    later["master"]["busy_seconds_total"] = 11.5
    later["workers"][1]["cpu_seconds"] = 2.5
    rps, utilization, cpu = rates.update(later, 12.0)
    assert (10.0, 1.0) == (rps, utilization)  # 3 in flight, capacity 3
    assert 25.0 == cpu[202]
    assert 0.0 == cpu[201]


def test_control_characters_in_paths_are_replaced() -> None:
    """A path holding ESC, CR, BEL, a C1 CSI or a bidi override prints as
    `?`: it cannot clear, move or recolour the reader's screen."""
    evil = "/x\x1b[2J\x1b]0;pwned\x07\r\n\x9b31m\u202eabc"
    lines = top.render(document(worker(0, 201, "busy", req(evil, 1.0))), 200)
    text = "\n".join(lines)
    assert "\x1b" not in text
    assert "\x07" not in text
    assert "\r" not in text
    assert "\x9b" not in text
    assert "\u202e" not in text
    assert "/x?[2J?]0;pwned????31m?abc" in text


def test_hidden_paths_show_the_route() -> None:
    """A status served off loopback without basic auth has no paths: the
    route stands in, or says the path is hidden."""
    doc = document(
        worker(0, 201, "busy", req(None, 1.0, "/u/{id}")), worker(1, 202, "busy", req(None, 2.0))
    )
    text = "\n".join(top.render(doc, 120))
    assert "GET /u/{id}" in text
    assert "GET (path hidden)" in text


@pytest.mark.parametrize("width", [30, 40, 60, 80])
def test_a_narrow_terminal_drops_columns_and_cuts_paths(width: int) -> None:
    """No line is wider than the terminal; the pid, state and the
    request's method stay, the less useful columns go first."""
    doc = document(worker(0, 20123, "busy", req("/a/very/long/path/" + "x" * 200, 3.0)))
    lines = top.render(doc, width)
    assert all(len(line) <= width for line in lines)
    row = next(line for line in lines if line.startswith("0 "))
    assert "20123" in row
    assert "busy" in row
    assert "GET /a" in row
    header = next(line for line in lines if line.startswith("SLOT"))
    if width < 60:
        assert "HB" not in header
        assert "RSS" not in header
    assert "\u2026" in row


def test_status_url() -> None:
    """A bare address gets /status.json; /metrics is replaced; no URL is
    the local endpoint HOOKKIT_METRICS_BIND names."""
    assert "http://127.0.0.1:9191/status.json" == top.status_url(None, {})
    assert "http://127.0.0.1:9300/status.json" == top.status_url(
        None, {"HOOKKIT_METRICS_BIND": "0.0.0.0:9300"}
    )
    assert "https://h:1/status.json" == top.status_url("https://h:1/metrics", {})
    assert "http://h:2/status.json" == top.status_url("h:2", {})


def test_the_password_comes_from_a_variable_that_is_not_hookkits() -> None:
    assert "s3cret" == top.password_from("ops", "TOP_PASSWORD", {"TOP_PASSWORD": "s3cret"})
    with pytest.raises(ValueError, match="HOOKKIT_"):
        top.password_from("ops", "HOOKKIT_PASSWORD", {"HOOKKIT_PASSWORD": "x"})
    with pytest.raises(ValueError, match="not set"):
        top.password_from("ops", "NOPE", {})
    assert None is top.password_from(None, None, {})


@pytest.fixture
def status_server() -> Iterator[str]:
    """A tiny HTTP server answering DOC at /status.json (127.0.0.1)."""
    body = json.dumps(DOC).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/status.json" else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_pipe_gets_one_snapshot_without_escape_codes(
    status_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not a terminal: one view printed, no escape code, exit 0."""
    monkeypatch.setenv("COLUMNS", "100")
    out = io.StringIO()
    args = argparse.Namespace(url=status_server, user=None, password_env=None, cacert=None)
    assert 0 == top.main(args, out)
    text = out.getvalue()
    assert "\x1b" not in text
    assert "GET /slow/report" in text
    assert "203" in text
    assert all(len(line) <= 100 for line in text.splitlines())


def test_a_pipe_with_no_server_fails_with_a_sentence(capsys: pytest.CaptureFixture[str]) -> None:
    args = argparse.Namespace(
        url="http://127.0.0.1:9/status.json", user=None, password_env=None, cacert=None
    )
    assert 1 == top.main(args, io.StringIO())
    assert "hookkit top: " in capsys.readouterr().err
