"""Preview images of the dashboards, drawn from a real Prometheus.

    .venv/bin/python dashboards/render_previews.py   # needs the dev extra (matplotlib)

Starts a real gunicorn with hookkit (tests/apps/metrics_app.py) and a real
Prometheus (tests/prom.py) on 127.0.0.1, drives about 80 s of traffic
(mixed statuses, routes, slow and CPU-heavy requests, a request past the
timeout, a SIGKILLed worker, a SIGHUP, a TTIN), then runs every panel's
queries through Prometheus's HTTP API (``$job`` and ``$instance`` as ".+",
as Grafana's "All" sends them, ``$__rate_interval`` as 15s) and draws each
dashboard's grid with matplotlib: preview-overview.png, preview-workers.png.
Not Grafana's rendering, but the same queries and the same layout. Every
process is stopped by PID.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import random
import re
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib import colors, ticker
from PIL import Image

HERE = Path(__file__).parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))  # hookkit, tests.prom, and build.py's module
sys.path.insert(0, str(HERE))

from build import build_dashboards  # noqa: E402

from hookkit._face.gunicorn_process import Gunicorn, free_port, http_get, match  # noqa: E402
from tests.prom import prometheus  # noqa: E402

SUBSTITUTIONS = {"$__rate_interval": "15s", "$job": ".+", "$instance": ".+"}
STEP = 2  # seconds between points
TIMEOUT = 5  # gunicorn's --timeout: one request is made to run past it
OUTPUTS = {
    "hookkit-overview.json": "preview-overview.png",
    "hookkit-workers.json": "preview-workers.png",
}


# -- the scenario -------------------------------------------------------------


def start_gunicorn(workdir: str) -> tuple[Gunicorn, int, int]:
    from gunicorn.config import KNOWN_SETTINGS

    port, metrics_port = free_port(), free_port()
    names = {setting.name for setting in KNOWN_SETTINGS}
    no_control = ["--no-control-socket"] if "control_socket_disable" in names else []
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HOOKKIT_", "GUNICORN_"))}
    env["PYTHONPATH"] = str(ROOT / "tests")
    env["HOOKKIT_METRICS_BIND"] = f"127.0.0.1:{metrics_port}"
    server = Gunicorn(
        [
            *("-c", "python:hookkit.conf", "-b", f"127.0.0.1:{port}", "-w", "3"),
            *("--timeout", str(TIMEOUT), "--graceful-timeout", "3", *no_control),
            "apps.metrics_app:app",
        ],
        env=env,
        cwd=workdir,
    )
    server.start()
    server.wait_for(match(event="worker_booted"), count=3, timeout=30)
    return server, port, metrics_port


def client(port: int, stop: threading.Event, seed: int) -> None:
    """Mixed traffic until ``stop``: mostly 200s, some 4xx and 5xx, routes,
    slow and CPU-heavy requests, with a proxy's queue-time stamps."""
    rng = random.Random(seed)
    paths = (
        ["/"] * 10
        + ["/routed/users", "/routed/orders", "/routed/orders", "/routed/health"] * 2
        + ["/status/404", "/status/404", "/status/401", "/status/503", "/raise"]
        + ["/sleep?0.15", "/sleep?0.4", "/sleep?0.9", "/burn?0.05"]
    )
    while not stop.is_set():
        # As behind a proxy (127.0.0.1 is trusted): most requests stamped
        # with X-Request-Start a few milliseconds ago, a few malformed.
        stamp = f"t={time.time() - rng.uniform(0.0005, 0.03):.3f}"
        headers = {"X-Request-Start": stamp if rng.random() > 0.02 else "t=soon"}
        http_get(port, rng.choice(paths), timeout=15, headers=headers)
        time.sleep(rng.uniform(0.01, 0.08))


def drive(server: Gunicorn, port: int, seconds: float) -> None:
    stop = threading.Event()
    clients = [threading.Thread(target=client, args=(port, stop, seed)) for seed in range(4)]
    for thread in clients:
        thread.start()
    started = time.monotonic()

    def at(offset: float) -> None:
        time.sleep(max(0.0, started + offset - time.monotonic()))

    try:
        at(15)
        print("SIGKILL a worker", flush=True)
        os.kill(server.live_workers()[0], signal.SIGKILL)
        at(25)
        print(f"a request past the {TIMEOUT} s timeout", flush=True)
        threading.Thread(target=http_get, args=(port, "/sleep?20", 25), daemon=True).start()
        at(42)
        print("SIGHUP", flush=True)
        server.signal(signal.SIGHUP)
        at(58)
        print("SIGTTIN", flush=True)
        server.signal(signal.SIGTTIN)
        at(seconds)
    finally:
        stop.set()
        for thread in clients:
            thread.join(20)


# -- queries ------------------------------------------------------------------


def grafana_expr(expr: str) -> str:
    for variable, value in SUBSTITUTIONS.items():
        expr = expr.replace(variable, value)
    return expr


def legend(fmt: str, labels: dict[str, str]) -> str:
    if fmt in ("", "__auto"):
        return ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) or "value"
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt)


