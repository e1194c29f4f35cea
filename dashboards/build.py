"""Generate hookkit's Grafana dashboards from code.

    python dashboards/build.py      # writes hookkit-overview.json, hookkit-workers.json

``build_dashboards()`` returns them as dicts (file name to dashboard), for
the tests to compare with the committed files. Plain Python and json only.

Conventions every panel follows (tests/test_dashboards.py checks them):
the ``$datasource`` variable on the panel and on each target; every selector
filtered by ``job=~"$job", instance=~"$instance"``; ``$__rate_interval`` in
every rate/irate/increase; counters (``_total``, ``_bucket``, ``_count``,
``_sum``) only inside those functions; a title, a description and a unit.

Both dashboards carry the same annotations (``ANNOTATIONS``): reloads, master
starts (a restart or a USR2 re-exec) and worker timeouts, each one mark per
event (see ``annotations()``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
TAGS = ["hookkit", "gunicorn"]
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# Every selector carries these; sel() adds them.
FILTER = 'job=~"$job", instance=~"$instance"'
RANGE = "[$__rate_interval]"
# Any metric the master always exports, for the job and instance variables.
ALWAYS_THERE = "gunicorn_master_start_time_seconds"

Panel = dict[str, Any]


# -- PromQL helpers ---------------------------------------------------------


def sel(metric: str, extra: str = "") -> str:
    """``metric{job=~"$job", instance=~"$instance"[, extra]}``."""
    return f"{metric}{{{FILTER}{', ' + extra if extra else ''}}}"


def rate(metric: str, extra: str = "") -> str:
    return f"rate({sel(metric, extra)}{RANGE})"


def increase(metric: str, extra: str = "") -> str:
    return f"increase({sel(metric, extra)}{RANGE})"


def step_increase(metric: str, extra: str = "") -> str:
    """How much counter ``metric`` rose since the previous step of the query.

    Its value now, less its last value up to the previous step (``offset
    $__interval``: Grafana sets ``$__interval`` to the query's step, so the
    steps tile time): an increment shows at the one step where its first
    sample is the newest, whatever the step and the scrape interval.
    ``last_over_time`` over ``$__rate_interval`` rather than the value at the
    previous step, so that a failed scrape there (the series stale for a
    moment) loses no mark. ``increase(...[$__interval])`` would miss
    increments that straddle two windows (and see nothing with a step under
    two scrapes); a longer window would show one event at several
    consecutive steps, which Grafana joins into a band. A reset (a fresh
    start) is negative: no mark.
    """
    now = sel(metric, extra)
    return f"({now} - last_over_time({now}[$__rate_interval] offset $__interval)) > 0"


def quantile(q: float, histogram: str, by: str = "", extra: str = "") -> str:
    """``histogram_quantile`` of ``histogram``'s buckets, summed ``by`` (and le)."""
    labels = ", ".join(["le", *filter(None, [by])])
    return f"histogram_quantile({q}, sum by ({labels}) ({rate(histogram + '_bucket', extra)}))"


REQUESTS = "http_server_request_duration_seconds"
QUEUE = "http_server_request_queue_duration_seconds"
SERVER_ERROR = 'http_response_status_code=~"5.."'
ROUTED = 'http_route!=""'
ALL_REQUESTS = f"sum({rate(REQUESTS + '_count')})"
ERRORS = f"sum({rate(REQUESTS + '_count', SERVER_ERROR)})"


# -- panels -------------------------------------------------------------------


def target(expr: str, legend: str = "", ref: str = "A", **extra: Any) -> dict[str, Any]:
    return {
        "datasource": DATASOURCE,
        "expr": expr,
        "legendFormat": legend or "__auto",
        "refId": ref,
        **extra,
    }


def targets(*queries: tuple[str, str]) -> list[dict[str, Any]]:
    """(expr, legend) pairs as targets A, B, C..."""
    return [target(expr, legend, chr(ord("A") + i)) for i, (expr, legend) in enumerate(queries)]


# Panels that draw exemplars over time; a stat's reduction and an instant
# table would take Grafana's extra exemplar frame for data.
DRAWS_EXEMPLARS = ("timeseries", "heatmap")


