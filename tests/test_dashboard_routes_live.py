"""The overview dashboard's "Latency by route" panel on the example apps: a
real Prometheus scrapes a real gunicorn serving ``examples/django`` (as its
README runs it, ``gunicorn -c python:hookkit.conf mysite.wsgi``) or
``examples/falcon``, and the panel's query, as Grafana sends it, returns
one series per route template the app matched, whatever the ids in the
paths."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from hookkit._face.gunicorn_process import http_get
from tests.prom import MISSING, PROMETHEUS, prometheus
from tests.test_dashboards_live import grafana_expr

pytestmark = [pytest.mark.integration, pytest.mark.skipif(not PROMETHEUS, reason=MISSING)]

ROOT = Path(__file__).resolve().parent.parent
OVERVIEW = ROOT / "dashboards" / "hookkit-overview.json"

# example directory, gunicorn app, paths requested ({n}: a different id each
# time), the routes the panel must show
EXAMPLES: dict[str, tuple[str, str, list[str], set[str]]] = {
    "django": (
        "django",
        "mysite.wsgi",
        ["/polls/", "/polls/{n}/", "/polls/{n}/results/", "/polls/tags/t{n}/"],
        {
            "polls/",
            "polls/<int:question_id>/",
            "polls/<int:question_id>/results/",
            "polls/tags/<slug:tag>/",
        },
    ),
    "falcon": (
        "falcon",
        "app:app",
        ["/items/{n}", "/users/u{n}/items"],
        {"/items/{item_id:int}", "/users/{user}/items"},
    ),
}


def panel_queries(title: str) -> list[str]:
    """The queries of the overview panel called ``title``, as Grafana sends them."""
    dashboard = json.loads(OVERVIEW.read_text())
    found = [
        panel
        for top in dashboard["panels"]
        for panel in [top, *top.get("panels", [])]
        if panel.get("title") == title
    ]
    assert found, f"no panel {title!r}"
    return [grafana_expr(target["expr"]) for target in found[0]["targets"]]


@pytest.mark.parametrize("example", list(EXAMPLES))
def test_latency_by_route_shows_the_examples_routes(
    serve: Any, tmp_path: Path, example: str
) -> None:
    """Requests to each route with ever-changing ids: the panel shows
    exactly the example's route templates."""
    directory, app, paths, routes = EXAMPLES[example]
    # A copy: Python writes no bytecode into examples/, which ships in the wheel.
    copy = tmp_path / directory
    shutil.copytree(
        ROOT / "examples" / directory, copy, ignore=shutil.ignore_patterns("__pycache__")
    )
    server = serve(app, "-w", "2", cwd=copy)
    with prometheus([f"127.0.0.1:{server.metrics_port}"]) as prom:
        prom.wait_healthy(timeout=20)
        started = time.time()
        for n in range(20):  # a few seconds of traffic: several 1 s scrapes see it
            for path in paths:
                assert 200 == http_get(server.port, path.format(n=n))[0], path
            time.sleep(0.15)
        time.sleep(3)
        shown: set[str] = set()
        for query in panel_queries("Latency by route"):
            for series in prom.query_range(query, started, time.time()):
                shown.add(series["metric"].get("http_route", ""))

    assert routes == shown