def run_panel(prom: Any, panel: dict[str, Any], start: float, end: float) -> list[dict[str, Any]]:
    """Each target's series: {"ref", "label", "labels", "t", "v"}."""
    series = []
    for target in panel["targets"]:
        expr = grafana_expr(target["expr"])
        if target.get("instant"):
            t0 = t1 = end
        else:
            t0, t1 = start, end
        for result in prom.query_range(expr, t0, t1, step=f"{STEP}s"):
            points = [(float(t), float(v)) for t, v in result["values"]]
            series.append(
                {
                    "ref": target["refId"],
                    "label": legend(target.get("legendFormat", ""), result["metric"]),
                    "labels": result["metric"],
                    "t": [t - start for t, _ in points],
                    "v": [v for _, v in points],
                }
            )
    return series


# -- drawing --------------------------------------------------------------------


def fmt(value: float, unit: str) -> str:
    if value is None or math.isnan(value):
        return "-"
    if unit == "percentunit":
        return f"{value * 100:.1f}%"
    if unit == "reqps":
        return f"{value:.1f} req/s"
    if unit == "s":
        if value >= 3600:
            return f"{value / 3600:.1f} h"
        if value >= 60:
            return f"{value / 60:.1f} min"
        if value < 1:
            return f"{value * 1000:.0f} ms"
        return f"{value:.2f} s" if value < 10 else f"{value:.0f} s"
    if unit == "bytes":
        return f"{value / 2**20:.0f} MiB"
    return f"{value:.3g}"


def axis_formatter(unit: str) -> Any:
    return ticker.FuncFormatter(lambda value, _: fmt(value, unit))


def draw_timeseries(ax: Any, panel: dict[str, Any], series: list[dict[str, Any]]) -> None:
    unit = panel["fieldConfig"]["defaults"]["unit"]
    custom = panel["fieldConfig"]["defaults"].get("custom", {})
    bars = custom.get("drawStyle") == "bars"
    stacked = "stacking" in custom
    if stacked and series:
        grid = sorted({t for s in series for t in s["t"]})
        stack = [[dict(zip(s["t"], s["v"], strict=True)).get(t, 0.0) for t in grid] for s in series]
        stack = [[0.0 if math.isnan(v) else v for v in row] for row in stack]
        ax.stackplot(grid, *stack, labels=[s["label"] for s in series], alpha=0.8)
    else:
        bottom: dict[float, float] = {}
        for s in series:
            if bars:
                base = [bottom.get(t, 0.0) for t in s["t"]]
                ax.bar(s["t"], s["v"], width=STEP, bottom=base, label=s["label"], align="edge")
                for t, v in zip(s["t"], s["v"], strict=True):
                    bottom[t] = bottom.get(t, 0.0) + (0.0 if math.isnan(v) else v)
            else:
                ax.plot(s["t"], s["v"], label=s["label"], linewidth=1.2)
    ax.yaxis.set_major_formatter(axis_formatter(unit))
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda t, _: f"{t:.0f}s"))
    ax.set_ylim(bottom=0)
    if series:
        _, top = ax.get_ylim()
        ax.set_ylim(0, top * 1.35)  # headroom for the legend
        ax.legend(fontsize=6, loc="upper left", ncol=3, frameon=False, handlelength=1)


def draw_stat(ax: Any, panel: dict[str, Any], series: list[dict[str, Any]]) -> None:
    unit = panel["fieldConfig"]["defaults"]["unit"]
    values = [v for s in series for v in s["v"] if not math.isnan(v)]
    last = (
        next((v for v in reversed(series[0]["v"]) if not math.isnan(v)), None) if series else None
    )
    if series:
        ax.fill_between(series[0]["t"], series[0]["v"], alpha=0.15, color="tab:green")
        ax.set_ylim(0, (max(values) if values else 1) * 1.6 or 1)
    ax.text(
        0.5,
        0.45,
        fmt(last, unit) if last is not None else "No data",
        transform=ax.transAxes,
        ha="center",
        va="center",
        fontsize=18,
        color="tab:green",
        weight="bold",
    )
    ax.set_xticks([])
    ax.set_yticks([])


def draw_heatmap(ax: Any, panel: dict[str, Any], series: list[dict[str, Any]]) -> None:
    """Cumulative bucket rates to per-bucket rates, one column per step."""
    buckets = sorted(series, key=lambda s: float(s["labels"]["le"]))
    if not buckets:
        return
    grid = sorted({t for s in buckets for t in s["t"]})
    cumulative = [
        [dict(zip(s["t"], s["v"], strict=True)).get(t, 0.0) for t in grid] for s in buckets
    ]
    cells = []
    for i, row in enumerate(cumulative):
        below = cumulative[i - 1] if i else [0.0] * len(grid)
        cells.append([max(0.0, a - b) for a, b in zip(row, below, strict=True)])
    used = [i for i, row in enumerate(cells) if any(v > 1e-9 for v in row)]
    top = (max(used) + 1) if used else len(cells)
    # Empty cells blank, as Grafana leaves them.
    cells = [[v if v > 0 else math.nan for v in row] for row in cells[:top]]
    ax.imshow(
        cells,
        aspect="auto",
        origin="lower",
        cmap=matplotlib.colormaps["Spectral_r"].with_extremes(bad="white"),
        interpolation="nearest",
        extent=(grid[0], grid[-1] + STEP, 0, len(cells)),
        norm=colors.PowerNorm(0.5),
    )
    labels = [buckets[i]["labels"]["le"] for i in range(top)]
    ax.set_yticks([i + 0.5 for i in range(top)], [f"≤{fmt(float(le), 's')}" for le in labels])
    ax.tick_params(axis="y", labelsize=5)
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda t, _: f"{t:.0f}s"))


