"""Falcon's, Pyramid's and Bottle's route templates, without a line of user
code: real gunicorn under the drop-in on the sync worker (Falcon's ASGI app
also on gunicorn's ASGI worker and uvicorn-worker's ``UvicornWorker``).

For each, N requests per route give exactly N in the master's
``http_server_request_duration_seconds_count{http_route="<template>"}`` and
N SERVER spans named ``{method} {template}``, the template as the framework
spells it (Falcon's ``req.uri_template``, Pyramid's
``request.matched_route.pattern``, Bottle's ``route.rule``); a 404 has no
route; a thousand distinct ids in one path stay one series. The Falcon WSGI
app is examples/falcon's. Real OTLP/HTTP to an ``OtlpReceiver``;
everything on 127.0.0.1.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.otlp import OtlpReceiver
from tests.routed import (
    Sent,
    counts_by_route,
    expected_counts,
    expected_spans,
    route_series,
    send_all,
    spans_by_name,
)
from tests.scrape import settled_count as counted
from tests.traced import start_traced

pytestmark = pytest.mark.integration

FALCON_EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "falcon"
# In SERVERS' arguments: the copy of examples/falcon the test makes.
FALCON_COPY = "<copy of examples/falcon>"
N = 5

Routes = list[Callable[[int], Sent]]

FALCON: Routes = [
    lambda n: Sent("GET", f"/items/{n}", "/items/{item_id:int}", 200),
    lambda n: Sent("DELETE", f"/items/{n}", "/items/{item_id:int}", 405),
    lambda n: Sent("GET", f"/users/user{n}/items", "/users/{user}/items", 200),
    lambda n: Sent("POST", f"/users/user{n}/items", "/users/{user}/items", 201),
    lambda n: Sent("GET", f"/crash/{n}", "/crash/{n:int}", 500),
    # The converter refuses it: no route matched.
    lambda n: Sent("GET", f"/items/x{n}", "", 404),
]
PYRAMID: Routes = [
    lambda n: Sent("GET", f"/items/{n}", "/items/{item_id}", 200),
    lambda n: Sent("GET", f"/users/user{n}/items/{n}", r"/users/{user}/items/{item_id:\d+}", 200),
    # A route prefix, as Pyramid joins it: no leading slash.
    lambda n: Sent("GET", f"/api/things/thing{n}", "api/things/{name}", 200),
    lambda n: Sent("GET", f"/crash/{n}", "/crash/{n}", 500),
    lambda n: Sent("GET", f"/users/user{n}/items/x", "", 404),
]
BOTTLE: Routes = [
    lambda n: Sent("GET", f"/items/{n}", "/items/<item_id:int>", 200),
    lambda n: Sent("GET", f"/users/user{n}/items", "/users/<user>/items", 200),
    lambda n: Sent("POST", f"/users/user{n}/items", "/users/<user>/items", 200),
    # An app mounted under /api/: Bottle prefixes its rules.
    lambda n: Sent("GET", f"/api/things/thing{n}", "/api/things/<name>", 200),
    lambda n: Sent("GET", f"/crash/{n}", "/crash/<n:int>", 500),
    lambda n: Sent("GET", f"/nope/{n}", "", 404),
]

# id: (app, gunicorn arguments, routes, the route of /items/{n}, distinct
# ids sent to it: a thousand once per framework, none again for Falcon's
# ASGI app, whose template comes from the same wrap)
SERVERS = {
    "falcon": (
        "apps.falcon_wsgi:app",
        ("--pythonpath", FALCON_COPY),
        FALCON,
        "/items/{item_id:int}",
        1000,
    ),
    "falcon-asgi": ("apps.falcon_asgi:app", ("-k", "asgi"), FALCON, "/items/{item_id:int}", 0),
    "falcon-uvicorn": (
        "apps.falcon_asgi:app",
        ("-k", "uvicorn_worker.UvicornWorker"),
        FALCON,
        "/items/{item_id:int}",
        0,
    ),
    "pyramid": ("apps.pyramid_app:app", (), PYRAMID, "/items/{item_id}", 1000),
    "bottle": ("apps.bottle_app:app", (), BOTTLE, "/items/<item_id:int>", 1000),
}


def copy_falcon_example(tmp_path: Path) -> Path:
    """examples/falcon copied into ``tmp_path`` (Python writes no bytecode
    into the checkout, whose examples/ ships in the wheel)."""
    where = tmp_path / "falcon"
    shutil.copytree(FALCON_EXAMPLE, where, ignore=shutil.ignore_patterns("__pycache__"))
    return where


@pytest.mark.parametrize("kind", list(SERVERS))
def test_each_request_is_counted_and_named_under_its_route(
    serve: Any, tmp_path: Path, kind: str
) -> None:
    """N requests per route: N in the route's request count and N SERVER
    spans named ``{method} {route}``, whatever the status (a 405 and a
    500 keep their route); the 404s have none (``http_route=""``, a span
    named by its method alone). Then a thousand distinct item ids
    (``SERVERS`` says where): still one series for their route, counted
    exactly."""
    app, args, routes, items, ids = SERVERS[kind]
    args = tuple(str(copy_falcon_example(tmp_path)) if a == FALCON_COPY else a for a in args)
    sent = [make(n) for n in range(N) for make in routes]
    many = [Sent("GET", f"/items/{1000 + n}", items, 200) for n in range(ids)]
    with OtlpReceiver() as rx:
        server = start_traced(serve, rx, *args, app=app, workers=2)
        statuses = send_all(server.port, sent)
        first = counts_by_route(counted(server, len(sent)))
        spans = spans_by_name(rx, len(sent))
        assert [s.status for s in sent] == statuses
        assert expected_counts(sent) == first
        assert expected_spans(sent) == spans

        assert [200] * ids == send_all(server.port, many)
        text = counted(server, len(sent) + ids)

    assert expected_counts(sent + many) == counts_by_route(text)
    assert {s.route for s in sent} == route_series(text)
