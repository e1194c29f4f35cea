"""The status sink: ``/status.json``, ``/status`` and ``/stacks.json``.

Served by the master's HTTP server (``hookkit._master_http``), the one the
Prometheus sink opened for ``/metrics``: same bind, TLS and basic auth, no
second port to secure. The sink adds its paths to that endpoint in
``start_master`` (it is assembled after the metrics sink, which publishes the
endpoint); with ``HOOKKIT_METRICS=off`` or ``HOOKKIT_METRICS_BIND=none``
there is no server, and the sink says so once, in ``master_starting``'s
``status`` field, without failing the start: a status page is never a
reason for gunicorn not to start.

Everything is read at request time in the endpoint's thread, from what the
master holds (``snapshot``): no worker is asked anything, so a stuck
worker shows as stuck rather than holding up the page. The one exception is
``/stacks.json``, which asks the workers for their stacks over the stack
channels (``stacks``: made per worker in ``before_fork``, kept by the
worker in ``after_fork``, dropped in ``worker_gone``), bounded by a timeout,
and answered only to a reader who may see it (``private``).

``HOOKKIT_STATUS=off`` leaves the sink out: the paths answer 404. A SIGHUP
that turns it off stops this sink (``stop_master``): its handlers answer
404 from then on.
"""

from __future__ import annotations

import json
import time
from typing import Any

from hookkit._aggregate.collect import current
from hookkit._core import events as ev
from hookkit._core.events import Event
from hookkit._core.live import live_view
from hookkit._core.runtime import RUNTIME
from hookkit._core.settings import Settings
from hookkit._core.sink import Fields, Sink
from hookkit._master_http.server import (
    MetricsEndpoint,
    Request,
    Response,
    current_endpoint,
    private_allowed,
)
from hookkit._sinks.status import page, snapshot
from hookkit._sinks.status.stacks import StackChannels, stacks_response

PATHS = ("/status.json", "/status", "/stacks.json")
NO_SERVER = (
    "off: no HTTP server to serve /status.json on (HOOKKIT_METRICS=off or "
    "HOOKKIT_METRICS_BIND=none); set HOOKKIT_STATUS=off to silence this"
)


def _not_found() -> Response:
    return Response(404, b"Not Found: HOOKKIT_STATUS is off\n", "text/plain")


class StatusSink(Sink):
    """The master's live view of its workers, over its HTTP server."""

    name = "status"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.server: Any = None  # the arbiter, in the master
        self.endpoint: MetricsEndpoint | None = None
        self.serving = False
        self.started = time.time()
        self.channels = StackChannels()

    def configure(self, settings: Settings) -> None:
        """Use ``settings`` after a reload (the paths stay where they are)."""
        self.settings = settings

    # -- lifecycle -------------------------------------------------------

    def start_master(self, server: Any) -> Fields:
        """Add the status paths to the master's HTTP server, if there is one."""
        self.server = server
        endpoint = current_endpoint()
        if endpoint is None:
            return {"status": NO_SERVER}
        if self.endpoint is not endpoint:
            self.started = time.time()
            endpoint.route("/status.json", self._status_json)
            endpoint.route("/status", self._status_page)
            endpoint.route("/stacks.json", self._stacks_json, private=True)
            self.endpoint = endpoint
        self.serving = True
        return {"status": "on: " + ", ".join(PATHS)}

    def before_fork(self, age: int) -> None:
        """Master: the next worker's stack channel."""
        self.channels.before_fork(age)

    def after_fork(self, age: int) -> None:
        """Worker: keep its own stack channel, drop the others'."""
        self.endpoint = None
        self.serving = False
        self.channels.after_fork(age)

    def worker_gone(self, age: int) -> None:
        """Master: the worker's stack channel is closed."""
        self.channels.worker_gone(age)

    def hand_over(self, server: Any) -> None:
        """The SIGUSR2 re-exec child: drop the inherited stack channels."""
        self.channels.close_in_child()

    def handle(self, event: Event) -> None:
        """The dirty arbiter, forked from the master without ``pre_fork``,
        drops the stack channels it inherited (its workers have none)."""
        if event.name == ev.DIRTY_ARBITER_STARTING:
            self.endpoint = None
            self.serving = False
            self.channels.close_in_child()

    def stop_master(self, server: Any) -> None:
        """Master exits, or a reload turned the status off: answer 404."""
        self.serving = False
        self.channels.close()

    # -- what the paths answer -------------------------------------------

    def paths_visible(self) -> bool:
        """Whether this endpoint's readers may see request paths, decided
        per HTTP request: paths are personal data (ids, e-mail addresses,
        tokens), shown only where the private routes answer, on a loopback
        bind or with basic auth configured (``private_allowed``: one rule
        for both); otherwise each request shows its route, or nothing."""
        endpoint = self.endpoint
        if endpoint is None:
            return False
        return private_allowed(endpoint.address[0], endpoint.web)

    def document(self, paths: bool) -> dict[str, object]:
        """The ``/status.json`` document, now."""
        aggregate = current()
        totals = None
        slot_of: Any = lambda age: None  # noqa: E731 - no aggregate, no slots
        if aggregate is not None:
            slot_of = aggregate.master.slot_of
            with aggregate.fork_guard.collecting():
                families = list(aggregate.collect())
            totals = snapshot.aggregate_totals(
                (sample.name, sample.value) for family in families for sample in family.samples
            )
        book = RUNTIME.master
        return snapshot.build(
            self.server,
            records={record.age: record for record in book.workers()},
            exits=book.recent_exits(),
            live=live_view,
            slot_of=slot_of,
            totals=totals,
            paths=paths,
            started=self.started,
        )

    def _status_json(self, request: Request) -> Response:
        if not self.serving or self.server is None:
            return _not_found()
        body = json.dumps(self.document(self.paths_visible()), separators=(",", ":"))
        return Response(
            200, body.encode(), "application/json", headers=(("Cache-Control", "no-store"),)
        )

    def _status_page(self, request: Request) -> Response:
        if not self.serving:
            return _not_found()
        return Response(200, page.PAGE, "text/html; charset=utf-8", headers=page.HEADERS)

    def _stacks_json(self, request: Request) -> Response:
        if not self.serving or self.server is None:
            return _not_found()
        workers = {worker.age: pid for pid, worker in list(self.server.WORKERS.items())}
        status, body = stacks_response(self.channels, workers)
        return Response(status, body, "application/json", headers=(("Cache-Control", "no-store"),))
