"""The Grafana dashboards, statically: the committed JSON is what
dashboards/build.py generates, and every panel and every query follows the
conventions (datasource variable, job/instance filters, $__rate_interval,
counters only inside rate/irate/increase, metric names hookkit exports,
units, titles, descriptions; importable, fixed uids, not editable), the
annotations (Grafana's own, then reloads, master starts and worker timeouts
on both dashboards, on the same variables and filters) and the exemplars of
the latency panels.

No Grafana and no Prometheus here (tests/test_dashboards_live.py runs the
queries against a real one); one test scrapes a real gunicorn to check that
the list of exported metric names below is hookkit's.
"""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import threading
import time
import urllib.request
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from hookkit._face.gunicorn_process import http_get, match
from tests.scrape import samples, scrape_text

DASHBOARDS = Path(__file__).parent.parent / "dashboards"
UIDS = {"hookkit-overview.json": "hookkit-overview", "hookkit-workers.json": "hookkit-workers"}
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}

# Every sample name hookkit's /metrics exports (README, "Metrics"), checked
# against a real scrape by test_exported_names_match_a_real_scrape.
_HISTOGRAMS = [
    "http_server_request_duration_seconds",
    "http_server_request_body_size_bytes",
    "http_server_response_body_size_bytes",
    "http_server_request_queue_duration_seconds",
    "gunicorn_worker_boot_duration_seconds",
    "gunicorn_worker_lifetime_seconds",
]
_COUNTERS = [
    "gunicorn_worker_spawns",
    "gunicorn_worker_exits",
    "gunicorn_worker_busy_seconds",
    "gunicorn_workers_cpu_seconds",
    "gunicorn_reloads",
    "hookkit_sink_errors",
    "hookkit_scrape_errors",
    "hookkit_queue_header_errors",
    "process_cpu_seconds",
]
_GAUGES = [
    "http_server_active_requests",
    "http_server_active_websockets",
    "gunicorn_workers",
    "gunicorn_workers_desired",
    "gunicorn_worker_capacity",
    "gunicorn_worker_heartbeat_age_seconds",
    "gunicorn_worker_resident_memory_bytes",
    "gunicorn_worker_open_fds",
    "gunicorn_listen_backlog",
    "gunicorn_master_start_time_seconds",
    "gunicorn_build_info",
    "hookkit_multiprocess_files",
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_open_fds",
    "process_max_fds",
    "process_start_time_seconds",
    "python_info",
]
EXPORTED = frozenset(
    [f"{h}{suffix}" for h in _HISTOGRAMS for suffix in ("_bucket", "_count", "_sum")]
    + [f"{c}_total" for c in _COUNTERS]
    + _GAUGES
)
COUNTER_SUFFIXES = ("_total", "_bucket", "_count", "_sum")

# PromQL words that are neither functions nor metrics.
KEYWORDS = {"and", "or", "unless", "bool", "offset", "group_left", "group_right"}
FUNCTIONS = {
    "sum",
    "max",
    "min",
    "avg",
    "count",
    "topk",
    "bottomk",
    "rate",
    "irate",
    "increase",
    "histogram_quantile",
    "time",
    "vector",
    "clamp_min",
    "clamp_max",
}
IDENT = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
SELECTOR = re.compile(rf"({IDENT})?\{{([^}}]*)\}}")
RANGE_FUNCTION = re.compile(r"\b(rate|irate|increase)\(")
RANGE_CALL = re.compile(rf"\b(?:rate|irate|increase)\(\s*{IDENT}\{{[^}}]*\}}\[([^\]]*)\]\s*\)")


def load_build() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "hookkit_dashboards_build", DASHBOARDS / "build.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BUILD = load_build()
GENERATED: dict[str, dict[str, Any]] = BUILD.build_dashboards()


def all_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, rows' children included, rows themselves left out."""
    found: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        found.extend(panel.get("panels", []))
        if panel["type"] != "row":
            found.append(panel)
    return found


