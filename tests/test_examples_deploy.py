"""The deployment examples: examples/prometheus.yml and examples/kubernetes/.

Every YAML document parses; the Deployment runs gunicorn under hookkit's
drop-in with the metrics endpoint reachable, the multiprocess directory on an
emptyDir and OTLP pointed at a Collector; the Service, the PodMonitor and the
pod annotations agree with it; promtool accepts the Prometheus configs.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from hookkit._core.settings import Settings
from tests.prom import MISSING, PROMTOOL

EXAMPLES = Path(__file__).parent.parent / "examples"
KUBERNETES = EXAMPLES / "kubernetes"
YAML_FILES = sorted([EXAMPLES / "prometheus.yml", *KUBERNETES.glob("*.y*ml")])


def documents(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def manifests() -> dict[str, dict[str, Any]]:
    """The Kubernetes objects, by kind."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(KUBERNETES.glob("*.yaml")):
        for doc in documents(path):
            found[doc["kind"]] = doc
    return found


def container() -> dict[str, Any]:
    spec = manifests()["Deployment"]["spec"]["template"]["spec"]
    app: dict[str, Any] = spec["containers"][0]
    return app


def env() -> dict[str, Any]:
    return {var["name"]: var.get("value") for var in container()["env"]}


def ports() -> dict[str, int]:
    return {port["name"]: port["containerPort"] for port in container()["ports"]}


def pod_labels() -> dict[str, str]:
    labels: dict[str, str] = manifests()["Deployment"]["spec"]["template"]["metadata"]["labels"]
    return labels


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda path: path.name)
def test_every_yaml_document_parses(path):
    """Each YAML file's documents load with yaml.safe_load_all, none empty."""
    assert documents(path)


def test_the_kubernetes_objects():
    """A Deployment, a Service and a PodMonitor, each named, with an apiVersion."""
    objects = manifests()
    assert {"Deployment", "Service", "PodMonitor"} == set(objects)
    assert {
        "Deployment": "apps/v1",
        "Service": "v1",
        "PodMonitor": "monitoring.coreos.com/v1",
    } == {kind: obj["apiVersion"] for kind, obj in objects.items()}
    assert all(obj["metadata"]["name"] for obj in objects.values())


def test_deployment_runs_the_dropin():
    """gunicorn with ``-c python:hookkit.conf``, bound to the ``http`` port."""
    app = container()
    command = [*app["command"], *app["args"]]
    assert "gunicorn" == command[0]
    assert "python:hookkit.conf" == command[command.index("-c") + 1]
    assert f"--bind=0.0.0.0:{ports()['http']}" in command


def test_deployment_environment():
    """The metrics endpoint on every interface at the ``metrics`` port, the
    multiprocess directory on an emptyDir, OTLP at the Collector's Service;
    every HOOKKIT_* variable is a valid hookkit setting."""
    variables = env()
    assert "0.0.0.0:9191" == variables["HOOKKIT_METRICS_BIND"]
    assert 9191 == ports()["metrics"]
    assert variables["OTEL_EXPORTER_OTLP_ENDPOINT"].startswith("http://otel-collector.")
    hookkit_env = {name: value for name, value in variables.items() if name.startswith("HOOKKIT_")}
    assert "0.0.0.0:9191" == Settings.load(environ=hookkit_env).metrics_bind

    spec = manifests()["Deployment"]["spec"]["template"]["spec"]
    mounts = {mount["mountPath"]: mount["name"] for mount in container()["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in spec["volumes"]}
    volume = volumes[mounts[variables["PROMETHEUS_MULTIPROC_DIR"]]]
    assert "emptyDir" in volume


def test_probes_on_the_app_port():
    """Liveness and readiness probes both go to the app port, not to metrics."""
    app = container()
    assert {"livenessProbe": "http", "readinessProbe": "http"} == {
        probe: app[probe]["httpGet"]["port"] for probe in ("livenessProbe", "readinessProbe")
    }


def test_service_and_podmonitor_select_the_pods():
    """The Service sends traffic to ``http``; the PodMonitor scrapes the
    ``metrics`` port of the same pods as job ``hookkit`` (what the rules expect)."""
    objects = manifests()
    service, monitor = objects["Service"]["spec"], objects["PodMonitor"]["spec"]
    labels = pod_labels()
    assert service["selector"].items() <= labels.items()
    assert ["http"] == [port["targetPort"] for port in service["ports"]]
    assert monitor["selector"]["matchLabels"].items() <= labels.items()
    endpoint = monitor["podMetricsEndpoints"][0]
    assert ("metrics", "/metrics") == (endpoint["port"], endpoint["path"])
    assert [("job", "hookkit")] == [
        (relabel["targetLabel"], relabel["replacement"]) for relabel in endpoint["relabelings"]
    ]


def test_scrape_annotations_match_the_metrics_port():
    """The alternative prometheus.io/* pod annotations name the metrics port and path."""
    annotations = manifests()["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(ports()["metrics"]),
        "prometheus.io/path": "/metrics",
    } == annotations


def test_prometheus_configs_load_the_rules_and_scrape_job_hookkit():
    """Both Prometheus configs load hookkit's rules file and have a job ``hookkit``."""
    for path in (EXAMPLES / "prometheus.yml", KUBERNETES / "prometheus-pod-annotations.yml"):
        config = documents(path)[0]
        rules = [(path.parent / name).resolve() for name in config["rule_files"]]
        assert [(EXAMPLES.parent / "dashboards" / "hookkit-alerts.rules.yml").resolve()] == rules
        assert ["hookkit"] == [job["job_name"] for job in config["scrape_configs"]]


def promtool_check_config(path: Path) -> tuple[int, str]:
    proc = subprocess.run(
        [PROMTOOL or "promtool", "check", "config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.integration
@pytest.mark.skipif(PROMTOOL is None, reason=MISSING)
def test_promtool_checks_prometheus_yml():
    """``promtool check config examples/prometheus.yml`` passes, rules included."""
    code, output = promtool_check_config(EXAMPLES / "prometheus.yml")
    assert 0 == code, output
    assert "SUCCESS: 1 rule files found" in output


@pytest.mark.integration
@pytest.mark.skipif(PROMTOOL is None, reason=MISSING)
def test_promtool_checks_the_annotations_config():
    """``promtool check config`` passes on the pod-annotations config (skipped
    where promtool was built without Kubernetes discovery, as Debian's is)."""
    code, output = promtool_check_config(KUBERNETES / "prometheus-pod-annotations.yml")
    if "field kubernetes_sd_configs not found" in output:
        pytest.skip("this promtool has no Kubernetes service discovery (Debian's build)")
    assert 0 == code, output
