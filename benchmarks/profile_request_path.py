"""Where hookkit's request-path time goes: a per-function profile and an
A/B figure, in one process, with gunicorn's sync worker serving requests as
``benchmarks/request_path.py`` does (same in-process worker, same hooks).

Unlike ``request_path.py``, the requests are the ones ``make bench`` sends
(issue 16): a templated route (``/items/42``, told to hookkit through the
WSGI environ as the README's "Routes" section says for a plain WSGI app),
``X-Request-Start`` and ``X-Forwarded-For`` from a trusted peer, the usual
Kubernetes probes in ``HOOKKIT_EXCLUDED_URLS``, and the status page's live
state on (its default).

    PYTHONPATH=benchmarks python benchmarks/profile_request_path.py [metrics|tracing|everything]

prints, for the configuration (``metrics`` by default):

- ``A/B``: the request thread's CPU per request, in blocks of 5 requests
  alternating hookkit's hooks and gunicorn's defaults (ABBA), median over
  the blocks, and the difference in µs. Blocks in which the thread was
  preempted are left out. Only the request thread is counted: the span
  exporter's thread is not (``request_path.py`` reports process CPU too).
- the profile: ``cProfile`` over ``PROFILE_REQUESTS`` requests with
  hookkit's hooks, the functions under ``hookkit/`` and
  ``prometheus_client/`` sorted by own time, in µs per request. cProfile's
  own overhead inflates every entry (about 0.1-0.3 µs a call); compare
  rows with each other and runs with each other, not with the A/B figure.

Settings (environment): ``PROFILE_REQUESTS`` (20000), ``PROFILE_AB`` (40000
requests in the A/B phase), ``PROFILE_TOP`` (30 rows).
"""

from __future__ import annotations

import cProfile
import os
import pstats
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

ROUTED_REQUEST = (
    b"GET /items/42 HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: profile\r\nAccept: */*\r\n"
    b"X-Forwarded-For: 203.0.113.7\r\nX-Request-Start: t=%d\r\n\r\n"
)
BODY = b"Hello, world!\n"
HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))]
EXCLUDED = "^/healthz$,^/readyz$,^/livez$"


def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """A routed hello world: the route template goes in the environ."""
    environ["hookkit.route"] = "/items/{id}"
    start_response("200 OK", HEADERS)
    return [BODY]


def environment(config: str, receiver_port: int) -> dict[str, str]:
    env = {
        "HOOKKIT_EXCLUDED_URLS": EXCLUDED,
        "HOOKKIT_METRICS_BIND": "none",
    }
    if config == "metrics":
        env["HOOKKIT_TRACING"] = "off"
    else:
        env.update(
            OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{receiver_port}",
            OTEL_TRACES_SAMPLER="always_on",
            OTEL_METRICS_EXEMPLAR_FILTER="trace_based",
        )
    if config == "everything":
        env["HOOKKIT_ACCESS_LOG"] = "on"
    return env