def panel(
    kind: str, title: str, description: str, unit: str, queries: list[dict[str, Any]], **extra: Any
) -> Panel:
    if kind in DRAWS_EXEMPLARS:
        # The request latency's exemplars (hookkit's OpenMetrics /metrics): trace ids as dots.
        queries = [
            {**q, "exemplar": True} if f"{REQUESTS}_bucket{{" in q["expr"] else q for q in queries
        ]
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": queries,
        **extra,
    }


def timeseries(
    title: str,
    description: str,
    unit: str,
    *queries: tuple[str, str],
    bars: bool = False,
    stack: bool = False,
) -> Panel:
    p = panel("timeseries", title, description, unit, targets(*queries))
    custom: dict[str, Any] = {"fillOpacity": 10, "showPoints": "never", "spanNulls": False}
    if bars:
        custom.update(drawStyle="bars", fillOpacity=80)
    if stack:
        custom["stacking"] = {"mode": "normal", "group": "A"}
    p["fieldConfig"]["defaults"]["custom"] = custom
    p["options"] = {
        "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
        "tooltip": {"mode": "multi", "sort": "desc"},
    }
    return p


def stat(
    title: str,
    description: str,
    unit: str,
    expr: str,
    thresholds: list[tuple[float | None, str]] | None = None,
) -> Panel:
    p = panel("stat", title, description, unit, targets((expr, title)))
    steps = [{"color": color, "value": value} for value, color in (thresholds or [(None, "green")])]
    p["fieldConfig"]["defaults"]["thresholds"] = {"mode": "absolute", "steps": steps}
    p["options"] = {
        "colorMode": "value",
        "graphMode": "area",
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "textMode": "value",
    }
    return p


def heatmap(title: str, description: str, expr: str, bucket_unit: str) -> Panel:
    p = panel("heatmap", title, description, "reqps", [target(expr, "{{le}}", format="heatmap")])
    p["options"] = {
        "calculate": False,
        "cellGap": 1,
        "color": {"mode": "scheme", "scheme": "Spectral", "scale": "exponential", "exponent": 0.5},
        "yAxis": {"axisPlacement": "left", "unit": bucket_unit},
        "rowsFrame": {"layout": "auto"},
        "tooltip": {"show": True, "yHistogram": True},
    }
    return p


def table(
    title: str, description: str, unit: str, *columns: tuple[str, str, str], by: str
) -> Panel:
    """One instant query per column (expr, header, unit), merged on ``by``."""
    queries = [
        target(expr, "", chr(ord("A") + i), format="table", instant=True, range=False)
        for i, (expr, _, _) in enumerate(columns)
    ]
    p = panel("table", title, description, unit, queries)
    renames = {f"Value #{chr(ord('A') + i)}": header for i, (_, header, _) in enumerate(columns)}
    p["fieldConfig"]["overrides"] = [
        {
            "matcher": {"id": "byName", "options": header},
            "properties": [{"id": "unit", "value": col_unit}],
        }
        for _, header, col_unit in columns
    ]
    p["transformations"] = [
        {"id": "merge", "options": {}},
        {
            "id": "organize",
            "options": {"excludeByName": {"Time": True}, "renameByName": renames},
        },
    ]
    p["options"] = {"showHeader": True, "sortBy": [{"displayName": columns[0][1], "desc": True}]}
    return p


def layout(rows: list[list[tuple[Panel, int, int]]]) -> list[Panel]:
    """Rows of (panel, width, height) on Grafana's 24-column grid; ids in order."""
    placed: list[Panel] = []
    y = 0
    for row in rows:
        x = 0
        for p, width, height in row:
            placed.append(
                {**p, "id": len(placed) + 1, "gridPos": {"x": x, "y": y, "w": width, "h": height}}
            )
            x += width
        assert x <= 24, f"row too wide: {[p['title'] for p, _, _ in row]}"
        y += max(height for _, _, height in row)
    return placed


# -- dashboards ---------------------------------------------------------------


