"""The composition root: the only module that names every sink.

Which sinks exist follows the settings (``HOOKKIT_LOGS``, ``_METRICS``,
``_STATUS``, ``_OTLP_METRICS``, ``_OTLP_LOGS``; the tracing sink is always
there and ``HOOKKIT_TRACING`` turns its spans off); users add their own with
``hookkit.configure(sinks=[...])``. The order of the sinks is declared here, once:

- events and lifecycle: metrics, status (after the metrics sink, whose
  HTTP server it adds its paths to), logs, tracing, OTLP metrics (after the
  metrics sink, whose aggregate it reads), OTLP logs, then the user's sinks in the
  order given (once an event's line is written, its metrics are
  already counted: a scrape that follows a line agrees with it);
- ``request_started``: tracing first, so that its span is the current
  context for the other sinks and for the app;
- ``request_finished``: tracing last, so that the access line (and every
  other sink) runs while the span is current and carries its ids.

hookkit's own sinks are made once per process and reconfigured on a reload
(the metrics endpoint and directory live as long as the master). A user's
sinks are the instances the last configuration gave: a SIGHUP runs the
user's config again, the runtime stops the replaced instances and starts
the new ones.

``hookkit.configure(...)`` called while the drop-in reads the user's config
is recorded, and applied once, when the drop-in has read it
(``begin_config_load`` / ``finish_config_load``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from hookkit._aggregate.exemplars import exemplar_filter
from hookkit._core.excluded import ExcludedUrls
from hookkit._core.resets import on_reset
from hookkit._core.runtime import RUNTIME
from hookkit._core.settings import ConfigError, Settings
from hookkit._core.sink import RESERVED_NAMES, Sink
from hookkit._sinks.logs.sink import LogSink, configure_process_logging
from hookkit._sinks.prometheus.sink import PrometheusSink
from hookkit._sinks.status.sink import StatusSink
from hookkit._sinks.tracing.sink import TracingSink


@dataclass
class _Requested:
    """What ``hookkit.configure`` asked for in the config being read."""

    overrides: dict[str, object] = field(default_factory=dict)
    sinks: tuple[Sink, ...] = ()
    loading: bool = False  # the drop-in is reading the user's config


_requested = _Requested()
_own: dict[str, Sink] = {}  # hookkit's own sinks of this process, by name


@on_reset
def _forget() -> None:
    """hookkit.testing.reset(): no sinks made, nothing requested."""
    global _requested  # noqa: PLW0603
    _requested = _Requested()
    _own.clear()


def check_user_sinks(sinks: object) -> tuple[Sink, ...]:
    """The user's sinks, checked: instances of ``hookkit.Sink`` with unique
    names that are not hookkit's own."""
    if not isinstance(sinks, Sequence) or isinstance(sinks, (str, bytes)):
        raise ConfigError("sinks: expected a list of hookkit.Sink instances")
    seen: set[str] = set()
    for sink in sinks:
        if not isinstance(sink, Sink):
            raise ConfigError(
                f"sinks: {sink!r} is not a hookkit.Sink (subclass hookkit.Sink and "
                "override the methods it needs)"
            )
        name = getattr(sink, "name", "")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"sinks: {type(sink).__name__} has no name (set its `name`)")
        if name in RESERVED_NAMES:
            raise ConfigError(
                f"sinks: the name {name!r} of {type(sink).__name__} is hookkit's own; "
                f"choose another (taken: {', '.join(sorted(RESERVED_NAMES))})"
            )
        if name in seen:
            raise ConfigError(f"sinks: two sinks are named {name!r}; names must be unique")
        seen.add(name)
    return tuple(sinks)


def _otlp_metrics_sink() -> type[Sink]:
    # Imported only when turned on: its module loads the OpenTelemetry
    # metrics SDK, which every gunicorn start would otherwise pay for.
    from hookkit._sinks.otlp_metrics.sink import OtlpMetricsSink

    return OtlpMetricsSink


def _otlp_logs_sink() -> type[Sink]:
    from hookkit._sinks.otlp_logs.sink import OtlpLogsSink  # the same: only when on

    return OtlpLogsSink


