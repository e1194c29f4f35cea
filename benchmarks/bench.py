"""`make bench`: what hookkit costs per request, against bare gunicorn and a
hand-rolled peer, measured in one interleaved run.

Every configuration is gunicorn's sync worker, one worker, serving
``benchmarks/hello.py`` (a WSGI app with routes, which tells hookkit the one
it matched), pinned to one core (``taskset``); the load generator (wrk, else
a Python fallback) and a minimal OTLP/HTTP receiver share the other core.
Every request is what a proxy in front would send: ``GET /items/42`` (route
``/items/<id>``) with ``X-Forwarded-For: 203.0.113.7`` and a fresh
``X-Request-Start: t=<microseconds since the epoch>``, from 127.0.0.1, which
gunicorn's default ``forwarded_allow_ips`` trusts, so hookkit honours both
(wrk: a Lua script stamps each request through LuaJIT's FFI and
``gettimeofday``). The configurations set hookkit as users run it (the
settings are printed with the table): the Kubernetes probes excluded, the
status page's live state on, exemplars on with tracing, OTLP logs and OTLP
metrics in "everything".

Before the rounds, a check run of "everything" (with the access line's
``client_address`` on) and a receiver that decodes what it gets prove that the
headers and the route take effect: the access lines and the spans name the
forwarded client, the route and a queue time, ``/metrics`` has exemplars and
``/status.json`` the worker. The benchmark stops if they do not.

Each round starts every configuration afresh, in a rotated order, and for
each run records:

- time to first 200 (process start to the first successful ``GET /``);
- after a warm-up load of at least ``BENCH_WARMUP_REQUESTS`` requests: the
  worker's RSS and USS (``/proc/PID/smaps_rollup``), and again after the run;
- under load: throughput, p50/p99 latency, and the CPU of every process of the
  server's tree (``/proc/PID/stat`` utime+stime+cutime+cstime before and
  after, so threads and reaped helpers count) and of the receiver;
- that the run did its configuration's work, or the run fails: hookkit's
  ``/metrics`` counted the requests under their route and their queue time
  with no queue-header error, and after the server stopped the receiver had
  got the spans, logs and metrics the configuration exports.

Ratios and differences are taken against the bare run of the same round, then
summarized as median (min-max) over the rounds. A separate phase times
hookkit's ``/metrics`` after 10 and after ``BENCH_RECYCLES`` worker recycles
(``--max-requests 1``, as ``benchmarks/scrape_after_recycles.py`` does). A
targets table (issue 16's) sets each target beside its measured figure.

Settings (environment): ``BENCH_SECONDS`` (5) per run, ``BENCH_ROUNDS`` (5),
``BENCH_WARMUP`` (1 s: warm-up loads of this length until
``BENCH_WARMUP_REQUESTS``, 1000, were served), ``BENCH_CONNECTIONS`` (8),
``BENCH_WRK_THREADS`` (1),
``BENCH_RECYCLES`` (5000, 0 skips the phase), ``BENCH_RECYCLE_SECONDS`` (400,
the phase's time bound), ``BENCH_RECYCLE_JITTER`` (``off``: gunicorn's random
0-100 ms pause between spawns is patched out in the recycling master, which
otherwise caps recycling at about 20 per second; ``on`` keeps it),
``BENCH_SERVER_CPU`` (0), ``BENCH_CLIENT_CPU`` (1), ``BENCH_LOADGEN``
(``auto``, ``wrk`` or ``python``), ``BENCH_INSTALL_WRK`` (1: apt-get install
wrk when missing and running as root), ``BENCH_OUTPUT``
(``benchmarks/last-run.json``).

A quick smoke run (under a minute; ``tests/test_bench_harness.py``):
``BENCH_SECONDS=1 BENCH_ROUNDS=1 BENCH_RECYCLES=20 BENCH_LOADGEN=python``.

Prints Markdown tables to stdout and writes every raw number, and the targets
table, to the JSON file. Every process it starts is stopped by PID at the
end, also on Ctrl-C.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import json
import os
import platform
import re
import resource
import selectors
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from otlp_receiver import counts as receiver_counts
from otlp_receiver import serve as serve_receiver
from scrape_after_recycles import files_read, scrape

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
STRIPPED_ENV_PREFIXES = ("HOOKKIT_", "OTEL_", "PROMETHEUS_MULTIPROC_DIR", "GUNICORN_CMD_ARGS")
SCRAPES = 50
# Every request of the load, as a proxy in front would send it.
REQUEST_PATH = "/items/42"
ITEM_ROUTE = "/items/<id>"
FORWARDED_FOR = "203.0.113.7"  # the client behind the proxy (TEST-NET-3)
# The README's probe patterns ("Probes kept out"), as users copy them.
EXCLUDED_URLS = "^/healthz$,^/readyz$,^/livez$,^/health$,^/ping$"

# wrk's per-request hook: a fresh X-Request-Start in microseconds since the
# epoch (gettimeofday through LuaJIT's FFI: os.time() has whole seconds
# only), beside the X-Forwarded-For that -H put in wrk.headers.
WRK_SCRIPT = """\
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_usec; } hookkit_bench_timeval;
int gettimeofday(hookkit_bench_timeval *tv, void *tz);
]]
local tv = ffi.new("hookkit_bench_timeval")

request = function()
  ffi.C.gettimeofday(tv, nil)
  wrk.headers["X-Request-Start"] =
    string.format("t=%d%06d", tonumber(tv.tv_sec), tonumber(tv.tv_usec))
  return wrk.format()
end
"""
DASH = "\u2013"  # between min and max in the table

# A gunicorn config the drop-in applies in the recycling master: gunicorn
# sleeps 0-100 ms (random) after each spawn, which caps recycling at about
# 20 a second; this sets that pause to 0 and changes nothing else.
NO_SPAWN_JITTER = """\
import gunicorn.arbiter


class _NoJitter:
    @staticmethod
    def random():
        return 0.0


gunicorn.arbiter.random = _NoJitter
"""


# --------------------------------------------------------------- settings


def _env_int(name: str, default: int) -> int:
    """An integer from the environment, or ``default``."""
    raw = os.environ.get(name, "").strip()
    return int(raw) if raw else default


def _env_str(name: str, default: str) -> str:
    """A string from the environment, or ``default``."""
    return os.environ.get(name, "").strip() or default


@dataclass(frozen=True)
class Settings:
    """The benchmark's knobs, from ``BENCH_*`` variables."""

    seconds: int
    rounds: int
    warmup: int
    warmup_requests: int
    connections: int
    wrk_threads: int
    recycles: int
    recycle_seconds: int
    recycle_jitter: bool
    server_cpu: int
    client_cpu: int
    loadgen: str
    install_wrk: bool
    output: Path

    @classmethod
    def from_env(cls) -> Settings:
        """Read the settings; with the defaults the whole run takes about 10
        minutes on 2 cores."""
        return cls(
            seconds=_env_int("BENCH_SECONDS", 5),
            rounds=_env_int("BENCH_ROUNDS", 5),
            warmup=_env_int("BENCH_WARMUP", 1),
            warmup_requests=_env_int("BENCH_WARMUP_REQUESTS", 1000),
            connections=_env_int("BENCH_CONNECTIONS", 8),
            wrk_threads=_env_int("BENCH_WRK_THREADS", 1),
            recycles=_env_int("BENCH_RECYCLES", 5000),
            recycle_seconds=_env_int("BENCH_RECYCLE_SECONDS", 400),
            recycle_jitter=_env_str("BENCH_RECYCLE_JITTER", "off") == "on",
            server_cpu=_env_int("BENCH_SERVER_CPU", 0),
            client_cpu=_env_int("BENCH_CLIENT_CPU", 1),
            loadgen=_env_str("BENCH_LOADGEN", "auto"),
            install_wrk=_env_str("BENCH_INSTALL_WRK", "1") != "0",
            output=Path(_env_str("BENCH_OUTPUT", str(BENCH_DIR / "last-run.json"))),
        )


@dataclass(frozen=True)
class Config:
    """One server configuration under test."""

    name: str
    label: str
    config_arg: str
    env: dict[str, str] = field(default_factory=dict)
    hookkit: bool = False
    multiproc_dir: bool = False
    # What the receiver must have got from a run (``traces``, ``logs``,
    # ``metrics``), or the run fails.
    exports: tuple[str, ...] = ()
    note: str = ""


