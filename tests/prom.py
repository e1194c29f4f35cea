"""A real Prometheus server and ``promtool`` for tests.

``prometheus([...targets])`` starts the ``prometheus`` binary (Debian package
``prometheus``; ``.ci/run`` installs it) on a free port of 127.0.0.1 with a
throwaway config and TSDB, scraping one job named ``hookkit``, and stops it
by PID on exit. ``promtool_check_metrics`` lints exposition text.

Prometheus 2.x applies new scrape targets on a 5 s tick, so the first scrape
comes about 5 s after start: share one server between tests where possible.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hookkit._face.gunicorn_process import free_port

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
MISSING = "prometheus/promtool not installed (.ci/run installs the Debian package `prometheus`)"

# Never through a proxy from the environment: everything stays on 127.0.0.1.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def promtool_check_metrics(text: str) -> tuple[int, str]:
    """Lint exposition ``text`` with ``promtool check metrics``.

    Returns (exit code, stdout and stderr): 0 when clean, 3 for lint problems
    (e.g. a counter without ``_total``, no HELP), 1 when it does not parse.
    """
    proc = subprocess.run(
        [PROMTOOL or "promtool", "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return proc.returncode, proc.stdout + proc.stderr


def scrape_config(
    targets: list[str],
    scrape_interval: str = "1s",
    basic_auth: tuple[str, str] | None = None,
    tls_ca_file: str | None = None,
    scheme: str = "http",
    *,
    rule_files: list[str] | None = None,
) -> dict[str, Any]:
    """prometheus.yml as a dict: one job ``hookkit`` scraping ``targets``
    (``"127.0.0.1:PORT"``), timing out after one interval; rules evaluated
    at the scrape interval."""
    job: dict[str, Any] = {
        "job_name": "hookkit",
        "scheme": scheme,
        "scrape_interval": scrape_interval,
        "scrape_timeout": scrape_interval,
        "static_configs": [{"targets": list(targets)}],
    }
    if basic_auth is not None:
        job["basic_auth"] = {"username": basic_auth[0], "password": basic_auth[1]}
    if tls_ca_file is not None:
        job["tls_config"] = {"ca_file": tls_ca_file}
    config: dict[str, Any] = {
        "global": {
            "scrape_interval": scrape_interval,
            "scrape_timeout": scrape_interval,
            "evaluation_interval": scrape_interval,
        },
        "scrape_configs": [job],
    }
    if rule_files:
        config["rule_files"] = list(rule_files)
    return config


class PrometheusServer:
    """A running Prometheus: ``url``, ``pid``, and its HTTP API."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.proc = proc
        self.port = port
        self.log = log
        self.url = f"http://127.0.0.1:{port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _get(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with _OPENER.open(f"{self.url}{path}{query}", timeout=5) as response:
            body = json.load(response)
        if body.get("status") != "success":
            raise RuntimeError(f"{path}: {body}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query: ``data.result`` (a scalar comes back as one sample
        without labels)."""
        data = self._get("/api/v1/query", query=expr)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        result: list[dict[str, Any]] = data["result"]
        return result

    def query_range(
        self, expr: str, start: float, end: float, step: str = "1s"
    ) -> list[dict[str, Any]]:
        """``data.result`` of a range query (a matrix), as a Grafana panel runs it."""
        data = self._get(
            "/api/v1/query_range", query=expr, start=str(start), end=str(end), step=step
        )
        result: list[dict[str, Any]] = data["result"]
        return result

    def query_exemplars(self, expr: str, start: float, end: float) -> list[dict[str, Any]]:
        """``data`` of ``/api/v1/query_exemplars`` (exemplar storage must be
        enabled): per series, ``seriesLabels`` and ``exemplars`` (each with
        ``labels``, ``value`` and ``timestamp``)."""
        data: list[dict[str, Any]] = self._get(
            "/api/v1/query_exemplars", query=expr, start=str(start), end=str(end)
        )
        return data

    def query_value(self, expr: str) -> float | None:
        """The value of a single-sample query, None when it has no sample."""
        result = self.query(expr)
        if not result:
            return None
        if len(result) > 1:
            raise ValueError(f"{expr!r} has {len(result)} samples: {result}")
        return float(result[0]["value"][1])

    def wait_for(
        self, expr: str, predicate: Callable[[float | None], bool], timeout: float = 15.0
    ) -> float | None:
        """Poll ``query_value(expr)`` until ``predicate`` holds; return the value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.query_value(expr)
            if predicate(value):
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"{expr!r} still {value!r} after {timeout}s")
            time.sleep(0.1)

    def targets(self) -> list[dict[str, Any]]:
        """Active targets, each with ``scrapeUrl``, ``health`` (up, down,
        unknown before the first scrape) and ``lastError``."""
        active: list[dict[str, Any]] = self._get("/api/v1/targets", state="active")["activeTargets"]
        return active

    def wait_targets(
        self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float = 15.0
    ) -> list[dict[str, Any]]:
        """Poll ``targets()`` until ``predicate`` holds; return them."""
        deadline = time.monotonic() + timeout
        while True:
            targets = self.targets()
            if predicate(targets):
                return targets
            if time.monotonic() > deadline:
                raise TimeoutError(f"targets after {timeout}s: {targets}")
            time.sleep(0.1)

    def wait_healthy(self, timeout: float = 15.0) -> list[dict[str, Any]]:
        """Wait until there are targets and every one is up."""
        return self.wait_targets(
            lambda targets: bool(targets) and all(t["health"] == "up" for t in targets),
            timeout,
        )

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM by PID, SIGKILL if still alive after ``timeout``; the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGKILL)
                self.proc.wait(timeout)
        return self.proc.returncode


@contextmanager
def prometheus(
    targets: list[str],
    scrape_interval: str = "1s",
    basic_auth: tuple[str, str] | None = None,
    tls_ca_file: str | None = None,
    scheme: str = "http",
    *,
    rule_files: list[str] | None = None,
    ready_timeout: float = 20.0,
    extra_args: Sequence[str] = (),
) -> Iterator[PrometheusServer]:
    """Start Prometheus on 127.0.0.1 scraping ``targets`` as job ``hookkit``;
    yield it once ``/-/ready``; stop it by PID on exit. ``extra_args`` go on
    its command line (``--enable-feature=exemplar-storage``)."""
    with tempfile.TemporaryDirectory(prefix="hookkit-prom-") as tmp:
        config = Path(tmp, "prometheus.yml")
        # JSON is YAML: no quoting to get wrong.
        config.write_text(
            json.dumps(
                scrape_config(
                    targets, scrape_interval, basic_auth, tls_ca_file, scheme, rule_files=rule_files
                )
            )
        )
        log = Path(tmp, "prometheus.log")
        port = free_port()
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [
                    PROMETHEUS or "prometheus",
                    f"--config.file={config}",
                    f"--storage.tsdb.path={Path(tmp, 'data')}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--log.level=warn",
                    *extra_args,
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        server = PrometheusServer(proc, port, log)
        try:
            _wait_ready(server, ready_timeout)
            yield server
        finally:
            server.stop()


def _wait_ready(server: PrometheusServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if server.proc.poll() is not None:
            raise RuntimeError(
                f"prometheus exited {server.proc.returncode}: {server.log.read_text()}"
            )
        try:
            with _OPENER.open(f"{server.url}/-/ready", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"prometheus not ready after {timeout}s: {server.log.read_text()}")
        time.sleep(0.05)
