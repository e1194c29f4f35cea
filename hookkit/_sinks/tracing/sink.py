"""The tracing sink: one OpenTelemetry SERVER span per request, per worker.

Lifecycle, per process:

- master: nothing is built; the configuration was checked at start-up
  (``config``), so no export thread ever runs in the master and
  nothing crosses a fork;
- worker, once the app is loaded (``post_worker_init``, or
  ``dirty_worker_init``): an SDK tracer provider the app or
  ``opentelemetry-instrument`` installed is used as it is (opentelemetry-distro
  builds its provider in the master, before the fork; the SDK restarts its
  batch thread in each worker), with the worker's identity as span
  attributes, since that provider's resource does not name the worker;
  otherwise, when export was asked for, hookkit builds one with a batch
  processor per exporter and makes it the global provider, so the app's own
  spans go to the same place;
- request: the span starts in ``pre_request`` and is attached as the
  current context, so the app's spans and the contrib framework
  instrumentations nest under it (they make an INTERNAL span when a span is
  current); it ends in ``post_request``, after the body was streamed;
- ``worker_abort``: the spans of the requests in flight end as ERROR, with
  the stuck stack in an exception event, then a flush bounded in time;
- ``worker_int`` / ``worker_exit``: a flush or shutdown bounded by
  ``HOOKKIT_TRACING_FLUSH_SECONDS``.

The SDK's ``force_flush`` and ``shutdown`` do not honour their timeouts
against a hanging collector (opentelemetry-python #4568), so hookkit runs
them in a daemon thread and waits for it at most the bound.
"""

from __future__ import annotations

import atexit
import gc
import os
from collections.abc import Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import SpanKind, Status, StatusCode

from hookkit._core import abort_budget
from hookkit._core import events as ev
from hookkit._core.client_address import client_address, client_address_from_environ
from hookkit._core.events import Event
from hookkit._core.http import (
    OTHER_METHOD,
    RouteLimit,
    header_pairs,
    method_attributes,
    request_headers,
    split_host,
)
from hookkit._core.settings import Settings
from hookkit._core.sink import Fields, RequestFinished, RequestStarted, Sink, SpanIds
from hookkit._core.trust import TrustedPeers
from hookkit._sinks.tracing.config import TracingConfig
from hookkit._sinks.tracing.export import (
    ReportingExporter,
    installed,
    make_exporter,
    run_bounded,
)
from hookkit._version import __version__

TIMEOUT_ERROR = "timeout"

# Which tracer provider a worker uses.
PROVIDER_HOOKKIT = "hookkit"  # built by hookkit from the OTEL_* variables
PROVIDER_APP = "app"  # installed by the app or opentelemetry-instrument
PROVIDER_NONE = "none"  # tracing on, but nothing asked for export: no spans
PROVIDER_OFF = "off"


class _HeaderGetter(Getter[Mapping[str, list[str]]]):
    """Reads propagation headers from the request's headers, by lower-case
    name. Repeated ``tracestate`` and ``baggage`` lines are one list (RFC
    9110 5.3); repeated, differing ``traceparent`` lines are invalid (W3C
    Trace Context), and a new trace starts."""

    def get(self, carrier: Mapping[str, list[str]], key: str) -> list[str] | None:
        values = carrier.get(key.lower())
        if not values:
            return None
        if len(values) == 1:
            return values
        if key.lower() == "traceparent":
            return values[:1] if len(set(values)) == 1 else None
        return [",".join(values)]

    def keys(self, carrier: Mapping[str, list[str]]) -> list[str]:
        return list(carrier)


_GETTER = _HeaderGetter()


