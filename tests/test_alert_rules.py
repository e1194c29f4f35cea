"""The alert rules (dashboards/hookkit-alerts.rules.yml), their promtool unit
tests (dashboards/hookkit-alerts.test.yml) and their runbooks
(docs/runbooks.md).

promtool lints the rules and runs the unit tests; the static checks keep the
conventions: names, severities, annotations, explicit windows, per-instance
aggregation, and only metric names hookkit exports.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import PlatformCollector, ProcessCollector

from tests.prom import MISSING, PROMTOOL

ROOT = Path(__file__).parent.parent
RULES = ROOT / "dashboards" / "hookkit-alerts.rules.yml"
RULE_TESTS = ROOT / "dashboards" / "hookkit-alerts.test.yml"
RUNBOOKS = ROOT / "docs" / "runbooks.md"
RUNBOOK_BASE = "https://github.com/hookkit/hookkit/blob/main/docs/runbooks.md#"
SEVERITIES = {"critical", "warning", "info"}

needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason=MISSING)

# Every metric family hookkit exports, by type, as hookkit/_sinks/prometheus/metrics.py and
# hookkit/_aggregate/collect.py name them (cross-checked below).
EXPORTED = {
    "http_server_request_duration_seconds": "histogram",
    "http_server_active_requests": "gauge",
    "http_server_request_body_size_bytes": "histogram",
    "http_server_response_body_size_bytes": "histogram",
    "http_server_active_websockets": "gauge",
    "http_server_websocket_duration_seconds": "histogram",
    "gunicorn_worker_spawns": "counter",
    "gunicorn_worker_exits": "counter",
    "gunicorn_worker_boot_duration_seconds": "histogram",
    "gunicorn_worker_lifetime_seconds": "histogram",
    "gunicorn_worker_busy_seconds": "counter",
    "gunicorn_reloads": "counter",
    "hookkit_sink_errors": "counter",
    "gunicorn_workers": "gauge",
    "gunicorn_workers_desired": "gauge",
    "gunicorn_worker_capacity": "gauge",
    "gunicorn_worker_heartbeat_age_seconds": "gauge",
    "gunicorn_worker_resident_memory_bytes": "gauge",
    "gunicorn_worker_open_fds": "gauge",
    "gunicorn_workers_cpu_seconds": "counter",
    "gunicorn_listen_backlog": "gauge",
    "gunicorn_master_start_time_seconds": "gauge",
    "gunicorn_build": "info",
    "hookkit_multiprocess_files": "gauge",
    "hookkit_scrape_errors": "counter",
    "http_server_request_queue_duration_seconds": "histogram",
    "hookkit_queue_header_errors": "counter",
    # The master's own, from prometheus_client's ProcessCollector and
    # PlatformCollector (registered in hookkit/_sinks/prometheus/sink.py).
    "process_cpu_seconds": "counter",
    "process_resident_memory_bytes": "gauge",
    "process_virtual_memory_bytes": "gauge",
    "process_open_fds": "gauge",
    "process_max_fds": "gauge",
    "process_start_time_seconds": "gauge",
    "python_info": "gauge",
}
SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum"),
    "info": ("_info",),
}
# Prometheus's own series about the scrape.
PROMETHEUS_SERIES = {"up"}

_CONSTRUCTOR = re.compile(
    r"\b(Counter|Gauge|Histogram|CounterMetricFamily|GaugeMetricFamily|InfoMetricFamily|_gauge)"
    r"\(\s*\"([a-z_:][a-z0-9_:]*)\""
)
_TYPES = {
    "Counter": "counter",
    "CounterMetricFamily": "counter",
    "Gauge": "gauge",
    "GaugeMetricFamily": "gauge",
    "_gauge": "gauge",
    "Histogram": "histogram",
    "InfoMetricFamily": "info",
}
_KEYWORDS = {
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "inf",
    "nan",
}
_RANGE_FUNCTIONS = r"(?:rate|irate|increase|deriv|delta|idelta|\w+_over_time)"
_AGGREGATIONS = r"(?:sum|min|max|avg|count|stddev|stdvar|topk|bottomk|quantile|count_values|group)"


def sample_names() -> set[str]:
    """The series names of every exported family (``_total``, ``_bucket``...)."""
    return {
        family + suffix for family, kind in EXPORTED.items() for suffix in SUFFIXES[kind]
    } | PROMETHEUS_SERIES


def load_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    rules: list[dict[str, Any]] = groups[0]["rules"]
    return rules


def alerts() -> list[dict[str, Any]]:
    return [rule for rule in load_rules() if "alert" in rule]


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers that are not
    functions, keywords, label names or inside strings."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set()
    for match in re.finditer(r"(?<![\w.])([a-zA-Z_:][\w:]*)(\s*\()?", expr):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in _KEYWORDS:
            continue
        names.add(name)
    return names


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    anchor = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return anchor.replace(" ", "-")


def runbook_anchors() -> set[str]:
    return {
        github_anchor(line.lstrip("#"))
        for line in RUNBOOKS.read_text().splitlines()
        if re.match(r"#{1,6} ", line)
    }


def rule_tests() -> list[dict[str, Any]]:
    tests: list[dict[str, Any]] = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    return tests


# -- promtool ----------------------------------------------------------------


@pytest.mark.integration
@needs_promtool
def test_promtool_check_rules_with_every_lint():
    """``promtool check rules --lint=all --lint-fatal`` passes without a warning."""
    proc = subprocess.run(
        [PROMTOOL or "promtool", "check", "rules", "--lint=all", "--lint-fatal", str(RULES)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert (0, f"SUCCESS: {len(load_rules())} rules found") == (
        proc.returncode,
        output.strip().splitlines()[-1].strip(),
    ), output
    assert not re.search(r"warn|lint|duplicate", output, re.IGNORECASE), output


@pytest.mark.integration
@needs_promtool
def test_promtool_unit_tests_pass():
    """``promtool test rules`` runs the unit tests, every one green."""
    proc = subprocess.run(
        [PROMTOOL or "promtool", "test", "rules", str(RULE_TESTS)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert 0 == proc.returncode, output
    assert "SUCCESS" in output, output


# -- the exported names --------------------------------------------------------


def test_exported_list_matches_the_source():
    """The explicit list above is exactly what the Prometheus sink's metrics.py and the
    aggregate's collect.py create, and what prometheus_client's process and
    platform collectors, which the sink registers, yield."""
    found = {}
    for module in ("_sinks/prometheus/metrics.py", "_aggregate/collect.py"):
        for kind, name in _CONSTRUCTOR.findall((ROOT / "hookkit" / module).read_text()):
            found[name] = _TYPES[kind]
    sink = (ROOT / "hookkit" / "_sinks" / "prometheus" / "sink.py").read_text()
    standard = {
        ProcessCollector: "ProcessCollector(registry=registry)",
        PlatformCollector: "PlatformCollector(registry=registry)",
    }
    for collector, registration in standard.items():
        assert registration in sink
        for family in collector(registry=None).collect():
            found[family.name] = family.type
    assert EXPORTED == found


def test_metric_name_extraction():
    """metric_names() finds selectors and skips functions, labels and strings."""
    expr = (
        'sum by (job, instance, le) (rate(a_total{reason=~"x|y"}[5m])) / on (job) b'
        " > 0.5 and c unless max by (job) (changes(max_over_time(d[5m])[30m:1m]))"
    )
    assert {"a_total", "b", "c", "d"} == metric_names(expr)


# -- the rules ------------------------------------------------------------------


def test_one_group_named_hookkit_with_only_alerts():
    """One group, ``hookkit``; every rule in it is an alert, each name once."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    assert ["hookkit"] == [group["name"] for group in groups]
    names = [rule.get("alert") for rule in load_rules()]
    assert len(set(names)) == len(names)
    assert None not in names


