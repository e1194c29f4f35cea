"""``hookkit top``: a live terminal view of a gunicorn master's workers.

It reads ``/status.json`` from the master's endpoint once a second and
draws the master's line (workers live/desired, listen backlog, utilization,
requests per second), then one row per worker (slot, pid, state, requests
served, memory, CPU %, heartbeat age, its oldest request's method, path and
elapsed time), busy workers first and among them the oldest request first.
``q`` quits (exit status 0).

Plain ANSI escape codes rather than curses: the view is a list of lines
redrawn whole, which needs four codes (alternate screen, home, clear to end
of line, clear below) that every terminal of the last thirty years knows;
curses would add terminfo lookups, its own idea of the screen to keep in
step, and a second rendering path for pipes. Here one pure function
(``render``) makes the lines, for the terminal and for a pipe alike, and is
unit-tested as text.

In a pipe (stdout not a terminal) it prints one snapshot and exits, with no
escape code at all: ``hookkit top | grep busy`` works. A narrow terminal
drops the less useful columns first (served, memory, CPU, heartbeat) and
cuts the request's path last; no line is longer than the terminal.

Request paths are attacker-controlled: a path holding ``ESC [ 2 J`` must not
clear the reader's screen. Every value from the server goes through
``printable``, which replaces control characters (C0, DEL, C1, and the
Unicode bidirectional overrides that reorder what is shown) with ``?``.
"""

from __future__ import annotations

import argparse
import getpass
import os
import select
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from hookkit._face.fetch import FetchError, fetch_json

REFRESH_SECONDS = 1.0
DEFAULT_BIND = "127.0.0.1:9191"

# Characters that would move the cursor, recolour or reorder the screen.
_BIDI = {*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F, 0x061C}


def printable(text: object) -> str:
    """``text`` with every control character replaced by ``?``: C0 (ESC,
    CR, BEL, ...), DEL, C1 (a lone 0x9B is CSI to some terminals) and the
    bidirectional overrides."""
    value = "" if text is None else str(text)
    return "".join(
        "?" if (ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 or ord(c) in _BIDI) else c for c in value
    )


