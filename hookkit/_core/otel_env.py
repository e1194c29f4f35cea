"""What the ``OTEL_*`` environment says, read alike by every OpenTelemetry
sink: booleans as the SDK reads them, and which values are
opentelemetry-distro's defaults rather than the user's.

Under ``opentelemetry-instrument`` with ``opentelemetry-distro``, some
``OTEL_*`` values are the distro's defaults, not the user's: the distro
sets them (``os.environ.setdefault``) in the gunicorn master itself, from
``sitecustomize``, before gunicorn reads its config. They deserve different
answers: a value the user set and hookkit cannot honour stops gunicorn at
start-up, where the mistake is seen and fixed once; a default the user
never wrote must not (a process manager would restart gunicorn into the
same refusal forever), so a sink says what it does instead, with the fix,
in ``master_starting`` (``warnings``), and serves.

Only names and the standard library: the core names no backend.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Collection, Mapping

from hookkit._core.settings import ConfigError


def otel_bool(environ: Mapping[str, str], name: str) -> bool:
    """An OpenTelemetry boolean variable (``OTEL_SDK_DISABLED``): the SDK
    reads only ``true`` (any case) as true, so hookkit refuses what the SDK
    would silently read as false (``1``, ``yes``), rather than disagree
    with an app's own SDK."""
    value = environ.get(name, "").strip().lower()
    if value in ("", "false"):
        return False
    if value == "true":
        return True
    raise ConfigError(
        f"{name}={environ[name]!r} is not valid (accepted: true, false; the OpenTelemetry "
        "SDK reads any other value as false)"
    )


# What opentelemetry-distro's OpenTelemetryDistro._configure sets with
# os.environ.setdefault (opentelemetry/distro/__init__.py; read in 0.66b1).
DISTRO_DEFAULTS: Mapping[str, str] = {
    "OTEL_TRACES_EXPORTER": "otlp",
    "OTEL_METRICS_EXPORTER": "otlp",
    "OTEL_LOGS_EXPORTER": "otlp",
    "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
}
DISTRO_MODULE = "opentelemetry.distro"
# Set by gunicorn in the environment of the master it re-executes (SIGUSR2).
_REEXEC_MARK = "GUNICORN_PID"
_LAUNCH_ENVIRON = "/proc/self/environ"


def distro_defaults(
    env: Mapping[str, str], *, distro_loaded: bool, launch_names: Collection[str] | None
) -> frozenset[str]:
    """The names in ``env`` whose value is opentelemetry-distro's default
    rather than the user's.

    A name counts when the distro was loaded in this process
    (``distro_loaded``), its value is the distro's default, and it was not
    in the environment the process was started with (``launch_names``,
    the names of ``/proc/self/environ``: the distro sets its defaults
    after exec, so a name there was the user's, or came from
    ``opentelemetry-instrument``'s own options, also the user's). Where
    that environment is unknown (``None``: not Linux, or a master gunicorn
    re-executed, whose environment has the old master's defaults in it),
    the value decides alone: a user who wrote the distro's default value
    is then taken for the distro, and gets a warning instead of a refusal.
    """
    if not distro_loaded:
        return frozenset()
    return frozenset(
        name
        for name, default in DISTRO_DEFAULTS.items()
        if env.get(name, "").strip().lower() == default
        and (launch_names is None or name not in launch_names)
    )


def launch_names() -> frozenset[str] | None:
    """The names of the environment this process was started with (exec),
    or None where that is not known (see ``distro_defaults``)."""
    if _REEXEC_MARK in os.environ:
        return None
    try:
        with open(_LAUNCH_ENVIRON, "rb") as launch:
            raw = launch.read()
    except OSError:
        return None
    return frozenset(
        entry.split(b"=", 1)[0].decode("utf-8", "replace") for entry in raw.split(b"\0") if entry
    )


def process_distro_defaults() -> frozenset[str]:
    """``distro_defaults`` of this process's own environment."""
    return distro_defaults(
        os.environ, distro_loaded=DISTRO_MODULE in sys.modules, launch_names=launch_names()
    )


def positive_number(
    environ: Mapping[str, str], names: tuple[str, ...], default: float, unit: str
) -> float:
    """The first of ``names`` set (not empty): a positive, finite number
    (an export interval, a timeout); ``default`` when none is set; a
    ConfigError naming the variable otherwise."""
    for name in names:
        raw = environ.get(name, "").strip()
        if not raw:
            continue
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not (value > 0 and math.isfinite(value)):
            raise ConfigError(
                f"{name}={raw!r} is not valid (accepted: a positive number of {unit})"
            )
        return value
    return default


def http_protobuf_only(
    environ: Mapping[str, str],
    names: tuple[str, ...],
    setting: str,
    defaulted: Collection[str] = frozenset(),
) -> str | None:
    """OTLP over HTTP (protobuf) only, for an exporter that runs in a process
    that forks (the master): the first of the protocol variables ``names``
    that is set decides. ``grpc`` stops start-up (a gRPC channel in a
    process that forks workers can hang them), unless it is
    opentelemetry-distro's default (``defaulted``): then HTTP anyway, and
    the warning to show, naming the fix, is returned."""
    for name in names:
        protocol = environ.get(name, "").strip().lower()
        if not protocol:
            continue
        if protocol == "http/protobuf":
            return None
        if protocol == "grpc" and name in defaulted:
            return (
                f"{name}=grpc is opentelemetry-distro's default: {setting} exports over "
                "http/protobuf (gRPC in a process that forks workers can hang them); "
                f"set {names[0]}=http/protobuf to say so"
            )
        if protocol == "grpc":
            raise ConfigError(
                f"{name}=grpc is not supported for {setting}: the master exports, and "
                "a gRPC channel in a process that forks workers can hang them; use "
                "http/protobuf (the default)"
            )
        raise ConfigError(f"{name}={protocol!r} is not valid (accepted: http/protobuf)")
    return None