def test_names_are_camel_case_with_the_hookkit_prefix():
    """Every alert is CamelCase and starts with ``Hookkit``."""
    bad = [
        a["alert"]
        for a in alerts()
        if not re.fullmatch(r"Hookkit(?:[A-Z0-9][a-z0-9]*)+", a["alert"])
    ]
    assert [] == bad


def test_severity_labels():
    """Every alert has a severity label, critical, warning or info, and no other label."""
    assert {a["alert"]: ["severity"] for a in alerts()} == {
        a["alert"]: sorted(a.get("labels", {})) for a in alerts()
    }
    assert [] == [a["alert"] for a in alerts() if a["labels"]["severity"] not in SEVERITIES]


def test_annotations():
    """summary is a plain sentence; description is templated, any $value
    humanized; runbook_url points at the alert's own heading under one base."""
    problems = []
    for alert in alerts():
        name, notes = alert["alert"], alert.get("annotations", {})
        if ["description", "runbook_url", "summary"] != sorted(notes):
            problems.append(f"{name}: annotations {sorted(notes)}")
            continue
        if "{{" in notes["summary"] or not notes["summary"].endswith("."):
            problems.append(f"{name}: summary {notes['summary']!r}")
        description = notes["description"]
        values = re.findall(r"\$value\b\s*(\|\s*\w+)?", description)
        if "{{ $labels.instance }}" not in description or not all(
            pipe.lstrip("| ").startswith("humanize") for pipe in values
        ):
            problems.append(f"{name}: description {description!r}")
        if notes["runbook_url"] != RUNBOOK_BASE + name.lower():
            problems.append(f"{name}: runbook_url {notes['runbook_url']}")
    assert [] == problems