def fit(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters, an ellipsis marking the cut."""
    if width <= 0:
        return ""
    if len(text) <= width:
        return text
    return text[: width - 1] + "\u2026" if width > 1 else text[:width]


def status_url(url: str | None, environ: Mapping[str, str]) -> str:
    """The ``/status.json`` URL: ``url`` as given (``/status.json`` added to
    a bare address, ``/metrics`` replaced), else the local endpoint
    ``HOOKKIT_METRICS_BIND`` names (default 127.0.0.1:9191)."""
    if not url:
        bind = environ.get("HOOKKIT_METRICS_BIND", "").strip() or DEFAULT_BIND
        if bind.lower() == "none":
            bind = DEFAULT_BIND
        host, _, port = bind.rpartition(":")
        if host in ("0.0.0.0", ""):
            host = "127.0.0.1"
        elif host in ("[::]", "::"):
            host = "[::1]"
        url = f"http://{host}:{port}"
    if "://" not in url:
        url = "http://" + url
    scheme, _, rest = url.partition("://")
    host, _, path = rest.partition("/")
    path = path.rstrip("/")
    if not path or path in ("metrics", "status"):
        path = "status.json"
    return f"{scheme}://{host}/{path}"


def _bytes(value: object) -> str:
    if not isinstance(value, (int, float)):
        return "-"
    mib = value / 1048576
    return f"{mib:.0f}M" if mib >= 100 else f"{mib:.1f}M"


def _seconds(value: object) -> str:
    if not isinstance(value, (int, float)):
        return "-"
    if value < 60:
        return f"{value:.1f}s"
    if value < 3600:
        return f"{int(value // 60)}m{int(value % 60):02d}s"
    return f"{int(value // 3600)}h{int(value % 3600 // 60):02d}m"


def _oldest(worker: Mapping[str, Any]) -> float:
    requests = worker.get("requests") or []
    return max((float(r.get("elapsed_seconds") or 0) for r in requests), default=-1.0)


def ordered(workers: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Busy workers first, the oldest request first among them; then by slot."""

    def key(worker: Mapping[str, Any]) -> tuple[int, float, int]:
        slot = worker.get("slot")
        return (
            0 if worker.get("state") == "busy" else 1,
            -_oldest(worker),
            slot if isinstance(slot, int) else 1 << 30,
        )

    return sorted(workers, key=key)


@dataclass
class Rates:
    """What two snapshots tell that one cannot: requests per second and
    each worker's CPU % (without a previous snapshot, averages over the
    uptime stand in); and utilization, the requests in flight over the
    capacity."""

    previous: Mapping[str, Any] | None = None
    taken: float = 0.0
    cpu: dict[int, float] = field(default_factory=dict)

    def update(
        self, document: Mapping[str, Any], now: float
    ) -> tuple[float | None, float | None, dict[int, float]]:
        """(requests per second, utilization 0..1, CPU % by pid) from
        ``document`` taken at ``now`` (monotonic), and remember it."""
        master = document.get("master") or {}
        workers = document.get("workers") or []
        previous, elapsed = self.previous, now - self.taken
        rps = utilization = None
        cpu: dict[int, float] = {}
        capacity = master.get("capacity") or 0
        if previous is not None and elapsed > 0:
            before = previous.get("master") or {}
            requests, requests_before = master.get("requests_total"), before.get("requests_total")
            if isinstance(requests, (int, float)) and isinstance(requests_before, (int, float)):
                rps = max(0.0, (requests - requests_before) / elapsed)
        else:
            uptime = master.get("uptime_seconds")
            requests = master.get("requests_total")
            if (
                isinstance(uptime, (int, float))
                and uptime > 0
                and isinstance(requests, (int, float))
            ):
                rps = requests / uptime
        if capacity:
            # Requests in flight now, over what the workers can run at once:
            # busy seconds count a request only once it ends, and a view of
            # now must show the request that hangs.
            flying = sum(
                len(w.get("requests") or []) + int(w.get("requests_not_shown") or 0)
                for w in workers
            )
            utilization = flying / capacity
        for worker in workers:
            pid, seconds = worker.get("pid"), worker.get("cpu_seconds")
            if not isinstance(pid, int) or not isinstance(seconds, (int, float)):
                continue
            if previous is not None and pid in self.cpu and elapsed > 0:
                cpu[pid] = max(0.0, (seconds - self.cpu[pid]) / elapsed * 100)
            else:
                uptime = worker.get("uptime_seconds")
                if isinstance(uptime, (int, float)) and uptime > 0:
                    cpu[pid] = seconds / uptime * 100
        self.previous, self.taken = document, now
        self.cpu = {
            w["pid"]: float(w["cpu_seconds"])
            for w in workers
            if isinstance(w.get("pid"), int) and isinstance(w.get("cpu_seconds"), (int, float))
        }
        return rps, utilization, cpu


# Worker columns: (header, width, priority). The lowest priority goes first
# when the terminal is too narrow; the request column takes what is left.
_COLUMNS = (
    ("SLOT", 4, 9),
    ("PID", 7, 9),
    ("STATE", 8, 8),
    ("SERVED", 7, 3),
    ("RSS", 6, 2),
    ("CPU%", 5, 4),
    ("HB", 6, 1),
)
_REQUEST_MIN = 16
_KEEP = 8  # columns of this priority or more are never dropped


def _columns(width: int, wanted: int = _REQUEST_MIN) -> list[tuple[str, int]]:
    """The columns that fit in ``width`` beside a request column of
    ``wanted`` characters (at least ``_REQUEST_MIN``), in their order; the
    least useful go first."""
    kept = list(_COLUMNS)
    wanted = max(_REQUEST_MIN, wanted)
    while sum(w + 1 for _, w, _ in kept) + wanted > width:
        droppable = [column for column in kept if column[2] < _KEEP]
        if not droppable:
            break  # slot, pid and state always stay
        kept.remove(min(droppable, key=lambda column: column[2]))
    return [(name, w) for name, w, _ in kept]


def _wrap(parts: Sequence[str], width: int) -> list[str]:
    """``parts`` joined by two spaces, onto as many lines as ``width`` needs."""
    lines: list[str] = []
    line = ""
    for part in parts:
        candidate = f"{line}  {part}" if line else part
        if len(candidate) > width and line:
            lines.append(line)
            line = part
        else:
            line = candidate
    if line:
        lines.append(line)
    return [fit(text, width) for text in lines]


def _request_parts(worker: Mapping[str, Any]) -> tuple[str, str, str]:
    """(method, path, " elapsed +more") of a worker's oldest request, made
    printable; the route stands in for a path the server did not show."""
    requests = worker.get("requests") or []
    oldest = max(requests, key=lambda r: float(r.get("elapsed_seconds") or 0), default=None)
    if oldest is None:
        return "", "", ""
    shown = oldest.get("path")
    if shown is None:
        shown = oldest.get("route") or "(path hidden)"
    more = len(requests) - 1 + int(worker.get("requests_not_shown") or 0)
    extra = f" +{more}" if more > 0 else ""
    tail = f" {_seconds(oldest.get('elapsed_seconds'))}{extra}"
    return printable(oldest.get("method", "")), printable(shown), tail


def render(
    document: Mapping[str, Any],
    width: int,
    rates: tuple[float | None, float | None, dict[int, float]] = (None, None, {}),
    url: str = "",
) -> list[str]:
    """The lines of one view of ``document``, none longer than ``width``,
    every server value made ``printable``."""
    width = max(width, 20)
    master = document.get("master") or {}
    workers = list(document.get("workers") or [])
    rps, utilization, cpu = rates
    backlog_values = [
        entry.get("backlog")
        for entry in master.get("listen_backlog") or []
        if isinstance(entry, Mapping)
    ]
    known = [v for v in backlog_values if isinstance(v, int)]
    backlog = str(sum(known)) if known else "n/a"
    busy = sum(1 for w in workers if w.get("state") == "busy")
    parts = [
        printable(f"gunicorn {master.get('pid', '?')} {master.get('worker_class', '')}"),
        f"workers {master.get('workers_live', '?')}/{master.get('workers_desired', '?')}",
        f"busy {busy}",
        f"backlog {backlog}",
        f"util {utilization * 100:.0f}%" if utilization is not None else "util -",
        f"{rps:.1f} req/s" if rps is not None else "- req/s",
        f"up {_seconds(master.get('uptime_seconds'))}",
    ]
    lines = _wrap(parts, width)
    if url:
        lines.append(fit(printable(url), width))
    lines.append("")
    rows = [(worker, _request_parts(worker)) for worker in ordered(workers)]
    wanted = max((len(m) + 1 + len(p) + len(t) for _, (m, p, t) in rows), default=0)
    columns = _columns(width, min(wanted, 60))
    fixed = sum(w + 1 for _, w in columns)
    request_width = max(0, width - fixed)
    header = "".join(f"{name:<{w}} " for name, w in columns) + "REQUEST"
    lines.append(fit(header, width))
    for worker, (method, shown, times) in rows:
        pid = worker.get("pid")
        cpu_text = f"{cpu[pid]:.1f}" if isinstance(pid, int) and pid in cpu else "-"
        values = {
            "SLOT": "-" if worker.get("slot") is None else str(worker.get("slot")),
            "PID": str(pid),
            "STATE": str(worker.get("state", "")),
            "SERVED": "-"
            if worker.get("requests_served") is None
            else str(worker.get("requests_served")),
            "RSS": _bytes(worker.get("rss_bytes")),
            "CPU%": cpu_text,
            "HB": _seconds(worker.get("heartbeat_age_seconds")),
        }
        row = "".join(f"{fit(printable(values[name]), w):<{w}} " for name, w in columns)
        request = ""
        if method or shown:
            tail = times
            room = max(0, request_width - len(method) - 1 - len(tail))
            if room < 8:  # too narrow for both: the path before the times
                tail = ""
                room = max(0, request_width - len(method) - 1)
            request = f"{method} {fit(shown, room)}{tail}"
        lines.append(fit(row + request, width))
    if not workers:
        lines.append("(no live worker)")
    return lines


# -- the terminal ---------------------------------------------------------

_ENTER = "\x1b[?1049h\x1b[?25l"  # alternate screen, cursor hidden
_LEAVE = "\x1b[?25h\x1b[?1049l"
_HOME = "\x1b[H"
_EOL = "\x1b[K"
_BELOW = "\x1b[J"


def _frame(lines: Sequence[str], height: int) -> str:
    """One redraw: home, each line cleared to its end, the rest cleared."""
    shown = list(lines[: max(1, height)])
    return _HOME + "\r\n".join(line + _EOL for line in shown) + _BELOW


def _terminal_size(out: TextIO) -> os.terminal_size:
    """The terminal's size now (it changes when the window does): asked of
    the terminal itself, as ``COLUMNS`` / ``LINES`` in the environment are
    often stale or inherited from another terminal."""
    try:
        return os.get_terminal_size(out.fileno())
    except (OSError, ValueError):
        return shutil.get_terminal_size()


def run_terminal(
    fetch: Callable[[], Any], out: TextIO, fd: int, url: str, refresh: float = REFRESH_SECONDS
) -> int:
    """Redraw every ``refresh`` seconds until ``q``; 0 then."""
    import termios
    import tty

    saved = termios.tcgetattr(fd)
    rates = Rates()
    out.write(_ENTER)
    try:
        tty.setcbreak(fd)
        while True:
            size = _terminal_size(out)
            try:
                document = fetch()
                lines = render(
                    document, size.columns, rates.update(document, time.monotonic()), url
                )
            except FetchError as exc:
                lines = [fit(printable(f"hookkit top: {exc}"), size.columns), "", "retrying"]
            lines.append("")
            lines.append(fit("q: quit", size.columns))
            out.write(_frame(lines, size.lines))
            out.flush()
            deadline = time.monotonic() + refresh
            while (remaining := deadline - time.monotonic()) > 0:
                readable, _, _ = select.select([fd], [], [], remaining)
                if readable:
                    typed = os.read(fd, 64)
                    if not typed or b"q" in typed.lower():
                        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        out.write(_LEAVE)
        out.flush()


def password_from(user: str | None, env_name: str | None, environ: Mapping[str, str]) -> str | None:
    """The password: from the variable ``env_name`` names (never a
    ``HOOKKIT_*`` one: that namespace is hookkit's settings, which gunicorn
    refuses unknown names of, and a secret does not belong beside them), else
    typed at a prompt; None without ``user``."""
    if user is None:
        return None
    if env_name is not None:
        if env_name.upper().startswith("HOOKKIT_"):
            raise ValueError(
                f"--password-env {env_name}: HOOKKIT_* names are hookkit's settings; "
                "keep the password in a variable of another name"
            )
        if env_name not in environ:
            raise ValueError(f"--password-env {env_name}: the variable is not set")
        return environ[env_name]
    return getpass.getpass(f"password for {user}: ")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``hookkit top``'s arguments."""
    parser.add_argument(
        "url",
        nargs="?",
        help="the master's endpoint (default: http://HOOKKIT_METRICS_BIND, else 127.0.0.1:9191)",
    )
    parser.add_argument("--user", help="basic auth user (the password is asked for)")
    parser.add_argument(
        "--password-env",
        metavar="NAME",
        help="read the password from the environment variable NAME (not a HOOKKIT_* one)",
    )
    parser.add_argument(
        "--cacert", help="PEM file of the CA that signed the endpoint's certificate"
    )


def main(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """``hookkit top``: live in a terminal, one snapshot in a pipe."""
    out = out if out is not None else sys.stdout
    url = status_url(args.url, os.environ)
    try:
        password = password_from(args.user, args.password_env, os.environ)
    except ValueError as exc:
        print(f"hookkit top: {exc}", file=sys.stderr)
        return 2

    def fetch() -> Any:
        document = fetch_json(url, args.user, password, args.cacert)
        if not isinstance(document, Mapping) or "workers" not in document:
            raise FetchError(f"{url}: not a status document (is HOOKKIT_STATUS on?)")
        return document

    interactive = out.isatty() and sys.stdin.isatty()
    if interactive:
        return run_terminal(fetch, out, sys.stdin.fileno(), url)
    try:
        document = fetch()
    except FetchError as exc:
        print(f"hookkit top: {exc}", file=sys.stderr)
        return 1
    width = shutil.get_terminal_size((120, 24)).columns
    rates = Rates().update(document, time.monotonic())
    for line in render(document, width, rates):
        out.write(line + "\n")
    return 0
