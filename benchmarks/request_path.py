"""What hookkit adds to one request, measured in-process to the microsecond:
gunicorn's sync worker serving requests through hookkit's request hooks,
against the same worker with gunicorn's default hooks. Used to show that a
change to hookkit's internals did not slow the request path.

Only hookkit's public surface is used (``hookkit.hooks``,
``hookkit.testing.FakeArbiter`` and the ``HOOKKIT_*`` / ``OTEL_*``
variables), so the same file runs against any version of hookkit's
internals: ``PYTHONPATH=/path/to/other/checkout python
benchmarks/request_path.py`` measures that checkout (every process of the
run prints and records the ``hookkit`` it imported).

Each run is a fresh process, pinned to one core (``os.sched_setaffinity``),
that builds what a worker has: a real ``gunicorn.config.Config`` whose
``pre_request`` and ``post_request`` are hookkit's (or gunicorn's defaults,
for bare), a ``SyncWorker`` with gunicorn's logger and a listener on
127.0.0.1, and ``benchmarks/hello.py`` as its app. For hookkit it first
plays the master and the fork in the same process: ``on_starting`` with an
arbiter stand-in whose ``cfg`` is that Config, then ``pre_fork``,
``post_fork`` and ``post_worker_init``, as the arbiter and the worker call
them (no fork: the worker's ``post_fork`` closes the master's ``/metrics``
socket, which stops its thread); ``on_exit`` at the end removes the
multiprocess directory. Each request is what ``SyncWorker.handle`` does for
a connection: the request is written into one end of a socket pair, parsed
from the other by gunicorn's parser, served by ``handle_request`` (which
calls ``cfg.pre_request`` and, in its ``finally``, ``cfg.post_request``),
and the response read back. After ``BENCH_RP_WARMUP`` requests, a run times
``BENCH_RP_REQUESTS`` more: process CPU (``time.process_time``: every
thread, the span exporter's included, user and system), wall time
(``time.perf_counter``) and the CPU of the request thread alone.

The configurations, each with its own environment:

- ``bare``: gunicorn's default hooks; hookkit is not imported;
- ``metrics``: hookkit's defaults (structured logs, Prometheus metrics) with
  ``HOOKKIT_TRACING=off``, as ``make bench`` runs it; ``/metrics`` on a free
  loopback port (``HOOKKIT_METRICS_BIND``) and a private multiprocess
  directory;
- ``tracing``: metrics and a span per request, 100% sampled
  (``OTEL_TRACES_SAMPLER=always_on``), exported over OTLP/HTTP to a minimal
  receiver (a process of its own, on another core if there is one, that
  answers 200 to ``POST /v1/traces`` and counts the spans);
- ``everything``: tracing and the JSON access line (``HOOKKIT_ACCESS_LOG=on``),
  with the process's stderr on /dev/null.

Every round runs each configuration once, in a rotated order; the added cost
is taken against the bare run of the same round, then summarized as median
(min-max) over the rounds, with bare/config, the ratio of CPU per request.

On a shared machine the CPU a request takes moves by a third with the load
of the moment, so each run then serves ``BENCH_RP_AB_REQUESTS`` more in
blocks of ``BENCH_RP_AB_BLOCK`` requests, alternately with its
configuration's hooks and gunicorn's defaults (``cfg.set``; ABBA order). The
request thread's CPU (``time.thread_time``) is taken per block; pairs of
adjacent blocks in which that thread was preempted (``RUSAGE_THREAD``) are
left out, unless fewer than ``MIN_CLEAN_PAIRS`` remain. The "A/B" bare/config
is the median over the pairs of bare / (config + the other threads' CPU per
request over the whole phase); "A/B at quiet speed" turns it into µs as
(config/bare - 1) x the 5th percentile of every bare block's CPU per
request. Both follow the load far less than the per-run numbers do; bare's
A/B row is bare against itself, the noise floor. To compare two versions of
hookkit, compare their A/B bare/config, run one after the other.

Each run also checks that the configuration did its work: the request
histogram counted every request served with hookkit's hooks (read from the
multiprocess directory), the receiver got as many spans, no hookkit error
was counted or logged, and ``on_exit`` removed the directory and closed
``/metrics``. Before the rounds a short checking run of each hookkit
configuration keeps its stderr, to see ``worker_booted``'s tracing state and
one access line per request with ``everything``. gunicorn's own logger
class is used throughout (no gunicorn access log), so only the hooks differ.

Settings (environment): ``BENCH_RP_REQUESTS`` (20000) timed requests per
run, ``BENCH_RP_ROUNDS`` (7), ``BENCH_RP_WARMUP`` (2000 requests),
``BENCH_RP_AB_REQUESTS`` (20000, 0 skips the A/B phase),
``BENCH_RP_AB_BLOCK`` (5), ``BENCH_RP_QUIET_US`` (the µs per request that
"at quiet speed" is taken at; measured when unset: give two runs the same
to compare them in µs), ``BENCH_RP_CHECK_REQUESTS`` (500, 0 skips the
checking runs), ``BENCH_RP_CPU`` (the first CPU this process may use; the
receiver and this process go on the others), ``BENCH_RP_OUTPUT``
(``benchmarks/request-path-last-run.json``).

Prints a Markdown table to stdout (progress to stderr) and writes every raw
number to the JSON file. Every process it starts is stopped by PID.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.metadata
import json
import os
import platform
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from otlp_receiver import counts as receiver_counts
from otlp_receiver import serve as serve_receiver

BENCH_DIR = Path(__file__).resolve().parent
STRIPPED_ENV_PREFIXES = (
    "HOOKKIT_",
    "_HOOKKIT_",
    "OTEL_",
    "PROMETHEUS_MULTIPROC_DIR",
    "GUNICORN_CMD_ARGS",
)
REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: request-path\r\nAccept: */*\r\n\r\n"
DASH = "\u2013"  # between min and max in the table
CHILD_TIMEOUT = 600.0  # seconds one run may take before it is stopped


# --------------------------------------------------------------- settings


def _env_int(name: str, default: int) -> int:
    """An integer from the environment, or ``default``."""
    raw = os.environ.get(name, "").strip()
    return int(raw) if raw else default


@dataclass(frozen=True)
class Settings:
    """The benchmark's knobs, from ``BENCH_RP_*`` variables."""

    requests: int
    rounds: int
    warmup: int
    check_requests: int
    ab_requests: int
    ab_block: int
    quiet_us: float | None
    bench_cpu: int | None
    other_cpus: frozenset[int] | None
    output: Path

    @classmethod
    def from_env(cls) -> Settings:
        """Read the settings and choose the cores."""
        bench_cpu: int | None = None
        others: frozenset[int] | None = None
        if hasattr(os, "sched_getaffinity"):
            allowed = sorted(os.sched_getaffinity(0))
            bench_cpu = _env_int("BENCH_RP_CPU", allowed[0])
            others = frozenset(allowed) - {bench_cpu} or frozenset(allowed)
        output = os.environ.get("BENCH_RP_OUTPUT", "").strip()
        quiet = os.environ.get("BENCH_RP_QUIET_US", "").strip()
        return cls(
            requests=_env_int("BENCH_RP_REQUESTS", 20000),
            rounds=_env_int("BENCH_RP_ROUNDS", 7),
            warmup=_env_int("BENCH_RP_WARMUP", 2000),
            check_requests=_env_int("BENCH_RP_CHECK_REQUESTS", 500),
            ab_requests=_env_int("BENCH_RP_AB_REQUESTS", 20000),
            ab_block=_env_int("BENCH_RP_AB_BLOCK", 5),
            quiet_us=float(quiet) if quiet else None,
            bench_cpu=bench_cpu,
            other_cpus=others,
            output=Path(output) if output else BENCH_DIR / "request-path-last-run.json",
        )