def configurations(workdir: Path, receiver: str) -> list[Config]:
    """The five configurations, bare first; hookkit's with the settings users
    run (each stated even where it is the default, so the table says it)."""
    empty = workdir / "empty.conf.py"
    empty.write_text("")
    otlp = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver}
    metrics = {
        "HOOKKIT_METRICS": "on",
        "HOOKKIT_STATUS": "on",  # the status page and each worker's live state
        "HOOKKIT_LOGS": "on",
        "HOOKKIT_EXCLUDED_URLS": EXCLUDED_URLS,
    }
    tracing = {
        **metrics,
        "HOOKKIT_TRACING": "on",
        **otlp,
        "OTEL_TRACES_SAMPLER": "parentbased_always_on",  # 100 % of requests sampled
        "OTEL_METRICS_EXEMPLAR_FILTER": "trace_based",  # an exemplar per sampled span
    }
    everything = {
        **tracing,
        "HOOKKIT_ACCESS_LOG": "on",
        "HOOKKIT_OTLP_LOGS": "on",
        "HOOKKIT_OTLP_METRICS": "on",
        # 12 times the default's rate (60000): every measured run holds a
        # periodic export, not only the last one at exit.
        "OTEL_METRIC_EXPORT_INTERVAL": "5000",
    }
    return [
        Config("bare", "bare gunicorn", str(empty), note="gunicorn's defaults, no hooks"),
        Config(
            "metrics",
            "hookkit metrics",
            "python:hookkit.conf",
            {**metrics, "HOOKKIT_TRACING": "off"},
            hookkit=True,
        ),
        Config(
            "tracing",
            "hookkit metrics+tracing",
            "python:hookkit.conf",
            tracing,
            hookkit=True,
            exports=("traces",),
        ),
        Config(
            "everything",
            "hookkit everything",
            "python:hookkit.conf",
            everything,
            hookkit=True,
            exports=("traces", "logs", "metrics"),
        ),
        Config(
            "handrolled",
            "hand-rolled peer",
            str(BENCH_DIR / "handrolled.conf.py"),
            otlp,
            multiproc_dir=True,
            exports=("traces",),
            note="benchmarks/handrolled.conf.py: prometheus_client multiprocess, an OTLP "
            "span per request (BatchSpanProcessor, always on), a structlog JSON access line",
        ),
    ]


def settings_line(config: Config, receiver: str) -> str:
    """One line: the configuration's settings (the receiver's URL shortened)."""
    shown = [
        f"{name}={value.replace(receiver, '<receiver>')}" for name, value in config.env.items()
    ]
    return f"- {config.name}: " + "; ".join(filter(None, [config.note, ", ".join(shown)]))


# ------------------------------------------------------------- processes


def stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state first)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a live, not zombie, process."""
    fields = stat_fields(pid)
    return fields is not None and fields[0] != "Z"


def parent_map() -> dict[int, int]:
    """Every process's parent pid."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = stat_fields(int(entry))
            if fields is not None:
                parents[int(entry)] = int(fields[1])
    return parents


def process_tree(root: int) -> list[int]:
    """``root`` and all its descendants."""
    children: dict[int, list[int]] = {}
    for pid, parent in parent_map().items():
        children.setdefault(parent, []).append(pid)
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return sorted(tree)


def cpu_ticks(pid: int) -> int:
    """utime+stime+cutime+cstime of ``pid`` (all its threads, and its reaped
    children), in clock ticks; 0 once it is gone."""
    fields = stat_fields(pid)
    if fields is None:
        return 0
    return sum(int(value) for value in fields[11:15])


def all_ticks() -> dict[int, tuple[str, int]]:
    """Every process's command name and ``cpu_ticks``."""
    found = {}
    for entry in os.listdir("/proc"):
        with contextlib.suppress(OSError, IndexError):
            if entry.isdigit():
                text = Path(f"/proc/{entry}/stat").read_text()
                comm, rest = text[text.index("(") + 1 : text.rindex(")")], text.rsplit(")", 1)[1]
                found[int(entry)] = (comm, sum(int(v) for v in rest.split()[11:15]))
    return found


def busiest_others(
    before: dict[int, tuple[str, int]], after: dict[int, tuple[str, int]], ours: set[int]
) -> list[dict[str, Any]]:
    """The three processes outside ``ours`` that used the most CPU in between
    (a process that ended in between shows in its parent's reaped time)."""
    used = sorted(
        (
            ((ticks - before.get(pid, (comm, 0))[1]) / CLK_TCK, pid, comm)
            for pid, (comm, ticks) in after.items()
            if pid not in ours
        ),
        reverse=True,
    )
    return [{"pid": pid, "comm": comm, "cpu_s": cpu} for cpu, pid, comm in used[:3]]


def tree_ticks(pids: Sequence[int]) -> dict[int, int]:
    """``cpu_ticks`` of each pid."""
    return {pid: cpu_ticks(pid) for pid in pids}


def ticks_delta(before: dict[int, int], after: dict[int, int]) -> float:
    """CPU seconds used between two readings of a process tree. A process
    that was reaped in between has moved its time into its parent's cutime,
    so summing over the union stays right."""
    pids = set(before) | set(after)
    return sum(after.get(pid, 0) - before.get(pid, 0) for pid in pids) / CLK_TCK


def memory_kib(pid: int) -> dict[str, int]:
    """RSS, PSS and USS (Private_Clean+Private_Dirty) of ``pid``, in KiB."""
    values: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                values[parts[0].rstrip(":")] = int(parts[1])
    return {
        "rss": values.get("Rss", 0),
        "pss": values.get("Pss", 0),
        "uss": values.get("Private_Clean", 0) + values.get("Private_Dirty", 0),
    }


def core_jiffies() -> dict[str, list[int]]:
    """/proc/stat's per-core counters: ``cpuN`` -> user, nice, system, idle,
    iowait, irq, softirq, steal (clock ticks)."""
    cores = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if name.startswith("cpu") and name != "cpu":
            cores[name] = [int(value) for value in values[:8]]
    return cores


def core_usage(before: dict[str, list[int]], after: dict[str, list[int]]) -> dict[str, Any]:
    """Busy (user+nice+system+irq+softirq) and steal seconds of each core
    between two readings: the whole machine, not only our processes."""
    usage = {}
    for name, values in after.items():
        delta = [now - then for now, then in zip(values, before[name], strict=True)]
        busy = delta[0] + delta[1] + delta[2] + delta[5] + delta[6]
        usage[name] = {"busy_s": busy / CLK_TCK, "steal_s": delta[7] / CLK_TCK}
    return usage


def idle_check(seconds: float = 1.0) -> dict[str, float]:
    """How busy each core is, before the benchmark starts anything."""
    before = core_jiffies()
    time.sleep(seconds)
    usage = core_usage(before, core_jiffies())
    return {name: core["busy_s"] / seconds for name, core in usage.items()}


def self_cpu() -> float:
    """CPU seconds of this process (all its threads) so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def pinned(cpus: str, argv: Sequence[str]) -> list[str]:
    """``argv`` run under ``taskset -c cpus``."""
    return ["taskset", "-c", cpus, *argv]


def wait_gone(pid: int, timeout: float) -> bool:
    """Wait until ``pid`` is gone; True if it went."""
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def kill_pid(pid: int, timeout: float = 5.0) -> None:
    """SIGTERM ``pid``, then SIGKILL if it is still there after ``timeout``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not pid_alive(pid):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        if wait_gone(pid, timeout):
            return


class Reaper:
    """Every process the benchmark started, each stopped by PID."""

    def __init__(self) -> None:
        self._procs: dict[int, tuple[subprocess.Popen[bytes], set[int]]] = {}

    def start(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        """Popen in a session of its own (a Ctrl-C reaches only us), tracked."""
        proc = subprocess.Popen(list(argv), start_new_session=True, **kwargs)
        self._procs[proc.pid] = (proc, set())
        return proc

    def note_tree(self, proc: subprocess.Popen[bytes]) -> list[int]:
        """Record the pids under ``proc`` now, so ``stop`` reaches them."""
        pids = process_tree(proc.pid)
        self._procs[proc.pid][1].update(pids)
        return pids

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> int | None:
        """SIGTERM ``proc``, wait, SIGKILL; then every pid seen under it."""
        if proc.pid not in self._procs:
            return proc.returncode
        known = self._procs[proc.pid][1]
        if proc.poll() is None:
            known.update(process_tree(proc.pid))
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        for pid in sorted(known - {proc.pid}):
            kill_pid(pid)
        del self._procs[proc.pid]
        return proc.returncode

    def stop_all(self) -> None:
        """Stop whatever is still running, newest first."""
        for proc, _ in reversed(list(self._procs.values())):
            self.stop(proc, timeout=10.0)


# --------------------------------------------------------------- HTTP bits


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def get_status(port: int, path: str = "/", timeout: float = 2.0) -> int:
    """Status of a plain ``GET`` on 127.0.0.1:``port``; 0 on any failure."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
            head = sock.recv(64)
    except OSError:
        return 0
    match = re.match(rb"HTTP/1\.[01] (\d{3})", head)
    return int(match.group(1)) if match else 0


def fetch(url: str, timeout: float = 10.0) -> str:
    """The body of ``GET url``."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return str(response.read().decode())


def metric_value(body: str, name: str, labels: str = "") -> float | None:
    """The value of the sample ``name{labels}`` in a Prometheus text body."""
    prefix = f"{name}{{{labels}}} " if labels else f"{name} "
    for line in body.splitlines():
        if line.startswith(prefix):
            return float(line.split()[-1])
    return None


# -------------------------------------------------------------- receiver


def start_receiver(
    reaper: Reaper, settings: Settings, inspect: bool = False
) -> tuple[subprocess.Popen[bytes], int]:
    """The receiver as a process of its own on the client core; ``inspect``:
    one that decodes what it gets (the check run's)."""
    argv = [sys.executable, str(Path(__file__).resolve()), "_receiver"]
    argv += ["inspect"] if inspect else []
    proc = reaper.start(pinned(str(settings.client_cpu), argv), stdout=subprocess.PIPE)
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    return proc, port


# ------------------------------------------------------------------ load


@dataclass
class Load:
    """One load run's result, from wrk or the Python load generator."""

    tool: str
    requests: int
    seconds: float
    rps: float
    latency_us: dict[str, float]
    socket_errors: dict[str, int]
    non_2xx: int
    loadgen_cpu_s: float
    raw: str = ""


_UNITS = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6}


