"""The request metrics under each of gunicorn's worker classes, with real
gunicorn processes and scrapes of hookkit's /metrics.

Worker classes: ``sync``, ``gthread``, ``gevent`` and gunicorn's own ASGI
worker (``asgi``, serving ``apps.metrics_asgi``). For each one, N requests,
some sequential and some concurrent (from client threads), must give exactly
N in ``http_server_request_duration_seconds_count``, each under the status
the client received (the 500 of an exception and a 404 included), and the
in-flight gauge must be back to 0 afterwards.

gunicorn's access log is off unless a test says otherwise (it is off by
default): the ASGI worker hands ``post_request`` no response when the
logger class reports the access log off, and the status label must be right
all the same. Everything listens and connects on 127.0.0.1 only.
"""

from __future__ import annotations

import importlib.util
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from hookkit._face.gunicorn_process import Gunicorn, http_get, match
from tests.scrape import samples, scrape_text, total
from tests.scrape import settled_count as wait_count

pytestmark = pytest.mark.integration

WSGI_APP = "apps.metrics_app:app"
ASGI_APP = "apps.metrics_asgi:app"
COUNT = "http_server_request_duration_seconds_count"
ACTIVE = "http_server_active_requests"

# How to run each worker class: its app and gunicorn arguments.
WORKER_CLASSES: dict[str, tuple[str, tuple[str, ...]]] = {
    "sync": (WSGI_APP, ("-k", "sync")),
    "gthread": (WSGI_APP, ("-k", "gthread", "--threads", "4")),
    "gevent": (WSGI_APP, ("-k", "gevent")),
    "asgi": (ASGI_APP, ("-k", "asgi")),
}

_NO_GEVENT = pytest.mark.skipif(
    importlib.util.find_spec("gevent") is None, reason="gevent is not installed"
)
ALL_CLASSES = [
    pytest.param(name, id=name, marks=[_NO_GEVENT] if name == "gevent" else [])
    for name in WORKER_CLASSES
]

# Sequential requests, then concurrent ones: (path, the status the client gets).
SEQUENTIAL = [("/", 200)] * 4 + [("/status/404", 404)] * 2 + [("/raise", 500)]
CONCURRENT = (
    [("/", 200)] * 10
    + [("/sleep?0.3", 200)] * 4
    + [("/status/404", 404)] * 3
    + [("/raise", 500)] * 2
)
N = len(SEQUENTIAL) + len(CONCURRENT)


def start(serve: Any, worker_class: str, *args: str) -> Gunicorn:
    """Two workers of ``worker_class``; returns once both have booted."""
    app, class_args = WORKER_CLASSES[worker_class]
    server: Gunicorn = serve(app, *class_args, "-w", "2", *args)
    server.wait_for(match(event="worker_booted"), count=2)
    return server


def send_all(port: int) -> list[int]:
    """Every request of SEQUENTIAL one after another, then every one of
    CONCURRENT from 8 client threads; the statuses received, in order."""
    statuses = [http_get(port, path)[0] for path, _ in SEQUENTIAL]
    with ThreadPoolExecutor(8) as pool:
        statuses += list(pool.map(lambda path: http_get(port, path)[0], [p for p, _ in CONCURRENT]))
    return statuses


def counts_by_status(text: str) -> dict[tuple[str, str, str], float]:
    """The request count by (method, status code, error type), zeros left out."""
    counts: Counter[tuple[str, str, str]] = Counter()
    for sample in samples(text):
        if sample.name == COUNT and sample.value:
            key = (
                sample.labels["http_request_method"],
                sample.labels["http_response_status_code"],
                sample.labels["error_type"],
            )
            counts[key] += sample.value
    return dict(counts)


EXPECTED_COUNTS = {
    ("GET", "200", ""): 18.0,
    ("GET", "404", ""): 5.0,
    ("GET", "500", "RuntimeError"): 3.0,
}


@pytest.mark.parametrize("worker_class", ALL_CLASSES)
def test_n_requests_give_exactly_n_by_status(serve, worker_class):
    """N requests, sequential and concurrent: exactly N counted, each under
    the status the client received (an exception's 500 with its type), and
    nothing left in flight."""
    server = start(serve, worker_class)
    assert [status for _, status in SEQUENTIAL + CONCURRENT] == send_all(server.port)
    text = wait_count(server, N)
    assert N == total(text, COUNT)
    assert EXPECTED_COUNTS == counts_by_status(text)
    assert 0 == total(text, ACTIVE)


def test_asgi_status_with_gunicorns_access_log_on(serve):
    """The ASGI worker with gunicorn's access log on (to a file): the same
    exact counts by status as with it off."""
    server = start(serve, "asgi", "--access-logfile", "access.log")
    assert [status for _, status in SEQUENTIAL + CONCURRENT] == send_all(server.port)
    text = wait_count(server, N)
    assert N == total(text, COUNT)
    assert EXPECTED_COUNTS == counts_by_status(text)
    assert 0 == total(text, ACTIVE)


@pytest.mark.parametrize("worker_class", ALL_CLASSES)
def test_in_flight_gauge_counts_concurrent_requests(serve, worker_class):
    """Requests in flight at once show in http_server_active_requests while
    they run (summed over the live workers), and it falls back to 0."""
    server = start(serve, worker_class)
    # The sync worker runs one request at a time per worker: two workers, two.
    in_flight = 2 if worker_class == "sync" else 3
    with ThreadPoolExecutor(in_flight) as pool:
        futures = [pool.submit(http_get, server.port, "/sleep?1.5") for _ in range(in_flight)]
        deadline = time.monotonic() + 5
        seen = 0.0
        while seen < in_flight and time.monotonic() < deadline:
            seen = total(scrape_text(server.metrics_port), ACTIVE, http_request_method="GET")
            time.sleep(0.05)
        assert [200] * in_flight == [future.result()[0] for future in futures]
    assert in_flight == seen
    text = wait_count(server, in_flight)
    assert 0 == total(text, ACTIVE)
    assert in_flight == total(text, COUNT, http_response_status_code="200")