def all_targets() -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (name, panel["title"], target)
        for name, dashboard in GENERATED.items()
        for panel in all_panels(dashboard)
        for target in panel["targets"]
    ]


def expression_problems(expr: str) -> list[str]:
    """What breaks the query conventions in ``expr`` (empty when none)."""
    problems: list[str] = []
    selectors = list(SELECTOR.finditer(expr))
    if not selectors:
        problems.append("no selector")
    for selector in selectors:
        name, matchers = selector.group(1), selector.group(2)
        if name is None:
            problems.append(f"selector without a metric name: {selector.group(0)}")
            continue
        if name not in EXPORTED:
            problems.append(f"{name} is not a metric hookkit exports")
        for wanted in ('job=~"$job"', 'instance=~"$instance"'):
            if wanted not in matchers:
                problems.append(f"{name} lacks {wanted}")
        if name.endswith(COUNTER_SUFFIXES):
            before, after = expr[: selector.start()], expr[selector.end() :]
            if not (
                re.search(r"\b(rate|irate|increase)\(\s*$", before)
                and re.match(r"\[\$__rate_interval\]\s*\)", after)
            ):
                problems.append(
                    f"counter {name} outside rate/irate/increase(...[$__rate_interval])"
                )
    calls = RANGE_CALL.findall(expr)
    if len(calls) != len(RANGE_FUNCTION.findall(expr)):
        problems.append("rate/irate/increase not applied to one selector and a range")
    problems.extend(
        f"range [{r}] is not $__rate_interval" for r in calls if r != "$__rate_interval"
    )
    ranges = re.findall(r"\[([^\]]*)\]", expr)
    problems.extend(
        f"range [{r}] is not $__rate_interval" for r in ranges if r != "$__rate_interval"
    )
    problems.extend(bare_word_problems(expr))
    return problems


def bare_word_problems(expr: str, functions: frozenset[str] | set[str] = FUNCTIONS) -> list[str]:
    """What is left once selectors, strings, ranges and grouping labels are
    gone must be functions (followed by "("), keywords and numbers: a bare
    word would be a metric queried without the job/instance filters."""
    problems: list[str] = []
    rest = SELECTOR.sub(" __selector__ ", expr)
    rest = re.sub(r'"[^"]*"', " ", rest)
    rest = re.sub(r"\[[^\]]*\]", " ", rest)
    rest = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", " ", rest)
    for word in re.finditer(rf"(?<![\w.]){IDENT}", rest):
        token = word.group(0)
        called = rest[word.end() :].lstrip().startswith("(")
        if token == "__selector__" or token in KEYWORDS:
            continue
        if called and token not in functions:
            problems.append(f"unexpected function {token}")
        elif not called:
            problems.append(f"{token} used without a job/instance selector")
    return problems


# -- the generator and the committed files ------------------------------------


@pytest.mark.parametrize("name", sorted(UIDS))
def test_committed_json_is_what_build_generates(name):
    """Run `python dashboards/build.py` after changing it."""
    assert BUILD.dumps(GENERATED[name]) == (DASHBOARDS / name).read_text()


def test_build_writes_both_dashboards():
    assert set(UIDS) == set(GENERATED)


def test_output_is_stable():
    assert {n: BUILD.dumps(d) for n, d in GENERATED.items()} == {
        n: BUILD.dumps(d) for n, d in BUILD.build_dashboards().items()
    }


# -- dashboard-level conventions ------------------------------------------------


@pytest.mark.parametrize("name", sorted(UIDS))
def test_dashboard_settings(name):
    dashboard = GENERATED[name]
    assert UIDS[name] == dashboard["uid"]
    assert dashboard["editable"] is False
    assert dashboard["schemaVersion"] >= 39
    assert ["hookkit", "gunicorn"] == dashboard["tags"]
    assert dashboard["title"]
    assert dashboard["description"]