@dataclass(frozen=True)
class Config:
    """One configuration under test."""

    name: str
    label: str
    env: dict[str, str] = field(default_factory=dict)
    hookkit: bool = True
    tracing: bool = False
    access_log: bool = False


def configurations(receiver_port: int) -> list[Config]:
    """The four configurations, bare first."""
    otlp = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver_port}",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_TRACES_SAMPLER": "always_on",
        "OTEL_SERVICE_NAME": "request-path-bench",
    }
    return [
        Config("bare", "bare gunicorn (default hooks)", hookkit=False),
        Config("metrics", "hookkit metrics", {"HOOKKIT_TRACING": "off"}),
        Config(
            "tracing", "hookkit metrics + tracing (100% sampled, OTLP/HTTP)", otlp, tracing=True
        ),
        Config(
            "everything",
            "hookkit everything (+ JSON access line)",
            {**otlp, "HOOKKIT_ACCESS_LOG": "on"},
            tracing=True,
            access_log=True,
        ),
    ]


# ------------------------------------------------------------ the worker


class Served:
    """A worker, its listener and the socket pair its requests come over."""

    def __init__(self, worker: Any, listener: socket.socket, cfg: Any) -> None:
        self.worker, self.listener, self.cfg = worker, listener, cfg
        self.server_end, self.client_end = socket.socketpair()

    def serve(self, count: int, check: bool = False) -> tuple[int, int]:
        """Serve ``count`` requests as ``SyncWorker.handle`` does; returns
        (response bytes, responses that were not a 200)."""
        from gunicorn import http
        from hello import BODY

        cfg, listener, server_end = self.cfg, self.listener, self.server_end
        addr = ("127.0.0.1", 40000)
        get_parser = http.get_parser
        handle_request = self.worker.handle_request
        send, recv = self.client_end.sendall, self.client_end.recv
        total = not_ok = 0
        for _ in range(count):
            send(REQUEST)
            req = next(get_parser(cfg, server_end, addr))
            handle_request(listener, req, server_end, addr)
            got = recv(65536)
            while not got.endswith(BODY):
                got += recv(65536)
            total += len(got)
            if check and not got.startswith(b"HTTP/1.1 200 "):
                not_ok += 1
        return total, not_ok

    def use(self, hooks: tuple[Any, Any]) -> None:
        """Make ``hooks`` the config's (pre_request, post_request)."""
        self.cfg.set("pre_request", hooks[0])
        self.cfg.set("post_request", hooks[1])

    def alternate(
        self, hooks: tuple[Any, Any], bare: tuple[Any, Any], total: int, block: int
    ) -> dict[str, Any]:
        """``total`` requests in blocks of ``block``, alternately with
        ``hooks`` and ``bare`` (ABBA order): the request thread's CPU per
        request in each block, whether each pair of blocks ran without
        being preempted, and the CPU of every other thread."""
        timed: dict[str, list[float]] = {"config_us": [], "bare_us": []}
        clean: list[bool] = []
        for index in range(4):  # both paths warm
            self.use(hooks if index % 2 == 0 else bare)
            self.serve(block)
        cpu0, thread0 = time.process_time(), time.thread_time()
        for index in range(total // (2 * block)):
            order = ("config_us", "bare_us") if index % 2 == 0 else ("bare_us", "config_us")
            preempted = _preempted()
            for name in order:
                self.use(hooks if name == "config_us" else bare)
                start = time.thread_time()
                self.serve(block)
                timed[name].append(round((time.thread_time() - start) / block * 1e6, 3))
            clean.append(_preempted() == preempted)
        other = (time.process_time() - cpu0) - (time.thread_time() - thread0)
        self.use(hooks)
        return {
            "block": block,
            **timed,
            "clean": clean,
            "other_threads_cpu_s": other,
            "config_requests": (len(timed["config_us"]) + 2) * block,
        }

    def close(self) -> None:
        """Close the socket pair, the listener and the worker's temporary file."""
        self.server_end.close()
        self.client_end.close()
        self.listener.close()
        self.worker.tmp.close()


class _Hookkit:
    """hookkit's master and worker hooks around one in-process worker."""

    def __init__(self, cfg: Any) -> None:
        import hookkit
        from hookkit import hooks
        from hookkit.testing import FakeArbiter

        @dataclass
        class Arbiter(FakeArbiter):
            # Read by on_exit (is a re-executed master still using the
            # directory?); FakeArbiter has neither.
            reexec_pid: int = 0
            master_pid: int = 0

        self.hooks = hooks
        self.module = hookkit
        cfg.set("pre_request", hooks.pre_request)
        cfg.set("post_request", hooks.post_request)
        self.arbiter = Arbiter(cfg=cfg)
        hooks.on_starting(self.arbiter)
        self.metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")

    def spawn(self, worker: Any, app: Any) -> None:
        """What Arbiter.spawn_worker and Worker.init_process call, minus the fork."""
        self.hooks.pre_fork(self.arbiter, worker)
        worker.pid = os.getpid()
        self.hooks.post_fork(self.arbiter, worker)
        worker.wsgi = app
        self.hooks.post_worker_init(worker)
        worker.booted = True

    def counted(self) -> dict[str, Any]:
        """Requests counted by the request histogram and hookkit's errors, as
        a scrape would sum them from the multiprocess directory."""
        if not self.metrics_dir:
            return {"metrics_dir": None}
        from prometheus_client import CollectorRegistry
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.metrics_dir)  # type: ignore[no-untyped-call]
        requests = errors = 0.0
        for metric in registry.collect():
            for sample in metric.samples:
                if sample.name == "http_server_request_duration_seconds_count":
                    requests += sample.value
                elif sample.name == "hookkit_sink_errors_total":
                    errors += sample.value
        return {"requests_counted": int(requests), "sink_errors": int(errors)}

    def exit(self, metrics_port: int | None) -> dict[str, Any]:
        """``on_exit``, then whether it cleaned up."""
        self.hooks.on_exit(self.arbiter)
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and _endpoint_threads():
            time.sleep(0.05)
        refused = None
        if metrics_port:
            try:
                socket.create_connection(("127.0.0.1", metrics_port), timeout=1.0).close()
                refused = False
            except OSError:
                refused = True
        return {
            "metrics_dir_removed": None
            if not self.metrics_dir
            else not os.path.exists(self.metrics_dir),
            "metrics_port_closed": refused,
            "endpoint_threads_left": _endpoint_threads(),
        }