def variables() -> list[dict[str, Any]]:
    def query_variable(name: str, query: str) -> dict[str, Any]:
        return {
            "name": name,
            "label": name,
            "type": "query",
            "datasource": DATASOURCE,
            "definition": query,
            "query": {"query": query, "refId": f"{name}-variable"},
            "refresh": 2,  # on time range change
            "multi": True,
            "includeAll": True,
            "allValue": ".+",
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
            "sort": 1,
            "hide": 0,
        }

    return [
        {
            "name": "datasource",
            "label": "Data source",
            "type": "datasource",
            "query": "prometheus",
            "current": {"selected": False, "text": "${DS_PROMETHEUS}", "value": "${DS_PROMETHEUS}"},
            "hide": 0,
            "refresh": 1,
            "regex": "",
        },
        query_variable("job", f"label_values({ALWAYS_THERE}, job)"),
        query_variable("instance", f'label_values({ALWAYS_THERE}{{job=~"$job"}}, instance)'),
    ]


# Grafana's own entry (annotations and alerts made in Grafana), as Grafana writes it.
BUILT_IN_ANNOTATION = {
    "builtIn": 1,
    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
    "enable": True,
    "hide": True,
    "iconColor": "rgba(0, 211, 255, 1)",
    "name": "Annotations & Alerts",
    "type": "dashboard",
}
# The smallest step of the annotation queries: Grafana uses a larger one for a
# long time range. The expressions give one mark per event at any step.
ANNOTATION_STEP = "15s"
START = "gunicorn_master_start_time_seconds"
TIMEOUT = 'reason="timeout"'


def master_starts() -> str:
    """A mark where a master starts: a fresh start, a restart or a USR2 re-exec.

    A new master is a new value of its start time, in the same series (no pid
    label). ``newest`` is the newest start time scraped during this step,
    ``before`` the newest in the ``$__rate_interval`` (4 scrapes at least)
    before the previous step. A mark where ``newest`` is later, or where there
    was nothing before (the old master's series ended, stale, longer ago:
    a restart after a pause; also an instance scraped for the first time, or
    again after scrapes failed for longer than that). Maxima,
    not the last sample: while a USR2's two masters share the port, scrapes
    alternate between the old start time and the new one, and neither going
    back nor coming again is a new mark (as long as some scrape reaches the
    new master in every ``$__rate_interval``; stop the old one soon).
    """
    newest = f"max_over_time({sel(START)}[$__interval])"
    before = f"max_over_time({sel(START)}[$__rate_interval] offset $__interval)"
    return f"({newest} > {before}) or ({newest} unless {before})"


def annotation(name: str, expr: str, title: str, color: str) -> dict[str, Any]:
    """A Prometheus annotation: a mark at each step where ``expr`` is above 0."""
    return {
        "name": name,
        "datasource": DATASOURCE,
        "enable": True,
        "hide": False,
        "iconColor": color,
        "expr": expr,
        "step": ANNOTATION_STEP,
        "titleFormat": title,
        "textFormat": "{{job}} {{instance}}",
        "tagKeys": "job,instance",
        "useValueForTime": False,
    }


def annotations() -> list[dict[str, Any]]:
    """Grafana's own entry, then reloads, master starts and worker timeouts."""
    return [
        BUILT_IN_ANNOTATION,
        annotation("Reloads", step_increase("gunicorn_reloads_total"), "Reload (SIGHUP)", "blue"),
        annotation(
            "Master starts",
            master_starts(),
            "Master started (a restart or a USR2 re-exec)",
            "purple",
        ),
        annotation(
            "Worker timeouts",
            step_increase("gunicorn_worker_exits_total", TIMEOUT),
            "Worker timeout",
            "red",
        ),
    ]


