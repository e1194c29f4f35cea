"""``hookkit stacks`` and ``hookkit._face.fetch``, against a small stand-in
server on 127.0.0.1 (the real endpoint is in test_status_stacks_live.py):
the text it prints, and the one-line messages for 401, 403, a refused
connection, and a forbidden ``--password-env`` name."""

from __future__ import annotations

import base64
import json
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from hookkit._face.cli import main
from hookkit._face.fetch import FetchError, fetch_json
from hookkit._face.gunicorn_process import free_port

DOCUMENT = {
    "workers": [
        {
            "pid": 4321,
            "age": 3,
            "threads": [
                {
                    "name": "MainThread",
                    "id": 1,
                    "stack": '  File "app.py", line 9, in stuck_in_here\n    time.sleep(30)\n',
                }
            ],
            "greenlets": [],
            "tasks": [{"name": "Task-2", "id": 2, "stack": '  File "a.py", line 1, in waiter\n'}],
            "left_out": 0,
        }
    ],
    "not_answering": [{"pid": 4322, "age": 4, "reason": "timeout"}],
}
GOOD = "Basic " + base64.b64encode(b"ops:s3cret").decode()


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/open/stacks.json":
            self._send(200, DOCUMENT)
        elif self.path == "/auth/stacks.json":
            if self.headers.get("Authorization") == GOOD:
                self._send(200, DOCUMENT)
            else:
                self._send(401, {"error": "basic auth required"})
        elif self.path == "/refuse/stacks.json":
            self._send(
                403, {"error": "stacks are served only on a loopback bind or with basic auth"}
            )
        else:
            self._send(404, {"error": "not found"})

    def _send(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def base_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_prints_each_workers_pid_and_its_stacks(
    base_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert 0 == main(["stacks", f"{base_url}/open"])
    out = capsys.readouterr().out
    assert "worker pid 4321 (age 3)" in out
    assert "thread MainThread (1):" in out
    assert "in stuck_in_here" in out
    assert "task Task-2 (2):" in out
    assert "worker pid 4322 (age 4): not answering: no answer in time" in out


def test_the_url_may_name_the_document(base_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert 0 == main(["stacks", f"{base_url}/open/stacks.json"])
    assert "stuck_in_here" in capsys.readouterr().out


def test_401_without_and_with_wrong_credentials(
    base_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert 1 == main(["stacks", f"{base_url}/auth"])
    assert "401, the endpoint asks for basic auth: give --user" in capsys.readouterr().err
    monkeypatch.setenv("STACKS_PASSWORD", "wrong")
    assert 1 == main(
        ["stacks", f"{base_url}/auth", "--user", "ops", "--password-env", "STACKS_PASSWORD"]
    )
    assert "401, the user or password was refused" in capsys.readouterr().err
    monkeypatch.setenv("STACKS_PASSWORD", "s3cret")
    assert 0 == main(
        ["stacks", f"{base_url}/auth", "--user", "ops", "--password-env", "STACKS_PASSWORD"]
    )
    assert "stuck_in_here" in capsys.readouterr().out


def test_the_password_prompt(
    base_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("getpass.getpass", lambda prompt: "s3cret")
    assert 0 == main(["stacks", f"{base_url}/auth", "--user", "ops"])
    assert "stuck_in_here" in capsys.readouterr().out


def test_403_quotes_the_servers_reason(base_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert 1 == main(["stacks", f"{base_url}/refuse"])
    err = capsys.readouterr().err
    assert "403, refused (the server says: stacks are served only on a loopback bind" in err


def test_connection_refused(capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()  # nothing listens there
    assert 1 == main(["stacks", f"http://127.0.0.1:{port}"])
    err = capsys.readouterr().err
    assert f"http://127.0.0.1:{port}/stacks.json: connection refused" in err
    assert "HOOKKIT_METRICS_BIND" in err


def test_a_hookkit_password_variable_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert 1 == main(["stacks", "--user", "ops", "--password-env", "HOOKKIT_PASSWORD"])
    assert "choose a name outside HOOKKIT_*" in capsys.readouterr().err


def test_fetch_json_errors_carry_the_status(base_url: str) -> None:
    assert DOCUMENT == fetch_json(f"{base_url}/open/stacks.json")
    with pytest.raises(FetchError) as refused:
        fetch_json(f"{base_url}/refuse/stacks.json")
    assert 403 == refused.value.status
    with pytest.raises(FetchError, match="not an http"):
        fetch_json("ftp://127.0.0.1/x")
    with pytest.raises(FetchError, match="--cacert given"):
        fetch_json(f"{base_url}/open/stacks.json", cacert="/nonexistent.pem")


@pytest.fixture
def tls_url(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """The stand-in server over TLS, with a self-signed certificate for
    127.0.0.1 made by the openssl command line; its URL and the certificate."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command line is needed to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-keyout", str(key), "-out", str(cert),
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_address[1]}", cert
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_tls_needs_the_ca_and_works_with_it(
    tls_url: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    url, cert = tls_url
    assert 1 == main(["stacks", f"{url}/open"])
    assert "certificate was not trusted" in capsys.readouterr().err
    assert 0 == main(["stacks", f"{url}/open", "--cacert", str(cert)])
    assert "stuck_in_here" in capsys.readouterr().out