class Worker:
    """One in-process sync worker behind hookkit's master and worker hooks."""

    def __init__(self) -> None:
        from gunicorn.config import Config
        from gunicorn.glogging import Logger
        from gunicorn.workers.sync import SyncWorker
        from request_path import _Hookkit

        self.cfg = Config()
        defaults = Config()
        self.bare = (defaults.pre_request, defaults.post_request)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.kit = _Hookkit(self.cfg)
        self.kit.arbiter.worker_age += 1
        log = Logger(self.cfg)
        self.worker = SyncWorker(
            self.kit.arbiter.worker_age,
            os.getpid(),
            [self.listener],
            None,
            self.cfg.timeout / 2.0,
            self.cfg,
            log,
        )
        self.kit.spawn(self.worker, app)
        self.hooks = (self.cfg.pre_request, self.cfg.post_request)
        self.server_end, self.client_end = socket.socketpair()

    def use(self, hooks: tuple[Any, Any]) -> None:
        self.cfg.set("pre_request", hooks[0])
        self.cfg.set("post_request", hooks[1])

    def serve(self, count: int) -> None:
        from gunicorn import http

        cfg, listener, server_end = self.cfg, self.listener, self.server_end
        addr = ("127.0.0.1", 40000)
        handle = self.worker.handle_request
        send, recv = self.client_end.sendall, self.client_end.recv
        for _ in range(count):
            send(ROUTED_REQUEST % (time.time_ns() // 1000))
            req = next(http.get_parser(cfg, server_end, addr))
            handle(listener, req, server_end, addr)
            got = recv(65536)
            while not got.endswith(BODY):
                got += recv(65536)
            if not got.startswith(b"HTTP/1.1 200 "):
                raise SystemExit(f"not a 200: {got[:80]!r}")

    def ab(self, total: int, block: int = 5) -> tuple[float, float]:
        """Median request-thread CPU per request (µs): (hookkit, bare)."""
        timed: dict[str, list[float]] = {"config": [], "bare": []}
        for index in range(total // (2 * block)):
            order = ("config", "bare") if index % 2 == 0 else ("bare", "config")
            switches = resource.getrusage(resource.RUSAGE_THREAD).ru_nivcsw
            pair = {}
            for name in order:
                self.use(self.hooks if name == "config" else self.bare)
                start = time.thread_time()
                self.serve(block)
                pair[name] = (time.thread_time() - start) / block * 1e6
            if resource.getrusage(resource.RUSAGE_THREAD).ru_nivcsw == switches:
                for name, value in pair.items():
                    timed[name].append(value)
        self.use(self.hooks)
        return statistics.median(timed["config"]), statistics.median(timed["bare"])


def profile_table(profile: cProfile.Profile, requests: int, top: int) -> str:
    stats = pstats.Stats(profile)
    rows = []
    for (filename, line, name), (_, calls, own, cumulative, _) in stats.stats.items():  # type: ignore[attr-defined]
        if "/hookkit/" not in filename and "prometheus_client" not in filename:
            continue
        where = (
            filename.split("/hookkit/")[-1]
            if "/hookkit/" in filename
            else filename.split("site-packages/")[-1]
        )
        rows.append(
            (
                own / requests * 1e6,
                cumulative / requests * 1e6,
                calls / requests,
                f"{where}:{line} {name}",
            )
        )
    rows.sort(reverse=True)
    lines = ["| own µs/req | cumulative µs/req | calls/req | function |", "|---|---|---|---|"]
    lines += [
        f"| {own:.2f} | {cum:.2f} | {calls:g} | `{where}` |"
        for own, cum, calls, where in rows[:top]
    ]
    lines.append(
        f"| {sum(r[0] for r in rows):.2f} | | | every hookkit and prometheus_client function |"
    )
    return "\n".join(lines)


def main() -> None:
    config = sys.argv[1] if len(sys.argv) > 1 else "metrics"
    requests = int(os.environ.get("PROFILE_REQUESTS", "20000"))
    ab_requests = int(os.environ.get("PROFILE_AB", "40000"))
    top = int(os.environ.get("PROFILE_TOP", "30"))
    receiver = None
    with tempfile.TemporaryDirectory(prefix="hookkit-profile-") as directory:
        port = 0
        if config != "metrics":
            # its own process, on the other core: its CPU is not the request's
            receiver = subprocess.Popen(
                [sys.executable, "-c", "import otlp_receiver; otlp_receiver.serve()"],
                cwd=os.path.dirname(os.path.abspath(__file__)),
                stdout=subprocess.PIPE,
                text=True,
            )
            assert receiver.stdout is not None
            port = int(receiver.stdout.readline())
        for name in [n for n in os.environ if n.startswith(("HOOKKIT_", "OTEL_"))]:
            del os.environ[name]
        os.environ.update(environment(config, port))
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
        if hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, {0})
        worker = Worker()
        worker.serve(3000)
        with_hooks, bare = worker.ab(ab_requests)
        print(f"## {config}: A/B request-thread CPU per request")
        added = with_hooks - bare
        print(f"hookkit {with_hooks:.2f} µs, bare {bare:.2f} µs: +{added:.2f} µs", end="")
        print(f" ({bare / with_hooks:.3f}x)")
        profile = cProfile.Profile()
        profile.enable()
        worker.serve(requests)
        profile.disable()
        print(f"\n## {config}: cProfile, {requests} requests, own time per request")
        print(profile_table(profile, requests, top))
        worker.kit.exit(None)
        if receiver is not None:
            os.kill(receiver.pid, signal.SIGTERM)
            receiver.wait(10)


if __name__ == "__main__":
    main()