class TracingSink(Sink):
    """The tracing sink of one process."""

    name = "tracing"

    def __init__(self, settings: Settings, environ: Mapping[str, str] | None = None) -> None:
        # A ConfigError names the variable (environ: the OTEL_* variables, by
        # default os.environ).
        self.config = TracingConfig.load(settings, environ)
        self.provider: Any = None
        self.tracer: trace.Tracer | None = None
        self.provider_kind = PROVIDER_OFF
        self.age: int | None = None  # this worker's, after the fork
        self._propagator: Any = None
        self._span_attributes: dict[str, Any] = {}
        self._routes = RouteLimit(settings.max_routes)
        self._stopped = False
        self._base_resource: Any = None
        self._server_spans: Any = None  # hookkit's own span maker, see _spans
        # The span of each request in flight and the token of its attached
        # context, by RequestStarted.key.
        self._spans: dict[int, tuple[Any, Any]] = {}
        # Who may name the client (forwarded_allow_ips), and whether the
        # environ's REMOTE_ADDR is the peer (no PROXY protocol): the
        # worker's gunicorn config, from start_worker.
        self._trusted = TrustedPeers.from_config(None)
        self._remote_is_peer = True

    def configure(self, settings: Settings, environ: Mapping[str, str] | None = None) -> None:
        """Use ``settings`` (checked at start-up, in the master)."""
        self.config = TracingConfig.load(settings, environ)
        self._routes = RouteLimit(settings.max_routes)

    # -- master ----------------------------------------------------------

    def start_master(self, server: Any) -> Fields:
        """Import what the workers will need; say what tracing will do."""
        self.preload()
        return {"tracing": self.config.describe()}

    def preload(self) -> None:
        """Import, in the master, what each worker will build its provider
        from. Code imported before fork is shared by every worker (copy on
        write); imported after, each worker holds its own copy (some 20 MiB
        for the SDK, the exporter and their dependencies) and boots slower.
        Importing starts no thread: nothing is built until after fork."""
        if not (self.config.enabled and self.config.own_provider):
            return
        # The propagators were checked at start-up (OTEL_PROPAGATORS).
        import opentelemetry.propagate
        import opentelemetry.sdk.resources
        import opentelemetry.sdk.trace
        import opentelemetry.sdk.trace.export

        import hookkit._sinks.tracing.spans

        if "otlp" in self.config.exporters:
            # The OTLP/HTTP exporter and the HTTP client it builds its
            # session from when it is made (in the worker).
            import requests  # noqa: F401

            import hookkit._sinks.tracing.otlp_encode
            import hookkit._sinks.tracing.otlp_http  # noqa: F401

        # The environment's resource (resource detectors scan entry points:
        # slow, and the same answer in every worker).
        self._base_resource = opentelemetry.sdk.resources.Resource.create()

    def before_fork(self, age: int) -> None:
        """Freeze the master's objects (``gc.freeze``) just before the fork,
        after every hookkit sink made what it makes in ``pre_fork``: the
        worker inherits them in the GC's permanent generation, so its
        collections never write to (and so copy) the pages it shares with
        the master, the SDK's and the exporter's modules among them. Each
        fork freezes what the master made since; the master never collects
        what it froze (it makes little, between forks, that only a
        collection would free)."""
        if self.config.enabled:
            gc.freeze()

    # -- per worker ------------------------------------------------------

    def after_fork(self, age: int) -> None:
        """This worker's age (a resource attribute); no span of the master's."""
        self.age = age
        self._spans.clear()

    def start_worker(self, worker: Any) -> Fields:
        """Find or build this worker's tracer provider, once the app is loaded
        (gevent has patched by then, and the app may have installed its own).
        A failure here costs the worker its spans, never its boot."""
        cfg = getattr(worker, "cfg", None)
        self._trusted = TrustedPeers.from_config(cfg)
        self._remote_is_peer = getattr(cfg, "proxy_protocol", "off") in ("off", False, None)
        master_pid = getattr(worker, "ppid", None) or os.getppid()
        identity = worker_identity(os.getpid(), master_pid, self.age)
        service_name = getattr(getattr(worker, "cfg", None), "proc_name", None)
        try:
            return {"tracing": self.start_provider(identity, service_name or None)}
        except Exception as exc:
            self.tracer = None
            self.report_error("setting tracing up", exc)
            return {"tracing": "error"}

    def start_provider(self, identity: Mapping[str, Any], service_name: str | None) -> str:
        """Find or build this worker's tracer provider; returns which
        (``PROVIDER_*``). ``identity`` is the worker's pid, master pid and
        age, as resource attributes (or span attributes on the app's provider)."""
        self.tracer = None
        self._server_spans = None
        self._stopped = False
        self.provider_kind = PROVIDER_OFF
        if not self.config.enabled:
            return self.provider_kind
        current = trace.get_tracer_provider()
        if installed(current):
            self.provider = current
            self.provider_kind = PROVIDER_APP
            self._span_attributes = dict(identity)
        elif self.config.own_provider:
            self.provider = self._build_provider(identity, service_name)
            trace.set_tracer_provider(self.provider)
            self.provider_kind = PROVIDER_HOOKKIT
            self._span_attributes = {}
        else:
            self.provider_kind = PROVIDER_NONE
            return self.provider_kind
        self.tracer = self.provider.get_tracer("hookkit", __version__)
        # Imported here, not at the top: opentelemetry.propagate reads
        # OTEL_PROPAGATORS when first imported and fails on an unknown name
        # without naming the variable; hookkit checked it at start-up.
        from opentelemetry import propagate

        self._propagator = propagate.get_global_textmap()
        atexit.register(self.shutdown, self.config.flush_seconds)
        return self.provider_kind

    def wants(self, method: str) -> bool:
        """Spans only where a tracer was found or built (this worker's)."""
        return self.tracer is not None

    def _export_failed(self, exc: Exception) -> None:
        self.report_error("exporting spans", exc)

    def stop_worker(self, seconds: float) -> None:
        """The worker leaves: flush and shut down within ``seconds``."""
        self.shutdown(seconds)

    def handle(self, event: Event) -> None:
        """Flush on worker_int; end the stuck spans on worker_abort; mark a
        slow request's span."""
        name = event.name
        if name == ev.WORKER_INTERRUPTED:
            self.flush()
        elif name == ev.WORKER_ABORTED:
            self.abort(event.fields)
        elif name == ev.REQUEST_SLOW:
            self.slow(event.fields)

    def _build_provider(self, identity: Mapping[str, Any], service_name: str | None) -> Any:
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        resource = self._base_resource or Resource.create()
        named = str(resource.attributes.get(SERVICE_NAME, ""))
        extra: dict[str, Any] = dict(identity)
        if service_name and (not named or named.startswith("unknown_service")):
            extra[SERVICE_NAME] = service_name
        # What the user set in OTEL_RESOURCE_ATTRIBUTES wins over hookkit's.
        resource = Resource(extra).merge(resource)
        if SERVICE_NAME in extra:
            resource = resource.merge(Resource({SERVICE_NAME: extra[SERVICE_NAME]}))
        # shutdown_on_exit=False: the SDK's own atexit shutdown waits without
        # bound on a hanging collector; hookkit's is bounded.
        provider = TracerProvider(resource=resource, shutdown_on_exit=False)
        processors: list[BatchSpanProcessor] = []
        for name in self.config.exporters:
            made = make_exporter(name)
            exporter = ReportingExporter(made, name, self._export_failed)
            # hookkit's OTLP/HTTP exporter takes spans encoded as they end
            # (otlp_encode): its export thread only joins and sends them.
            if getattr(made, "takes_encoded", False):
                from hookkit._sinks.tracing.otlp_encode import EncodingBatchSpanProcessor

                processors.append(EncodingBatchSpanProcessor(exporter))
            else:
                processors.append(BatchSpanProcessor(exporter))
            provider.add_span_processor(processors[-1])
        if set(self.config.exporters) <= {"otlp"}:
            # Exported only over OTLP, by hookkit's encoder: hookkit's own
            # span can skip the SDK's per-span machinery (see _spans).
            from hookkit._sinks.tracing.spans import ServerSpans

            self._server_spans = ServerSpans(provider, processors, __version__)
        return provider

    # -- per request -----------------------------------------------------

    def request_started(self, request: RequestStarted) -> SpanIds | None:
        """Start the request's SERVER span and make it current."""
        tracer = self.tracer
        if tracer is None:
            return None
        req = request.request
        config = self.config
        headers = request_headers(req)
        by_name: dict[str, list[str]] = {}
        for name, value in headers:
            by_name.setdefault(name, []).append(value)
        scheme = getattr(req, "scheme", None) or "http"
        host = by_name.get("host")
        path = request.path
        if config.excluded is not None and config.excluded.search(
            f"{scheme}://{host[0] if host else ''}{path}"
        ):
            return None
        parent = self._propagator.extract(by_name, context=Context(), getter=_GETTER)
        method, original = method_attributes(request.method)
        attributes = self._attributes(
            req,
            headers=headers,
            by_name=by_name,
            scheme=scheme,
            path=path,
            method=method,
            original=original,
        )
        name = method if method != OTHER_METHOD else "HTTP"
        if self._server_spans is not None:
            span = self._server_spans.start(name, parent, attributes)
        else:
            span = tracer.start_span(
                name, context=parent, kind=SpanKind.SERVER, attributes=attributes
            )
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        self._spans[request.key] = (span, token)
        # The span's context has the ids as integers: formatted only where
        # a line shows them.
        ids: SpanIds = span.get_span_context()
        return ids

    def _attributes(
        self,
        req: object,
        *,
        headers: list[tuple[str, str]],
        by_name: Mapping[str, list[str]],
        scheme: str,
        path: str,
        method: str,
        original: str | None,
    ) -> dict[str, Any]:
        """The span's attributes known when the request starts."""
        config = self.config
        attributes: dict[str, Any] = {
            "http.request.method": method,
            "url.scheme": scheme,
            "url.path": path,
        }
        if original is not None:
            attributes["http.request.method_original"] = original
        query = getattr(req, "query", None)
        if query:
            attributes["url.query"] = config.redactor.redact(query)
        host = by_name.get("host")
        if host:
            address, port = split_host(host[0])
            attributes["server.address"] = address
            attributes["server.port"] = port or (443 if scheme == "https" else 80)
        # The client behind trusted proxies (hookkit._core.client_address);
        # the peer is the connection's, whoever it is.
        client = client_address(
            req, self._trusted, (by_name.get("x-forwarded-for"), by_name.get("forwarded"))
        )
        if client is not None:
            attributes["client.address"] = client
        peer = getattr(req, "peer_addr", None)
        if isinstance(peer, tuple) and peer:
            attributes["network.peer.address"] = str(peer[0])
            if len(peer) > 1 and isinstance(peer[1], int):
                attributes["network.peer.port"] = peer[1]
        version = _protocol_version(getattr(req, "version", None))
        if version:
            attributes["network.protocol.version"] = version
        agent = by_name.get("user-agent")
        if agent:
            attributes["user_agent.original"] = agent[0]
        if config.request_headers:
            attributes.update(config.request_headers.attributes("http.request.header.", headers))
        if self._span_attributes:
            attributes.update(self._span_attributes)
        return attributes

    def request_finished(self, request: RequestFinished) -> None:
        """End the request's span with what the client received, and leave
        its context."""
        entry = self._spans.pop(request.key, None)
        if entry is None:
            return
        span, token = entry
        try:
            if span is not None:
                self._finish(span, request)
        finally:
            otel_context.detach(token)

    def _finish(self, span: Any, outcome: RequestFinished) -> None:
        if not span.is_recording():  # not sampled: only the context mattered
            span.end()
            return
        status = outcome.status
        if status is not None:
            span.set_attribute("http.response.status_code", status)
        waited = outcome.queue_seconds
        if waited is not None:  # behind a trusted proxy that stamped X-Request-Start
            span.set_attribute("gunicorn.request.queue_duration", waited)
        label = self._routes.label(outcome.route)
        environ, resp = outcome.environ, outcome.response
        if label and label != OTHER_METHOD:
            span.set_attribute("http.route", label)
            method = span.attributes.get("http.request.method")
            span.update_name(f"{method if method != OTHER_METHOD else 'HTTP'} {label}")
        if isinstance(environ, dict) and "client.address" not in span.attributes:
            # gunicorn's ASGI worker puts no peer on its request: the
            # environ it hands post_request has it (REMOTE_ADDR).
            client = client_address_from_environ(environ, self._trusted)
            if client is not None:
                span.set_attribute("client.address", client)
            remote = environ.get("REMOTE_ADDR")
            if (
                self._remote_is_peer
                and isinstance(remote, str)
                and remote not in ("", "-")
                and "network.peer.address" not in span.attributes
            ):
                span.set_attribute("network.peer.address", remote)
        if self.config.response_headers and resp is not None:
            span.set_attributes(
                self.config.response_headers.attributes(
                    "http.response.header.", header_pairs(getattr(resp, "headers", None))
                )
            )
        error = outcome.error_type
        if error:
            span.set_attribute("error.type", error)
            if outcome.exception is not None:
                span.record_exception(outcome.exception)
            # 4xx is the client's error, not the server's: only 5xx and
            # exceptions make the span an error.
            if status is None or status >= 500 or outcome.exception is not None:
                span.set_status(Status(StatusCode.ERROR))
        span.end()

    def abort(self, fields: Fields) -> bool:
        """gunicorn is aborting this worker (its timeout; ``worker_aborted``'s
        fields): end every span in flight as a timeout error with the stuck
        stack, then flush. Returns whether the flush finished in time."""
        stacks = _by_span_id(fields.get("requests_in_flight"), "stack")
        timeout = fields.get("timeout")
        ended = 0
        for key, (span, token) in list(self._spans.items()):
            if span is None:
                continue
            # post_request, if it still runs, only leaves the context.
            self._spans[key] = (None, token)
            span.set_attribute("error.type", TIMEOUT_ERROR)
            span_id = format(span.get_span_context().span_id, "016x")
            span.add_event(
                "exception",
                {
                    "exception.type": "WorkerTimeout",
                    "exception.message": f"gunicorn aborted the worker: the request ran "
                    f"past its timeout ({timeout} s)",
                    "exception.stacktrace": str(stacks.get(span_id) or ""),
                },
            )
            span.set_status(Status(StatusCode.ERROR, "worker timeout"))
            span.end()
            ended += 1
        if not ended:
            return True
        return self.flush(abort_budget.seconds_left(self.config.flush_seconds))

    def slow(self, fields: Fields) -> None:
        """The watchdog found a request past its threshold (``request_slow``'s
        fields): a span event on its span."""
        span_id = fields.get("span_id")
        if span_id is None:
            return
        for span, _token in list(self._spans.values()):
            if span is not None and format(span.get_span_context().span_id, "016x") == span_id:
                span.add_event(
                    "request_slow",
                    {
                        "hookkit.elapsed_seconds": fields.get("elapsed_seconds") or 0.0,
                        "hookkit.threshold_seconds": fields.get("threshold_seconds") or 0.0,
                        "code.stacktrace": str(fields.get("stack") or ""),
                    },
                )
                return

    # -- flushing --------------------------------------------------------

    def flush(self, seconds: float | None = None) -> bool:
        """Export what is buffered, waiting at most ``seconds``."""
        provider = self.provider
        if self.tracer is None or provider is None or self._stopped:
            return True
        flush = getattr(provider, "force_flush", None)
        if flush is None:
            return True
        bound = self.config.flush_seconds if seconds is None else seconds
        return run_bounded(flush, bound, "hookkit-trace-flush")

    def shutdown(self, seconds: float | None = None) -> bool:
        """Flush and shut the provider down, waiting at most ``seconds``;
        hookkit's spans stop here (the worker is leaving)."""
        provider = self.provider
        if self.tracer is None or provider is None or self._stopped:
            return True
        self._stopped = True
        self.tracer = None
        shutdown = getattr(provider, "shutdown", None)
        if shutdown is None:
            return True
        bound = self.config.flush_seconds if seconds is None else seconds
        return run_bounded(shutdown, bound, "hookkit-trace-shutdown")


def _by_span_id(requests: object, key: str) -> dict[str, object]:
    """``key`` of each request in an event's ``requests_in_flight``, by span id."""
    found: dict[str, object] = {}
    for request in requests if isinstance(requests, list) else ():
        if isinstance(request, dict) and isinstance(request.get("span_id"), str):
            found[request["span_id"]] = request.get(key)
    return found


def _protocol_version(version: object) -> str | None:
    if isinstance(version, tuple) and len(version) == 2:
        major, minor = version
        return f"{major}" if major >= 2 and minor == 0 else f"{major}.{minor}"
    if isinstance(version, str) and version:
        return version.removeprefix("HTTP/")
    return None


def worker_identity(pid: int, master_pid: int, age: int | None) -> dict[str, Any]:
    """Resource (or span) attributes naming a gunicorn worker."""
    identity: dict[str, Any] = {"process.pid": pid, "process.parent_pid": master_pid}
    if age is not None:
        identity["gunicorn.worker.age"] = age
    return identity