@pytest.mark.parametrize("name", sorted(UIDS))
def test_importable_through_grafanas_import_screen(name):
    dashboard = GENERATED[name]
    assert [
        {
            "name": "DS_PROMETHEUS",
            "type": "datasource",
            "pluginId": "prometheus",
        }
    ] == [
        {key: entry[key] for key in ("name", "type", "pluginId")} for entry in dashboard["__inputs"]
    ]
    requires = {(entry["type"], entry["id"]) for entry in dashboard["__requires"]}
    assert ("grafana", "grafana") in requires
    assert ("datasource", "prometheus") in requires
    for panel in all_panels(dashboard):
        assert ("panel", panel["type"]) in requires
    assert "${DS_PROMETHEUS}" in BUILD.dumps(dashboard)  # the import fills it in


@pytest.mark.parametrize("name", sorted(UIDS))
def test_links_to_the_other_dashboard(name):
    (other,) = set(UIDS.values()) - {UIDS[name]}
    links = GENERATED[name]["links"]
    assert [f"/d/{other}"] == [link["url"] for link in links]
    assert all(link["keepTime"] and link["includeVars"] for link in links)


@pytest.mark.parametrize("name", sorted(UIDS))
def test_template_variables(name):
    variables = {v["name"]: v for v in GENERATED[name]["templating"]["list"]}
    assert {"datasource", "job", "instance"} == set(variables)
    datasource = variables["datasource"]
    assert ("datasource", "prometheus") == (datasource["type"], datasource["query"])
    for var in ("job", "instance"):
        variable = variables[var]
        assert "query" == variable["type"]
        assert DATASOURCE == variable["datasource"]
        assert variable["multi"] is True
        assert variable["includeAll"] is True
        assert ".+" == variable["allValue"]
        assert 2 == variable["refresh"]  # on time range change
        query = variable["query"]["query"]
        assert query == variable["definition"]
        found = re.fullmatch(rf"label_values\(({IDENT})(\{{[^}}]*\}})?, {var}\)", query)
        assert found, query
        assert found.group(1) in EXPORTED
    assert 'job=~"$job"' in variables["instance"]["query"]["query"]


