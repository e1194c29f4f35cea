"""OTLP/HTTP span export with a faster protobuf encoding.

The official exporter builds a protobuf message object for every span,
attribute and value, then serializes the tree: measured here, about 37 µs a
span, more than the span itself costs. This module writes the same bytes
straight from the SDK's spans: the same fields, in field-number order, with
the same presence rules (proto3 scalars at their default are left out;
``AnyValue``'s oneof values, the span's ``status`` and ``flags`` are always
written). ``tests/test_otlp_encode.py`` checks that what it sends decodes to
exactly the message the official encoder makes, for spans of every shape.

Spans are encoded as they end (``EncodingBatchSpanProcessor``), on the
thread that ends them, a few microseconds each: the batch processor's queue
holds each span's bytes (``EncodedSpan``), not the span, and its export
thread only joins them and sends. A thread that encodes a whole batch (512
spans by default) holds the GIL for milliseconds, and every request of the
worker waits behind it (issue 16); spans kept as bytes also take a fraction
of the memory of the span objects. A span the fast encoder cannot encode is
encoded by the official encoder, to the same bytes.

Only the encoding changes: ``FastOTLPSpanExporter`` is the official
``OTLPSpanExporter`` (its endpoint, headers, timeout, compression, TLS and
retries, all from the ``OTEL_EXPORTER_OTLP_*`` variables as usual) with its
encoder swapped, where the exporter's transport can be reached; otherwise
it is the official exporter unchanged.
"""

from __future__ import annotations

import inspect
import os
import struct
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExportResult
from opentelemetry.trace import SpanKind, StatusCode

_KIND = {
    SpanKind.INTERNAL: 1,
    SpanKind.SERVER: 2,
    SpanKind.CLIENT: 3,
    SpanKind.PRODUCER: 4,
    SpanKind.CONSUMER: 5,
}
_HAS_IS_REMOTE = 0x100  # SpanFlags.SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK
_IS_REMOTE = 0x200  # SpanFlags.SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK
_pack_fixed64 = struct.Struct("<Q").pack
_pack_fixed32 = struct.Struct("<I").pack
_pack_double = struct.Struct("<d").pack


def _varint(value: int) -> bytes:
    if 0 <= value < 0x80:
        return _SMALL[value]
    if value < 0:
        value += 1 << 64  # int64: two's complement, ten bytes
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_SMALL = [bytes((n,)) for n in range(0x80)]


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    size = len(payload)
    if number < 16 and size < 0x80:
        return _SMALL[number << 3 | 2] + _SMALL[size] + payload
    return _varint(number << 3 | 2) + _varint(size) + payload


def _text(number: int, value: str) -> bytes:
    return _field(number, value.encode("utf-8"))


def _any_value(value: Any) -> bytes:
    # The order of the checks is the official encoder's (bool before int).
    if value is None:
        return b""
    if isinstance(value, bool):
        return b"\x10" + (b"\x01" if value else b"\x00")
    if isinstance(value, str):
        return _text(1, value)
    if isinstance(value, int):
        return b"\x18" + _varint(value)
    if isinstance(value, float):
        return b"\x21" + _pack_double(value)
    if isinstance(value, bytes):
        return _field(7, value)
    if isinstance(value, Sequence):
        return _field(5, b"".join(_field(1, _any_value(item)) for item in value))
    if isinstance(value, Mapping):
        return _field(6, b"".join(_field(1, _key_value(str(k), v)) for k, v in value.items()))
    raise TypeError(f"cannot encode {type(value).__name__} as an attribute value")


def _key_value(key: str, value: Any) -> bytes:
    return _text(1, key) + _field(2, _any_value(value))


# Encoded attributes by (field, key, value): a server's spans repeat most of
# theirs (method, scheme, addresses, user agent, status). Bounded: cleared
# when full (a few hundred bytes an entry, in each worker). Only str, int
# and bool values are cached (floats and sequences rarely repeat; True == 1
# is kept apart by the type in the key), and not the client's port, new
# with each connection.
_ENCODED: dict[tuple[int, str, type, object], bytes] = {}
_ENCODED_LIMIT = 1024
_UNCACHED = frozenset({"network.peer.port"})


def _attribute(number: int, key: str, value: Any) -> bytes:
    kind = type(value)
    if kind is str or kind is int or kind is bool:
        cache_key = (number, key, kind, value)
        encoded = _ENCODED.get(cache_key)
        if encoded is None:
            encoded = _field(number, _key_value(key, value))
            if key not in _UNCACHED:
                if len(_ENCODED) >= _ENCODED_LIMIT:
                    _ENCODED.clear()
                _ENCODED[cache_key] = encoded
        return encoded
    return _field(number, _key_value(key, value))