def dashboard(
    uid: str, title: str, description: str, panels: list[Panel], other: tuple[str, str]
) -> dict[str, Any]:
    other_uid, other_title = other
    used = sorted({p["type"] for p in panels})
    return {
        "__inputs": [
            {
                "name": "DS_PROMETHEUS",
                "label": "Prometheus",
                "description": "The Prometheus that scrapes hookkit's /metrics",
                "type": "datasource",
                "pluginId": "prometheus",
                "pluginName": "Prometheus",
            }
        ],
        "__requires": [
            {"type": "grafana", "id": "grafana", "name": "Grafana", "version": "10.4.0"},
            {"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"},
            *({"type": "panel", "id": kind, "name": kind, "version": ""} for kind in used),
        ],
        "uid": uid,
        "title": title,
        "description": description,
        "tags": TAGS,
        "editable": False,
        "schemaVersion": 39,
        "version": 1,
        "graphTooltip": 1,  # shared crosshair
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "timezone": "",
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "timepicker": {},
        "annotations": {"list": annotations()},
        "templating": {"list": variables()},
        "links": [
            {
                "title": other_title,
                "type": "link",
                "url": f"/d/{other_uid}",
                "icon": "dashboard",
                "tooltip": f"Open {other_title}",
                "includeVars": True,
                "keepTime": True,
                "targetBlank": False,
                "asDropdown": False,
                "tags": [],
            }
        ],
        "panels": panels,
    }


def overview() -> dict[str, Any]:
    stats = [
        (
            stat(
                "Request rate",
                "Requests finished per second, every worker of every selected instance.",
                "reqps",
                ALL_REQUESTS,
            ),
            4,
            4,
        ),
        (
            stat(
                "Error ratio",
                "Share of requests answered with a 5xx status.",
                "percentunit",
                f"({ERRORS} or vector(0)) / {ALL_REQUESTS}",
                [(None, "green"), (0.01, "orange"), (0.05, "red")],
            ),
            4,
            4,
        ),
        (
            stat(
                "p95 latency",
                "95th percentile of request duration (pre_request to post_request).",
                "s",
                quantile(0.95, REQUESTS),
            ),
            4,
            4,
        ),
        (
            stat(
                "In flight",
                "Requests being handled right now, over the live workers.",
                "short",
                f"sum({sel('http_server_active_requests')})",
            ),
            4,
            4,
        ),
        (
            stat(
                "Live workers",
                "Workers alive now (gunicorn_workers), every selected instance.",
                "short",
                f"sum({sel('gunicorn_workers')})",
            ),
            4,
            4,
        ),
        (
            stat(
                "Uptime",
                (
                    "Time since the most recently started master started (a USR2 re-exec restarts"
                    " it; a SIGHUP does not)."
                ),
                "s",
                f"time() - max({sel('gunicorn_master_start_time_seconds')})",
            ),
            4,
            4,
        ),
    ]
    by_status = timeseries(
        "Requests by status code",
        "Requests per second by HTTP response status code.",
        "reqps",
        (
            f"sum by (http_response_status_code) ({rate(REQUESTS + '_count')})",
            "{{http_response_status_code}}",
        ),
        stack=True,
    )
    by_method = timeseries(
        "Requests by method",
        "Requests per second by HTTP method (methods outside the standard set are _OTHER).",
        "reqps",
        (f"sum by (http_request_method) ({rate(REQUESTS + '_count')})", "{{http_request_method}}"),
        stack=True,
    )
    latency = timeseries(
        "Latency percentiles",
        (
            "p50, p95 and p99 of request duration, from the histogram's buckets (OpenTelemetry's "
            "5 ms to 10 s, then up to gunicorn's timeout)."
        ),
        "s",
        (quantile(0.5, REQUESTS), "p50"),
        (quantile(0.95, REQUESTS), "p95"),
        (quantile(0.99, REQUESTS), "p99"),
    )
    error_ratio = timeseries(
        "5xx ratio over time",
        "Share of requests answered with a 5xx status, over time.",
        "percentunit",
        (f"({ERRORS} or vector(0)) / {ALL_REQUESTS}", "5xx ratio"),
    )
    heat = heatmap(
        "Latency heatmap",
        (
            "Requests per second in each duration bucket (the histogram's buckets, not "
            "recalculated by Grafana)."
        ),
        f"sum by (le) ({rate(REQUESTS + '_bucket')})",
        "s",
    )
    routes = table(
        "Latency by route",
        (
            "p95 duration and rate per http_route, for the requests whose application named a "
            "route (environ['hookkit.route'] or Flask's url_rule)."
        ),
        "s",
        (quantile(0.95, REQUESTS, "http_route", ROUTED), "p95", "s"),
        (f"sum by (http_route) ({rate(REQUESTS + '_count', ROUTED)})", "rate", "reqps"),
        by="http_route",
    )
    per_instance_rate = timeseries(
        "Requests by instance",
        "Requests per second of each gunicorn master.",
        "reqps",
        (f"sum by (instance) ({rate(REQUESTS + '_count')})", "{{instance}}"),
    )
    per_instance_p95 = timeseries(
        "p95 latency by instance",
        "95th percentile of request duration of each gunicorn master.",
        "s",
        (quantile(0.95, REQUESTS, "instance"), "{{instance}}"),
    )
    per_instance_inflight = timeseries(
        "In flight by instance",
        (
            "Requests in flight on each gunicorn master, against its capacity (requests its live "
            "workers can run at once)."
        ),
        "short",
        (f"sum by (instance) ({sel('http_server_active_requests')})", "{{instance}} in flight"),
        (f"sum by (instance) ({sel('gunicorn_worker_capacity')})", "{{instance}} capacity"),
    )
    queue_time = timeseries(
        "Queue time",
        (
            "p50 and p95 of the time requests waited between the proxy in front and gunicorn's "
            "pre_request (the proxy's X-Request-Start or X-Queue-Start header, honoured from "
            "forwarded_allow_ips only): the backlog and waiting for a free worker. No data "
            "without such a header."
        ),
        "s",
        (quantile(0.5, QUEUE), "p50"),
        (quantile(0.95, QUEUE), "p95"),
    )
    queue_errors = timeseries(
        "Queue header errors",
        (
            "Queue-time headers not used, per second, by reason: untrusted (the peer is not in "
            "forwarded_allow_ips), negative (a time in the future: the proxy's clock is ahead), "
            "too_old (over an hour), unparsable. Should stay at 0."
        ),
        "reqps",
        (
            f"sum by (reason) ({rate('hookkit_queue_header_errors_total')})",
            "{{reason}}",
        ),
    )
    panels = layout(
        [
            stats,
            [(by_status, 12, 8), (by_method, 12, 8)],
            [(latency, 12, 8), (error_ratio, 12, 8)],
            [(heat, 12, 9), (routes, 12, 9)],
            [(per_instance_rate, 8, 8), (per_instance_p95, 8, 8), (per_instance_inflight, 8, 8)],
            [(queue_time, 12, 8), (queue_errors, 12, 8)],
        ]
    )
    return dashboard(
        "hookkit-overview",
        "hookkit / overview",
        "Traffic, errors and latency of gunicorn servers running hookkit.",
        panels,
        ("hookkit-workers", "hookkit / workers"),
    )