def draw_table(ax: Any, panel: dict[str, Any], series: list[dict[str, Any]]) -> None:
    renames = panel["transformations"][1]["options"]["renameByName"]
    units = {
        o["matcher"]["options"]: o["properties"][0]["value"]
        for o in panel["fieldConfig"]["overrides"]
    }
    headers = [renames[f"Value #{t['refId']}"] for t in panel["targets"]]
    rows: dict[str, dict[str, float]] = {}
    for s in series:
        header = renames[f"Value #{s['ref']}"]
        rows.setdefault(s["labels"].get("http_route", ""), {})[header] = s["v"][-1]
    ordered = sorted(rows.items(), key=lambda kv: -kv[1].get(headers[0], 0.0))
    cells = [
        [route] + [fmt(values.get(h, math.nan), units[h]) for h in headers]
        for route, values in ordered
    ]
    ax.axis("off")
    if cells:
        table = ax.table(
            cellText=cells, colLabels=["http_route", *headers], loc="upper center", cellLoc="left"
        )
        table.auto_set_font_size(False)
        table.set_fontsize(8)
        table.scale(1, 1.3)


DRAW = {
    "timeseries": draw_timeseries,
    "stat": draw_stat,
    "heatmap": draw_heatmap,
    "table": draw_table,
}


def render(dashboard: dict[str, Any], results: dict[int, list[dict[str, Any]]], path: Path) -> None:
    panels = dashboard["panels"]
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    unit_h = 0.32  # inches per grid row
    header = 0.6
    height = rows * unit_h + header
    fig = plt.figure(figsize=(16, height))
    fig.text(
        0.01,
        1 - 0.35 / height,
        f"{dashboard['title']}   (preview: the dashboard's queries on a real Prometheus,"
        " drawn with matplotlib)",
        fontsize=12,
        weight="bold",
        va="center",
    )
    for panel in panels:
        pos = panel["gridPos"]
        # Room on the left for the y tick labels, except for stats and tables.
        pad_left = 0.006 if panel["type"] in ("stat", "table") else 0.045
        pad_right, pad_top, pad_bottom = 0.006, 0.42, 0.42
        left = pos["x"] / 24 + pad_left
        width = pos["w"] / 24 - pad_left - pad_right
        top_in = header + pos["y"] * unit_h + pad_top
        height_in = pos["h"] * unit_h - pad_top - pad_bottom
        ax = fig.add_axes((left, 1 - (top_in + height_in) / height, width, height_in / height))
        ax.set_title(panel["title"], fontsize=9, loc="left", weight="bold")
        ax.tick_params(labelsize=6)
        for spine in ax.spines.values():
            spine.set_color("#bbbbbb")
        series = results[panel["id"]]
        DRAW[panel["type"]](ax, panel, series)
        if not series:
            ax.text(0.5, 0.5, "No data", transform=ax.transAxes, ha="center", color="gray")
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=80, format="png")
    plt.close(fig)
    buffer.seek(0)
    # A 256-colour palette keeps the file small enough to commit.
    Image.open(buffer).convert("RGB").quantize(colors=256).save(path, optimize=True)
    print(f"wrote {path} ({path.stat().st_size // 1024} KiB)", flush=True)


def main(seconds: float = 80.0) -> None:
    dashboards = build_dashboards()
    with tempfile.TemporaryDirectory(prefix="hookkit-previews-") as workdir:
        server, port, metrics_port = start_gunicorn(workdir)
        try:
            with prometheus([f"127.0.0.1:{metrics_port}"]) as prom:
                prom.wait_healthy(timeout=30)
                start = time.time()
                print(f"driving {seconds:.0f} s of traffic", flush=True)
                drive(server, port, seconds)
                time.sleep(4)  # a few more scrapes
                end = time.time()
                for name, dashboard in dashboards.items():
                    results = {p["id"]: run_panel(prom, p, start, end) for p in dashboard["panels"]}
                    empty = [p["title"] for p in dashboard["panels"] if not results[p["id"]]]
                    if empty:
                        print(f"{name}: no data for {empty}", flush=True)
                    render(dashboard, results, HERE / OUTPUTS[name])
        finally:
            with contextlib.suppress(Exception):
                server.stop()


if __name__ == "__main__":
    main(float(sys.argv[1]) if len(sys.argv) > 1 else 80.0)