def _duration_us(text: str) -> float:
    """``2.10ms`` as microseconds."""
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(text: str, loadgen_cpu_s: float) -> Load:
    """wrk's ``--latency`` report as a ``Load``."""
    total = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m),", text)
    if total is None:
        raise RuntimeError(f"unexpected wrk output:\n{text}")
    requests = int(total.group(1))
    seconds = _duration_us(total.group(2) + total.group(3)) / 1e6
    latency = {
        f"p{pct}": _duration_us(value)
        for pct, value in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)$", text, re.M)
    }
    errors = re.search(r"connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    names = ("connect", "read", "write", "timeout")
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return Load(
        tool="wrk",
        requests=requests,
        seconds=seconds,
        rps=requests / seconds,
        latency_us=latency,
        socket_errors=dict(zip(names, map(int, errors.groups()), strict=True)) if errors else {},
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        loadgen_cpu_s=loadgen_cpu_s,
        raw=text,
    )


def write_wrk_script(workdir: Path) -> Path:
    """wrk's Lua script (``WRK_SCRIPT``), in ``workdir``."""
    path = workdir / "request-start.lua"
    path.write_text(WRK_SCRIPT)
    return path


def load_command(
    tool: str, port: int, seconds: float, settings: Settings, script: Path | None = None
) -> list[str]:
    """The load generator's command line (before pinning): ``GET
    REQUEST_PATH`` with ``X-Forwarded-For`` and a fresh ``X-Request-Start``."""
    if tool == "wrk":
        return [
            "wrk",
            f"-t{settings.wrk_threads}",
            f"-c{settings.connections}",
            f"-d{seconds}s",
            "--timeout",
            "5s",
            "--latency",
            "-H",
            f"X-Forwarded-For: {FORWARDED_FOR}",
            "-s",
            str(script or "request-start.lua"),
            f"http://127.0.0.1:{port}{REQUEST_PATH}",
        ]
    this = str(Path(__file__).resolve())
    return [sys.executable, this, "_loadgen", str(port), str(seconds), str(settings.connections)]


def run_load(  # noqa: PLR0917 - every input of a load, positionally at every call
    reaper: Reaper, tool: str, port: int, seconds: float, settings: Settings, script: Path
) -> Load:
    """Run the load generator on the client core for ``seconds``."""
    argv = pinned(str(settings.client_cpu), load_command(tool, port, seconds, settings, script))
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = reaper.start(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        out, _ = proc.communicate(timeout=seconds + 60)
    finally:
        reaper.stop(proc)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime
    text = out.decode("utf-8", "replace")
    if tool == "wrk":
        return parse_wrk(text, cpu)
    data = json.loads(text)
    return Load(tool="python", loadgen_cpu_s=cpu, **data)


def _percentiles(latencies: list[float]) -> dict[str, float]:
    """p50/p75/p90/p99 of ``latencies`` (microseconds)."""
    if not latencies:
        return {}
    ordered = sorted(latencies)
    last = len(ordered) - 1
    return {f"p{p}": ordered[min(last, round(last * p / 100))] for p in (50, 75, 90, 99)}


def proxied_request(port: int, path: str = REQUEST_PATH) -> bytes:
    """A GET as a proxy in front sends it: the client in ``X-Forwarded-For``,
    ``X-Request-Start`` stamped now (``t=`` microseconds since the epoch)."""
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"X-Forwarded-For: {FORWARDED_FOR}\r\n"
        f"X-Request-Start: t={time.time_ns() // 1000}\r\n\r\n"
    ).encode()


class _Client:
    """One connection of the Python load generator: one request per
    connection, as gunicorn's sync worker closes each after its response."""

    def __init__(self, port: int, sel: selectors.BaseSelector) -> None:
        self.request = proxied_request(port)
        self.sel = sel
        self.sock = socket.socket()
        self.sock.setblocking(False)
        self.started = time.perf_counter()
        self.buffer = bytearray()
        self.sock.connect_ex(("127.0.0.1", port))
        sel.register(self.sock, selectors.EVENT_WRITE, self)

    def on_event(self, mask: int) -> bool | None:
        """Advance; True when a response completed, False on an error."""
        try:
            if mask & selectors.EVENT_WRITE:
                self.sock.sendall(self.request)
                self.sel.modify(self.sock, selectors.EVENT_READ, self)
                return None
            chunk = self.sock.recv(65536)
        except OSError:
            self.close()
            return False
        if chunk:
            self.buffer += chunk
            return None
        self.close()
        return True

    def close(self) -> None:
        """Forget the connection."""
        self.sel.unregister(self.sock)
        self.sock.close()


def loadgen_main(port: int, seconds: float, connections: int) -> None:
    """The fallback load generator: ``connections`` concurrent clients for
    ``seconds``, a JSON report on stdout (the fields of ``Load``)."""
    sel = selectors.DefaultSelector()
    latencies: list[float] = []
    errors = non_2xx = 0
    started = time.perf_counter()
    deadline = started + seconds
    for _ in range(connections):
        _Client(port, sel)
    while sel.get_map():
        for key, mask in sel.select(timeout=1.0):
            client: _Client = key.data
            done = client.on_event(mask)
            if done is None:
                continue
            if done and client.buffer.startswith(b"HTTP/1.1 2"):
                latencies.append((time.perf_counter() - client.started) * 1e6)
            elif done:
                non_2xx += 1
            else:
                errors += 1
            if time.perf_counter() < deadline:
                _Client(port, sel)
    elapsed = time.perf_counter() - started
    report = {
        "requests": len(latencies),
        "seconds": elapsed,
        "rps": len(latencies) / elapsed,
        "latency_us": _percentiles(latencies),
        "socket_errors": {"connect_or_read": errors},
        "non_2xx": non_2xx,
    }
    print(json.dumps(report))


def install_wrk(settings: Settings) -> str:
    """wrk's path, installing the Debian package when missing and allowed."""
    found = shutil.which("wrk")
    if found or not settings.install_wrk or os.geteuid() != 0 or not shutil.which("apt-get"):
        return found or ""
    print("wrk is missing: apt-get install -y wrk", file=sys.stderr)
    install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "wrk"]
    if _quiet(install) != 0:
        _quiet(["apt-get", "update", "-qq"])
        _quiet(install)
    return shutil.which("wrk") or ""


def _quiet(argv: list[str]) -> int:
    """Run ``argv`` with its output discarded; its exit status."""
    out = subprocess.DEVNULL
    return subprocess.run(argv, stdout=out, stderr=out, check=False).returncode


def choose_loadgen(settings: Settings) -> tuple[str, str]:
    """(tool, why): ``wrk`` when it can be had, else ``python``."""
    if settings.loadgen == "python":
        return "python", "BENCH_LOADGEN=python"
    if install_wrk(settings):
        return "wrk", ""
    if settings.loadgen == "wrk":
        raise SystemExit("BENCH_LOADGEN=wrk but wrk could not be installed")
    return "python", "wrk is not installed and could not be installed"


# ---------------------------------------------------------------- server


@dataclass
class Server:
    """A gunicorn master started for one run."""

    proc: subprocess.Popen[bytes]
    port: int
    metrics_port: int
    started: float
    argv: list[str]
    env: dict[str, str]
    log: Path


def base_env() -> dict[str, str]:
    """This environment without anything that would change the servers."""
    return {k: v for k, v in os.environ.items() if not k.startswith(STRIPPED_ENV_PREFIXES)}


def gunicorn_argv(config_arg: str, port: int, extra: Sequence[str] = ()) -> list[str]:
    """The gunicorn command line every configuration shares."""
    argv = [str(Path(sys.executable).with_name("gunicorn")), "-c", config_arg]
    argv += ["-b", f"127.0.0.1:{port}", "-k", "sync", "--pythonpath", str(BENCH_DIR)]
    argv += [*extra, *(["--no-control-socket"] if has_no_control_socket() else []), "hello:app"]
    return argv


def config_env(config: Config, metrics_port: int, run_dir: Path) -> dict[str, str]:
    """The configuration's own variables for one run."""
    env = dict(config.env)
    if config.hookkit:
        env["HOOKKIT_METRICS_BIND"] = f"127.0.0.1:{metrics_port}"
    if config.multiproc_dir:
        multiproc = run_dir / "prometheus"
        multiproc.mkdir()
        env["PROMETHEUS_MULTIPROC_DIR"] = str(multiproc)
        env["HANDROLLED_METRICS_PORT"] = str(metrics_port)
    return env


