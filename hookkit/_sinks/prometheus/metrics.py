"""hookkit's Prometheus metrics.

Metric names follow Prometheus's naming rules (base units, ``_total`` on
counters) and OpenTelemetry's stable HTTP semantic conventions
(``http_server_request_duration_seconds`` with ``http_request_method``,
``http_response_status_code``, ``http_route``, ``error_type``,
``url_scheme``). Labels are
bounded whatever clients send: methods outside the standard set become
``_OTHER``, routes come only from the application and are capped, and there
is never a pid label.

The metric objects are created once per master, before the first fork, and
survive configuration reloads: gunicorn re-executes the config on SIGHUP,
but this module is never imported again.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import Counter, Gauge, Histogram

from hookkit._core.exits import REASONS
from hookkit._core.queue_time import REASONS as QUEUE_HEADER_REASONS

# OpenTelemetry's recommended buckets for http.server.request.duration.
OTEL_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)
# Past 10 s, up to gunicorn's timeout: a request that ran into the timeout
# lands in a bucket of its own instead of only in +Inf.
_LONG_BUCKETS = (15, 20, 30, 45, 60, 90, 120, 180, 240, 300, 450, 600, 900, 1200, 1800, 3600)
SIZE_BUCKETS = (0, 100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000, 100_000_000)
BOOT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
LIFETIME_BUCKETS = (1, 10, 60, 300, 900, 1800, 3600, 4 * 3600, 12 * 3600, 86400, 7 * 86400)
# Queue time behind a proxy: a millisecond when idle, seconds when saturated.
QUEUE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
# WebSocket sessions last seconds to hours.
WEBSOCKET_BUCKETS = (1, 5, 15, 30, 60, 300, 900, 1800, 3600)


def duration_buckets(timeout: float) -> tuple[float, ...]:
    """OTel's buckets, plus buckets up to gunicorn's ``timeout`` (fixed at
    master start; 0 means no timeout, and adds nothing)."""
    extra: list[float] = [bucket for bucket in _LONG_BUCKETS if bucket < timeout]
    if timeout > OTEL_DURATION_BUCKETS[-1]:
        extra.append(timeout)
    return (*OTEL_DURATION_BUCKETS, *extra)


class Metrics:
    """Every multiprocess metric hookkit updates (none registered in the
    default registry: hookkit's collector reads them from the directory)."""

    def __init__(self, timeout: float) -> None:
        self.request_duration = Histogram(
            "http_server_request_duration_seconds",
            "Duration of HTTP server requests, from gunicorn's pre_request to "
            "post_request (a streamed body included).",
            [
                "http_request_method",
                "http_response_status_code",
                "http_route",
                "error_type",
                "url_scheme",
            ],
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
        self.active_websockets = Gauge(
            "http_server_active_websockets",
            "WebSocket sessions open (accepted by the app, not yet ended), over the "
            "live workers; not requests, and not busy time.",
            multiprocess_mode="livesum",
            registry=None,
        )
        self.websocket_duration = Histogram(
            "http_server_websocket_duration_seconds",
            "Duration of WebSocket sessions, from the app's accept to its close, the "
            "client's disconnect or the app's end.",
            ["http_route"],
            buckets=WEBSOCKET_BUCKETS,
            registry=None,
        )
        self.queue_duration = Histogram(
            "http_server_request_queue_duration_seconds",
            "Time requests waited between the proxy in front (its X-Request-Start or "
            "X-Queue-Start header, from a peer in forwarded_allow_ips) and gunicorn's "
            "pre_request.",
            ["http_request_method"],
            buckets=QUEUE_BUCKETS,
            registry=None,
        )
        self.queue_header_errors = Counter(
            "hookkit_queue_header_errors",
            "X-Request-Start / X-Queue-Start headers not observed, by reason: negative "
            "(in the future), too_old (over an hour), unparsable, untrusted (the peer is "
            "not in forwarded_allow_ips).",
            ["reason"],
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
        for reason in QUEUE_HEADER_REASONS:
            self.queue_header_errors.labels(reason)
