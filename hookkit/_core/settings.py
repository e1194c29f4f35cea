"""hookkit's settings: ``HOOKKIT_*`` environment variables, or the same
names in lower case (``hookkit_access_log = True``) in a gunicorn config.

Every setting is described once in ``SETTINGS``; parsing is eager, so a bad
value stops gunicorn at start-up with one message that names the variable,
the value and what is accepted. The environment wins over a config file, as
``GUNICORN_CMD_ARGS`` wins over gunicorn's own config file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

_TRUE = frozenset({"1", "true", "on", "yes"})
_FALSE = frozenset({"0", "false", "off", "no"})


class ConfigError(ValueError):
    """A hookkit setting has a value hookkit cannot use."""


def parse_bool(value: object) -> bool:
    """``1/0``, ``true/false``, ``on/off``, ``yes/no`` in any case, or a bool."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError("expected one of 1/0, true/false, on/off, yes/no")


def parse_log_format(value: object) -> str:
    """``json`` or ``console``."""
    text = str(value).strip().lower()
    if text not in ("json", "console"):
        raise ValueError("expected json or console")
    return text


def parse_seconds_or_off(value: object) -> float | None:
    """A positive number of seconds, or off (``off``, ``0`` or empty)."""
    if value is None:
        return None
    text = str(value).strip().lower()
    if text in ("", "off", "0", "false", "no"):
        return None
    try:
        seconds = float(text)
    except ValueError:
        raise ValueError("expected a positive number of seconds, or off") from None
    if seconds == 0:
        return None
    if not seconds > 0 or seconds == float("inf"):
        raise ValueError("expected a positive number of seconds, or off")
    return seconds


def parse_host_port(value: object) -> str:
    """``host:port`` or ``[v6]:port``, with a port from 1 to 65535."""
    text = str(value).strip()
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("expected host:port, e.g. 127.0.0.1:9191 or [::1]:9191")
    return text


def parse_host_port_or_none(value: object) -> str | None:
    """``host:port``, ``[v6]:port``, or ``none`` (any case): no port at all."""
    if value is None or str(value).strip().lower() == "none":
        return None
    try:
        return parse_host_port(value)
    except ValueError:
        raise ValueError("expected host:port, e.g. 127.0.0.1:9191 or [::1]:9191, or none") from None


def split_host_port(value: str) -> tuple[str, int]:
    """(host, port) of a value ``parse_host_port`` accepted."""
    host, _, port = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def parse_positive_int(value: object) -> int:
    """A whole number, 1 or more."""
    text = str(value).strip()
    if not text.isdigit() or int(text) < 1:
        raise ValueError("expected a whole number, 1 or more")
    return int(text)


def parse_positive_seconds(value: object) -> float:
    """A positive number of seconds."""
    seconds = parse_seconds_or_off(value)
    if seconds is None:
        raise ValueError("expected a positive number of seconds")
    return seconds


def parse_regex_list(value: object) -> str | None:
    """Comma-separated regular expressions; empty means none."""
    if value is None:
        return None
    text = str(value).strip()
    for pattern in (item.strip() for item in text.split(",")):
        if not pattern:
            continue
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"{pattern!r} is not a valid regular expression ({exc})") from None
    return text or None


def parse_text_or_none(value: object) -> str | None:
    """Text (comma-separated names, a file path); empty means none."""
    if value is None:
        return None
    text = str(value).strip()
    return text or None


parse_name_list = parse_text_or_none
parse_path_or_none = parse_text_or_none


@dataclass(frozen=True)
class SettingSpec:
    """One hookkit setting."""

    attr: str
    parse: Callable[[object], Any]
    default: object
    accepted: str
    desc: str
    unset: str = "off"  # how `hookkit check` shows no value
    # Earlier names that still work (stable names are never taken away).
    aliases: tuple[str, ...] = ()

    @property
    def env(self) -> str:
        """The environment variable that sets it."""
        return "HOOKKIT_" + self.attr.upper()

    def parse_from(self, source: str, raw: object) -> Any:
        """``raw`` parsed; a ConfigError names ``source`` (the variable or
        name it came from), the value and what is accepted."""
        try:
            return self.parse(raw)
        except ValueError as exc:
            raise ConfigError(
                f"{source}={raw!r} is not valid: {exc} (accepted: {self.accepted})"
            ) from None

    @property
    def alias_envs(self) -> tuple[str, ...]:
        """The environment variables of its earlier names."""
        return tuple("HOOKKIT_" + alias.upper() for alias in self.aliases)


