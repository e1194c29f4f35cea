"""What the tracing sink will do, decided from the environment at start-up.

The standard ``OTEL_*`` variables are read here, in the master, so that a
value hookkit cannot use stops gunicorn with a message naming the variable,
rather than failing in every worker after fork. Nothing is built here: the
tracer provider and the exporter are made in each worker (``_tracing``).

Export happens when ``OTEL_TRACES_EXPORTER`` is set or an OTLP endpoint
variable is; with neither, hookkit makes no spans of its own (an app or
``opentelemetry-instrument`` that installed an SDK provider still gets
hookkit's span in it) and never retries against an absent localhost
collector.

Under ``opentelemetry-instrument`` with ``opentelemetry-distro``, a value
that is the distro's default (``hookkit._core.otel_env.distro_defaults``)
and that hookkit cannot honour (gRPC without its exporter) is reported in
``master_starting`` (``warnings``) with the fix, and hookkit uses its own
default instead; the same value the user set stops start-up.
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from importlib import metadata

from hookkit._core.excluded import compile_patterns
from hookkit._core.http import (
    DEFAULT_SENSITIVE_QUERY,
    AnyPattern,
    HeaderCapture,
    QueryRedactor,
    parse_list,
)
from hookkit._core.otel_env import (
    otel_bool,
    process_distro_defaults,
)
from hookkit._core.settings import ConfigError, Settings

CAPTURE_REQUEST = "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST"
CAPTURE_RESPONSE = "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE"
SANITIZE = "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS"
OTLP_ENDPOINTS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
_PROTOCOLS = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
_SAMPLERS = frozenset(
    {
        "always_on",
        "always_off",
        "traceidratio",
        "parentbased_always_on",
        "parentbased_always_off",
        "parentbased_traceidratio",
    }
)
_RATIO_SAMPLERS = frozenset({"traceidratio", "parentbased_traceidratio"})
GRPC_PACKAGE = "opentelemetry-exporter-otlp-proto-grpc"


@dataclass(frozen=True)
class TracingConfig:
    """The tracing sink's configuration, validated."""

    enabled: bool = False
    # Exporters hookkit builds when it makes the provider: "otlp" (HTTP),
    # "otlp_grpc", "console", or an entry point name; empty means none.
    exporters: tuple[str, ...] = ()
    # Whether hookkit makes spans with a provider of its own (export was
    # asked for, OTEL_TRACES_EXPORTER=none included).
    own_provider: bool = False
    endpoint: str | None = None
    excluded: AnyPattern | None = None
    redactor: QueryRedactor = field(default_factory=QueryRedactor)
    request_headers: HeaderCapture = field(default_factory=HeaderCapture)
    response_headers: HeaderCapture = field(default_factory=HeaderCapture)
    flush_seconds: float = 2.0
    disabled_by: str | None = None  # the setting that turned tracing off
    # What hookkit does instead of a default it cannot honour, with the fix:
    # shown in master_starting, which they make a warning.
    warnings: tuple[str, ...] = ()

    @classmethod
    def load(
        cls,
        settings: Settings,
        environ: Mapping[str, str] | None = None,
        defaulted: Collection[str] | None = None,
    ) -> TracingConfig:
        """Read and check the tracing configuration; raises ConfigError
        naming the first variable hookkit cannot use.

        ``defaulted``: the names whose values are opentelemetry-distro's
        defaults (warned about, never refused). By default, those of this
        process's environment when ``environ`` is it (None), and none for
        an environment passed in: the distro changes only the process's."""
        env = os.environ if environ is None else environ
        if defaulted is None:
            defaulted = process_distro_defaults() if environ is None else frozenset()
        if not settings.tracing:
            return cls(disabled_by="HOOKKIT_TRACING")
        if otel_bool(env, "OTEL_SDK_DISABLED"):
            return cls(disabled_by="OTEL_SDK_DISABLED")
        _check_sampler(env)
        _check_propagators(env)
        warnings: list[str] = []
        exporters, own = _exporters(env, defaulted, warnings)
        endpoint = next((env[name] for name in OTLP_ENDPOINTS if env.get(name)), None)
        sanitize = parse_list(env.get(SANITIZE))
        return cls(
            enabled=True,
            exporters=exporters,
            own_provider=own,
            endpoint=endpoint,
            excluded=_excluded(settings),
            redactor=QueryRedactor(DEFAULT_SENSITIVE_QUERY + parse_list(settings.redact_query)),
            request_headers=_capture(env, CAPTURE_REQUEST, sanitize),
            response_headers=_capture(env, CAPTURE_RESPONSE, sanitize),
            flush_seconds=settings.tracing_flush_seconds,
            warnings=tuple(warnings),
        )

    def describe(self) -> dict[str, object]:
        """What tracing will do, for the start-up log line."""
        if not self.enabled:
            return {"tracing": "off", "disabled_by": self.disabled_by}
        if not self.own_provider:
            return {
                "tracing": "on",
                "exporters": [],
                "note": "no exporter configured (set OTEL_EXPORTER_OTLP_ENDPOINT or "
                "OTEL_TRACES_EXPORTER): hookkit exports nothing, and adds its span "
                "only to an SDK tracer provider the app installs itself",
            }
        fields: dict[str, object] = {"tracing": "on", "exporters": list(self.exporters)}
        if "otlp" in self.exporters or "otlp_grpc" in self.exporters:
            fields["endpoint"] = self.endpoint or "http://localhost:4318"
        if self.warnings:
            fields["warnings"] = list(self.warnings)
        return fields