def _preempted() -> int:
    """How often this thread was preempted so far (0 where not known)."""
    who = getattr(resource, "RUSAGE_THREAD", None)
    return 0 if who is None else resource.getrusage(who).ru_nivcsw


def _endpoint_threads() -> list[str]:
    """Threads still serving /metrics (by hookkit's thread names)."""
    return [t.name for t in threading.enumerate() if t.name.startswith("hookkit-metrics")]


def _pin(cpus: set[int] | frozenset[int] | None) -> None:
    if cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cpus)


def child_main(args: argparse.Namespace) -> dict[str, Any]:
    """One run: set the worker up, warm up, time ``args.requests`` requests,
    then alternate blocks with hookkit's and gunicorn's default hooks."""
    _pin({args.cpu} if args.cpu is not None else None)
    from gunicorn.config import Config as GunicornConfig
    from gunicorn.glogging import Logger
    from gunicorn.workers.sync import SyncWorker
    from hello import app

    cfg = GunicornConfig()
    defaults = GunicornConfig()
    bare = (defaults.pre_request, defaults.post_request)
    listener = socket.create_server(("127.0.0.1", 0))
    kit = _Hookkit(cfg) if args.hookkit else None
    worker_age = 1
    if kit is not None:
        kit.arbiter.worker_age += 1
        worker_age = kit.arbiter.worker_age
    log = Logger(cfg)
    worker = SyncWorker(worker_age, os.getpid(), [listener], None, cfg.timeout / 2.0, cfg, log)
    if kit is not None:
        kit.spawn(worker, app)
    else:
        worker.pid, worker.wsgi, worker.booted = os.getpid(), app, True
    hooks = (cfg.pre_request, cfg.post_request)
    served = Served(worker, listener, cfg)
    result: dict[str, Any] = {"config": args.child, "requests": args.requests}
    try:
        _, result["warmup_not_200"] = served.serve(args.warmup, check=True)
        gc.collect()
        usage0 = resource.getrusage(resource.RUSAGE_SELF)
        wall0, cpu0, thread0 = time.perf_counter(), time.process_time(), time.thread_time()
        result["response_bytes"], _ = served.serve(args.requests)
        thread1, cpu1, wall1 = time.thread_time(), time.process_time(), time.perf_counter()
        usage1 = resource.getrusage(resource.RUSAGE_SELF)
        result.update(
            cpu_s=cpu1 - cpu0,
            wall_s=wall1 - wall0,
            request_thread_cpu_s=thread1 - thread0,
            user_s=usage1.ru_utime - usage0.ru_utime,
            system_s=usage1.ru_stime - usage0.ru_stime,
            involuntary_switches=usage1.ru_nivcsw - usage0.ru_nivcsw,
            voluntary_switches=usage1.ru_nvcsw - usage0.ru_nvcsw,
        )
        if args.ab_requests >= 2 * args.ab_block > 0:
            result["ab"] = served.alternate(hooks, bare, args.ab_requests, args.ab_block)
        result["config_hook_requests"] = (
            args.warmup + args.requests + result.get("ab", {}).get("config_requests", 0)
        )
        if kit is not None:
            result["hookkit_file"] = kit.module.__file__
            result["hookkit_version"] = kit.module.__version__
            result.update(kit.counted())
    finally:
        if kit is not None:
            result.update(kit.exit(args.metrics_port))
        served.close()
    return result