def workers() -> dict[str, Any]:
    utilization = timeseries(
        "Utilization",
        (
            "Busy seconds per second over capacity: 1.0 means every worker (thread) was in a "
            "request all the time. For gevent and ASGI, capacity counts worker_connections."
        ),
        "percentunit",
        (
            (
                f"sum by (instance) ({rate('gunicorn_worker_busy_seconds_total')}) / sum by "
                f"(instance) ({sel('gunicorn_worker_capacity')})"
            ),
            "{{instance}}",
        ),
    )
    capacity = timeseries(
        "Workers and capacity",
        "Live workers, the count the master aims for, and the requests they can run at once.",
        "short",
        (f"sum by (instance) ({sel('gunicorn_workers')})", "{{instance}} live"),
        (f"sum by (instance) ({sel('gunicorn_workers_desired')})", "{{instance}} desired"),
        (f"sum by (instance) ({sel('gunicorn_worker_capacity')})", "{{instance}} capacity"),
    )
    backlog = timeseries(
        "Listen backlog",
        (
            "Connections waiting in each listener's accept queue (Linux TCP): above 0 for long, "
            "the workers cannot keep up."
        ),
        "short",
        (
            f"max by (instance, listener) ({sel('gunicorn_listen_backlog')})",
            "{{instance}} {{listener}}",
        ),
    )
    heartbeat = timeseries(
        "Heartbeat age by slot",
        (
            "Seconds since each worker last notified the master; gunicorn kills a worker when "
            "this reaches its timeout."
        ),
        "s",
        (
            f"max by (instance, slot) ({sel('gunicorn_worker_heartbeat_age_seconds')})",
            "{{instance}} slot {{slot}}",
        ),
    )
    churn = timeseries(
        "Spawns and exits by reason",
        (
            "Workers forked, and worker exits by reason (max_requests, timeout, killed, crashed, "
            "reload, scaled_down, shutdown...), per rate interval."
        ),
        "short",
        (f"sum({increase('gunicorn_worker_spawns_total')})", "spawned"),
        (f"sum by (reason) ({increase('gunicorn_worker_exits_total')}) > 0", "exit: {{reason}}"),
        bars=True,
    )
    timeouts = timeseries(
        "Worker timeouts",
        (
            "Workers the master aborted because their heartbeat reached gunicorn's timeout (a "
            "request ran too long), per rate interval."
        ),
        "short",
        (f"sum({increase('gunicorn_worker_exits_total', TIMEOUT)})", "timeouts"),
        bars=True,
    )
    reloads = timeseries(
        "Reloads",
        "Configuration reloads (SIGHUP), per rate interval.",
        "short",
        (f"sum by (instance) ({increase('gunicorn_reloads_total')})", "{{instance}}"),
        bars=True,
    )
    boot = timeseries(
        "Boot duration",
        (
            "p50 and p95 of the time from a worker's fork to its application loaded (only while "
            "workers boot)."
        ),
        "s",
        (quantile(0.5, "gunicorn_worker_boot_duration_seconds"), "p50"),
        (quantile(0.95, "gunicorn_worker_boot_duration_seconds"), "p95"),
    )
    lifetime = timeseries(
        "Worker lifetime",
        "p50 and p95 of the time from a worker's fork to its exit (only while workers exit).",
        "s",
        (quantile(0.5, "gunicorn_worker_lifetime_seconds"), "p50"),
        (quantile(0.95, "gunicorn_worker_lifetime_seconds"), "p95"),
    )
    memory = timeseries(
        "Resident memory by slot",
        "Resident memory of each worker, from /proc at scrape time.",
        "bytes",
        (
            f"max by (instance, slot) ({sel('gunicorn_worker_resident_memory_bytes')})",
            "{{instance}} slot {{slot}}",
        ),
    )
    cpu = timeseries(
        "Workers' CPU",
        (
            "CPU seconds per second of all workers of each master, live and reaped (1.0 = one "
            "core busy)."
        ),
        "percentunit",
        (f"sum by (instance) ({rate('gunicorn_workers_cpu_seconds_total')})", "{{instance}}"),
    )
    internals = timeseries(
        "hookkit errors",
        (
            "Errors hookkit's sinks raised (never reaching gunicorn), and multiprocess files a "
            "scrape skipped; both should stay at 0."
        ),
        "short",
        (f"sum by (sink) ({increase('hookkit_sink_errors_total')})", "sink {{sink}}"),
        (f"sum({increase('hookkit_scrape_errors_total')})", "skipped files"),
        bars=True,
    )
    panels = layout(
        [
            [(utilization, 12, 8), (capacity, 12, 8)],
            [(heartbeat, 12, 8), (backlog, 12, 8)],
            [(churn, 8, 8), (timeouts, 8, 8), (reloads, 8, 8)],
            [(boot, 12, 8), (lifetime, 12, 8)],
            [(memory, 8, 8), (cpu, 8, 8), (internals, 8, 8)],
        ]
    )
    return dashboard(
        "hookkit-workers",
        "hookkit / workers",
        (
            "gunicorn's workers under hookkit: utilization, heartbeats, churn, boot and lifetime,"
            " memory and CPU."
        ),
        panels,
        ("hookkit-overview", "hookkit / overview"),
    )


FILES = {"hookkit-overview.json": overview, "hookkit-workers.json": workers}


def build_dashboards() -> dict[str, dict[str, Any]]:
    """File name to dashboard, for every dashboard."""
    return {name: make() for name, make in FILES.items()}


def dumps(dash: dict[str, Any]) -> str:
    """The committed form: sorted keys, two-space indent, final newline."""
    return json.dumps(dash, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main() -> None:
    for name, dash in build_dashboards().items():
        (HERE / name).write_text(dumps(dash))
        print(f"wrote {HERE / name}")


if __name__ == "__main__":
    main()