def _items(attributes: Mapping[str, Any]) -> Any:
    """The items of an attribute mapping: the SDK's BoundedAttributes keeps
    a plain dict, much faster to walk than through the Mapping protocol."""
    if type(attributes) is dict:  # hookkit's own span's
        return attributes.items()
    plain = getattr(attributes, "_dict", None)
    return (plain if isinstance(plain, dict) else attributes).items()


def _attributes(number: int, attributes: Mapping[str, Any] | None) -> bytes:
    if not attributes:
        return b""
    return b"".join([_attribute(number, key, value) for key, value in _items(attributes)])


def _count(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value) if value else b""


def _flags(parent: Any) -> int:
    flags = _HAS_IS_REMOTE
    if parent is not None and parent.is_remote:
        flags |= _IS_REMOTE
    return flags


_FLAGS_LOCAL = b"\x85\x01" + _pack_fixed32(_HAS_IS_REMOTE)  # field 16, fixed32
_FLAGS_REMOTE = b"\x85\x01" + _pack_fixed32(_HAS_IS_REMOTE | _IS_REMOTE)
_KIND_BYTES = {kind: b"\x30" + _varint(number) for kind, number in _KIND.items()}


_STATUS_CODE = {code: code.value for code in StatusCode}
# Status fields without a description, by code (field 15).
_STATUS_ONLY = {
    value: _field(15, b"\x18" + _varint(value) if value else b"") for value in _STATUS_CODE.values()
}


def _trace_state(state: Any) -> bytes:
    if not getattr(state, "_dict", state):  # TraceState's own dict: no __len__ call
        return b""
    text = ",".join(f"{key}={value}" for key, value in state.items())
    return _text(3, text) if text else b""


# One flat function, on purpose: it runs for every span, on the request thread.
def _span(span: ReadableSpan) -> bytes | bytearray:  # noqa: PLR0912, PLR0915
    context = span.get_span_context()
    assert context is not None
    parent = span.parent
    out = bytearray(b"\x0a\x10")
    out += context.trace_id.to_bytes(16, "big")
    out += b"\x12\x08"
    out += context.span_id.to_bytes(8, "big")
    state = context.trace_state
    if state:
        out += _trace_state(state)
    if parent is not None:
        out += b"\x22\x08"
        out += parent.span_id.to_bytes(8, "big")
    if span.name:
        out += _text(5, span.name)
    out += _KIND_BYTES[span.kind]
    if span.start_time:
        out += b"\x39"
        out += _pack_fixed64(span.start_time)
    if span.end_time:
        out += b"\x41"
        out += _pack_fixed64(span.end_time)
    attributes = span.attributes
    if attributes:
        cached = _ENCODED.get  # _attribute's cache, looked up here first (the hot path)
        for key, value in _items(attributes):
            kind = type(value)
            encoded = (
                cached((9, key, kind, value))
                if kind is str or kind is int or kind is bool
                else None
            )
            out += encoded if encoded is not None else _attribute(9, key, value)
    if span.dropped_attributes:
        out += _count(10, span.dropped_attributes)
    for event in span.events:
        event_parts = b"\x09" + _pack_fixed64(event.timestamp) if event.timestamp else b""
        if event.name:
            event_parts += _text(2, event.name)
        event_parts += _attributes(3, event.attributes) + _count(4, event.dropped_attributes)
        out += _field(11, event_parts)
    if span.dropped_events:
        out += _count(12, span.dropped_events)
    for link in span.links:
        link_parts = (
            _field(1, link.context.trace_id.to_bytes(16, "big"))
            + _field(2, link.context.span_id.to_bytes(8, "big"))
            + _attributes(4, link.attributes)
            + _count(5, link.dropped_attributes)
            + b"\x35"
            + _pack_fixed32(_flags(link.context))
        )
        out += _field(13, link_parts)
    if span.dropped_links:
        out += _count(14, span.dropped_links)
    status = span.status
    code = _STATUS_CODE[status.status_code]
    if status.description:
        status_parts = _text(2, status.description)
        if code:
            status_parts += b"\x18" + _varint(code)
        out += _field(15, status_parts)
    else:
        out += _STATUS_ONLY[code]
    out += _FLAGS_REMOTE if parent is not None and parent.is_remote else _FLAGS_LOCAL
    # The bytearray itself: _span_field copies it once, behind its tag.
    return out