# ------------------------------------------------------------- receiver


# -------------------------------------------------------------- the runs


class Processes:
    """The processes this benchmark started, each stopped by its PID."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        """Start ``argv`` and remember it."""
        proc = subprocess.Popen(argv, **kwargs)
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        """Stop ``proc`` (SIGTERM, then SIGKILL) and reap it."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self) -> None:
        """Stop every process still running."""
        for proc in list(self.procs):
            self.stop(proc)


@contextlib.contextmanager
def started(processes: Processes) -> Iterator[Processes]:
    """Stop every started process on the way out, Ctrl-C included."""
    try:
        yield processes
    finally:
        processes.stop_all()


def free_port() -> int:
    """A loopback port free now (hookkit refuses port 0 in HOOKKIT_METRICS_BIND)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def child_env(config: Config, metrics_port: int) -> dict[str, str]:
    """This process's environment without hookkit's and OpenTelemetry's
    variables, plus the configuration's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(STRIPPED_ENV_PREFIXES)}
    env.update(config.env)
    env["PYTHONHASHSEED"] = "0"
    for name in ("NO_PROXY", "no_proxy"):
        env[name] = ",".join(filter(None, [env.get(name, ""), "127.0.0.1", "localhost"]))
    if config.hookkit:
        env["HOOKKIT_METRICS_BIND"] = f"127.0.0.1:{metrics_port}"
    return env