SETTINGS: tuple[SettingSpec, ...] = (
    SettingSpec(
        "logs",
        parse_bool,
        True,
        "1/0, true/false, on/off, yes/no",
        "The structured-log sink: lifecycle events as log lines.",
    ),
    SettingSpec(
        "log_format",
        parse_log_format,
        "json",
        "json, console",
        "How log lines are rendered, gunicorn's own lines included.",
    ),
    SettingSpec(
        "access_log",
        parse_bool,
        False,
        "1/0, true/false, on/off, yes/no",
        "One JSON line per request: method, path (no query string), status, duration and bytes.",
    ),
    SettingSpec(
        "access_log_client",
        parse_bool,
        False,
        "1/0, true/false, on/off, yes/no",
        "Add the client's address (`client_address`: behind a trusted proxy, the "
        "forwarded client) to the access line. Off by default: it is personal data.",
    ),
    SettingSpec(
        "excluded_urls",
        parse_regex_list,
        None,
        "comma-separated regular expressions",
        "Requests whose path, or URL `scheme://host/path`, a pattern is found in "
        "(e.g. `^/healthz$,^/readyz$`) are kept out of the request metrics, the access "
        "lines (gunicorn's too) and spans; they still count as busy time, towards "
        "`max_requests` and for the watchdog. `OTEL_PYTHON_EXCLUDED_URLS` applies too.",
        unset="(none)",
    ),
    SettingSpec(
        "slow_request_seconds",
        parse_seconds_or_off,
        None,
        "a positive number of seconds, or off",
        "Log `request_slow` with the stack once for a request still running "
        "after this long, on every worker class.",
    ),
    SettingSpec(
        "metrics",
        parse_bool,
        True,
        "1/0, true/false, on/off, yes/no",
        "The Prometheus sink and its /metrics endpoint.",
    ),
    SettingSpec(
        "metrics_bind",
        parse_host_port_or_none,
        "127.0.0.1:9191",
        "host:port, e.g. 127.0.0.1:9191 or [::1]:9191, or none",
        "Where the master serves /metrics (loopback by default); `none` opens no "
        "port and keeps the metrics for HOOKKIT_OTLP_METRICS alone.",
    ),
    SettingSpec(
        "metrics_web_config",
        parse_path_or_none,
        None,
        "a path to a Prometheus web-config file",
        "TLS and basic auth for /metrics, as Prometheus exporters configure them "
        "(`tls_server_config`, `basic_auth_users` with bcrypt hashes).",
        unset="(none)",
    ),
    SettingSpec(
        "max_routes",
        parse_positive_int,
        100,
        "a whole number, 1 or more",
        "Distinct `http_route` label values per worker; the rest are `_OTHER`.",
    ),
    SettingSpec(
        "tracing",
        parse_bool,
        True,
        "1/0, true/false, on/off, yes/no",
        "The OpenTelemetry sink: a SERVER span per request, exported as the "
        "`OTEL_*` variables say. `OTEL_SDK_DISABLED=true` also turns it off.",
    ),
    SettingSpec(
        "tracing_excluded_urls",
        parse_regex_list,
        None,
        "comma-separated regular expressions",
        "Requests whose URL (without the query) matches get no span, but are "
        "still counted and logged (`HOOKKIT_EXCLUDED_URLS` keeps them out of "
        "everything), e.g. `/healthz,/readyz`.",
        unset="(none)",
    ),
    SettingSpec(
        "redact_query",
        parse_name_list,
        None,
        "comma-separated query parameter names",
        "Query parameters whose values are shown as `REDACTED` in spans' "
        "`url.query` and in log lines (gunicorn's own included), added to the "
        "default list (names containing auth, bearer, code, credential, jwt, "
        "key, otp, pass, pwd, secret, sess, sig or token, in any case). "
        "`HOOKKIT_TRACING_REDACT_QUERY`, its earlier name, still works.",
        unset="(defaults only)",
        aliases=("tracing_redact_query",),
    ),
    SettingSpec(
        "tracing_flush_seconds",
        parse_positive_seconds,
        2.0,
        "a positive number of seconds",
        "How long a stopping worker waits for its spans to be exported "
        "(worker_int, worker_exit); an aborted worker waits at most 0.5 s.",
    ),
    SettingSpec(
        "otlp_metrics",
        parse_bool,
        False,
        "1/0, true/false, on/off, yes/no",
        "The master pushes the metrics aggregate (what /metrics serves) as OTLP over "
        "HTTP every `OTEL_METRIC_EXPORT_INTERVAL` ms (default 60000), to "
        "`OTEL_EXPORTER_OTLP_METRICS_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT`, as the "
        "`OTEL_EXPORTER_OTLP_*` variables say; workers never export. Needs "
        "`HOOKKIT_METRICS` on (`HOOKKIT_METRICS_BIND=none` for no port).",
    ),
    SettingSpec(
        "otlp_logs",
        parse_bool,
        False,
        "1/0, true/false, on/off, yes/no",
        "Every hookkit event (the access line too, when on) and gunicorn's own error "
        "lines as OpenTelemetry log records, sent over OTLP/HTTP by the process that "
        "produced them, to `OTEL_EXPORTER_OTLP_LOGS_ENDPOINT` or "
        "`OTEL_EXPORTER_OTLP_ENDPOINT`, as the `OTEL_EXPORTER_OTLP_*` variables say. "
        "Needs opentelemetry-sdk `>=1.43,<1.46`.",
    ),
    SettingSpec(
        "status",
        parse_bool,
        True,
        "1/0, true/false, on/off, yes/no",
        "`/status.json`, `/status` and `/stacks.json` on the metrics endpoint (same "
        "bind, TLS and basic auth): the master's live view of its workers and their "
        "requests, read by `hookkit top`. Needs `HOOKKIT_METRICS` on and a bind: with "
        "`HOOKKIT_METRICS=off` or `HOOKKIT_METRICS_BIND=none` there is no server and so "
        "no status, and `master_starting`'s `status` field says so.",
    ),
    SettingSpec(
        "gunicorn_config",
        parse_path_or_none,
        None,
        "a path to a gunicorn config file",
        "The user's gunicorn config that the drop-in applies "
        "(default: ./gunicorn.conf.py when it exists).",
        unset="(none)",
    ),
)

