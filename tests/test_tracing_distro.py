"""hookkit beside ``opentelemetry-instrument`` and opentelemetry-distro, unit
level (``tests/test_instrument_recipe.py`` runs the recipe for real).

The distro sets ``OTEL_TRACES_EXPORTER``, ``OTEL_METRICS_EXPORTER``,
``OTEL_LOGS_EXPORTER`` (``otlp``) and ``OTEL_EXPORTER_OTLP_PROTOCOL``
(``grpc``) in the gunicorn master's own environment before gunicorn reads
its config. A value the user set and hookkit cannot honour still stops
start-up; the distro's default never does (a process manager would restart
gunicorn into the same refusal forever): hookkit says what it does instead,
with the fix, in ``master_starting``, which becomes a warning."""

from __future__ import annotations

import os
import sys
from typing import Any

import pytest

from hookkit._core import otel_env
from hookkit._core.events import Event
from hookkit._core.otel_env import DISTRO_DEFAULTS, DISTRO_MODULE, distro_defaults, launch_names
from hookkit._core.runtime import RUNTIME, sdk_metrics_warning
from hookkit._core.settings import ConfigError, Settings
from hookkit._core.sink import Sink
from hookkit._sinks.tracing import config as _tracing_config
from hookkit._sinks.tracing.config import GRPC_PACKAGE, TracingConfig
from hookkit.hooks import on_starting
from hookkit.testing import CapturingSink, FakeArbiter, FakeLog

PROTOCOL = "OTEL_EXPORTER_OTLP_PROTOCOL"
# The environment of the gunicorn master once the distro ran, with nothing
# set by the user.
DISTRO_ENV = dict(DISTRO_DEFAULTS)


def load(environ: dict[str, str], defaulted: frozenset[str]) -> TracingConfig:
    return TracingConfig.load(Settings.load(environ), environ, defaulted)


@pytest.fixture
def no_grpc(monkeypatch: pytest.MonkeyPatch) -> None:
    """The gRPC exporter is not installed (as in this suite's venv)."""
    monkeypatch.setattr(_tracing_config, "_importable", lambda module: False)


# -- which values are the distro's ---------------------------------------------


def test_values_are_the_distros_only_when_the_distro_was_loaded() -> None:
    """Without the distro in the process, nothing is a default of it."""
    assert frozenset() == distro_defaults(DISTRO_ENV, distro_loaded=False, launch_names=None)


def test_a_name_of_the_launch_environment_is_the_users() -> None:
    """The distro sets its defaults after exec: a name that was in the
    environment the process started with was the user's, even with the
    distro's value; the others, with the distro's values, are defaults."""
    found = distro_defaults(
        {**DISTRO_ENV, "OTEL_LOGS_EXPORTER": "console"},
        distro_loaded=True,
        launch_names={"PATH", "OTEL_TRACES_EXPORTER"},
    )

    assert frozenset({"OTEL_METRICS_EXPORTER", PROTOCOL}) == found


def test_without_the_launch_environment_the_value_decides() -> None:
    """Not Linux, or a re-executed master: a value equal to the distro's
    default counts as the default (case and blanks as the SDK reads them)."""
    found = distro_defaults(
        {"OTEL_TRACES_EXPORTER": "OTLP", PROTOCOL: " grpc ", "OTEL_METRICS_EXPORTER": "none"},
        distro_loaded=True,
        launch_names=None,
    )

    assert frozenset({"OTEL_TRACES_EXPORTER", PROTOCOL}) == found


