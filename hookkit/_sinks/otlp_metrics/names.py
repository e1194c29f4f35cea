"""hookkit's metrics under their OTLP names: the one table.

Each row gives a Prometheus family (its name as hookkit's collectors yield
it: a counter without ``_total``, an info without ``_info``) an OTLP name and
unit, chosen so that the OpenTelemetry Collector's standard translation back
to Prometheus (``prometheusexporter`` and ``prometheusremotewriteexporter``
with their default ``add_metric_suffixes``, underscore escaping) gives
today's name again:

- the name is cut into tokens at every character outside ``[a-zA-Z0-9:]``
  (``.`` and ``_`` alike) and joined with ``_``;
- the unit's Prometheus word (``s`` seconds, ``By`` bytes; an annotation in
  braces such as ``{request}`` gives none) is appended unless it is already
  one of the tokens;
- a monotonic sum gets ``_total``; a histogram gets ``_bucket``, ``_sum``
  and ``_count`` as usual.

So ``http.server.request.duration`` in ``s`` comes back as
``http_server_request_duration_seconds``, and the monotonic sum
``gunicorn.worker.busy`` in ``s`` as ``gunicorn_worker_busy_seconds_total``.
The rules are the Collector's (``pkg/translator/prometheus`` in
opentelemetry-collector-contrib, now ``github.com/prometheus/otlptranslator``
``normalizeName``); ``tests/prometheus_names.py`` ports them and
``tests/test_otlp_metrics_names.py`` checks every row, and every sample
of a real aggregate sent through the official encoder, against them. What
the translation may add is not hookkit's: ``job`` and ``instance`` from
``service.name`` and ``service.instance.id``, the resource in
``target_info``, and (depending on the exporter's version and settings)
``otel_scope_name`` and ``otel_scope_version`` labels.

Labels become attributes: the HTTP semantic-convention labels under their
OpenTelemetry names (``http_response_status_code`` as an int), every other
label under its own name, which the translation leaves as it is. A label
whose value is empty is left out: Prometheus treats an empty label as no
label.

A family without a row (the application's own prometheus_client metrics,
the master's ``process_*``) keeps its Prometheus name and no unit: the
translation gives the same name back (and ``_total`` to a counter).
"""

from __future__ import annotations

from typing import NamedTuple

COUNTER = "counter"  # an OTLP monotonic, cumulative sum
# An OTLP non-monotonic sum (an UpDownCounter): a count of things in
# progress, as the semantic conventions type http.server.active_requests.
# In Prometheus a gauge (livesum); the Collector gives it back without _total.
UPDOWN = "updown"
GAUGE = "gauge"
HISTOGRAM = "histogram"  # explicit buckets, cumulative
INFO = "info"  # an OTLP gauge named <name>_info, always 1


class Name(NamedTuple):
    """One family's names: Prometheus (as collected), OTLP, unit, kind."""

    prometheus: str
    otlp: str
    unit: str
    kind: str


NAMES: tuple[Name, ...] = (
    # Requests (hookkit._sinks.prometheus.metrics)
    Name("http_server_request_duration_seconds", "http.server.request.duration", "s", HISTOGRAM),
    Name("http_server_active_requests", "http.server.active_requests", "{request}", UPDOWN),
    Name("http_server_active_websockets", "http.server.active_websockets", "{session}", UPDOWN),
    Name(
        "http_server_websocket_duration_seconds", "http.server.websocket.duration", "s", HISTOGRAM
    ),
    Name(
        "http_server_request_queue_duration_seconds",
        "http.server.request.queue.duration",
        "s",
        HISTOGRAM,
    ),
    Name("hookkit_queue_header_errors", "hookkit.queue_header.errors", "{header}", COUNTER),
    Name("http_server_request_body_size_bytes", "http.server.request.body.size", "By", HISTOGRAM),
    Name("http_server_response_body_size_bytes", "http.server.response.body.size", "By", HISTOGRAM),
    # Workers' lives (hookkit._sinks.prometheus.metrics)
    Name("gunicorn_worker_spawns", "gunicorn.worker.spawns", "{worker}", COUNTER),
    Name("gunicorn_worker_exits", "gunicorn.worker.exits", "{worker}", COUNTER),
    Name("gunicorn_worker_boot_duration_seconds", "gunicorn.worker.boot.duration", "s", HISTOGRAM),
    Name("gunicorn_worker_lifetime_seconds", "gunicorn.worker.lifetime", "s", HISTOGRAM),
    Name("gunicorn_worker_busy_seconds", "gunicorn.worker.busy", "s", COUNTER),
    Name("gunicorn_reloads", "gunicorn.reloads", "{reload}", COUNTER),
    Name("hookkit_sink_errors", "hookkit.sink.errors", "{error}", COUNTER),
    # The master's live facts (hookkit._aggregate.collect.MasterCollector)
    Name("gunicorn_workers", "gunicorn.workers", "{worker}", GAUGE),
    Name("gunicorn_workers_desired", "gunicorn.workers.desired", "{worker}", GAUGE),
    Name("gunicorn_worker_capacity", "gunicorn.worker.capacity", "{request}", GAUGE),
    Name("gunicorn_worker_heartbeat_age_seconds", "gunicorn.worker.heartbeat.age", "s", GAUGE),
    Name("gunicorn_worker_resident_memory_bytes", "gunicorn.worker.resident_memory", "By", GAUGE),
    Name("gunicorn_worker_open_fds", "gunicorn.worker.open_fds", "{file_descriptor}", GAUGE),
    Name("gunicorn_workers_cpu_seconds", "gunicorn.workers.cpu", "s", COUNTER),
    Name("gunicorn_listen_backlog", "gunicorn.listen.backlog", "{connection}", GAUGE),
    Name("gunicorn_master_start_time_seconds", "gunicorn.master.start_time", "s", GAUGE),
    Name("gunicorn_build", "gunicorn.build.info", "", INFO),
    Name("hookkit_multiprocess_files", "hookkit.multiprocess.files", "{file}", GAUGE),
    Name("hookkit_scrape_errors", "hookkit.scrape.errors", "{file}", COUNTER),
)

BY_PROMETHEUS: dict[str, Name] = {name.prometheus: name for name in NAMES}

# Labels under another name in OTLP: OpenTelemetry's HTTP semantic conventions.
ATTRIBUTES: dict[str, str] = {
    "http_request_method": "http.request.method",
    "http_response_status_code": "http.response.status_code",
    "http_route": "http.route",
    "error_type": "error.type",
    "url_scheme": "url.scheme",
}
# Attributes sent as an int (the semantic conventions' type), from a label's digits.
INT_ATTRIBUTES = frozenset({"http.response.status_code"})


def otlp_name(family: str, kind: str) -> Name:
    """The OTLP name and unit of the Prometheus family ``family`` of ``kind``
    (one of this module's kinds): its row, or its own name and no unit."""
    row = BY_PROMETHEUS.get(family)
    if row is not None:
        return row
    return Name(family, family + "_info" if kind == INFO else family, "", kind)


def attribute(label: str, value: str) -> tuple[str, str | int] | None:
    """The attribute of a label and its value; None for an empty value."""
    if value == "":
        return None
    key = ATTRIBUTES.get(label, label)
    if key in INT_ATTRIBUTES and value.isascii() and value.isdigit():
        return key, int(value)
    return key, value