def _scope(scope: Any) -> bytes:
    if scope is None:
        return b""
    parts = b""
    if scope.name:
        parts += _text(1, scope.name)
    if scope.version:
        parts += _text(2, scope.version)
    return parts + _attributes(3, scope.attributes)


def _official_span(span: ReadableSpan) -> bytes:
    """``span``'s ``Span`` message as the official encoder writes it."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    message = encode_spans([span]).resource_spans[0].scope_spans[0].spans[0]
    encoded: bytes = message.SerializePartialToString()
    return encoded


def _span_field(span: ReadableSpan) -> bytes:
    """``span`` as a field of ``ScopeSpans.spans``: its ``Span`` message,
    tagged and sized; by the official encoder if the fast one fails."""
    try:
        encoded = _span(span)
    except Exception:
        encoded = _official_span(span)
    return b"".join((b"\x12", _varint(len(encoded)), encoded))  # one copy


class EncodedSpan:
    """A span encoded when it ended (``_span_field``), and the resource and
    scope ``encode_request`` groups it by."""

    __slots__ = ("encoded", "instrumentation_scope", "resource")

    def __init__(self, span: ReadableSpan) -> None:
        self.resource = span.resource
        self.instrumentation_scope = span.instrumentation_scope
        self.encoded = _span_field(span)


class EncodingBatchSpanProcessor(BatchSpanProcessor):
    """The SDK's batch processor (its thread, queue, ``OTEL_BSP_*``
    variables, flush and shutdown), queueing each sampled span encoded, as
    an ``EncodedSpan``: for an exporter that takes those
    (``FastOTLPSpanExporter``)."""

    def on_end(self, span: ReadableSpan) -> None:
        if not (span.context and span.context.trace_flags.sampled):
            return
        try:
            encoded = EncodedSpan(span)
        except Exception as exc:
            # Ending a span never raises into the app: a span neither
            # encoder takes is dropped, and counted as the exporter's error
            # (ReportingExporter.report) as a failed export is.
            report = getattr(self.span_exporter, "report", None)
            if callable(report):
                report(exc)
            return
        self._batch_processor.emit(encoded)  # type: ignore[arg-type]


def _parts(spans: Sequence[ReadableSpan | EncodedSpan]) -> list[bytes]:
    """The serialized ``ExportTraceServiceRequest`` for ``spans``, grouped
    by resource, then by instrumentation scope, in order of first
    appearance, as the official encoder groups them: as the list of its
    parts, in order (each length computed from the parts below it), so
    that it is never copied level by level."""
    grouped: dict[Any, dict[Any, list[bytes]]] = {}
    # Resource hashes itself through JSON: look each resource object up once.
    seen: dict[int, dict[Any, list[bytes]]] = {}
    for span in spans:
        resource = span.resource
        by_scope = seen.get(id(resource))
        if by_scope is None:
            by_scope = seen[id(resource)] = grouped.setdefault(resource, {})
        by_scope.setdefault(span.instrumentation_scope or None, []).append(
            span.encoded if type(span) is EncodedSpan else _span_field(span)  # type: ignore[arg-type]
        )
    parts: list[bytes] = []
    for resource, by_scope in grouped.items():
        at = len(parts)
        parts.append(b"")  # ResourceSpans' tag and length, once known
        head = _field(1, _attributes(1, resource.attributes))
        parts.append(head)
        size = len(head)
        for scope, fields in by_scope.items():
            scope_head = _field(1, _scope(scope))
            schema = getattr(scope, "schema_url", None) if scope is not None else None
            tail = _text(3, schema) if schema else b""
            scope_size = len(scope_head) + sum(map(len, fields)) + len(tail)
            scope_tag = b"\x12" + _varint(scope_size)  # ResourceSpans.scope_spans
            parts.append(scope_tag)
            parts.append(scope_head)
            parts += fields
            parts.append(tail)
            size += len(scope_tag) + scope_size
        if resource.schema_url:
            tail = _text(3, resource.schema_url)
            parts.append(tail)
            size += len(tail)
        parts[at] = b"\x0a" + _varint(size)  # ExportTraceServiceRequest.resource_spans
    return parts


def encode_request(spans: Sequence[ReadableSpan | EncodedSpan]) -> bytes:
    """The serialized ``ExportTraceServiceRequest`` for ``spans`` (see
    ``_parts``), joined once."""
    return b"".join(_parts(spans))


# The size of the pieces a request is sent in (encode_pieces).
PIECE_SIZE = 16 * 1024


class Pieces:
    """A serialized request as pieces of some ``PIECE_SIZE`` bytes, in
    order: joined, the request. A batch of 512 spans is some 150 KiB; made
    whole in the export thread, that buffer stays in the thread's malloc
    arena (glibc raises its mmap threshold to the size of a freed mmapped
    block), in each worker. ``otlp_http`` sends the pieces one after the
    other."""

    __slots__ = ("chunks", "size")

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.size = sum(map(len, chunks))

    def __len__(self) -> int:
        return self.size


def encode_pieces(spans: Sequence[ReadableSpan | EncodedSpan]) -> Pieces:
    """The serialized request for ``spans`` in pieces (``Pieces``): none
    larger than ``PIECE_SIZE`` plus one of its parts (a span, at most)."""
    chunks: list[bytes] = []
    pending: list[bytes] = []
    size = 0
    for part in _parts(spans):
        pending.append(part)
        size += len(part)
        if size >= PIECE_SIZE:
            chunks.append(b"".join(pending))
            pending, size = [], 0
    if pending:
        chunks.append(b"".join(pending))
    return Pieces(chunks)


# Whether this release's exporter takes a transport; asked once, on import
# (in the master, before the fork: inspect's code is not run in each worker).
_TAKES_TRANSPORT = "_transport" in inspect.signature(OTLPSpanExporter.__init__).parameters


def _lean_transport(endpoint: str | None) -> Any:
    """hookkit's transport (``otlp_http``) for the exporter of ``endpoint``
    (resolved from the environment as the official exporter resolves it),
    or None where the official one must be kept."""
    from opentelemetry.exporter.otlp.proto.http import trace_exporter

    if not _TAKES_TRANSPORT:
        return None  # a release that takes no transport: its own
    if endpoint is None:
        resolve = getattr(trace_exporter, "_resolve_endpoint", None)
        variable = getattr(trace_exporter, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", None)
        path = getattr(trace_exporter, "DEFAULT_TRACES_EXPORT_PATH", None)
        if resolve is None or variable is None or path is None:
            return None
        endpoint = resolve(variable, path)
    from hookkit._sinks.tracing.otlp_http import LeanHTTPTransport, lean_applies

    return LeanHTTPTransport() if lean_applies(str(endpoint), os.environ) else None


def _sends_pieces(client: Any) -> bool:
    """Whether ``client`` sends a request in pieces: through hookkit's
    transport, uncompressed (compression needs the whole)."""
    from hookkit._sinks.tracing.otlp_http import LeanHTTPTransport

    compression = getattr(getattr(client, "_compression", None), "value", None)
    return compression == "none" and type(getattr(client, "_transport", None)) is LeanHTTPTransport


class FastOTLPSpanExporter(OTLPSpanExporter):
    """The official OTLP/HTTP exporter with ``encode_request`` as its
    encoder and, where it sends the same, ``otlp_http``'s transport."""

    def __init__(self, endpoint: str | None = None, *args: Any, **kwargs: Any) -> None:
        if not args and kwargs.get("session") is None and kwargs.get("_transport") is None:
            transport = _lean_transport(endpoint)
            if transport is not None:
                kwargs["_transport"] = transport
        super().__init__(endpoint, *args, **kwargs)

    @property
    def takes_encoded(self) -> bool:
        """Whether ``export`` takes ``EncodedSpan``s: where the official
        exporter's transport can be reached (else it is the official path)."""
        return hasattr(getattr(self, "_client", None), "export")

    def export(self, spans: Sequence[ReadableSpan | EncodedSpan]) -> SpanExportResult:
        client = getattr(self, "_client", None)
        if client is None or getattr(self, "_shutdown", False) or not hasattr(client, "export"):
            # A release whose transport is laid out differently: the
            # official path, unchanged.
            result: SpanExportResult = super().export(spans)  # type: ignore[arg-type]
            return result
        try:
            data: bytes | Pieces = (
                encode_pieces(spans) if _sends_pieces(client) else encode_request(spans)
            )
        except Exception:
            if any(type(span) is EncodedSpan for span in spans):
                raise  # counted as the sink's error (ReportingExporter)
            fallback: SpanExportResult = super().export(spans)  # type: ignore[arg-type]
            return fallback
        outcome = client.export(data)
        return SpanExportResult.SUCCESS if outcome.success else SpanExportResult.FAILURE
