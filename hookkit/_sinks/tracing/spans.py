"""hookkit's own SERVER span: the OpenTelemetry span API, without the SDK's
per-span machinery.

The SDK's ``Tracer.start_span`` costs some 13 µs before any attribute, and
each attribute about 1 µs more to validate; a request span pays that on
every request. Where hookkit built the tracer provider itself and exports
only over OTLP, its own span is a ``ServerSpan`` instead:

- sampled by the provider's sampler, with ids from the provider's id
  generator, exactly as the SDK does (``OTEL_TRACES_SAMPLER`` applies);
- a real ``opentelemetry.trace.Span`` in the context, so the app's spans,
  made by the SDK, are its children;
- handed, once ended, to the provider's batch processors like any span, and
  encoded by the same OTLP encoder (``_otlp_encode``), which reads the
  fields every SDK span has.

hookkit's own attributes are plain strings and integers that need no
validation; attributes set by the app on hookkit's span are cleaned as the
SDK cleans them.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.context import Context
from opentelemetry.sdk.trace import Event
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)
_RANDOM = getattr(TraceFlags, "RANDOM_TRACE_ID", 0)  # W3C Trace Context level 2
_UNSET = Status(StatusCode.UNSET)


def _cleaned(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """Attributes cleaned as the SDK cleans a span's (invalid ones dropped,
    sequences made tuples), through the API's own BoundedAttributes."""
    cleaned = BoundedAttributes(attributes=attributes, immutable=False)
    return {key: value for key, value in cleaned.items() if value is not None}


class ServerSpans:
    """Makes hookkit's SERVER spans for one tracer provider."""

    def __init__(self, provider: Any, processors: Sequence[Any], version: str) -> None:
        self.sampler = provider.sampler
        self.ids = provider.id_generator
        self.resource = provider.resource
        self.processors = tuple(processors)
        self.scope = InstrumentationScope("hookkit", version)

    def start(self, name: str, parent_context: Context, attributes: dict[str, Any]) -> trace.Span:
        """A span begun now, child of the span in ``parent_context`` if any."""
        parent: SpanContext | None = trace.get_current_span(parent_context).get_span_context()
        if parent is None or not parent.is_valid:
            parent = None
            trace_id = self.ids.generate_trace_id()
            random = self.ids.is_trace_id_random() if _RANDOM else False
        else:
            trace_id = parent.trace_id
            random = bool(parent.trace_flags & _RANDOM) if _RANDOM else False
        result = self.sampler.should_sample(
            parent_context, trace_id, name, SpanKind.SERVER, attributes, None
        )
        flags = _SAMPLED if result.decision.is_sampled() else _NOT_SAMPLED
        if random:
            flags = TraceFlags(flags | _RANDOM)
        context = SpanContext(
            trace_id,
            self.ids.generate_span_id(),
            is_remote=False,
            trace_flags=flags,
            trace_state=result.trace_state,
        )
        if not result.decision.is_recording():
            return trace.NonRecordingSpan(context)
        # The sampler's attributes are the span's (the SDK's rule): the ones
        # given, plus any the sampler adds.
        sampled = result.attributes
        if sampled is not None and len(sampled) != len(attributes):
            attributes = dict(sampled)
        return ServerSpan(self, name, context, parent, attributes)


class ServerSpan(trace.Span):
    """One request's SERVER span (see the module docstring). Also readable
    as the SDK's ``ReadableSpan`` is, by the batch processor and encoder."""

    kind = SpanKind.SERVER
    links: tuple[Any, ...] = ()
    dropped_attributes = 0
    dropped_events = 0
    dropped_links = 0

    def __init__(
        self,
        maker: ServerSpans,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        attributes: dict[str, Any],
    ) -> None:
        self._maker = maker
        self.name = name
        self.context = context
        self.parent = parent
        self.attributes = attributes
        self.events: list[Event] = []
        self.status = _UNSET
        self.start_time = time.time_ns()
        self.end_time: int | None = None

    # -- what the batch processor and the encoder read ----------------------

    @property
    def resource(self) -> Any:
        return self._maker.resource

    @property
    def instrumentation_scope(self) -> InstrumentationScope:
        return self._maker.scope

    # -- the span API ---------------------------------------------------------

    def get_span_context(self) -> SpanContext:
        return self.context

    def is_recording(self) -> bool:
        return self.end_time is None

    def set_attribute(self, key: str, value: Any) -> None:
        if self.end_time is not None:
            return
        if type(value) in (str, int) and isinstance(key, str) and key:
            self.attributes[key] = value  # hookkit's own: nothing to clean
            return
        self.attributes.update(_cleaned({key: value}))

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        for key, value in attributes.items():
            self.set_attribute(key, value)

    def add_event(
        self, name: str, attributes: Mapping[str, Any] | None = None, timestamp: int | None = None
    ) -> None:
        if self.end_time is not None:
            return
        cleaned = _cleaned(attributes) if attributes else {}
        self.events.append(Event(name, cleaned, timestamp or time.time_ns()))

    def add_link(self, context: SpanContext, attributes: Mapping[str, Any] | None = None) -> None:
        """Links are set when a span starts; hookkit's span has none."""

    def update_name(self, name: str) -> None:
        if self.end_time is None:
            self.name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        if self.end_time is not None:
            return
        if isinstance(status, StatusCode):
            status = Status(status, description)
        # As in the SDK: OK is final, and UNSET never replaces a status.
        if self.status.status_code is StatusCode.OK or status.status_code is StatusCode.UNSET:
            return
        self.status = status

    def record_exception(
        self,
        exception: BaseException,
        attributes: Mapping[str, Any] | None = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        module = type(exception).__module__
        qualname = type(exception).__qualname__
        recorded: dict[str, Any] = {
            "exception.type": qualname if module in ("builtins", "") else f"{module}.{qualname}",
            "exception.message": str(exception),
            "exception.stacktrace": "".join(traceback.format_exception(exception)),
            "exception.escaped": str(escaped),
        }
        if attributes:
            recorded.update(attributes)
        self.add_event("exception", recorded, timestamp)

    def end(self, end_time: int | None = None) -> None:
        if self.end_time is not None:
            return
        self.end_time = end_time or time.time_ns()
        for processor in self._maker.processors:
            processor.on_end(self)
