"""hookkit's Prometheus metrics and the sink that updates them from events.

Metric names follow Prometheus's naming rules (base units, ``_total`` on
counters) and OpenTelemetry's stable HTTP semantic conventions
(``http_server_request_duration_seconds`` with ``http_request_method``,
``http_response_status_code``, ``http_route``, ``error_type``). Labels are
bounded whatever clients send: methods outside the standard set become
``_OTHER``, routes come only from the application and are capped, and there
is never a pid label.

The metric objects are created once per master, before the first fork, and
survive configuration reloads: gunicorn re-executes the config on SIGHUP,
but this module is never imported again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from hookkit._core import events as ev
from hookkit._core import http as _http_semconv
from hookkit._core.events import Event
from hookkit._core.exits import REASONS

# OpenTelemetry's recommended buckets for http.server.request.duration.
OTEL_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)
# Past 10 s, up to gunicorn's timeout: a request that ran into the timeout
# lands in a bucket of its own instead of only in +Inf.
_LONG_BUCKETS = (15, 20, 30, 45, 60, 90, 120, 180, 240, 300, 450, 600, 900, 1200, 1800, 3600)
SIZE_BUCKETS = (0, 100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000, 100_000_000)
BOOT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
LIFETIME_BUCKETS = (1, 10, 60, 300, 900, 1800, 3600, 4 * 3600, 12 * 3600, 86400, 7 * 86400)

# RFC 9110 methods and PATCH; OpenTelemetry maps every other to _OTHER.
KNOWN_METHODS = _http_semconv.KNOWN_METHODS
OTHER = _http_semconv.OTHER_METHOD


def duration_buckets(timeout: float) -> tuple[float, ...]:
    """OTel's buckets, plus buckets up to gunicorn's ``timeout`` (fixed at
    master start; 0 means no timeout, and adds nothing)."""
    extra: list[float] = [bucket for bucket in _LONG_BUCKETS if bucket < timeout]
    if timeout > OTEL_DURATION_BUCKETS[-1]:
        extra.append(timeout)
    return (*OTEL_DURATION_BUCKETS, *extra)


def method_label(method: object) -> str:
    """The method, or ``_OTHER`` for anything outside the standard set."""
    return method if isinstance(method, str) and method in KNOWN_METHODS else OTHER


class RouteLimit:
    """At most ``limit`` distinct routes per process; the rest are ``_OTHER``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.seen: set[str] = set()

    def label(self, route: object) -> str:
        """The route label: empty when the app gave none."""
        if not isinstance(route, str) or not route:
            return ""
        if route in self.seen:
            return route
        if len(self.seen) < self.limit:
            self.seen.add(route)
            return route
        return OTHER


def route_from_environ(environ: Mapping[str, Any] | None) -> str | None:
    """The route template the application matched, if it says: the WSGI
    environ key ``hookkit.route`` (any framework can set it), or Flask's and
    werkzeug's matched rule (``environ["werkzeug.request"].url_rule.rule``)."""
    if not environ:
        return None
    route = environ.get("hookkit.route")
    if isinstance(route, str):
        return route
    rule = getattr(getattr(environ.get("werkzeug.request"), "url_rule", None), "rule", None)
    return rule if isinstance(rule, str) else None


class Metrics:
    """Every multiprocess metric hookkit updates (none registered in the
    default registry: hookkit's collector reads them from the directory)."""

    def __init__(self, timeout: float) -> None:
        self.request_duration = Histogram(
            "http_server_request_duration_seconds",
            "Duration of HTTP server requests, from gunicorn's pre_request to "
            "post_request (a streamed body included).",
            ["http_request_method", "http_response_status_code", "http_route", "error_type"],
            buckets=duration_buckets(timeout),
            registry=None,
        )
        self.active_requests = Gauge(
            "http_server_active_requests",
            "HTTP server requests in flight, over the live workers.",
            ["http_request_method"],
            multiprocess_mode="livesum",
            registry=None,
        )
        self.request_body = Histogram(
            "http_server_request_body_size_bytes",
            "Size of HTTP request bodies, from Content-Length.",
            ["http_request_method"],
            buckets=SIZE_BUCKETS,
            registry=None,
        )
        self.response_body = Histogram(
            "http_server_response_body_size_bytes",
            "Size of HTTP response bodies sent.",
            ["http_request_method"],
            buckets=SIZE_BUCKETS,
            registry=None,
        )
        self.spawns = Counter(
            "gunicorn_worker_spawns", "Workers forked by the master.", registry=None
        )
        self.exits = Counter(
            "gunicorn_worker_exits",
            "Worker exits, by the reason of hookkit's worker_exited log event.",
            ["reason"],
            registry=None,
        )
        self.boot_duration = Histogram(
            "gunicorn_worker_boot_duration_seconds",
            "Seconds from a worker's fork to its application loaded.",
            buckets=BOOT_BUCKETS,
            registry=None,
        )
        self.lifetime = Histogram(
            "gunicorn_worker_lifetime_seconds",
            "Seconds from a worker's fork to its exit.",
            buckets=LIFETIME_BUCKETS,
            registry=None,
        )
        self.busy = Counter(
            "gunicorn_worker_busy_seconds",
            "Seconds workers spent handling requests (each request's duration); "
            "utilization is its rate over gunicorn_worker_capacity.",
            registry=None,
        )
        self.reloads = Counter("gunicorn_reloads", "Configuration reloads (SIGHUP).", registry=None)
        self.sink_errors = Counter(
            "hookkit_sink_errors",
            "Errors raised by hookkit's sinks (and hookkit itself), which never reach gunicorn.",
            ["sink"],
            registry=None,
        )

    def start_series(self, sinks: Iterable[str]) -> None:
        """Create the series alerts need from the start, at 0, so that
        ``increase()`` sees the first event (called in the master)."""
        for reason in REASONS:
            self.exits.labels(reason)
        for sink in sinks:
            self.sink_errors.labels(sink)