def test_launch_names_reads_this_process_launch_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On Linux, the names the process was started with; a variable set
    since (as the distro sets its defaults) is not among them; a master
    gunicorn re-executed (``GUNICORN_PID``) has no usable launch environment."""
    if not os.path.exists("/proc/self/environ"):
        pytest.skip("no /proc/self/environ here")
    monkeypatch.delenv("GUNICORN_PID", raising=False)
    monkeypatch.setenv("SET_AFTER_EXEC_BY_THIS_TEST", "1")
    names = launch_names()
    assert names is not None
    assert ("PATH" in names, "SET_AFTER_EXEC_BY_THIS_TEST" in names) == (
        "PATH" in os.environ,
        False,
    )

    monkeypatch.setenv("GUNICORN_PID", "1")
    assert launch_names() is None


def test_the_process_environment_is_judged_only_when_read_from_the_process(
    monkeypatch: pytest.MonkeyPatch, no_grpc: None
) -> None:
    """``TracingConfig.load`` looks for the distro's defaults in the
    process's own environment (the only one the distro changed): with the
    distro loaded and the default set after exec, a warning; the same
    values passed in as a mapping are the user's, refused."""
    monkeypatch.setitem(sys.modules, DISTRO_MODULE, sys.modules[__name__])
    # Started without them (whatever this test process was started with).
    monkeypatch.setattr(otel_env, "launch_names", lambda: frozenset({"PATH"}))
    for name, value in DISTRO_ENV.items():
        monkeypatch.setenv(name, value)

    config = TracingConfig.load(Settings.load({}))
    assert ("otlp",) == config.exporters
    assert 1 == len(config.warnings)

    with pytest.raises(ConfigError, match=f"{PROTOCOL}=grpc"):
        TracingConfig.load(Settings.load({}), dict(os.environ))


# -- what hookkit does with them -------------------------------------------------


def test_the_distros_grpc_default_is_reported_and_http_used(no_grpc: None) -> None:
    """The distro's ``grpc`` without the gRPC exporter: hookkit exports over
    http/protobuf, its own default, and ``describe()`` (master_starting's
    ``tracing``) carries a warning naming the variable, the package and the fix."""
    config = load(DISTRO_ENV, frozenset(DISTRO_DEFAULTS))

    assert (("otlp",), True) == (config.exporters, config.own_provider)
    described = config.describe()
    (warning,) = described["warnings"]  # type: ignore[misc]
    for fragment in (f"{PROTOCOL}=grpc", "opentelemetry-distro's default", GRPC_PACKAGE):
        assert fragment in warning
    assert warning.endswith(f"set {PROTOCOL}=http/protobuf")
    assert "http://localhost:4318" == described["endpoint"]


def test_grpc_the_user_set_is_still_refused(no_grpc: None) -> None:
    """The same value set by the user (not among the defaults) stops
    start-up as before, naming the variable and the package."""
    defaulted = frozenset(DISTRO_DEFAULTS) - {PROTOCOL}

    with pytest.raises(ConfigError) as info:
        load(DISTRO_ENV, defaulted)
    assert f"{PROTOCOL}=grpc needs the package {GRPC_PACKAGE}" in str(info.value)


