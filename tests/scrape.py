"""Reading hookkit's /metrics in tests: scrape, parse, sum."""

from __future__ import annotations

import time
import urllib.request
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample


def scrape_text(port: int, path: str = "/metrics", accept: str | None = None) -> str:
    """The exposition text from 127.0.0.1:``port``."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if accept:
        request.add_header("Accept", accept)
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.read().decode()


def samples(text: str) -> list[Sample]:
    """Every sample of an exposition."""
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def total(text: str, name: str, **labels: str) -> float:
    """The sum of the samples called ``name`` whose labels include ``labels``."""
    return sum(
        s.value
        for s in samples(text)
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def series(text: str, prefix: str = "") -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    """The distinct series (name and labels) whose name starts with ``prefix``."""
    return {
        (s.name, tuple(sorted(s.labels.items())))
        for s in samples(text)
        if s.name.startswith(prefix)
    }


REQUEST_COUNT = "http_server_request_duration_seconds_count"


def settled_count(server: Any, expected: float, timeout: float = 15.0) -> str:
    """Scrape ``server``'s /metrics (its ``metrics_port``) until ``expected``
    requests are counted (post_request runs after the client has its
    response), at most ``timeout`` seconds; then once more a little later,
    so that a request counted twice would show. That last exposition."""
    deadline = time.monotonic() + timeout
    while total(scrape_text(server.metrics_port), REQUEST_COUNT) < expected:
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    time.sleep(0.3)
    return scrape_text(server.metrics_port)
