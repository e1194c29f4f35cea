"""Instructions per request on hookkit's request path, counted by valgrind.

CPU time on a shared machine moves with the load of the moment; the number
of instructions a request executes does not (``valgrind --tool=callgrind``
counts them, the same for the same code and inputs, whatever else runs).
This runs hookkit's ``pre_request`` and ``post_request`` in one process,
with ``hookkit.testing``'s stand-ins and the master's set-up played in the
same process (as ``benchmarks/request_path.py`` does), under callgrind
twice: ``LOW`` and ``HIGH`` requests. The difference over ``HIGH - LOW`` is
the cost of one request, start-up and imports cancelled out.

Only hookkit's public surface is used, so it measures any checkout:

    python benchmarks/request_instructions.py            # this checkout
    PYTHONPATH=/other/checkout python benchmarks/request_instructions.py

Each request is shaped as ``make bench``'s: a routed path (``hookkit.route``
in the environ), ``X-Request-Start`` (fresh) and ``X-Forwarded-For`` from a
trusted peer, and the usual Kubernetes probes in ``HOOKKIT_EXCLUDED_URLS``.

Configurations: ``metrics`` (tracing off), ``tracing`` (metrics and a span
per request, 100 % sampled, exported over OTLP/HTTP to a receiver in the
process), ``everything`` (tracing and the JSON access line, to /dev/null).
The receiver's and the export thread's instructions are counted too.
Needs valgrind (Debian package ``valgrind``). Takes about a minute per
configuration.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile

LOW, HIGH = 512, 2560
CONFIGURATIONS = ("metrics", "tracing", "everything")


def serve(requests: int, configuration: str) -> None:
    """The measured program: set up as a worker would, then ``requests``."""
    import socket
    import threading
    import time
    from http.server import BaseHTTPRequestHandler, HTTPServer

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            """Log nothing."""

    receiver = HTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    os.environ["HOOKKIT_EXCLUDED_URLS"] = "^/healthz$,^/readyz$,^/livez$"
    if configuration == "metrics":
        os.environ["HOOKKIT_TRACING"] = "off"
    else:
        os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{receiver.server_port}"
        os.environ["OTEL_TRACES_SAMPLER"] = "always_on"
    if configuration == "everything":
        os.environ["HOOKKIT_ACCESS_LOG"] = "on"
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    os.environ["HOOKKIT_METRICS_BIND"] = f"127.0.0.1:{probe.getsockname()[1]}"
    probe.close()

    from hookkit import hooks
    from hookkit.testing import FakeArbiter, FakeConfig, FakeRequest, FakeResponse, FakeWorker

    config = FakeConfig()
    if not hasattr(config, "env_orig"):  # stand-ins of older checkouts
        config.env_orig = {}  # type: ignore[attr-defined]
    arbiter = FakeArbiter(cfg=config)
    arbiter.reexec_pid = arbiter.master_pid = 0
    hooks.on_starting(arbiter)
    worker = FakeWorker(age=1)
    hooks.pre_fork(arbiter, worker)
    hooks.post_fork(arbiter, worker)
    hooks.post_worker_init(worker)
    # As make bench's requests (issue 16): a routed path, X-Request-Start
    # and X-Forwarded-For from a trusted peer.
    stamp = ("X-REQUEST-START", "")
    headers = [
        ("HOST", "h"),
        ("CONTENT-LENGTH", "3"),
        ("X-FORWARDED-FOR", "203.0.113.7"),
        stamp,
    ]
    req = FakeRequest("GET", "/items/42", headers=headers)
    req.scheme, req.peer_addr, req.version = "http", ("127.0.0.1", 5000), (1, 1)  # type: ignore[attr-defined]
    resp = FakeResponse("200 OK", sent=5)
    resp.status_code = 200  # type: ignore[attr-defined] # as gunicorn's Response has
    environ = {
        "wsgi.input": None,
        "CONTENT_LENGTH": "3",
        "REMOTE_ADDR": "127.0.0.1",
        "hookkit.route": "/items/{id}",
    }
    for _ in range(requests):
        headers[3] = ("X-REQUEST-START", f"t={time.time_ns() // 1000}")
        hooks.pre_request(worker, req)
        hooks.post_request(worker, req, environ, resp)
    hooks.worker_exit(arbiter, worker)
    hooks.on_exit(arbiter)


def instructions(requests: int, configuration: str) -> int:
    """Instructions valgrind counted for a run of ``requests``."""
    with tempfile.TemporaryDirectory() as directory:
        done = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={directory}/out",
                sys.executable,
                __file__,
                "--serve",
                str(requests),
                configuration,
            ],
            env={**os.environ, "PYTHONHASHSEED": "0"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            check=True,
        )
    match = re.search(r"Collected : (\d+)", done.stderr)
    if match is None:
        raise RuntimeError(f"no count from valgrind:\n{done.stderr[-2000:]}")
    return int(match.group(1))


def main() -> None:
    """Print instructions per request of each configuration."""
    import hookkit

    print(f"hookkit from {hookkit.__file__}")
    print("| configuration | instructions per request |")
    print("|---|---|")
    for configuration in sys.argv[1:] or CONFIGURATIONS:
        low, high = instructions(LOW, configuration), instructions(HIGH, configuration)
        print(f"| {configuration} | {(high - low) / (HIGH - LOW):,.0f} |", flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        serve(int(sys.argv[2]), sys.argv[3])
    else:
        main()