def _exporters(
    env: Mapping[str, str], defaulted: Collection[str], warnings: list[str]
) -> tuple[tuple[str, ...], bool]:
    """(exporters hookkit builds, whether hookkit makes its own provider);
    what it does instead of a default it cannot honour goes to ``warnings``."""
    raw = env.get("OTEL_TRACES_EXPORTER", "").strip()
    if not raw:
        if any(env.get(name) for name in OTLP_ENDPOINTS):
            return (_otlp_flavour(env, defaulted, warnings),), True
        return (), False
    names: list[str] = []
    for name in parse_list(raw.lower()):
        if name == "none":
            continue
        if name == "otlp":
            names.append(_otlp_flavour(env, defaulted, warnings))
        elif name == "console":
            names.append(name)
        elif _entry_point(name) is None:
            raise ConfigError(
                f"OTEL_TRACES_EXPORTER={raw!r}: no span exporter named {name!r} is installed "
                "(accepted: otlp, console, none, or the name of an installed "
                "opentelemetry_traces_exporter entry point)"
            )
        else:
            names.append(name)
    return tuple(dict.fromkeys(names)), True


def _otlp_flavour(env: Mapping[str, str], defaulted: Collection[str], warnings: list[str]) -> str:
    """OTLP over HTTP unless a protocol variable asks for gRPC.

    gRPC without its exporter installed: refused when the user asked for
    it; when it is opentelemetry-distro's default, hookkit keeps its own
    default, HTTP, and says so (``warnings``). With the exporter installed,
    a distro default still gets a warning: the distro built its gRPC
    exporter in the master, before gunicorn forks the workers that use it."""
    for name in _PROTOCOLS:
        protocol = env.get(name, "").strip().lower()
        if not protocol:
            continue
        if protocol == "http/protobuf":
            return "otlp"
        if protocol == "grpc":
            installed = _importable("opentelemetry.exporter.otlp.proto.grpc.trace_exporter")
            if name not in defaulted:
                if not installed:
                    raise ConfigError(
                        f"{name}=grpc needs the package {GRPC_PACKAGE}; "
                        "install it, or use http/protobuf (hookkit's default)"
                    )
                return "otlp_grpc"
            if not installed:
                warnings.append(
                    f"{name}=grpc is opentelemetry-distro's default, and {GRPC_PACKAGE} "
                    "is not installed: hookkit exports its spans over http/protobuf instead "
                    "(and the distro set up no tracing, no instrumentation: see its error "
                    f"above); set {name}=http/protobuf"
                )
                return "otlp"
            warnings.append(
                f"{name}=grpc is opentelemetry-distro's default: the distro made its gRPC "
                "exporters in the gunicorn master, before the fork, and a gRPC channel "
                f"made before a fork can hang the workers; set {name}=http/protobuf"
            )
            return "otlp_grpc"
        raise ConfigError(f"{name}={protocol!r} is not valid (accepted: http/protobuf, grpc)")
    return "otlp"


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # a parent package is missing
        return False


def _entry_point(name: str) -> metadata.EntryPoint | None:
    for entry in metadata.entry_points(group="opentelemetry_traces_exporter"):
        if entry.name == name:
            return entry
    return None


def _check_sampler(env: Mapping[str, str]) -> None:
    sampler = env.get("OTEL_TRACES_SAMPLER", "").strip().lower()
    if sampler and sampler not in _SAMPLERS:
        group = metadata.entry_points(group="opentelemetry_traces_sampler")
        known = {entry.name for entry in group}
        if sampler not in known:
            raise ConfigError(
                f"OTEL_TRACES_SAMPLER={sampler!r} is not valid (accepted: "
                + ", ".join(sorted(_SAMPLERS | known))
                + ")"
            )
    arg = env.get("OTEL_TRACES_SAMPLER_ARG", "").strip()
    if arg and sampler in _RATIO_SAMPLERS:
        try:
            ratio = float(arg)
        except ValueError:
            ratio = -1.0
        if not 0.0 <= ratio <= 1.0:
            raise ConfigError(
                f"OTEL_TRACES_SAMPLER_ARG={arg!r} is not valid for {sampler} "
                "(accepted: a number from 0 to 1)"
            )


def _check_propagators(env: Mapping[str, str]) -> None:
    names = parse_list(env.get("OTEL_PROPAGATORS", "").lower())
    if not names:
        return
    known = {entry.name for entry in metadata.entry_points(group="opentelemetry_propagator")}
    for name in names:
        if name != "none" and name not in known:
            raise ConfigError(
                f"OTEL_PROPAGATORS: {name!r} is not an installed propagator (accepted: "
                + ", ".join(sorted(known | {"none"}))
                + ")"
            )


def _excluded(settings: Settings) -> AnyPattern | None:
    # OTEL_PYTHON_EXCLUDED_URLS keeps requests out of everything, spans
    # included, before any sink sees them (hookkit._core.excluded).
    return compile_patterns([("HOOKKIT_TRACING_EXCLUDED_URLS", settings.tracing_excluded_urls)])


def _capture(env: Mapping[str, str], name: str, sanitize: tuple[str, ...]) -> HeaderCapture:
    names = parse_list(env.get(name))
    for pattern in (*names, *sanitize):
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ConfigError(
                f"{name} or {SANITIZE}: {pattern!r} is not a valid regular expression ({exc})"
            ) from None
    return HeaderCapture(names, sanitize)
