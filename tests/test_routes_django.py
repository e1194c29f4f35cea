"""Django's route templates, without a line of user code: examples/django
(``include()``d, converter-typed and ``re_path`` routes, a CSRF-protected
POST) plus two test URLs (a view that raises, a top-level ``re_path``),
served by real gunicorn under the drop-in, on the sync worker (with and
without ``--preload``), gunicorn's ASGI worker and uvicorn-worker's
``UvicornWorker``.

For each, N requests per route give exactly N in the master's
``http_server_request_duration_seconds_count{http_route="<template>"}`` and
N SERVER spans named ``{method} {template}``, the template as Django's
``request.resolver_match.route`` spells it; a 404 has no route; a thousand
distinct ids in one path stay one series. Real OTLP/HTTP to an
``OtlpReceiver``; everything on 127.0.0.1.
"""

from __future__ import annotations

import shutil
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

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "django"

# app, gunicorn arguments, distinct ids sent to one route (the bound on
# series is the same with --preload: that run checks only the routes)
SERVERS = {
    "sync": ("mysite.wsgi", (), 1000),
    "sync-preload": ("mysite.wsgi", ("--preload",), 0),
    "asgi": ("mysite.asgi", ("-k", "asgi"), 1000),
    "uvicorn": ("mysite.asgi", ("-k", "uvicorn_worker.UvicornWorker"), 1000),
}
N = 5
DETAIL = "polls/<int:question_id>/"


def routed_requests() -> list[Sent]:
    """N requests per route, each with its own ids, and N that match nothing."""
    per_route = [
        lambda n: Sent("GET", "/polls/", "polls/", 200),
        lambda n: Sent("GET", f"/polls/{n}/", DETAIL, 200),
        lambda n: Sent("GET", f"/polls/{n}/results/", "polls/<int:question_id>/results/", 200),
        lambda n: Sent("GET", f"/polls/tags/tag-{n}/", "polls/tags/<slug:tag>/", 200),
        lambda n: Sent(
            "GET", f"/polls/archive/20{n:02}/", "polls/archive/(?P<year>[0-9]{4})/$", 200
        ),
        # No CSRF token: refused by the middleware, after the URL resolved.
        lambda n: Sent("POST", f"/polls/{n}/vote/", "polls/<int:question_id>/vote/", 403),
        lambda n: Sent("GET", f"/crash/{n}/", "^crash/(?P<n>[0-9]+)/$", 500),
        lambda n: Sent(
            "GET", f"/legacy/page{'abcde'[n]}.html", r"^legacy/(?P<page>[a-z]+)\.html$", 200
        ),
        lambda n: Sent("GET", f"/nope/{n}/", "", 404),
    ]
    return [make(n) for n in range(N) for make in per_route]


def copy_example(tmp_path: Path) -> Path:
    """examples/django copied into ``tmp_path`` (Python writes no bytecode
    into the checkout, whose examples/ ships in the wheel)."""
    where = tmp_path / "django"
    shutil.copytree(EXAMPLE, where, ignore=shutil.ignore_patterns("__pycache__"))
    return where


@pytest.mark.parametrize("kind", list(SERVERS))
def test_each_request_is_counted_and_named_under_its_django_route(
    serve: Any, tmp_path: Path, kind: str
) -> None:
    """N requests per route: N in the route's request count and N SERVER
    spans named ``{method} {route}``, whatever the status (a CSRF 403 and a
    view's 500 keep their route); the 404s have none (``http_route=""``, a
    span named by its method alone). Then a thousand distinct question ids
    (``SERVERS`` says where): still one series for their route, counted
    exactly."""
    app, args, ids = SERVERS[kind]
    sent = routed_requests()
    many = [Sent("GET", f"/polls/{1000 + n}/", DETAIL, 200) for n in range(ids)]
    with OtlpReceiver() as rx:
        server = start_traced(
            serve,
            rx,
            "--pythonpath",
            str(copy_example(tmp_path)),
            *args,
            app=app,
            workers=2,
            env={"DJANGO_SETTINGS_MODULE": "apps.django_settings"},
        )
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