def run_once(
    processes: Processes,
    settings: Settings,
    config: Config,
    *,
    requests: int,
    warmup: int,
    ab_requests: int,
    receiver_port: int,
    keep_stderr: bool,
) -> tuple[dict[str, Any], str]:
    """One run of ``config`` in a fresh process: its result, with the spans
    the receiver got while it ran, and its stderr (unless on /dev/null)."""
    metrics_port = free_port() if config.hookkit else 0
    argv = [sys.executable, str(Path(__file__).resolve()), "--child", config.name]
    argv += ["--requests", str(requests), "--warmup", str(warmup)]
    argv += ["--ab-requests", str(ab_requests), "--ab-block", str(settings.ab_block)]
    argv += ["--metrics-port", str(metrics_port)]
    if config.hookkit:
        argv.append("--hookkit")
    if settings.bench_cpu is not None:
        argv += ["--cpu", str(settings.bench_cpu)]
    before = receiver_counts(receiver_port)
    with tempfile.TemporaryFile("w+") as stderr:
        proc = processes.start(
            argv,
            env=child_env(config, metrics_port),
            stdout=subprocess.PIPE,
            stderr=stderr if keep_stderr else subprocess.DEVNULL,
        )
        try:
            out, _ = proc.communicate(timeout=CHILD_TIMEOUT)
        finally:
            processes.stop(proc)
        stderr.seek(0)
        text = stderr.read()
    lines = out.decode(errors="replace").strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = "\n".join(text.splitlines()[-20:]) if keep_stderr else "(stderr on /dev/null)"
        raise RuntimeError(f"{config.name}: run failed (exit status {proc.returncode}):\n{tail}")
    result: dict[str, Any] = json.loads(lines[-1])
    after = receiver_counts(receiver_port)
    result["spans_received"] = after["spans"] - before["spans"]
    result["exports_received"] = after["requests"] - before["requests"]
    result["problems"] = problems(config, result) + error_lines(text)
    return result, text


def problems(config: Config, result: dict[str, Any]) -> list[str]:
    """What shows that a run did not do its configuration's work."""
    served = result.get("config_hook_requests")
    found: list[str] = []
    if result.get("warmup_not_200"):
        found.append(f"{result['warmup_not_200']} warm-up responses were not 200")
    if config.hookkit:
        if result.get("requests_counted") != served:
            found.append(f"metrics counted {result.get('requests_counted')} of {served} requests")
        if result.get("sink_errors"):
            found.append(f"hookkit_sink_errors_total {result['sink_errors']}")
        if result.get("metrics_dir_removed") is not True:
            found.append("on_exit left the multiprocess directory")
        if result.get("metrics_port_closed") is not True or result.get("endpoint_threads_left"):
            found.append("/metrics still served after on_exit")
    expected_spans = served if config.tracing else 0
    if result.get("spans_received") != expected_spans:
        found.append(f"receiver got {result.get('spans_received')} of {expected_spans} spans")
    return found


def _events(text: str) -> list[dict[str, Any]]:
    """The JSON lines of a run's stderr."""
    events: list[dict[str, Any]] = []
    for line in text.splitlines():
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            if isinstance(event, dict):
                events.append(event)
    return events


def error_lines(text: str) -> list[str]:
    """hookkit's error lines in a run's stderr."""
    return [
        f"{event.get('level')} line: {event.get('event')}"
        for event in _events(text)
        if event.get("level") in ("error", "critical")
    ]


def check_lines(config: Config, text: str, served: int) -> list[str]:
    """What the checking run's stderr shows wrong: the worker's tracing
    state, the access lines."""
    events = _events(text)
    found: list[str] = []
    booted = [event for event in events if event.get("event") == "worker_booted"]
    tracing = booted[0].get("tracing") if booted else None
    expected_tracing = "hookkit" if config.tracing else "off"
    if tracing != expected_tracing:
        found.append(f"worker_booted says tracing {tracing!r}, expected {expected_tracing!r}")
    finished = sum(event.get("event") == "request_finished" for event in events)
    expected = served if config.access_log else 0
    if finished != expected:
        found.append(f"{finished} access lines for {expected} expected")
    return found