def start_server(reaper: Reaper, config: Config, run_dir: Path, settings: Settings) -> Server:
    """Start ``config`` pinned to the server core, output to a file."""
    port, metrics_port = free_port(), free_port()
    env = config_env(config, metrics_port, run_dir)
    argv = gunicorn_argv(config.config_arg, port, ["-w", "1"])
    log = run_dir / "gunicorn.log"
    with log.open("wb") as out:
        started = time.perf_counter()
        proc = reaper.start(
            pinned(str(settings.server_cpu), argv),
            env={**base_env(), **env},
            cwd=run_dir,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return Server(proc, port, metrics_port, started, argv, env, log)


def wait_first_200(server: Server, timeout: float = 30.0) -> float:
    """Seconds from the server's start to its first 200 on ``GET /``."""
    deadline = time.monotonic() + timeout
    while get_status(server.port) != 200:
        if server.proc.poll() is not None or time.monotonic() > deadline:
            tail = server.log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"gunicorn did not answer 200 (exit {server.proc.poll()}):\n{tail}")
        time.sleep(0.005)
    return time.perf_counter() - server.started


def log_problems(log: Path) -> int:
    """How many tracebacks and errors a server's output holds."""
    count = 0
    with log.open("rb") as lines:
        for line in lines:
            if b"Traceback" in line or b'"level": "error"' in line or b"[ERROR]" in line:
                count += 1
    return count


# ------------------------------------------------------------------- runs


@dataclass
class Snapshot:
    """CPU counters of everything relevant at one moment."""

    server: dict[int, int]
    receiver: int
    receiver_counts: dict[str, Any]
    everyone: dict[int, tuple[str, int]]
    cores: dict[str, list[int]]
    bench: float


def snapshot(server: Server, ctx: dict[str, Any], pids: Sequence[int]) -> Snapshot:
    """Read the counters of ``pids`` (the server's tree), the receiver, every
    other process, each core and this process."""
    counts = receiver_counts(ctx["receiver_port"])
    return Snapshot(
        server=tree_ticks(pids),
        receiver=cpu_ticks(ctx["receiver_pid"]),
        receiver_counts=counts,
        everyone=all_ticks(),
        cores=core_jiffies(),
        bench=self_cpu(),
    )


def cpu_figures(before: Snapshot, after: Snapshot, load: Load, ours: set[int]) -> dict[str, Any]:
    """CPU used between two snapshots: the server's tree, the receiver, and
    what the machine did beside the benchmark."""
    server_cpu = ticks_delta(before.server, after.server)
    receiver_cpu = (after.receiver - before.receiver) / CLK_TCK
    bench_cpu = after.bench - before.bench
    cores = core_usage(before.cores, after.cores)
    accounted = server_cpu + receiver_cpu + load.loadgen_cpu_s + bench_cpu
    return {
        "server_cpu_s": server_cpu,
        "server_cpu_by_pid": {
            str(pid): (ticks - before.server.get(pid, 0)) / CLK_TCK
            for pid, ticks in after.server.items()
        },
        "receiver_cpu_s": receiver_cpu,
        "receiver_posts": after.receiver_counts["requests"] - before.receiver_counts["requests"],
        "receiver_bytes": after.receiver_counts["bytes"] - before.receiver_counts["bytes"],
        "bench_cpu_s": bench_cpu,
        "cores": cores,
        "foreign_cpu_s": sum(core["busy_s"] for core in cores.values()) - accounted,
        "steal_s": sum(core["steal_s"] for core in cores.values()),
        "busiest_other_processes": busiest_others(before.everyone, after.everyone, ours),
    }


def worker_memory(server: Server, pids: Sequence[int]) -> dict[str, Any]:
    """Memory of the server's processes; the worker's (every process under
    the master, normally one) summed."""
    memory = {str(pid): memory_kib(pid) for pid in pids}
    workers = [pid for pid in pids if pid != server.proc.pid]
    return {
        "worker_pids": workers,
        "memory_kib": memory,
        "worker_rss_kib": sum(memory[str(pid)]["rss"] for pid in workers),
        "worker_uss_kib": sum(memory[str(pid)]["uss"] for pid in workers),
    }


def warm_up(reaper: Reaper, ctx: dict[str, Any], port: int) -> list[Load]:
    """Warm-up loads of ``BENCH_WARMUP`` seconds until the worker served at
    least ``BENCH_WARMUP_REQUESTS`` (at least one load)."""
    settings: Settings = ctx["settings"]
    loads: list[Load] = []
    while not loads or sum(load.requests for load in loads) < settings.warmup_requests:
        if len(loads) >= 30:
            served = sum(load.requests for load in loads)
            raise RuntimeError(f"the warm-up served {served} requests in {len(loads)} loads")
        loads.append(
            run_load(reaper, ctx["tool"], port, settings.warmup, settings, ctx["wrk_script"])
        )
    return loads


def measure_run(
    reaper: Reaper, config: Config, run_dir: Path, ctx: dict[str, Any]
) -> dict[str, Any]:
    """One run of ``config``: start, first 200, warm-up, memory, measured
    load between two snapshots of the CPU counters, memory again, hookkit's
    /metrics and /status.json, stop; then the checks that it did its
    configuration's work (a failed check fails the run: ``error``)."""
    settings: Settings = ctx["settings"]
    exports_before = receiver_counts(ctx["receiver_port"])
    server = start_server(reaper, config, run_dir, settings)
    body, status = "", None
    try:
        first_200 = wait_first_200(server)
        warmups = warm_up(reaper, ctx, server.port)
        pids = reaper.note_tree(server.proc)
        memory = worker_memory(server, pids)
        before = snapshot(server, ctx, pids)
        load = run_load(
            reaper, ctx["tool"], server.port, settings.seconds, settings, ctx["wrk_script"]
        )
        pids = sorted(set(pids) | set(reaper.note_tree(server.proc)))
        after = snapshot(server, ctx, pids)
        memory_after = worker_memory(server, pids)
        if config.hookkit:
            body = metrics_body(server)
            status = status_json(server)
    finally:
        exit_code = reaper.stop(server.proc)
    # Stopped: the workers flushed their spans and logs, the master made its
    # last OTLP metrics export.
    exports_after = receiver_counts(ctx["receiver_port"])
    ours = {os.getpid(), ctx["receiver_pid"], *pids}
    served = sum(warm.requests for warm in warmups) + load.requests
    exported = {kind: exports_after[kind] - exports_before[kind] for kind in EXPORT_KINDS}
    work = did_its_work(config, body, status, served, exported)
    run = {
        "config": config.name,
        "argv": server.argv,
        "env": server.env,
        "first_200_s": first_200,
        "master_pid": server.proc.pid,
        **memory,
        "warmup_requests": sum(warm.requests for warm in warmups),
        "worker_rss_after_run_kib": memory_after["worker_rss_kib"],
        "worker_uss_after_run_kib": memory_after["worker_uss_kib"],
        "warmup": [asdict(warm) | {"raw": ""} for warm in warmups],
        "load": asdict(load),
        **cpu_figures(before, after, load, ours),
        "exported": exported,
        "work": work,
        "hookkit_sink_errors": sink_errors(body) if config.hookkit else None,
        "log_bytes": server.log.stat().st_size,
        "log_problems": log_problems(server.log),
        "exit_code": exit_code,
    }
    failed = [check["check"] for check in work if not check["ok"]]
    if failed:
        run["error"] = "did not do its configuration's work: " + "; ".join(failed)
    return run


EXPORT_KINDS = ("traces", "logs", "metrics")


def metrics_body(server: Server, accept: str = "") -> str:
    """hookkit's /metrics (``accept``: the Accept header); empty on failure."""
    request = urllib.request.Request(f"http://127.0.0.1:{server.metrics_port}/metrics")
    if accept:
        request.add_header("Accept", accept)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return str(response.read().decode())
    except OSError:
        return ""


def status_json(server: Server) -> dict[str, Any] | None:
    """hookkit's /status.json, or None."""
    try:
        found: dict[str, Any] = json.loads(
            fetch(f"http://127.0.0.1:{server.metrics_port}/status.json")
        )
    except (OSError, ValueError):
        return None
    return found


def samples_sum(body: str, name: str, having: str = "") -> float:
    """The sum of the samples ``name{...}`` (whose labels hold ``having``)."""
    total = 0.0
    for line in body.splitlines():
        if line.startswith((name + "{", name + " ")) and having in line:
            total += float(line.split(" # ")[0].split()[-1])
    return total


def sink_errors(body: str) -> float | None:
    """hookkit_sink_errors_total summed over sinks; None without a body."""
    return samples_sum(body, "hookkit_sink_errors_total") if body else None


def did_its_work(
    config: Config,
    body: str,
    status: dict[str, Any] | None,
    served: int,
    exported: dict[str, int],
) -> list[dict[str, Any]]:
    """The checks of one run: hookkit counted the ``served`` requests of the
    load under their route and their queue time, with no queue-header error,
    and its status page shows the worker; the receiver got every signal the
    configuration exports."""
    checks: list[dict[str, Any]] = []

    def check(name: str, ok: bool, found: Any) -> None:
        checks.append({"check": name, "ok": bool(ok), "found": found})

    if config.hookkit:
        route = f'http_route="{ITEM_ROUTE}"'
        routed = samples_sum(body, "http_server_request_duration_seconds_count", route)
        queued = samples_sum(body, "http_server_request_queue_duration_seconds_count")
        errors = samples_sum(body, "hookkit_queue_header_errors_total")
        check(
            f"/metrics counted the {served} requests under {ITEM_ROUTE}", routed >= served, routed
        )
        check("/metrics observed their queue time", queued >= served, queued)
        check("no queue-header error", bool(body) and errors == 0, errors)
        workers = (status or {}).get("workers") or []
        shown = workers[0].get("requests_served", 0) if len(workers) == 1 else None
        check(
            "/status.json shows the worker's live state",
            shown is not None and shown >= served,
            shown,
        )
    for kind in config.exports:
        check(f"OTLP {kind} arrived", exported[kind] > 0, exported[kind])
    return checks