def test_the_traces_protocol_set_by_the_user_wins_over_the_distros(no_grpc: None) -> None:
    """``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=http/protobuf`` is read first:
    the general ``grpc`` default does not matter to hookkit's spans."""
    environ = {**DISTRO_ENV, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"}

    config = load(environ, frozenset(DISTRO_DEFAULTS))

    assert (("otlp",), ()) == (config.exporters, config.warnings)


def test_the_recipe_has_no_warning() -> None:
    """The README's recipe (``http/protobuf``, ``OTEL_METRICS_EXPORTER=none``,
    ``OTEL_LOGS_EXPORTER=none``): OTLP over HTTP, no warning."""
    environ = {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        PROTOCOL: "http/protobuf",
    }

    config = load(environ, frozenset({"OTEL_TRACES_EXPORTER"}))

    assert {"tracing": "on", "exporters": ["otlp"], "endpoint": "http://localhost:4318"} == (
        config.describe()
    )


def test_the_distros_grpc_default_with_the_grpc_exporter_is_warned_about(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the gRPC exporter installed, the distro built it in the master
    before the fork: hookkit keeps gRPC (it cannot rebuild the distro's
    provider) and warns, with the fix."""
    monkeypatch.setattr(_tracing_config, "_importable", lambda module: True)

    config = load(DISTRO_ENV, frozenset(DISTRO_DEFAULTS))

    assert ("otlp_grpc",) == config.exporters
    (warning,) = config.warnings
    assert "before the fork" in warning
    assert warning.endswith(f"set {PROTOCOL}=http/protobuf")


def test_an_invalid_protocol_is_refused_even_with_the_distro_loaded() -> None:
    """The distro only ever sets ``grpc``: any other invalid value is the
    user's, and refused."""
    with pytest.raises(ConfigError, match="not valid"):
        load({**DISTRO_ENV, PROTOCOL: "thrift"}, frozenset(DISTRO_DEFAULTS))


# -- master_starting -------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "otlp_metrics", "fix"),
    [
        ("otlp", False, "set OTEL_METRICS_EXPORTER=none and HOOKKIT_OTLP_METRICS=on"),
        ("console,OTLP", False, "set OTEL_METRICS_EXPORTER=none and HOOKKIT_OTLP_METRICS=on"),
        ("otlp_proto_http", True, "set OTEL_METRICS_EXPORTER=none (HOOKKIT_OTLP_METRICS=on"),
    ],
)
def test_sdk_otlp_metrics_are_warned_about(value: str, otlp_metrics: bool, fix: str) -> None:
    """``OTEL_METRICS_EXPORTER`` asking the SDK for OTLP: a warning naming
    the variable, the collision (opentelemetry-python #3885) and the fix."""
    warning = sdk_metrics_warning(
        Settings(otlp_metrics=otlp_metrics), {"OTEL_METRICS_EXPORTER": value}
    )

    assert warning is not None
    assert warning.startswith(f"OTEL_METRICS_EXPORTER={value} ")
    assert "#3885" in warning
    assert fix in warning


@pytest.mark.parametrize("environ", [{}, {"OTEL_METRICS_EXPORTER": "none"}, {"x": "otlp"}])
def test_no_sdk_metrics_warning_when_the_sdk_exports_no_otlp(environ: dict[str, str]) -> None:
    """Unset is not OTLP: the SDK's own configuration then makes no metrics
    exporter (the distro sets ``otlp`` in the environment before hookkit
    reads it, so under the distro the variable is never unset)."""
    assert sdk_metrics_warning(Settings(), environ) is None


class _HookkitLog(FakeLog):
    """gunicorn's logger class is hookkit's (no warning about it)."""

    hookkit_logger = True


def _master_starting(*sinks: Sink) -> Event:
    """The ``master_starting`` event of ``on_starting`` with ``sinks``."""
    capture = CapturingSink()
    RUNTIME.use(Settings(), [*sinks, capture])
    on_starting(FakeArbiter(log=_HookkitLog()))
    (line,) = [e for e in capture.events if e.name == "master_starting"]
    return line


class _Warns(Sink):
    """A sink whose start-up fields carry a warning, as tracing's do."""

    name = "warns"

    def start_master(self, server: Any) -> dict[str, object]:
        return {"warns": {"warnings": ["something hookkit cannot honour"]}}


def test_master_starting_carries_the_sdk_metrics_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    """``master_starting`` has the SDK metrics warning under ``warnings``,
    and is a warning line."""
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "otlp")

    line = _master_starting()

    assert "warning" == line.level
    (warning,) = line.fields["warnings"]  # type: ignore[misc]
    assert warning.startswith("OTEL_METRICS_EXPORTER=otlp ")


def test_a_sinks_warnings_make_master_starting_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    """A sink's fields with a ``warnings`` list make the line a warning."""
    monkeypatch.delenv("OTEL_METRICS_EXPORTER", raising=False)

    line = _master_starting(_Warns())

    expected = ("warning", None, {"warnings": ["something hookkit cannot honour"]})
    assert expected == (line.level, line.fields.get("warnings"), line.fields["warns"])


def test_master_starting_without_warnings_stays_info(monkeypatch: pytest.MonkeyPatch) -> None:
    """No SDK metrics, no sink warning: the line stays info, no ``warnings``."""
    monkeypatch.delenv("OTEL_METRICS_EXPORTER", raising=False)

    line = _master_starting()

    assert ("info", None) == (line.level, line.fields.get("warnings"))