def check_configurations(
    processes: Processes, settings: Settings, configs: list[Config], receiver_port: int
) -> list[dict[str, Any]]:
    """A short run of each hookkit configuration, with its stderr kept."""
    checks: list[dict[str, Any]] = []
    warmup, requests = 100, settings.check_requests
    for config in configs:
        if not config.hookkit:
            continue
        result, text = run_once(
            processes,
            settings,
            config,
            requests=requests,
            warmup=warmup,
            ab_requests=0,
            receiver_port=receiver_port,
            keep_stderr=True,
        )
        result["problems"] += check_lines(config, text, warmup + requests)
        checks.append(result)
        status = "ok" if not result["problems"] else "; ".join(result["problems"])
        _progress(f"check {config.name}: {status} ({result.get('hookkit_file')})")
    return checks


def _load() -> float:
    """The 1-minute load average (NaN where unknown)."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_rounds(
    processes: Processes, settings: Settings, configs: list[Config], receiver_port: int
) -> list[dict[str, Any]]:
    """Every configuration once per round, in a rotated order."""
    runs: list[dict[str, Any]] = []
    for index in range(settings.rounds):
        shift = index % len(configs)
        for position, config in enumerate(configs[shift:] + configs[:shift]):
            load = _load()
            result, _ = run_once(
                processes,
                settings,
                config,
                requests=settings.requests,
                warmup=settings.warmup,
                ab_requests=settings.ab_requests,
                receiver_port=receiver_port,
                keep_stderr=not config.access_log,
            )
            result.update(round=index, position=position, loadavg_1min=load)
            runs.append(result)
            values = _per_request(result)
            flag = f"  PROBLEM: {'; '.join(result['problems'])}" if result["problems"] else ""
            ab = ""
            if "ab_ratio" in values:
                ab = (
                    f"  A/B bare/config {values['ab_ratio']:.3f}, {values['ab_diff']:+6.1f} us "
                    f"({values['ab_clean_share']:.0%} of pairs not preempted)"
                )
            _progress(
                f"round {index + 1}/{settings.rounds} {config.name:<10} "
                f"{values['cpu']:6.1f} us CPU/req  {values['wall']:6.1f} us wall/req{ab}{flag}"
            )
    return runs


# --------------------------------------------------------------- summary


def _spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


MIN_CLEAN_PAIRS = 50  # fewer pairs than this without preemption: every pair is used


def _clean_pairs(ab: dict[str, Any]) -> list[tuple[float, float]]:
    """(config, bare) µs per request of the adjacent pairs of blocks that ran
    without being preempted (all pairs if too few did)."""
    pairs = list(zip(ab["config_us"], ab["bare_us"], strict=True))
    clean = [pair for pair, ok in zip(pairs, ab["clean"], strict=True) if ok]
    return clean if len(clean) >= MIN_CLEAN_PAIRS else pairs


def _per_request(run: dict[str, Any]) -> dict[str, float]:
    """A run's µs per request; from its alternating blocks, ``ab_ratio``:
    the median over adjacent pairs of blocks of bare/config (config's request
    thread plus the other threads' CPU per request with its hooks), and
    ``ab_diff``: the median difference, in µs at the load of the moment."""
    n = run["requests"]
    values = {
        "cpu": run["cpu_s"] / n * 1e6,
        "wall": run["wall_s"] / n * 1e6,
        "thread": run["request_thread_cpu_s"] / n * 1e6,
    }
    ab = run.get("ab")
    if ab and ab["config_us"]:
        pairs = _clean_pairs(ab)
        other = ab["other_threads_cpu_s"] / (len(ab["config_us"]) * ab["block"]) * 1e6
        values["ab_diff"] = statistics.median(c - b for c, b in pairs) + other
        values["ab_ratio"] = statistics.median(b / (c + other) for c, b in pairs)
        values["ab_clean_share"] = sum(ab["clean"]) / len(ab["clean"])
    return values


def quiet_bare_us(runs: list[dict[str, Any]]) -> float | None:
    """The machine's quiet speed: the 5th percentile of the request thread's
    CPU per request in the bare blocks (pairs not preempted) of every run."""
    values = [b for run in runs if run.get("ab") for _, b in _clean_pairs(run["ab"])]
    if len(values) < MIN_CLEAN_PAIRS:
        return min(values) if values else None
    return statistics.quantiles(values, n=20)[0]


def summarize(
    runs: list[dict[str, Any]], configs: list[Config], quiet_us: float | None = None
) -> dict[str, Any]:
    """Per configuration: µs per request, against the bare run of the same
    round, and against its own bare blocks (median, min and max over the
    rounds)."""
    per_request = {(run["config"], run["round"]): _per_request(run) for run in runs}
    rounds = sorted({run["round"] for run in runs})
    measured = quiet_bare_us(runs)
    quiet = quiet_us if quiet_us is not None else measured
    summary: dict[str, Any] = {
        "quiet_bare_us": quiet,
        "quiet_bare_us_measured": measured,
        "configurations": {},
    }
    for config in configs:
        mine = [per_request[config.name, r] for r in rounds]
        pairs = [(per_request[config.name, r], per_request["bare", r]) for r in rounds]
        row: dict[str, Any] = {
            "label": config.label,
            "cpu_us": _spread([m["cpu"] for m in mine]),
            "wall_us": _spread([m["wall"] for m in mine]),
            "request_thread_cpu_us": _spread([m["thread"] for m in mine]),
            "other_threads_cpu_us": _spread([m["cpu"] - m["thread"] for m in mine]),
            "added_cpu_us": _spread([m["cpu"] - b["cpu"] for m, b in pairs]),
            "added_wall_us": _spread([m["wall"] - b["wall"] for m, b in pairs]),
            "bare_over_config_cpu": _spread([b["cpu"] / m["cpu"] for m, b in pairs]),
            "problems": sorted(
                {p for run in runs if run["config"] == config.name for p in run["problems"]}
            ),
        }
        if quiet is not None and all("ab_ratio" in m for m in mine):
            row["ab_bare_over_config_cpu"] = _spread([m["ab_ratio"] for m in mine])
            row["ab_added_cpu_us_at_quiet_speed"] = _spread(
                [(1 / m["ab_ratio"] - 1) * quiet for m in mine]
            )
            row["ab_added_cpu_us_as_measured"] = _spread([m["ab_diff"] for m in mine])
            row["ab_clean_pair_share"] = _spread([m["ab_clean_share"] for m in mine])
        summary["configurations"][config.name] = row
    return summary


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _range(spread: dict[str, float] | None, fmt: str, suffix: str = "") -> str:
    if spread is None:
        return "-"
    low, high = format(spread["min"], fmt), format(spread["max"], fmt)
    return f"{format(spread['median'], fmt)}{suffix} ({low}{DASH}{high}{suffix})"


def table(summary: dict[str, Any]) -> str:
    """The Markdown table."""
    lines = [
        "| configuration | CPU µs/req | added CPU µs/req vs bare run | bare/config "
        "| bare/config, A/B | added CPU µs/req, A/B at quiet speed "
        "| request thread / other threads µs/req | wall µs/req | added wall µs/req |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in summary["configurations"].items():
        bare = name == "bare"
        threads = (
            f"{row['request_thread_cpu_us']['median']:.1f} / "
            f"{row['other_threads_cpu_us']['median']:.1f}"
        )
        cells = [
            row["label"],
            _range(row["cpu_us"], ".1f"),
            "+0" if bare else _range(row["added_cpu_us"], "+.1f"),
            "1.00x" if bare else _range(row["bare_over_config_cpu"], ".3f", "x"),
            _range(row.get("ab_bare_over_config_cpu"), ".3f", "x"),
            _range(row.get("ab_added_cpu_us_at_quiet_speed"), "+.1f"),
            threads,
            f"{row['wall_us']['median']:.1f}",
            "+0" if bare else _range(row["added_wall_us"], "+.1f"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def meta(settings: Settings, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Where and with what the numbers were taken."""
    files = sorted({run["hookkit_file"] for run in runs if run.get("hookkit_file")})
    versions = sorted({run["hookkit_version"] for run in runs if run.get("hookkit_version")})
    return {
        "hookkit_file": files,
        "hookkit_version": versions,
        "python": platform.python_version(),
        "gunicorn": _version("gunicorn"),
        "opentelemetry_sdk": _version("opentelemetry-sdk"),
        "prometheus_client": _version("prometheus-client"),
        "structlog": _version("structlog"),
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "bench_cpu": settings.bench_cpu,
        "other_cpus": sorted(settings.other_cpus) if settings.other_cpus else None,
        "requests": settings.requests,
        "warmup": settings.warmup,
        "rounds": settings.rounds,
        "ab_requests": settings.ab_requests,
        "ab_block": settings.ab_block,
    }


def main() -> None:
    """Run the benchmark, print the table, write the JSON."""
    settings = Settings.from_env()
    if settings.rounds < 1 or settings.requests < 1 or settings.warmup < 0:
        raise SystemExit("BENCH_RP_ROUNDS and BENCH_RP_REQUESTS must be at least 1")
    _pin(settings.other_cpus)  # the receiver, started next, inherits it
    started_at = time.monotonic()
    load_before = _load()
    started_at_text = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    with started(Processes()) as processes:
        receiver = processes.start(
            [sys.executable, str(Path(__file__).resolve()), "--receiver"],
            stdout=subprocess.PIPE,
        )
        assert receiver.stdout is not None
        port = int(receiver.stdout.readline())
        configs = configurations(port)
        checks: list[dict[str, Any]] = []
        if settings.check_requests > 0:
            checks = check_configurations(processes, settings, configs, port)
        runs = run_rounds(processes, settings, configs, port)
    summary = summarize(runs, configs, settings.quiet_us)
    info = meta(settings, runs)
    info["started"] = started_at_text
    info["seconds"] = round(time.monotonic() - started_at, 1)
    info["loadavg_1min"] = [load_before, _load()]
    settings.output.parent.mkdir(parents=True, exist_ok=True)
    settings.output.write_text(raw_json(info, checks, summary, runs))
    print(report(settings, info, checks, summary))


def raw_json(
    info: dict[str, Any],
    checks: list[dict[str, Any]],
    summary: dict[str, Any],
    runs: list[dict[str, Any]],
) -> str:
    """The JSON file: indented, but one line per run (each holds its blocks)."""
    head = json.dumps({"meta": info, "summary": summary, "checks": checks}, indent=1)
    lines = ",\n  ".join(json.dumps(run) for run in runs)
    return f'{head[:-2]},\n "runs": [\n  {lines}\n ]\n}}\n'


def report(
    settings: Settings, info: dict[str, Any], checks: list[dict[str, Any]], summary: dict[str, Any]
) -> str:
    """What is printed: where the numbers come from, the table, problems."""
    quiet = summary["quiet_bare_us"]
    load = info["loadavg_1min"]
    lines = [
        f"hookkit {', '.join(info['hookkit_version'])} from {', '.join(info['hookkit_file'])}; "
        f"gunicorn {info['gunicorn']}, Python {info['python']}, OpenTelemetry SDK "
        f"{info['opentelemetry_sdk']}, prometheus_client {info['prometheus_client']}",
        f"{settings.rounds} rounds; each run: {settings.warmup} warm-up requests, "
        f"{settings.requests} timed, then {settings.ab_requests} alternating in blocks of "
        f"{settings.ab_block} between the configuration's hooks and gunicorn's defaults "
        f"(A/B); pinned to CPU {settings.bench_cpu}; load average {load[0]:.2f} at the "
        f"start, {load[1]:.2f} at the end; {info['seconds']} s in all",
        "Medians (min\u2013max) over the rounds. A/B columns: median over the pairs of "
        "adjacent blocks not preempted; 'at quiet speed' is (config/bare - 1) x "
        + (f"{quiet:.1f} µs" if quiet is not None else "-")
        + (
            " (BENCH_RP_QUIET_US)"
            if settings.quiet_us is not None
            else ", the 5th percentile of the bare blocks' CPU per request"
        )
        + f" (measured: {_fmt(summary['quiet_bare_us_measured'])} µs); bare's A/B row is "
        "bare against itself (the noise floor).",
        "",
        table(summary),
    ]
    bad = {n: row["problems"] for n, row in summary["configurations"].items() if row["problems"]}
    bad_checks = {c["config"]: c["problems"] for c in checks if c["problems"]}
    for name, found in {**bad_checks, **bad}.items():
        lines.append(f"\nPROBLEM with {name}: {'; '.join(found)}")
    lines.append(f"\nraw numbers: {settings.output}")
    return "\n".join(lines)


def dispatch(argv: list[str]) -> None:
    """The benchmark, one of its runs, or the receiver."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--receiver", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--hookkit", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--requests", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--ab-requests", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--ab-block", type=int, default=5, help=argparse.SUPPRESS)
    parser.add_argument("--metrics-port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--cpu", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.receiver:
        serve_receiver(count_spans=True)
    elif args.child:
        result = child_main(args)
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()
    else:
        try:
            main()
        except KeyboardInterrupt:
            print("interrupted: every process the benchmark started was stopped", file=sys.stderr)
            raise SystemExit(130) from None


if __name__ == "__main__":
    dispatch(sys.argv[1:])