@pytest.mark.parametrize("name", sorted(UIDS))
def test_panel_layout(name):
    panels = all_panels(GENERATED[name])
    assert len({p["id"] for p in panels}) == len(panels)
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        pos = panel["gridPos"]
        assert 0 <= pos["x"], panel["title"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        area = {
            (x, y)
            for x in range(pos["x"], pos["x"] + pos["w"])
            for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not area & cells, f"{panel['title']} overlaps another panel"
        cells |= area


# -- every panel ---------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(UIDS))
def test_every_panel_has_title_description_unit_datasource_and_queries(name):
    for panel in all_panels(GENERATED[name]):
        title = panel.get("title")
        assert title, panel
        assert panel.get("description"), title
        assert panel["fieldConfig"]["defaults"].get("unit"), title
        assert DATASOURCE == panel["datasource"], title
        assert panel["targets"], title
        for target in panel["targets"]:
            assert DATASOURCE == target["datasource"], title
            assert target["expr"], title
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(set(ref_ids)) == len(ref_ids), title


@pytest.mark.parametrize(
    ("name", "title", "target"),
    all_targets(),
    ids=[f"{n.split('.')[0]}:{t}:{x['refId']}" for n, t, x in all_targets()],
)
def test_every_query_follows_the_conventions(name, title, target):
    assert [] == expression_problems(target["expr"])


def test_no_panel_titles_repeat_within_a_dashboard():
    for dashboard in GENERATED.values():
        titles = [panel["title"] for panel in all_panels(dashboard)]
        assert len(set(titles)) == len(titles)


def panels_by_title(name: str) -> dict[str, dict[str, Any]]:
    return {panel["title"]: panel for panel in all_panels(GENERATED[name])}


def test_overview_contents():
    panels = panels_by_title("hookkit-overview.json")
    exprs = " ".join(t["expr"] for p in panels.values() for t in p["targets"])
    for wanted in (
        'http_response_status_code=~"5.."',
        "by (http_response_status_code)",
        "by (http_request_method)",
        "by (instance)",
        "http_server_active_requests",
        "gunicorn_workers{",
        "gunicorn_master_start_time_seconds",
    ):
        assert wanted in exprs
    quantiles = {
        re.match(r"histogram_quantile\(([\d.]+),", t["expr"]).group(1)
        for t in panels["Latency percentiles"]["targets"]
    }
    assert {"0.5", "0.95", "0.99"} == quantiles
    heatmap = panels["Latency heatmap"]
    assert "heatmap" == heatmap["type"]
    assert heatmap["options"]["calculate"] is False
    (target,) = heatmap["targets"]
    assert ("heatmap", "{{le}}") == (target["format"], target["legendFormat"])
    assert "_bucket{" in target["expr"]
    assert "by (le)" in target["expr"]
    routes = panels["Latency by route"]
    assert "table" == routes["type"]
    assert all(
        'http_route!=""' in t["expr"] and "http_route)" in t["expr"] for t in routes["targets"]
    )
    assert "histogram_quantile(0.95," in routes["targets"][0]["expr"]
    queue = [t["expr"] for t in panels["Queue time"]["targets"]]
    quantiles_of_queue = [re.match(r"histogram_quantile\(([\d.]+),", e).group(1) for e in queue]
    assert ["0.5", "0.95"] == quantiles_of_queue
    assert all("http_server_request_queue_duration_seconds_bucket{" in e for e in queue)
    (errors,) = panels["Queue header errors"]["targets"]
    assert "sum by (reason) (rate(hookkit_queue_header_errors_total{" in errors["expr"]


def test_workers_contents():
    exprs = " ".join(
        t["expr"] for p in panels_by_title("hookkit-workers.json").values() for t in p["targets"]
    )
    for wanted in (
        "rate(gunicorn_worker_busy_seconds_total",
        "gunicorn_worker_capacity{",
        "gunicorn_listen_backlog{",
        "gunicorn_worker_heartbeat_age_seconds{",
        "gunicorn_worker_spawns_total",
        "by (reason) (increase(gunicorn_worker_exits_total",
        'reason="timeout"',
        "gunicorn_reloads_total",
        "gunicorn_worker_boot_duration_seconds_bucket",
        "gunicorn_worker_lifetime_seconds_bucket",
        "gunicorn_worker_resident_memory_bytes{",
        "rate(gunicorn_workers_cpu_seconds_total",
    ):
        assert wanted in exprs, wanted


# -- annotations -----------------------------------------------------------------

ANNOTATIONS = {"Reloads", "Master starts", "Worker timeouts"}
# What annotation queries may use besides the panels' functions: a counter's
# rise over one step is its value less its last one up to the previous step,
# and the master start compares maxima over the step and the rate interval
# before it.
ANNOTATION_FUNCTIONS = FUNCTIONS | {"last_over_time", "max_over_time"}
ANNOTATION_RANGE = re.compile(r"\[(\$__interval|\$__rate_interval)\](?: offset \$__interval)?")
BUILT_IN = {
    "builtIn": 1,
    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
    "enable": True,
    "hide": True,
    "iconColor": "rgba(0, 211, 255, 1)",
    "name": "Annotations & Alerts",
    "type": "dashboard",
}


def prometheus_annotations(name: str) -> dict[str, dict[str, Any]]:
    return {a["name"]: a for a in GENERATED[name]["annotations"]["list"] if not a.get("builtIn")}


def annotation_problems(expr: str) -> list[str]:
    """What breaks the annotation conventions in ``expr``: every selector a
    metric hookkit exports, with the job/instance filters; ranges only
    ``[$__interval]`` or ``[$__rate_interval]``, offsets only one step
    (``offset $__interval``); no bare metric, no other function."""
    problems: list[str] = []
    selectors = list(SELECTOR.finditer(expr))
    if not selectors:
        problems.append("no selector")
    for selector in selectors:
        name, matchers = selector.group(1), selector.group(2)
        if name is None:
            problems.append(f"selector without a metric name: {selector.group(0)}")
            continue
        if name not in EXPORTED:
            problems.append(f"{name} is not a metric hookkit exports")
        for wanted in ('job=~"$job"', 'instance=~"$instance"'):
            if wanted not in matchers:
                problems.append(f"{name} lacks {wanted}")
    rest = ANNOTATION_RANGE.sub(" ", expr)
    problems.extend(
        f"range {r} is not [$__interval] or [$__rate_interval]"
        for r in re.findall(r"\[[^\]]*\]", rest)
    )
    rest = re.sub(r"offset \$__interval\b", " ", rest)
    problems.extend(f"offset {o} is not $__interval" for o in re.findall(r"offset\s+(\S+)", rest))
    problems.extend(bare_word_problems(rest, ANNOTATION_FUNCTIONS))
    return problems


@pytest.mark.parametrize("name", sorted(UIDS))
def test_annotations_keep_grafanas_own_first(name):
    assert BUILT_IN == GENERATED[name]["annotations"]["list"][0]


def test_both_dashboards_have_every_annotation_alike():
    lists = [GENERATED[name]["annotations"]["list"] for name in sorted(UIDS)]
    assert lists[0] == lists[1]
    for name in UIDS:
        assert ANNOTATIONS == set(prometheus_annotations(name))


@pytest.mark.parametrize("name", sorted(UIDS))
def test_every_annotation_is_a_prometheus_query_on_the_dashboard_variables(name):
    for title, annotation in prometheus_annotations(name).items():
        assert DATASOURCE == annotation["datasource"], title
        assert annotation["enable"] is True, title
        assert annotation["hide"] is False, title
        assert annotation["useValueForTime"] is False, title  # a mark at the step, not at a value
        assert re.fullmatch(r"\d+[smh]", annotation["step"]), title
        assert annotation["titleFormat"], title
        assert "{{instance}}" in annotation["textFormat"], title
        assert annotation["iconColor"], title
        assert [] == annotation_problems(annotation["expr"]), title
    colors = [a["iconColor"] for a in prometheus_annotations(name).values()]
    assert len(set(colors)) == len(colors)


def test_annotation_queries():
    """Counters: the rise since the previous step (one step back, so the
    steps tile time; the last value before it, so a failed scrape loses no
    mark); the master start: the newest start time of the step against the
    rate interval before it, or a series that begins."""
    found = {
        title: a["expr"] for title, a in prometheus_annotations("hookkit-workers.json").items()
    }
    for title, metric in (
        ("Reloads", 'gunicorn_reloads_total{job=~"$job", instance=~"$instance"}'),
        (
            "Worker timeouts",
            'gunicorn_worker_exits_total{job=~"$job", instance=~"$instance", reason="timeout"}',
        ),
    ):
        before = f"last_over_time({metric}[$__rate_interval] offset $__interval)"
        assert f"({metric} - {before}) > 0" == found[title]
    start = 'gunicorn_master_start_time_seconds{job=~"$job", instance=~"$instance"}'
    newest = f"max_over_time({start}[$__interval])"
    before = f"max_over_time({start}[$__rate_interval] offset $__interval)"
    assert f"({newest} > {before}) or ({newest} unless {before})" == found["Master starts"]


# -- exemplars -------------------------------------------------------------------

REQUEST_BUCKETS = "http_server_request_duration_seconds_bucket{"


def test_latency_panels_ask_for_exemplars():
    """Every request-latency histogram target of a panel that draws over time
    (time series, heatmap) asks for exemplars; a stat or an instant table
    never does (Grafana would hand them the exemplar frame as data); nothing
    else does."""
    asking = []
    for name, dashboard in GENERATED.items():
        for panel in all_panels(dashboard):
            for target in panel["targets"]:
                latency = REQUEST_BUCKETS in target["expr"]
                over_time = panel["type"] in ("timeseries", "heatmap")
                assert (latency and over_time) == target.get("exemplar", False), panel["title"]
                if target.get("exemplar"):
                    asking.append((name, panel["title"]))
    assert {
        ("hookkit-overview.json", "Latency percentiles"),
        ("hookkit-overview.json", "Latency heatmap"),
        ("hookkit-overview.json", "p95 latency by instance"),
    } == set(asking)


# -- the checker itself ------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "problem"),
    [
        ("sum(gunicorn_workers)", "used without a job/instance selector"),
        ('sum(gunicorn_workers{job=~"$job"})', 'lacks instance=~"$instance"'),
        ('gunicorn_reloads_total{job=~"$job", instance=~"$instance"}', "outside rate"),
        ('rate(gunicorn_reloads_total{job=~"$job", instance=~"$instance"}[5m])', "[5m]"),
        ('sum(gunicorn_nope{job=~"$job", instance=~"$instance"})', "not a metric hookkit"),
        ('delta(gunicorn_workers{job=~"$job", instance=~"$instance"}[$__rate_interval])', "delta"),
        (
            'sum(rate(hookkit_scrape_errors_total{job=~"$job", instance=~"$instance"}'
            "[$__rate_interval])) / gunicorn_workers",
            "gunicorn_workers used",
        ),
    ],
)
def test_the_checker_catches(expr, problem):
    assert any(problem in found for found in expression_problems(expr)), expression_problems(expr)


@pytest.mark.parametrize(
    ("expr", "problem"),
    [
        ("gunicorn_reloads_total > 0", "used without a job/instance selector"),
        ('changes(gunicorn_reloads_total{job=~"$job"}[$__interval]) > 0', "lacks instance"),
        ('gunicorn_nope{job=~"$job", instance=~"$instance"} > 0', "not a metric hookkit"),
        (
            'increase(gunicorn_reloads_total{job=~"$job", instance=~"$instance"}[5m]) > 0',
            "range [5m]",
        ),
        (
            'gunicorn_reloads_total{job=~"$job", instance=~"$instance"}'
            ' - gunicorn_reloads_total{job=~"$job", instance=~"$instance"} offset 1m',
            "offset 1m",
        ),
        (
            'timestamp(gunicorn_reloads_total{job=~"$job", instance=~"$instance"})',
            "unexpected function timestamp",
        ),
    ],
)
def test_the_annotation_checker_catches(expr, problem):
    found = annotation_problems(expr)
    assert any(problem in each for each in found), found


# -- the exported names, from a real gunicorn -------------------------------------


@pytest.mark.integration
def test_exported_names_match_a_real_scrape(serve):
    """After a SIGKILLed worker, a reload and requests (one with a body,
    one in flight at the scrape), the scrape has exactly EXPORTED (the test
    app's own counter aside)."""
    server = serve("apps.metrics_app:app", "-w", "2")
    server.wait_for(match(event="worker_booted"), count=2)
    os.kill(server.live_workers()[0], signal.SIGKILL)
    server.wait_for(match(event="worker_exited", reason="killed"))
    server.signal(signal.SIGHUP)
    server.wait_for(match(event="worker_exited", reason="reload"), count=2)
    server.wait_for(match(event="worker_booted"), count=5)
    # Requests after the kill: gunicorn runs post_request (where hookkit
    # counts) after the client has its response, so a worker killed right
    # after a response could take that request's counts with it.
    for path in ("/", "/status/404", "/raise", "/routed/a", "/sleep?0.05"):
        http_get(server.port, path)
    # A proxy's queue-time stamp (the queue histogram has no series before one).
    http_get(server.port, "/", headers={"X-Request-Start": f"t={time.time() - 0.05:.3f}"})
    post = urllib.request.Request(f"http://127.0.0.1:{server.port}/", data=b"x" * 10)
    with urllib.request.urlopen(post, timeout=10) as response:
        assert 200 == response.status
    slow = threading.Thread(target=http_get, args=(server.port, "/sleep?2"))
    slow.start()
    try:
        time.sleep(0.5)
        names = {s.name for s in samples(scrape_text(server.metrics_port))}
    finally:
        slow.join(10)
    assert set(EXPORTED) == names - {"app_widgets_total"}