# hookkit's own sinks, in event order, and the setting that turns each on.
# The tracing sink is always there: with tracing off it says why
# (master_starting's ``tracing`` field) and makes no span, at the cost it
# always had.
_OWN: tuple[tuple[str, Callable[[], type[Sink]], str | None], ...] = (
    ("metrics", lambda: PrometheusSink, "metrics"),
    # On by default; serves /status.json, /status and /stacks.json from the
    # metrics sink's endpoint (started after it; without one it says so).
    ("status", lambda: StatusSink, "status"),
    ("logs", lambda: LogSink, "logs"),
    ("tracing", lambda: TracingSink, None),
    # Off by default; exports, from the master only, the aggregate the
    # metrics sink publishes (started after it).
    ("otlp_metrics", _otlp_metrics_sink, "otlp_metrics"),
    # Off by default; each process sends its own events and gunicorn's
    # error lines as OTLP log records.
    ("otlp_logs", _otlp_logs_sink, "otlp_logs"),
)


def _own_wanted(settings: Settings) -> list[tuple[str, type[Sink]]]:
    """(name, class) of hookkit's sinks the settings turn on, in order."""
    return [(name, cls()) for name, cls, on in _OWN if on is None or getattr(settings, on)]


def own_sinks(settings: Settings) -> list[Sink]:
    """hookkit's sinks the settings turn on, in event order; made once per
    process, reconfigured afterwards. A bad tracing variable raises
    ConfigError before anything changes."""
    wanted = _own_wanted(settings)
    made: list[Sink] = []
    for name, cls in wanted:
        sink = _own.get(name)
        if sink is None:
            sink = cls(settings)  # type: ignore[call-arg]
        else:
            sink.configure(settings)  # type: ignore[attr-defined]
        made.append(sink)
    # Kept only once every one was made: a ConfigError changes nothing.
    _own.update({sink.name: sink for sink in made})
    return made


def apply(settings: Settings, user_sinks: Sequence[Sink] = ()) -> None:
    """Configure this process's runtime: ``settings``, hookkit's sinks and
    the user's."""
    own = own_sinks(settings)
    configure_process_logging(settings)
    sinks = [*own, *user_sinks]
    tracing = [sink for sink in own if sink.name == "tracing"]
    others = [sink for sink in sinks if sink.name != "tracing"]
    RUNTIME.use(settings, sinks, started_order=tracing + others, finished_order=others + tracing)


def configure(
    overrides: Mapping[str, object], sinks: Sequence[Sink] | None, environ: Mapping[str, str]
) -> Settings:
    """``hookkit.configure``: settings over the environment's, and the user's
    sinks. Applied now, or, while the drop-in reads the user's config, once
    it has read it."""
    Settings().replace(**overrides)  # a bad name or value raises now
    checked = check_user_sinks(sinks) if sinks is not None else None
    _requested.overrides = dict(overrides)
    if checked is not None:
        _requested.sinks = checked
    settings = Settings.load(environ).replace(**overrides)
    if not _requested.loading:
        apply(settings, _requested.sinks)
    return settings


def configure_from_environment() -> None:
    """No configuration yet (single hooks): the environment's settings."""
    apply(Settings.load().replace(**_requested.overrides), _requested.sinks)


def begin_config_load() -> None:
    """The drop-in is about to read the user's config: forget what the last
    one asked for (a reload must not keep a removed sink)."""
    _requested.overrides = {}
    _requested.sinks = ()
    _requested.loading = True


def finish_loading() -> None:
    """The drop-in finished reading the user's config (or failed to)."""
    _requested.loading = False


def finish_config_load(environ: Mapping[str, str], user: Mapping[str, object]) -> Settings:
    """The drop-in read the user's config: apply it, with what its
    ``hookkit.configure`` calls asked for."""
    settings = Settings.load(environ, user).replace(**_requested.overrides)
    apply(settings, _requested.sinks)
    return settings


def preview(environ: Mapping[str, str], user: Mapping[str, object]) -> tuple[Settings, list[str]]:
    """``hookkit check``: the settings and the sinks' names a start would use,
    without starting anything."""
    _requested.loading = False
    settings = Settings.load(environ, user).replace(**_requested.overrides)
    names = [name for name, _ in _own_wanted(settings)]
    ExcludedUrls.load(settings.excluded_urls, environ)  # OTEL_PYTHON_EXCLUDED_URLS
    TracingSink(settings)  # checks the OTEL_* variables
    if settings.metrics:
        exemplar_filter(environ)  # OTEL_METRICS_EXEMPLAR_FILTER
    if settings.otlp_metrics:
        from hookkit._sinks.otlp_metrics.sink import ExportConfig

        ExportConfig.load(settings, environ)  # OTEL_METRIC_EXPORT_INTERVAL, protocol, timeout
    if settings.otlp_logs:
        from hookkit._sinks.otlp_logs.config import LogsConfig

        LogsConfig.load(settings, environ)  # the SDK's release, protocol, timeout
    return settings, [*names, *(sink.name for sink in _requested.sinks)]
