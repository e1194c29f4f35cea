"""Helpers for the route-template tests: send requests whose route is
known, then compare what the master's /metrics counted and which SERVER
spans arrived with what was sent, exactly.

A ``Sent`` is one request and what hookkit should make of it: its method,
path, the route template the framework matched (``""``: none, a 404) and
the status the client got.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

from tests.otlp import OtlpReceiver
from tests.scrape import samples
from tests.traced import request

COUNT = "http_server_request_duration_seconds_count"


class Sent(NamedTuple):
    """One request and the route and status hookkit should record for it."""

    method: str
    path: str
    route: str
    status: int


def send_all(port: int, sent: Iterable[Sent], clients: int = 4) -> list[int]:
    """Send every request (``clients`` at a time); the statuses, in order."""
    with ThreadPoolExecutor(clients) as pool:
        return list(pool.map(lambda s: request(port, s.path, method=s.method)[0], sent))


def counts_by_route(text: str) -> Counter[tuple[str, str, int]]:
    """(method, ``http_route``, status) -> requests counted."""
    found: Counter[tuple[str, str, int]] = Counter()
    for s in samples(text):
        if s.name == COUNT and s.value:
            key = (
                s.labels["http_request_method"],
                s.labels["http_route"],
                int(s.labels["http_response_status_code"]),
            )
            found[key] += int(s.value)
    return found


def route_series(text: str) -> set[str]:
    """The distinct ``http_route`` values of the request count."""
    return {s.labels["http_route"] for s in samples(text) if s.name == COUNT}


def spans_by_name(
    rx: OtlpReceiver, expected: int, timeout: float = 20.0
) -> Counter[tuple[str, str, int]]:
    """Wait for ``expected`` SERVER spans, then a little longer (an extra
    span would arrive too): (span name, ``http.route`` or ``""``, status) ->
    spans."""
    rx.wait_for(lambda span: span.kind == "SERVER", count=expected, timeout=timeout)
    time.sleep(0.3)
    return Counter(
        (
            span.name,
            span.attributes.get("http.route", ""),
            span.attributes["http.response.status_code"],
        )
        for span in rx.spans
        if span.kind == "SERVER"
    )


def expected_counts(sent: Iterable[Sent]) -> Counter[tuple[str, str, int]]:
    """What ``counts_by_route`` should find for ``sent``."""
    return Counter((s.method, s.route, s.status) for s in sent)


def expected_spans(sent: Iterable[Sent]) -> Counter[tuple[str, str, int]]:
    """What ``spans_by_name`` should find for ``sent``: ``{method} {route}``,
    or the method alone without a route."""
    return Counter(
        (f"{s.method} {s.route}" if s.route else s.method, s.route, s.status) for s in sent
    )
