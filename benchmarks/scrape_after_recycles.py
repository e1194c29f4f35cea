"""Scrape time of hookkit's /metrics after N worker recycles.

Starts a real gunicorn (drop-in config, 2 sync workers, max_requests=1, so
every request recycles a worker), sends requests until N recycles, then
times 50 scrapes. Prints the median and the files the scrape read.

    .venv/bin/python benchmarks/scrape_after_recycles.py 10 1000

Not part of the test suite: timings belong here, not in tests.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

from hookkit._face.gunicorn_process import Gunicorn, free_port, http_get


def scrape(port: int) -> tuple[float, str]:
    started = time.perf_counter()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        body = response.read().decode()
    return time.perf_counter() - started, body


def files_read(body: str) -> str:
    for line in body.splitlines():
        if line.startswith("hookkit_multiprocess_files "):
            return line.split()[1]
    return "?"


def main(targets: list[int]) -> None:
    port, metrics_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKKIT_")}
    env.update(
        HOOKKIT_METRICS_BIND=f"127.0.0.1:{metrics_port}",
        HOOKKIT_LOGS="off",
        PYTHONPATH=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"),
    )
    args = [
        "-c",
        "python:hookkit.conf",
        "-b",
        f"127.0.0.1:{port}",
        "-w",
        "2",
        "--max-requests",
        "1",
        "--no-control-socket",
        "apps.metrics_app:app",
    ]
    with tempfile.TemporaryDirectory() as cwd:
        server = Gunicorn(args, env=env, cwd=cwd).start()
        try:
            deadline = time.monotonic() + 30
            while http_get(port, "/")[0] != 200:
                assert time.monotonic() < deadline, "gunicorn did not start"
                time.sleep(0.1)
            done = 1
            for target in sorted(targets):
                while done < target:
                    if http_get(port, "/")[0] == 200:
                        done += 1
                time.sleep(1)
                times, body = [], ""
                for _ in range(50):
                    elapsed, body = scrape(metrics_port)
                    times.append(elapsed)
                median, low, high = (statistics.median(times), min(times), max(times))
                print(
                    f"after {target} recycles: scrape median {median * 1000:.2f} ms "
                    f"(min {low * 1000:.2f}, max {high * 1000:.2f}), files read {files_read(body)}"
                )
        finally:
            server.stop()


if __name__ == "__main__":
    main([int(arg) for arg in sys.argv[1:]] or [10, 1000])