def round_order(configs: list[Config], round_no: int) -> list[Config]:
    """The configurations rotated by the round number, so no configuration
    always runs first or right after another."""
    shift = round_no % len(configs)
    return configs[shift:] + configs[:shift]


def run_rounds(
    reaper: Reaper, configs: list[Config], workdir: Path, ctx: dict[str, Any]
) -> list[dict[str, Any]]:
    """Every configuration once per round, interleaved."""
    settings: Settings = ctx["settings"]
    runs = []
    for round_no in range(settings.rounds):
        for position, config in enumerate(round_order(configs, round_no)):
            run_dir = workdir / f"r{round_no}-{config.name}"
            run_dir.mkdir()
            try:
                run = measure_run(reaper, config, run_dir, ctx)
            except (OSError, RuntimeError, ValueError, subprocess.SubprocessError) as exc:
                run = {"config": config.name, "error": f"{type(exc).__name__}: {exc}"}
            run.update(round=round_no, position=position)
            runs.append(run)
            print(progress_line(run), file=sys.stderr, flush=True)
    return runs


def progress_line(run: dict[str, Any]) -> str:
    """One line per run on stderr while the benchmark goes."""
    if "error" in run:
        return f"  round {run['round'] + 1} {run['config']:<11} ERROR {run['error']}"
    load = run["load"]
    cpu_us = run["server_cpu_s"] * 1e6 / max(load["requests"], 1)
    return (
        f"  round {run['round'] + 1} {run['config']:<11} {load['rps']:8.0f} req/s "
        f"p50 {load['latency_us'].get('p50', 0):7.0f} us  cpu {cpu_us:6.1f} us/req  "
        f"first 200 {run['first_200_s'] * 1000:5.0f} ms"
    )


# ------------------------------------------------------------ the checks


def send_proxied(port: int) -> int:
    """One request as the load sends it (``proxied_request``); its status."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5.0) as sock:
            sock.sendall(proxied_request(port))
            head = sock.recv(64)
    except OSError:
        return 0
    match = re.match(rb"HTTP/1\.[01] (\d{3})", head)
    return int(match.group(1)) if match else 0


def access_lines(log: Path) -> list[dict[str, Any]]:
    """hookkit's access lines (``request_finished``) of ``REQUEST_PATH`` in
    a server's output."""
    found = []
    for line in log.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if (
                isinstance(record, dict)
                and record.get("event") == "request_finished"
                and record.get("path") == REQUEST_PATH
            ):
                found.append(record)
    return found


def proxied_access_line(record: dict[str, Any]) -> bool:
    """Whether an access line names the forwarded client, the route and a
    queue time (from this machine: under a minute)."""
    queued = record.get("queue_seconds")
    return (
        record.get("client_address") == FORWARDED_FOR
        and record.get("route") == ITEM_ROUTE
        and isinstance(queued, (int, float))
        and 0 <= queued < 60
    )


def exemplar_on_route(body: str) -> bool:
    """Whether an OpenMetrics /metrics body has an exemplar (a trace id) on a
    request-duration bucket of ``ITEM_ROUTE``."""
    return any(
        line.startswith("http_server_request_duration_seconds_bucket{")
        and f'http_route="{ITEM_ROUTE}"' in line
        and "trace_id=" in line
        for line in body.splitlines()
    )


def check_setup(
    reaper: Reaper, workdir: Path, ctx: dict[str, Any], configs: list[Config]
) -> list[dict[str, Any]]:
    """Before the rounds: "everything", with the access line's
    ``client_address`` on, exporting to a receiver that decodes what it gets,
    serves one request from this process and then 1 s of the load generator.
    The checks that the requests' headers and route took effect, and that
    the status page, exemplars and every OTLP signal are there."""
    settings: Settings = ctx["settings"]
    run_dir = workdir / "check"
    run_dir.mkdir()
    receiver, port = start_receiver(reaper, settings, inspect=True)
    everything = next(config for config in configs if config.name == "everything")
    env = {
        name: value.replace(ctx["receiver_url"], f"http://127.0.0.1:{port}")
        for name, value in everything.env.items()
    }
    config = Config(
        "check",
        "check",
        everything.config_arg,
        env | {"HOOKKIT_ACCESS_LOG_CLIENT": "on"},
        hookkit=True,
    )
    server = start_server(reaper, config, run_dir, settings)
    try:
        wait_first_200(server)
        one = send_proxied(server.port)
        openmetrics = metrics_body(server, "application/openmetrics-text; version=1.0.0")
        status = status_json(server)
        load = run_load(reaper, ctx["tool"], server.port, 1, settings, ctx["wrk_script"])
        body = metrics_body(server)
    finally:
        reaper.stop(server.proc)
    got = receiver_counts(port)
    reaper.stop(receiver)
    lines = access_lines(server.log)
    kinds: dict[str, int] = got.get("span_kinds", {})
    item_spans = {key: n for key, n in kinds.items() if key.startswith(f"GET {ITEM_ROUTE} |")}
    good_span = (
        f"GET {ITEM_ROUTE} | client.address={FORWARDED_FOR} | http.route={ITEM_ROUTE} | "
        "queue_duration=yes"
    )
    workers = (status or {}).get("workers") or []
    routed = samples_sum(body, "http_server_request_duration_seconds_count", ITEM_ROUTE)
    queued = samples_sum(body, "http_server_request_queue_duration_seconds_count")
    checks = [
        (
            "one request from this process answered 200, and its access line names the "
            f"client {FORWARDED_FOR}, the route {ITEM_ROUTE} and a queue time",
            one == 200 and bool(lines) and proxied_access_line(lines[0]),
            lines[0] if lines else one,
        ),
        (
            f"every access line of 1 s of {ctx['tool']} does too",
            len(lines) > load.requests and all(map(proxied_access_line, lines)),
            {
                "lines": len(lines),
                "load_requests": load.requests,
                "not_proxied": [line for line in lines if not proxied_access_line(line)][:3],
            },
        ),
        (
            f"every span of the requests is '{good_span}'",
            sum(item_spans.values()) > load.requests and set(item_spans) == {good_span},
            {"span_kinds": kinds, "load_requests": load.requests},
        ),
        (
            f"/metrics counted them under {ITEM_ROUTE}, each with its queue time, no "
            "queue-header error",
            routed > load.requests
            and queued >= routed
            and samples_sum(body, "hookkit_queue_header_errors_total") == 0,
            {"routed": routed, "queued": queued},
        ),
        (
            f"/metrics (OpenMetrics) has an exemplar on a bucket of {ITEM_ROUTE}",
            exemplar_on_route(openmetrics),
            "found" if exemplar_on_route(openmetrics) else openmetrics[-2000:],
        ),
        (
            "/status.json shows the worker's live state",
            len(workers) == 1 and workers[0].get("requests_served", 0) >= 2,
            workers,
        ),
        (
            "OTLP traces, logs and metrics arrived",
            all(got[kind] > 0 for kind in EXPORT_KINDS) and bool(got.get("last_log")),
            {kind: got[kind] for kind in EXPORT_KINDS} | {"last_log": got.get("last_log")},
        ),
    ]
    return [{"check": name, "ok": bool(ok), "found": found} for name, ok, found in checks]


def render_checks(checks: list[dict[str, Any]]) -> str:
    """The check run's results, one line each."""
    return "\n".join(f"- {'ok' if c['ok'] else 'FAILED'}: {c['check']}" for c in checks)


# -------------------------------------------------------------- recycles