SETTINGS_BY_ATTR = {spec.attr: spec for spec in SETTINGS}
# Earlier names, by the attribute they set.
ALIASES = {alias: spec for spec in SETTINGS for alias in spec.aliases}


@dataclass(frozen=True, kw_only=True)
class Settings:
    """hookkit's effective settings."""

    logs: bool = True
    log_format: str = "json"
    access_log: bool = False
    access_log_client: bool = False
    excluded_urls: str | None = None
    slow_request_seconds: float | None = None
    metrics: bool = True
    metrics_bind: str | None = "127.0.0.1:9191"
    metrics_web_config: str | None = None
    max_routes: int = 100
    tracing: bool = True
    tracing_excluded_urls: str | None = None
    redact_query: str | None = None
    tracing_flush_seconds: float = 2.0
    otlp_metrics: bool = False
    otlp_logs: bool = False
    status: bool = True
    gunicorn_config: str | None = None

    @classmethod
    def load(
        cls,
        environ: Mapping[str, str] | None = None,
        config: Mapping[str, object] | None = None,
    ) -> Settings:
        """Read the settings from ``environ`` (default ``os.environ``) over
        ``config`` (``hookkit_*`` names from a gunicorn config file).

        Raises ConfigError naming the first bad setting, and refuses unknown
        ``HOOKKIT_*`` variables, which are most often typos.
        """
        environ = os.environ if environ is None else environ
        config = {} if config is None else config
        known_env = {spec.env for spec in SETTINGS} | {
            env for spec in SETTINGS for env in spec.alias_envs
        }
        for name in sorted(environ):
            if name.startswith("HOOKKIT_") and name not in known_env:
                raise ConfigError(
                    f"{name} is not a hookkit setting; known settings: "
                    + ", ".join(sorted(known_env))
                )
        for name in sorted(config):
            attr = name[len("hookkit_") :]
            if name.startswith("hookkit_") and attr not in SETTINGS_BY_ATTR and attr not in ALIASES:
                raise ConfigError(
                    f"{name} (in the gunicorn config) is not a hookkit setting; known settings: "
                    + ", ".join(f"hookkit_{spec.attr}" for spec in SETTINGS)
                )
        values: dict[str, Any] = {}
        for spec in SETTINGS:
            source: str
            raw: object
            found = _first_set(environ, (spec.env, *spec.alias_envs)) or _first_set(
                config, ("hookkit_" + spec.attr, *("hookkit_" + a for a in spec.aliases))
            )
            if found is None:
                continue
            source, raw = found
            values[spec.attr] = spec.parse_from(source, raw)
        return cls(**values)

    def replace(self, **changes: object) -> Settings:
        """A copy with ``changes`` (setting names without the prefix), each parsed."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        for attr, raw in changes.items():
            spec = SETTINGS_BY_ATTR.get(attr) or ALIASES.get(attr)
            if spec is None:
                raise ConfigError(f"{attr} is not a hookkit setting")
            values[spec.attr] = spec.parse_from(attr, raw)
        return Settings(**values)

    def as_rows(self) -> list[tuple[str, str]]:
        """(environment variable, effective value) pairs, for ``hookkit check``."""
        return [(spec.env, _show(getattr(self, spec.attr), spec.unset)) for spec in SETTINGS]


def _first_set(source: Mapping[str, object], names: tuple[str, ...]) -> tuple[str, object] | None:
    """(name, value) of the first of ``names`` set in ``source``."""
    for name in names:
        if name in source:
            return name, source[name]
    return None


def _show(value: object, unset: str) -> str:
    if value is None:
        return unset
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)