def test_every_runbook_anchor_is_a_heading():
    """Each runbook_url's anchor is a heading of docs/runbooks.md."""
    anchors = runbook_anchors()
    missing = [
        a["annotations"]["runbook_url"]
        for a in alerts()
        if a["annotations"]["runbook_url"].partition("#")[2] not in anchors
    ]
    assert [] == missing


def test_every_expr_uses_only_exported_metrics():
    """Each metric an expression selects is one hookkit exports (or ``up``)."""
    known = sample_names()
    unknown = {a["alert"]: sorted(metric_names(a["expr"]) - known) for a in alerts()}
    assert {a["alert"]: [] for a in alerts()} == unknown
    assert all(metric_names(a["expr"]) for a in alerts())


def test_windows_are_explicit():
    """Every range function has a literal window ([5m]), never a Grafana variable."""
    problems = []
    for alert in alerts():
        expr = alert["expr"]
        calls = re.findall(rf"\b{_RANGE_FUNCTIONS}\(", expr)
        windowed = re.findall(
            rf"\b{_RANGE_FUNCTIONS}\(\s*[a-zA-Z_:][\w:]*(?:\{{[^}}]*\}})?\[\d+[smhdw]\]", expr
        )
        if len(calls) != len(windowed) or "$" in expr:
            problems.append(alert["alert"])
    assert [] == problems


def test_aggregations_are_per_instance():
    """Every aggregation keeps job and instance (``by (job, instance, ...)``)."""
    problems = []
    for alert in alerts():
        expr = alert["expr"]
        if re.search(rf"\b{_AGGREGATIONS}\s*\(", expr) or re.search(r"\bwithout\b", expr):
            problems.append(f"{alert['alert']}: aggregation without by")
        for labels in re.findall(rf"\b{_AGGREGATIONS}\s+by\s*\(([^)]*)\)", expr):
            if not {"job", "instance"} <= {label.strip() for label in labels.split(",")}:
                problems.append(f"{alert['alert']}: by ({labels})")
        if not re.search(rf"\b{_AGGREGATIONS}\s+by\s*\(", expr):
            problems.append(f"{alert['alert']}: no aggregation")
    assert [] == problems


def test_no_alert_on_heartbeat_age():
    """No alert uses heartbeat age: idle sync workers reach timeout/2, async
    workers keep beating while a request is stuck."""
    assert [] == [a["alert"] for a in alerts() if "heartbeat" in a["expr"]]


# -- the unit tests' coverage ---------------------------------------------------


def test_every_alert_is_tested_firing_and_silent():
    """Each alert has a promtool case where it fires and one where it must not."""
    firing: set[str] = set()
    silent: set[str] = set()
    for case in rule_tests():
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    names = {a["alert"] for a in alerts()}
    assert (names, names) == (firing, silent)


def test_firing_expectations_check_every_annotation():
    """Each expected alert states its severity, job, instance and all three annotations."""
    severities = {a["alert"]: a["labels"]["severity"] for a in alerts()}
    problems = []
    for case in rule_tests():
        for check in case.get("alert_rule_test", []):
            for expected in check.get("exp_alerts") or []:
                labels = expected.get("exp_labels", {})
                if {"severity", "job", "instance"} != set(labels):
                    problems.append(f"{check['alertname']}: labels {sorted(labels)}")
                elif labels["severity"] != severities[check["alertname"]]:
                    problems.append(f"{check['alertname']}: severity {labels['severity']}")
                if ["description", "runbook_url", "summary"] != sorted(
                    expected.get("exp_annotations", {})
                ):
                    problems.append(f"{check['alertname']}: annotations")
    assert [] == problems


def test_idle_and_healthy_cases_expect_silence_from_every_alert():
    """The idle sync server (heartbeat age up to timeout/2) and the busy but
    healthy one check every alert, and expect none."""
    names = {a["alert"] for a in alerts()}
    quiet = [case for case in rule_tests() if "fires nothing" in case["name"]]
    assert 2 == len(quiet)
    for case in quiet:
        checks = case["alert_rule_test"]
        assert names == {check["alertname"] for check in checks}
        assert all(check["exp_alerts"] == [] for check in checks)
    idle = quiet[0]["input_series"]
    assert any("gunicorn_worker_heartbeat_age_seconds" in s["series"] for s in idle)


def test_test_series_use_only_exported_metrics():
    """The unit tests' input series are named as hookkit exports them."""
    known = sample_names()
    used = {
        series["series"].partition("{")[0]
        for case in rule_tests()
        for series in case["input_series"]
    }
    assert set() == used - known