def wait_workers(metrics_port: int, count: int, timeout: float = 30.0) -> str:
    """Wait until hookkit's /metrics reports ``count`` live workers; the body."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError):
            body = fetch(f"http://127.0.0.1:{metrics_port}/metrics")
            if metric_value(body, "gunicorn_workers") == count:
                return body
        if time.monotonic() > deadline:
            raise RuntimeError(f"hookkit did not report {count} workers in {timeout}s")
        time.sleep(0.1)


def time_scrapes(metrics_port: int) -> dict[str, Any]:
    """``SCRAPES`` timed scrapes, as scrape_after_recycles.py times them."""
    times, body = [], ""
    for _ in range(SCRAPES):
        elapsed, body = scrape(metrics_port)
        times.append(elapsed * 1000)
    return {
        "median_ms": statistics.median(times),
        "min_ms": min(times),
        "max_ms": max(times),
        "files_read": files_read(body),
        "times_ms": times,
    }


def drive_recycles(port: int, target: int, budget: float, clients: int = 4) -> tuple[int, float]:
    """Send requests (one recycle each under --max-requests 1) until
    ``target`` were served or ``budget`` seconds passed: (served, seconds).
    A client claims its request before sending it, so no more than
    ``target`` are sent."""
    served = [0]
    claimed = [0]
    lock = threading.Lock()
    started = time.monotonic()
    deadline = started + budget

    def client() -> None:
        while time.monotonic() < deadline:
            with lock:
                if claimed[0] >= target:
                    return
                claimed[0] += 1
            ok = get_status(port, timeout=10.0) == 200
            with lock:
                if ok:
                    served[0] += 1
                else:
                    claimed[0] -= 1

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return served[0], time.monotonic() - started


def recycle_checkpoints(target: int) -> list[int]:
    """When to time the scrape: after 10 recycles (the request metrics then
    exist), and after ``target``."""
    return sorted({min(10, target), target})


def start_recycling_server(reaper: Reaper, run_dir: Path) -> tuple[Server, dict[str, str]]:
    """hookkit's drop-in, 2 sync workers, ``--max-requests 1``, logs and
    tracing off (as scrape_after_recycles.py runs it), on every core."""
    port, metrics_port = free_port(), free_port()
    env = {"HOOKKIT_METRICS_BIND": f"127.0.0.1:{metrics_port}", "HOOKKIT_LOGS": "off"}
    env["HOOKKIT_TRACING"] = "off"
    argv = gunicorn_argv("python:hookkit.conf", port, ["-w", "2", "--max-requests", "1"])
    all_cpus = f"0-{(os.cpu_count() or 1) - 1}"
    log = run_dir / "gunicorn.log"
    with log.open("wb") as out:
        started = time.perf_counter()
        proc = reaper.start(
            pinned(all_cpus, argv),
            env={**base_env(), **env},
            cwd=run_dir,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return Server(proc, port, metrics_port, started, argv, env, log), env


def measure_recycles(reaper: Reaper, workdir: Path, settings: Settings) -> dict[str, Any]:
    """Scrape time of hookkit's /metrics after 10 and N worker recycles,
    within ``settings.recycle_seconds`` of recycling."""
    run_dir = workdir / "recycles"
    run_dir.mkdir()
    if not settings.recycle_jitter:
        (run_dir / "gunicorn.conf.py").write_text(NO_SPAWN_JITTER)
    server, env = start_recycling_server(reaper, run_dir)
    checkpoints: list[dict[str, Any]] = []
    served, driven = 0, 0.0
    try:
        for target in recycle_checkpoints(settings.recycles):
            budget = max(0.0, settings.recycle_seconds - driven)
            more, seconds = drive_recycles(server.port, target - served, budget)
            served, driven = served + more, driven + seconds
            time.sleep(1)
            body = wait_workers(server.metrics_port, 2)
            exits = metric_value(body, "gunicorn_worker_exits_total", 'reason="max_requests"')
            scrapes = time_scrapes(server.metrics_port)
            checkpoints.append(
                {"target": target, "recycles": served, "drive_seconds": driven}
                | {"recycles_counted": exits, **scrapes}
            )
    finally:
        reaper.stop(server.proc)
    return {
        "argv": server.argv,
        "env": env,
        "spawn_jitter": "gunicorn's" if settings.recycle_jitter else "patched to 0",
        "target": settings.recycles,
        "budget_seconds": settings.recycle_seconds,
        "checkpoints": checkpoints,
    }


# ---------------------------------------------------------------- summary


def _spread(values: list[float]) -> dict[str, float]:
    """Median, min and max."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def per_round_metrics(run: dict[str, Any], bare: dict[str, Any]) -> dict[str, float]:
    """The table's figures for one run, against the same round's bare run."""
    load, bare_load = run["load"], bare["load"]
    requests, bare_requests = max(load["requests"], 1), max(bare_load["requests"], 1)
    cpu_us = run["server_cpu_s"] * 1e6 / requests
    bare_cpu_us = bare["server_cpu_s"] * 1e6 / bare_requests
    lat, bare_lat = load["latency_us"], bare_load["latency_us"]
    return {
        "rps": load["rps"],
        "rps_ratio": load["rps"] / bare_load["rps"],
        "added_us_throughput": 1e6 / load["rps"] - 1e6 / bare_load["rps"],
        "server_cpu_us": cpu_us,
        "added_us_cpu": cpu_us - bare_cpu_us,
        "implied_rps_ratio": bare_cpu_us / cpu_us,
        "server_busy": run["server_cpu_s"] / load["seconds"],
        "p50_ratio": lat["p50"] / bare_lat["p50"],
        "p99_ratio": lat["p99"] / bare_lat["p99"],
        "receiver_cpu_us": run["receiver_cpu_s"] * 1e6 / requests,
        "loadgen_cpu_us": load["loadgen_cpu_s"] * 1e6 / requests,
        "first_200_ms": run["first_200_s"] * 1000,
        "added_first_200_ms": (run["first_200_s"] - bare["first_200_s"]) * 1000,
        "worker_rss_mib": run["worker_rss_kib"] / 1024,
        "worker_uss_mib": run["worker_uss_kib"] / 1024,
        "added_uss_mib": (run["worker_uss_kib"] - bare["worker_uss_kib"]) / 1024,
        "added_rss_mib": (run["worker_rss_kib"] - bare["worker_rss_kib"]) / 1024,
        "worker_uss_after_run_mib": run["worker_uss_after_run_kib"] / 1024,
        "added_uss_after_run_mib": (
            run["worker_uss_after_run_kib"] - bare["worker_uss_after_run_kib"]
        )
        / 1024,
    }


def summarize(runs: list[dict[str, Any]], configs: list[Config]) -> dict[str, Any]:
    """Median (min-max) over rounds of every figure, per configuration."""
    ok = [run for run in runs if "error" not in run]
    bare_by_round = {run["round"]: run for run in ok if run["config"] == "bare"}
    summary: dict[str, Any] = {}
    for config in configs:
        rows = [
            per_round_metrics(run, bare_by_round[run["round"]])
            for run in ok
            if run["config"] == config.name and run["round"] in bare_by_round
        ]
        summary[config.name] = (
            {key: _spread([row[key] for row in rows]) for key in rows[0]} if rows else None
        )
    return summary


def cell(spread: dict[str, float], fmt: str, suffix: str = "") -> str:
    """``median (min-max)`` with a format, e.g. ``0.93x (0.88-0.97)``."""
    median, low, high = (format(spread[key], fmt) for key in ("median", "min", "max"))
    return f"{median}{suffix} ({low}{DASH}{high})"


TABLE_COLUMNS: list[tuple[str, str, str, str]] = [
    ("req/s", "rps", ".0f", ""),
    ("vs bare", "rps_ratio", ".2f", "x"),
    ("+µs/req (1/throughput)", "added_us_throughput", "+.0f", ""),
    ("server CPU µs/req", "server_cpu_us", ".0f", ""),
    ("+µs/req (CPU)", "added_us_cpu", "+.1f", ""),
    ("implied vs bare (CPU)", "implied_rps_ratio", ".2f", "x"),
    ("p50 vs bare", "p50_ratio", ".2f", "x"),
    ("p99 vs bare", "p99_ratio", ".2f", "x"),
    ("receiver CPU µs/req", "receiver_cpu_us", ".1f", ""),
    ("first 200 ms", "first_200_ms", ".0f", ""),
    ("worker RSS MiB", "worker_rss_mib", ".1f", ""),
    ("worker USS MiB", "worker_uss_mib", ".1f", ""),
    ("+USS MiB", "added_uss_mib", "+.2f", ""),
    ("+USS MiB after run", "added_uss_after_run_mib", "+.2f", ""),
]


