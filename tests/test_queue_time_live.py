"""Queue time on a real gunicorn: a proxy's ``X-Request-Start`` (or
``X-Queue-Start``) in every form proxies send, from a trusted peer and from
an untrusted one, malformed and in the future, on the sync worker, on
gunicorn's own ASGI worker (which reads the raw header bytes) and on
uvicorn-worker's ``UvicornWorker`` (hookkit's ASGI middleware). Checked in
what the client and an operator see: the status, ``/metrics``, the span
exported over OTLP/HTTP to an ``OtlpReceiver`` and the access line.

The tests play the proxy from 127.0.0.1, which gunicorn trusts by default
(``forwarded_allow_ips``); ``--forwarded-allow-ips 10.9.9.9`` makes the same
client untrusted. Each request is stamped ``WAIT`` seconds in the past, so
the wait the worker measures is at least ``WAIT`` and at most the time from
the stamp to the response, which the test measures too: exact bounds
however loaded the machine is.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from hookkit._core.queue_time import REASONS
from hookkit._face.gunicorn_process import Gunicorn, match
from tests.otlp import OtlpReceiver
from tests.scrape import samples, scrape_text, total
from tests.traced import request, server_spans, start_traced

pytestmark = pytest.mark.integration

QUEUE = "http_server_request_queue_duration_seconds"
ERRORS = "hookkit_queue_header_errors_total"
ATTRIBUTE = "gunicorn.request.queue_duration"
WAIT = 0.25  # seconds each stamp is in the past
SLACK = 0.002  # a stamp in whole milliseconds, rounded, may be this much later

WORKERS = {
    "sync": ("apps.wsgi:app", ()),
    "asgi": ("apps.asgi:app", ("-k", "asgi")),
    "uvicorn": ("apps.asgi:app", ("-k", "uvicorn_worker.UvicornWorker")),
}
ALL = pytest.mark.parametrize("worker", list(WORKERS))
# The forms proxies send, for a start time ``t`` in epoch seconds.
FORMS: dict[str, tuple[str, Callable[[float], str]]] = {
    "nginx": ("X-Request-Start", lambda t: f"t={t:.3f}"),  # "t=${msec}"
    "heroku": ("X-Request-Start", lambda t: str(int(t * 1000))),  # milliseconds
    "haproxy": ("X-Request-Start", lambda t: f"t={int(t * 1000)}"),  # t=%Ts%ms
    "apache": ("X-Request-Start", lambda t: f"t={int(t * 1_000_000)}"),  # "%t": microseconds
    "queue-start": ("X-Queue-Start", lambda t: f"t={int(t * 1_000_000)}"),
}


def start(serve: Any, rx: OtlpReceiver, worker: str, *args: str) -> Gunicorn:
    """One worker of class ``worker``, exporting spans to ``rx``, the access line on."""
    app, worker_args = WORKERS[worker]
    return start_traced(serve, rx, *worker_args, *args, app=app, env={"HOOKKIT_ACCESS_LOG": "on"})


def queue_sample(text: str, suffix: str, le: str | None = None) -> float:
    """A sample of the queue histogram, summed over methods."""
    labels = {} if le is None else {"le": le}
    return total(text, QUEUE + suffix, **labels)


def delta(before: str, after: str, suffix: str, le: str | None = None) -> float:
    """How much a sample of the queue histogram grew between two scrapes."""
    return queue_sample(after, suffix, le) - queue_sample(before, suffix, le)


def scrape_when(server: Gunicorn, ready: Callable[[str], bool], timeout: float = 5.0) -> str:
    """Scrape until ``ready`` says the exposition has what the test waits
    for (the queue time is recorded in ``post_request``, which gunicorn runs
    after the client has its response), or until ``timeout``."""
    deadline = time.monotonic() + timeout
    text = scrape_text(server.metrics_port)
    while not ready(text) and time.monotonic() < deadline:
        time.sleep(0.02)
        text = scrape_text(server.metrics_port)
    return text


def errors(text: str) -> dict[str, float]:
    """``hookkit_queue_header_errors_total`` by reason."""
    return {s.labels["reason"]: s.value for s in samples(text) if s.name == ERRORS}


@ALL
def test_each_form_from_a_trusted_peer_is_observed_near_its_wait(serve: Any, worker: str) -> None:
    """A request stamped 0.25 s ago, in each form, adds one observation of
    at least 0.25 s and at most the stamp's age at the response: above the
    0.1 s bucket, in the 0.5 s one unless the machine took longer. The span
    and the access line carry the same wait; no header error is counted."""
    with OtlpReceiver() as rx:
        server = start(serve, rx, worker)
        assert dict.fromkeys(REASONS, 0.0) == errors(scrape_text(server.metrics_port))
        seen: dict[str, tuple[object, ...]] = {}
        ages: dict[str, float] = {}
        for form, (header, value) in FORMS.items():
            before = scrape_text(server.metrics_port)
            stamp = time.time() - WAIT
            status, _ = request(server.port, f"/{form}", [(header, value(stamp))])
            ages[form] = time.time() - stamp + SLACK
            counted = queue_sample(before, "_count")
            after = scrape_when(
                server, lambda text, counted=counted: queue_sample(text, "_count") > counted
            )
            seen[form] = (
                status,
                delta(before, after, "_count"),
                delta(before, after, "_bucket", "0.1"),
                delta(before, after, "_bucket", "+Inf"),
                delta(before, after, "_bucket", "0.5") == 1 or ages[form] > 0.5,
                WAIT - SLACK <= delta(before, after, "_sum") <= ages[form],
            )
        spans = server_spans(rx, count=len(FORMS))
        lines = server.wait_for(match(event="request_finished"), count=len(FORMS))
        text = scrape_text(server.metrics_port)

    assert dict.fromkeys(FORMS, (200, 1.0, 0.0, 1.0, True, True)) == seen
    assert dict.fromkeys(REASONS, 0.0) == errors(text)
    in_span = {span.attributes["url.path"][1:]: span.attributes.get(ATTRIBUTE) for span in spans}
    in_line = {line["path"][1:]: line.get("queue_seconds") for line in lines}
    for found in (in_span, in_line):
        assert set(FORMS) == set(found)
        assert dict.fromkeys(FORMS, True) == {
            form: isinstance(waited, float) and WAIT - SLACK <= waited <= ages[form]
            for form, waited in found.items()
        }


@ALL
def test_an_untrusted_peers_stamps_are_only_counted(serve: Any, worker: str) -> None:
    """With 127.0.0.1 not in ``forwarded_allow_ips``, no form is observed:
    each request is answered, counted under ``untrusted``, its span has no
    queue attribute and its access line ``queue_seconds`` null."""
    with OtlpReceiver() as rx:
        server = start(serve, rx, worker, "--forwarded-allow-ips", "10.9.9.9")
        statuses = [
            request(server.port, f"/{form}", [(header, value(time.time() - WAIT))])[0]
            for form, (header, value) in FORMS.items()
        ]
        spans = server_spans(rx, count=len(FORMS))
        lines = server.wait_for(match(event="request_finished"), count=len(FORMS))
        text = scrape_when(server, lambda text: errors(text)["untrusted"] >= len(FORMS))

    assert [200] * len(FORMS) == statuses
    assert {**dict.fromkeys(REASONS, 0.0), "untrusted": float(len(FORMS))} == errors(text)
    assert 0 == queue_sample(text, "_count")
    assert [None] * len(FORMS) == [span.attributes.get(ATTRIBUTE) for span in spans]
    assert [None] * len(FORMS) == [line["queue_seconds"] for line in lines]


# Values a trusted peer may send that are not a usable start time.
BAD = {
    "t=soon": "unparsable",
    "t=": "unparsable",
    "12345": "unparsable",  # a number, but before 2000 in every unit
    "t=1e400": "unparsable",
    "t=-1767225600.000": "unparsable",
    "t=nan": "unparsable",
}


@ALL
def test_malformed_and_future_values_never_fail_a_request(serve: Any, worker: str) -> None:
    """Malformed values, a stamp a minute in the future (the proxy's clock
    ahead) and one two hours old: every request answered 200, each counted
    under its reason, none observed; a good stamp afterwards still is."""
    with OtlpReceiver() as rx:
        server = start(serve, rx, worker)
        headers = [("X-Request-Start", value) for value in BAD]
        headers += [
            ("X-Request-Start", f"t={time.time() + 60:.3f}"),
            ("X-Queue-Start", f"t={int((time.time() - 7200) * 1_000_000)}"),
        ]
        statuses = [request(server.port, "/", [header])[0] for header in headers]
        text = scrape_when(server, lambda text: sum(errors(text).values()) >= len(headers))
        good = request(server.port, "/", [("X-Request-Start", f"t={time.time() - WAIT:.3f}")])
        after = scrape_when(server, lambda text: queue_sample(text, "_count") >= 1)

    assert [200] * len(headers) == statuses
    expected = {**dict.fromkeys(REASONS, 0.0), "unparsable": float(len(BAD))}
    expected.update(negative=1.0, too_old=1.0)
    assert expected == errors(text)
    assert (0, 200, 1) == (queue_sample(text, "_count"), good[0], queue_sample(after, "_count"))