class MetricsSink:
    """Events as metric updates, in whichever process the event happens."""

    name = "metrics"

    def __init__(self, metrics: Metrics, route_limit: int) -> None:
        self.metrics = metrics
        self.routes = RouteLimit(route_limit)
        # Labelled children by label values: labels() validates and locks on
        # every call, and every request would pay for it. Both caches are
        # bounded by the label values' bounds (methods, statuses, routes).
        self._active: dict[str, Any] = {}
        self._durations: dict[tuple[str, str, str, str], Any] = {}
        self._request_bodies: dict[str, Any] = {}
        self._response_bodies: dict[str, Any] = {}

    def handle(self, event: Event) -> None:
        """Update the metrics ``event`` concerns."""
        name, fields, m = event.name, event.fields, self.metrics
        if name == ev.REQUEST_STARTED:
            self.request_started(fields.get("method"))
        elif name == ev.REQUEST_FINISHED:
            self._request_finished(fields)
        elif name == ev.WORKER_SPAWNING:
            m.spawns.inc()
        elif name == ev.WORKER_BOOTED:
            boot = fields.get("boot_duration_seconds")
            if isinstance(boot, (int, float)):
                m.boot_duration.observe(boot)
        elif name == ev.WORKER_EXITED:
            m.exits.labels(str(fields.get("reason", "unknown"))).inc()
            uptime = fields.get("uptime_seconds")
            if isinstance(uptime, (int, float)):
                m.lifetime.observe(uptime)
        elif name == ev.SERVER_RELOADED:
            m.reloads.inc()

    def _request_finished(self, fields: Mapping[str, object]) -> None:
        duration = fields.get("duration_seconds")
        status = fields.get("status")
        request_bytes = fields.get("request_bytes")
        response_bytes = fields.get("response_bytes")
        self.request_finished(
            fields.get("method"),
            status=status if isinstance(status, int) else None,
            route=fields.get("route"),
            error_type=fields.get("error_type"),
            duration=duration if isinstance(duration, (int, float)) else None,
            request_bytes=request_bytes if isinstance(request_bytes, int) else None,
            response_bytes=response_bytes if isinstance(response_bytes, int) else None,
        )

    def request_started(self, method: object) -> None:
        """A request began (pre_request): one more in flight."""
        label = method_label(method)
        child = self._active.get(label)
        if child is None:
            child = self._active[label] = self.metrics.active_requests.labels(label)
        child.inc()

    def request_finished(
        self,
        method: object,
        *,
        status: int | None,
        route: object,
        error_type: object,
        duration: float | None,
        request_bytes: int | None,
        response_bytes: int | None,
    ) -> None:
        """A request ended (post_request); called directly on every request,
        so that no event object is built for the metrics alone."""
        m = self.metrics
        label = method_label(method)
        active = self._active.get(label)
        if active is None:
            active = self._active[label] = m.active_requests.labels(label)
        active.dec()
        if duration is None:
            return
        key = (
            label,
            str(status) if status is not None else "",
            self.routes.label(route),
            str(error_type or ""),
        )
        child = self._durations.get(key)
        if child is None:
            child = self._durations[key] = m.request_duration.labels(*key)
        child.observe(duration)
        m.busy.inc(duration)
        if request_bytes is not None:
            body = self._request_bodies.get(label)
            if body is None:
                body = self._request_bodies[label] = m.request_body.labels(label)
            body.observe(request_bytes)
        if response_bytes is not None:
            body = self._response_bodies.get(label)
            if body is None:
                body = self._response_bodies[label] = m.response_body.labels(label)
            body.observe(response_bytes)