def render_table(summary: dict[str, Any], configs: list[Config]) -> str:
    """One Markdown row per configuration."""
    head = ["configuration", *(title for title, *_ in TABLE_COLUMNS)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for config in configs:
        figures = summary[config.name]
        cells = [
            cell(figures[key], fmt, suffix) if figures else "error"
            for _, key, fmt, suffix in TABLE_COLUMNS
        ]
        lines.append(f"| {config.label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_recycles(recycles: dict[str, Any]) -> str:
    """The scrape-after-recycles table and how long recycling took."""
    if "error" in recycles:
        return f"scrape after recycles: FAILED: {recycles['error']}"
    lines = [
        f"| worker recycles | /metrics scrape ms, median (min{DASH}max) | files read |",
        "|---|---|---|",
    ]
    points = recycles["checkpoints"]
    for point in points:
        spread = {"median": point["median_ms"], "min": point["min_ms"], "max": point["max_ms"]}
        lines.append(f"| {point['recycles']} | {cell(spread, '.2f')} | {point['files_read']} |")
    first, last = points[0], points[-1]
    rate = last["recycles"] / last["drive_seconds"] if last["drive_seconds"] else 0.0
    counted = last["recycles_counted"]
    lines += [
        "",
        f"{last['recycles']} recycles (target {recycles['target']}, bound "
        f"{recycles['budget_seconds']} s; hookkit counted "
        f"{'?' if counted is None else format(counted, '.0f')} max_requests exits) took "
        f"{last['drive_seconds']:.1f} s ({rate:.0f}/s; gunicorn's spawn jitter "
        f"{recycles['spawn_jitter']}). Scrape after {last['recycles']}: "
        f"{scrape_ratio(recycles):.2f}x the one after {first['recycles']}.",
    ]
    return "\n".join(lines)


# Issue 16's targets: (configuration, figure, at most / at least, bound, what).
CPU_TARGETS: list[tuple[str, str, str, float, str]] = [
    ("metrics", "added_us_cpu", "max", 5.5, "metrics: added server CPU per request ≤ +5.5 µs"),
    ("metrics", "implied_rps_ratio", "min", 0.94, "metrics: implied throughput ≥ 0.94x bare"),
    (
        "tracing",
        "added_us_cpu",
        "max",
        23.0,
        "metrics + tracing (100 % sampled, OTLP, exemplars): added server CPU per request ≤ +23 µs",
    ),
    (
        "tracing",
        "implied_rps_ratio",
        "min",
        0.80,
        "metrics + tracing: implied throughput ≥ 0.80x bare",
    ),
    (
        "everything",
        "added_us_cpu",
        "max",
        30.0,
        "everything (+ JSON access line, OTLP logs, OTLP metrics): added server CPU per "
        "request ≤ +30 µs",
    ),
    (
        "everything",
        "implied_rps_ratio",
        "min",
        0.75,
        "everything: implied throughput ≥ 0.75x bare",
    ),
    ("tracing", "p99_ratio", "max", 1.5, "metrics + tracing: p99 ≤ 1.5x bare's p99"),
    (
        "tracing",
        "added_uss_mib",
        "max",
        6.0,
        "metrics + tracing: worker USS ≤ +6 MiB over bare, after ≥ {warm} requests",
    ),
]
FIRST_200_CONFIGS = ("metrics", "tracing", "everything")


def _target_row(target: str, measured: str, met: bool | None, value: Any) -> dict[str, Any]:
    return {"target": target, "measured": measured, "met": met, "value": value}


def target_rows(
    summary: dict[str, Any],
    recycles: dict[str, Any] | None,
    runs: list[dict[str, Any]],
    settings: Settings,
) -> list[dict[str, Any]]:
    """Each target of issue 16 beside the measured median (min-max over the
    rounds) and whether the median meets it."""
    rows = []
    for name, key, bound_kind, bound, text in CPU_TARGETS:
        figures = summary.get(name)
        target = text.format(warm=settings.warmup_requests)
        if not figures:
            rows.append(_target_row(target, "no run succeeded", False, None))
            continue
        spread = figures[key]
        fmt, suffix = {
            "added_us_cpu": ("+.1f", " µs"),
            "implied_rps_ratio": (".3f", "x"),
            "p99_ratio": (".2f", "x"),
            "added_uss_mib": ("+.2f", " MiB"),
        }[key]
        median = spread["median"]
        met = median <= bound if bound_kind == "max" else median >= bound
        rows.append(_target_row(target, cell(spread, fmt, suffix), met, median))
    everything, handrolled = summary.get("everything"), summary.get("handrolled")
    target = "everything: added server CPU under a third of the hand-rolled peer's added"
    if everything and handrolled:
        mine = everything["added_us_cpu"]["median"]
        peer = handrolled["added_us_cpu"]["median"]
        rows.append(
            _target_row(
                target,
                f"+{mine:.1f} µs vs hand-rolled +{peer:.1f} µs (a third: {peer / 3:.1f} µs)",
                mine < peer / 3,
                {"everything": mine, "handrolled": peer},
            )
        )
    else:
        rows.append(_target_row(target, "no run succeeded", False, None))
    for name in FIRST_200_CONFIGS:
        figures = summary.get(name)
        target = f"{name}: first 200 after start ≤ bare + 100 ms"
        if not figures:
            rows.append(_target_row(target, "no run succeeded", False, None))
            continue
        spread = figures["added_first_200_ms"]
        rows.append(
            _target_row(
                target, cell(spread, "+.0f", " ms"), spread["median"] <= 100, spread["median"]
            )
        )
    target = "scrape time flat (±20 %) from 10 to {} recycled workers: ratio 0.8 to 1.2"
    if recycles and "error" not in recycles:
        points = recycles["checkpoints"]
        ratio = scrape_ratio(recycles)
        rows.append(
            _target_row(
                target.format(points[-1]["recycles"]),
                f"{ratio:.2f}x ({points[0]['median_ms']:.2f} ms after {points[0]['recycles']}, "
                f"{points[-1]['median_ms']:.2f} ms after {points[-1]['recycles']})",
                0.8 <= ratio <= 1.2 and points[-1]["recycles"] >= recycles["target"],
                ratio,
            )
        )
    else:
        failure = (recycles or {}).get("error", "skipped (BENCH_RECYCLES=0)")
        rows.append(_target_row(target.format(settings.recycles), failure, None, None))
    failed = [f"round {run['round'] + 1} {run['config']}" for run in runs if "error" in run]
    rows.append(
        _target_row(
            "every run did its configuration's work (route, queue time, live state, OTLP "
            "spans/logs/metrics arrived)",
            f"{len(runs) - len(failed)} of {len(runs)} runs"
            + (f"; failed: {', '.join(failed)}" if failed else ""),
            not failed,
            len(failed),
        )
    )
    return rows


def render_targets(rows: list[dict[str, Any]]) -> str:
    """The targets table: target | measured | met?"""
    lines = [f"| target | measured, median (min{DASH}max) | met? |", "|---|---|---|"]
    for row in rows:
        met = {True: "yes", False: "no", None: "-"}[row["met"]]
        lines.append(f"| {row['target']} | {row['measured']} | {met} |")
    return "\n".join(lines)


def scrape_ratio(recycles: dict[str, Any]) -> float:
    """The median scrape after the last checkpoint over the one after the
    first (10 recycles)."""
    points = recycles["checkpoints"]
    return float(points[-1]["median_ms"] / points[0]["median_ms"])


def idle_anomalies(info: dict[str, Any]) -> list[str]:
    """A machine that was not idle when the benchmark started."""
    busy = info["busy_before_start"]
    if max(busy.values(), default=0.0) <= 0.1:
        return []
    cores = ", ".join(f"{name} {value:.0%}" for name, value in busy.items())
    return [f"the machine was busy before the benchmark started ({cores})"]


def anomalies(runs: list[dict[str, Any]], configs: list[Config]) -> list[str]:
    """Things in the raw numbers a reader should know about."""
    exporting = {c.name for c in configs if "traces" in c.exports}
    return [note for run in runs for note in run_anomalies(run, run["config"] in exporting)]


def run_anomalies(run: dict[str, Any], exporting: bool) -> list[str]:
    """What is odd about one run."""
    where = f"round {run['round'] + 1} {run['config']}"
    if "error" in run:
        return [f"{where}: FAILED: {run['error']}"]
    notes = []
    load = run["load"]
    errors = sum(load["socket_errors"].values())
    if errors or load["non_2xx"]:
        notes.append(f"{where}: {errors} socket errors, {load['non_2xx']} non-2xx responses")
    if exporting and run["receiver_posts"] == 0:
        notes.append(f"{where}: the OTLP receiver got no export during the run")
    if run["hookkit_sink_errors"]:
        notes.append(f"{where}: hookkit_sink_errors_total = {run['hookkit_sink_errors']}")
    if run["log_problems"]:
        notes.append(f"{where}: {run['log_problems']} error/traceback lines in its output")
    busy = run["server_cpu_s"] / load["seconds"]
    if busy < 0.9:
        notes.append(f"{where}: server core only {busy:.0%} busy (load generator bound?)")
    if run["foreign_cpu_s"] > 0.1 * load["seconds"]:
        top = ", ".join(
            f"{other['comm']} {other['cpu_s']:.2f} s"
            for other in run["busiest_other_processes"]
            if other["cpu_s"] > 0
        )
        notes.append(
            f"{where}: {run['foreign_cpu_s']:.2f} CPU s on the machine outside the "
            f"benchmark's processes (busiest: {top or 'none still running'})"
        )
    if run["steal_s"] > 0.05 * load["seconds"]:
        notes.append(f"{where}: {run['steal_s']:.2f} s of CPU stolen by the hypervisor")
    if len(run["worker_pids"]) != 1:
        notes.append(f"{where}: {len(run['worker_pids'])} processes under the master")
    return notes


# ------------------------------------------------------------------ main


def _version(package: str) -> str:
    """An installed distribution's version, or ``-``."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "-"


def wrk_version() -> str:
    """``wrk -v``'s first line, or ``-``."""
    if not shutil.which("wrk"):
        return "-"
    out = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    return (out.stdout or out.stderr).splitlines()[0].strip() if out.stdout or out.stderr else "-"


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "-"


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on."""
    nproc = subprocess.run(["nproc"], capture_output=True, text=True, check=False)
    return {
        "nproc": nproc.stdout.strip(),
        "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
        "cpu": cpu_model(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "gunicorn": _version("gunicorn"),
        "hookkit": _version("hookkit"),
        "prometheus_client": _version("prometheus-client"),
        "opentelemetry_sdk": _version("opentelemetry-sdk"),
        "structlog": _version("structlog"),
        "wrk": wrk_version(),
    }


def command_line() -> str:
    """How this run was started, with the BENCH_* variables in force."""
    bench_env = [
        f"{k}={shlex.quote(v)}" for k, v in sorted(os.environ.items()) if k.startswith("BENCH_")
    ]
    argv = [sys.executable, os.path.relpath(__file__, ROOT), *sys.argv[1:]]
    return " ".join([*bench_env, *map(shlex.quote, argv)])


def print_header(info: dict[str, Any], settings: Settings, tool: str, why: str) -> None:
    """The command line, the machine, the method."""
    print("# hookkit benchmark\n")
    print(f"command: `cd {ROOT} && {command_line()}` (`make bench`)\n")
    print(
        f"machine: nproc {info['nproc']}, {info['cpu']}, Linux {info['kernel']}, "
        f"Python {info['python']}, gunicorn {info['gunicorn']}, hookkit {info['hookkit']}, "
        f"prometheus_client {info['prometheus_client']}, opentelemetry-sdk "
        f"{info['opentelemetry_sdk']}, structlog {info['structlog']}, wrk: {info['wrk']}; "
        f"load average {' '.join(info['loadavg_at_start'])}; busy before start: "
        + ", ".join(f"{name} {busy:.0%}" for name, busy in info["busy_before_start"].items())
        + "\n"
    )
    loadgen = "wrk" if tool == "wrk" else f"Python load generator (FALLBACK: {why})"
    print(
        f"method: {settings.rounds} rounds x {settings.seconds} s per configuration, interleaved "
        f"(rotated order), warm-up loads of {settings.warmup} s until at least "
        f"{settings.warmup_requests} requests were served; {loadgen}, {settings.connections} "
        f"connections, with the OTLP receiver on core {settings.client_cpu}; each server: "
        f"sync worker, 1 worker, core {settings.server_cpu}, `hello:app`, output to a file. "
        "gunicorn's sync worker closes every connection (no keep-alive), for all alike.\n",
        flush=True,
    )
    print(
        f"requests: `GET {REQUEST_PATH}` (route `{ITEM_ROUTE}`, which the app puts in "
        f"`environ['hookkit.route']`) from 127.0.0.1 (in gunicorn's default "
        f"forwarded_allow_ips), with `X-Forwarded-For: {FORWARDED_FOR}` and "
        "`X-Request-Start: t=<microseconds since the epoch>`, stamped per request ("
        + (
            "wrk: a Lua script, gettimeofday through LuaJIT's FFI, microsecond precision"
            if tool == "wrk"
            else "time.time_ns() // 1000 when the connection opens, microsecond precision"
        )
        + "); every configuration gets the same requests (bare and the hand-rolled peer "
        "ignore the headers and the route).\n",
        flush=True,
    )


def print_settings(configs: list[Config], receiver: str) -> None:
    """Each configuration's settings, one line each."""
    print("settings (environment of each configuration; hookkit's stated even where default):")
    for config in configs:
        print(settings_line(config, receiver))
    print(
        "- every configuration: `gunicorn -c <config> -b 127.0.0.1:<port> -k sync -w 1 "
        "--pythonpath benchmarks hello:app`; hookkit's with HOOKKIT_METRICS_BIND=127.0.0.1:"
        "<port>, `<receiver>` the OTLP/HTTP receiver on 127.0.0.1\n",
        flush=True,
    )


def print_report(result: dict[str, Any], configs: list[Config]) -> None:
    """The tables and notes on stdout."""
    print("## targets\n")
    print(render_targets(result["targets"]))
    print(
        f"\nmedian (min{DASH}max) over the rounds of each figure against the bare run of the "
        "same round; a target is met when the median is. implied throughput: bare's server "
        "CPU per request over the configuration's (what a saturated core would serve).\n"
    )
    print("## configurations\n")
    print(render_table(result["summary"], configs))
    print(
        f"\nmedian (min{DASH}max) over rounds; ratios and + differences against the bare run of "
        "the same round. server CPU: every process of the server's tree (master, worker, "
        "threads, reaped children), per request served. receiver CPU: the OTLP receiver "
        "process. memory: the worker after the warm-up (at least "
        f"{result['settings']['warmup_requests']} requests; USS = Private_Clean+Private_Dirty), "
        "and after the measured run."
    )
    if result.get("recycles"):
        print("\n## scrape after recycles\n")
        print(render_recycles(result["recycles"]))
    notes = result["anomalies"]
    print("\nanomalies: " + ("none" if not notes else ""))
    for note in notes:
        print(f"- {note}")
    print(
        f"\ntotal runtime {result['total_seconds']:.0f} s; load average at start "
        f"{' '.join(result['machine']['loadavg_at_start'])}, at end "
        f"{' '.join(result['loadavg_at_end'])}; raw numbers: {result['output']}"
    )


def pin_self(settings: Settings) -> None:
    """Keep this process (its polling and scraping) off the server core."""
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, {settings.client_cpu})


def _stop_on_signal(signum: int, frame: FrameType | None) -> None:
    """SIGTERM or SIGHUP: leave through the cleanup, as Ctrl-C does."""
    raise SystemExit(128 + signum)


@functools.cache
def has_no_control_socket() -> bool:
    """Whether this gunicorn has ``--no-control-socket``."""
    gunicorn = str(Path(sys.executable).with_name("gunicorn"))
    out = subprocess.run([gunicorn, "--help"], capture_output=True, text=True, check=False)
    return "--no-control-socket" in out.stdout


@contextlib.contextmanager
def cleanup(reaper: Reaper) -> Iterator[None]:
    """Stop every process on the way out, whatever the way."""
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _stop_on_signal)
    try:
        yield
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        reaper.stop_all()


