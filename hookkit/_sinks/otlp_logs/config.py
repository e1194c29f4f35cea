"""What the OTLP logs sink may do, decided in the master at start-up.

Checked before any fork, so that a value hookkit cannot use stops gunicorn
with one message naming the variable, rather than failing in every worker:

- the OpenTelemetry SDK and its OTLP/HTTP exporter are in the supported
  range (``SUPPORTED``): ``opentelemetry.sdk._logs`` is experimental, and
  its classes changed shape from one release to the next (``LogRecord``
  became ``ReadWriteLogRecord``, ``LogExporter`` ``LogRecordExporter``,
  ``event_name`` arrived), so hookkit supports the releases it is tested
  with and refuses the others rather than misbehave;
- the protocol is OTLP over HTTP (protobuf): gRPC is refused, as for the
  OTLP metrics (a gRPC channel made in a master that forks can hang its
  children, and the master exports its own records). A ``grpc`` that is
  opentelemetry-distro's default, not the user's
  (``hookkit._core.otel_env``), is passed over: this sink's exporter is
  HTTP whatever it says, and the tracing sink already warns about it;
- the timeout variables are positive numbers of seconds, as the Python SDK
  reads them; ``OTEL_SDK_DISABLED=true`` sends nothing (as for the spans and
  the OTLP metrics).

The endpoint, headers, compression and certificates are left to the
official exporter, which reads ``OTEL_EXPORTER_OTLP_LOGS_*`` and
``OTEL_EXPORTER_OTLP_*`` as it always does. ``OTEL_LOGS_EXPORTER`` is not
read: it stays the switch of the SDK's own logging set-up (the distro's).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from importlib import metadata

from hookkit._core.otel_env import http_protobuf_only, otel_bool, positive_number
from hookkit._core.settings import ConfigError, Settings

SETTING = "HOOKKIT_OTLP_LOGS"
# The distributions whose logs classes hookkit uses, and the releases it
# supports: from the first (inclusive) to the second (exclusive), as
# (major, minor). Widen only with a test run on the new release: the
# suite's tests/test_otlp_logs_*.py passed on 1.43.0, 1.44.0 and 1.45.1
# (1.38, 1.39 and 1.41 failed some; earlier ones lack event_name).
PACKAGES = ("opentelemetry-sdk", "opentelemetry-exporter-otlp-proto-http")
SUPPORTED = ((1, 43), (1, 46))
SUPPORTED_TEXT = ">=1.43,<1.46"
PROTOCOLS = ("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
TIMEOUTS = ("OTEL_EXPORTER_OTLP_LOGS_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT")
ENDPOINTS = ("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
DEFAULT_TIMEOUT_SECONDS = 10.0
DEFAULT_ENDPOINT = "http://localhost:4318/v1/logs"


@dataclass(frozen=True)
class LogsConfig:
    """The OTLP logs sink's configuration, checked."""

    timeout: float = DEFAULT_TIMEOUT_SECONDS  # seconds one export may take
    # How long a stopping process waits for its records to go out: the
    # bound the spans have (HOOKKIT_TRACING_FLUSH_SECONDS).
    flush_seconds: float = 2.0
    access_log: bool = False
    access_log_client: bool = False
    disabled: bool = False  # OTEL_SDK_DISABLED=true: no pipeline, nothing sent

    @classmethod
    def load(
        cls,
        settings: Settings,
        environ: Mapping[str, str],
        version_of: Callable[[str], str] = metadata.version,
        defaulted: Collection[str] = frozenset(),
    ) -> LogsConfig:
        """The configuration, or a ConfigError naming the setting or variable.
        ``defaulted``: the names whose values are opentelemetry-distro's
        defaults (``otel_env.process_distro_defaults`` for this process)."""
        check_versions(version_of)
        disabled = otel_bool(environ, "OTEL_SDK_DISABLED")
        # The distro's default gRPC is passed over: HTTP, as for the metrics.
        http_protobuf_only(environ, PROTOCOLS, SETTING, defaulted)
        return cls(
            disabled=disabled,
            timeout=positive_number(environ, TIMEOUTS, DEFAULT_TIMEOUT_SECONDS, "seconds"),
            flush_seconds=settings.tracing_flush_seconds,
            access_log=settings.access_log,
            access_log_client=settings.access_log_client,
        )


def endpoint(environ: Mapping[str, str]) -> str:
    """Where the records go, as the exporter will resolve it (for messages)."""
    logs = environ.get(ENDPOINTS[0], "").strip()
    if logs:
        return logs
    base = environ.get(ENDPOINTS[1], "").strip()
    if base:
        return base.rstrip("/") + "/v1/logs"
    return DEFAULT_ENDPOINT


def parse_version(text: str) -> tuple[int, int] | None:
    """(major, minor) of a release number such as ``1.45.1``; None if unreadable."""
    parts = text.split(".")
    if len(parts) < 2 or not parts[0].isdigit() or not parts[1].isdigit():
        return None
    return int(parts[0]), int(parts[1])


def check_versions(version_of: Callable[[str], str] = metadata.version) -> None:
    """Each of ``PACKAGES`` installed in a supported release, or a ConfigError
    naming the setting, the release found and the fix."""
    low, high = SUPPORTED
    for package in PACKAGES:
        try:
            found = version_of(package)
        except metadata.PackageNotFoundError:
            found = "not installed"
        parsed = parse_version(found)
        if parsed is None or not low <= parsed < high:
            raise ConfigError(
                f"{SETTING}=on needs {package} {SUPPORTED_TEXT} (found: {found}): "
                "OpenTelemetry's logs SDK is experimental and changes between releases; "
                f"install it with pip install '{PACKAGES[0]}{SUPPORTED_TEXT}' "
                f"'{PACKAGES[1]}{SUPPORTED_TEXT}', or set {SETTING}=off"
            )