def recycles_phase(reaper: Reaper, workdir: Path, settings: Settings) -> dict[str, Any] | None:
    """The scrape-after-recycles phase, unless ``BENCH_RECYCLES=0``; its
    failure is reported, not raised."""
    if not settings.recycles:
        return None
    try:
        return measure_recycles(reaper, workdir, settings)
    except (OSError, RuntimeError, ValueError, subprocess.SubprocessError) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


def benchmark(
    settings: Settings, reaper: Reaper, workdir: Path
) -> tuple[dict[str, Any], list[Config]]:
    """Everything: load rounds, then the recycles phase."""
    started = time.monotonic()
    tool, why = choose_loadgen(settings)
    info = machine_info() | {"busy_before_start": idle_check()}
    pin_self(settings)
    print_header(info, settings, tool, why)
    receiver, receiver_port = start_receiver(reaper, settings)
    receiver_url = f"http://127.0.0.1:{receiver_port}"
    configs = configurations(workdir, receiver_url)
    print_settings(configs, receiver_url)
    ctx = {"settings": settings, "tool": tool, "wrk_script": write_wrk_script(workdir)}
    ctx |= {"receiver_pid": receiver.pid, "receiver_port": receiver_port}
    ctx |= {"receiver_url": receiver_url}
    checks = check_setup(reaper, workdir, ctx, configs)
    print("checks before the rounds (a run of everything, the access line's client on):")
    print(render_checks(checks) + "\n", flush=True)
    if not all(check["ok"] for check in checks):
        details = json.dumps([c for c in checks if not c["ok"]], indent=1, default=str)
        raise SystemExit(f"the requests' settings did not take effect:\n{details}")
    runs = run_rounds(reaper, configs, workdir, ctx)
    reaper.stop(receiver)
    recycles = recycles_phase(reaper, workdir, settings)
    summary = summarize(runs, configs)
    result = {
        "command": command_line(),
        "machine": info,
        "settings": asdict(settings) | {"output": str(settings.output)},
        "loadgen": {"tool": tool, "fallback_reason": why},
        "load_command": load_command(tool, 0, settings.seconds, settings),
        "wrk_script": WRK_SCRIPT,
        "configs": [asdict(config) for config in configs],
        "settings_lines": [settings_line(config, receiver_url) for config in configs],
        "checks": checks,
        "runs": runs,
        "summary": summary,
        "targets": target_rows(summary, recycles, runs, settings),
        "anomalies": idle_anomalies(info) + anomalies(runs, configs),
        "recycles": recycles,
        "total_seconds": time.monotonic() - started,
        "loadavg_at_end": Path("/proc/loadavg").read_text().split()[:3],
        "output": str(settings.output),
    }
    return result, configs


def main() -> None:
    """Run the benchmark, print the report, write the JSON."""
    settings = Settings.from_env()
    if settings.rounds < 1 or settings.seconds < 1:
        raise SystemExit("BENCH_ROUNDS and BENCH_SECONDS must be at least 1")
    reaper = Reaper()
    with tempfile.TemporaryDirectory(prefix="hookkit-bench-") as tmp, cleanup(reaper):
        result, configs = benchmark(settings, reaper, Path(tmp))
    settings.output.write_text(json.dumps(result, indent=1) + "\n")
    print_report(result, configs)


def dispatch(argv: list[str]) -> None:
    """The benchmark, or one of its helper processes."""
    if argv[:1] == ["_receiver"]:
        serve_receiver(inspect=argv[1:2] == ["inspect"])
    elif argv[:1] == ["_loadgen"]:
        loadgen_main(int(argv[1]), float(argv[2]), int(argv[3]))
    else:
        try:
            main()
        except KeyboardInterrupt:
            print("interrupted: every process the benchmark started was stopped", file=sys.stderr)
            raise SystemExit(130) from None


if __name__ == "__main__":
    dispatch(sys.argv[1:])
