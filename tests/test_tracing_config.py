"""hookkit._sinks.tracing.config: the tracing sink's configuration, read from the
``OTEL_*`` variables and hookkit's ``HOOKKIT_TRACING*`` settings at start-up,
refused with a ConfigError that names the variable."""

from __future__ import annotations

import os
import re

import pytest

from hookkit._core.settings import ConfigError, Settings
from hookkit._sinks.tracing import config as _tracing_config
from hookkit._sinks.tracing.config import TracingConfig

ENDPOINT = "http://collector.test:4318"
GRPC_PACKAGE = "opentelemetry-exporter-otlp-proto-grpc"


def load(environ: dict[str, str]) -> TracingConfig:
    """The configuration from one environment, hookkit's settings included."""
    return TracingConfig.load(Settings.load(environ), environ)


def refused(environ: dict[str, str], *fragments: str) -> str:
    """The ConfigError message for ``environ``; it contains every fragment."""
    with pytest.raises(ConfigError) as info:
        load(environ)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, message
    return message


# -- on and off ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "disabled_by"),
    [
        ({"HOOKKIT_TRACING": "off"}, "HOOKKIT_TRACING"),
        ({"HOOKKIT_TRACING": "0"}, "HOOKKIT_TRACING"),
        ({"OTEL_SDK_DISABLED": "true"}, "OTEL_SDK_DISABLED"),
        ({"OTEL_SDK_DISABLED": "TRUE"}, "OTEL_SDK_DISABLED"),
        ({"OTEL_SDK_DISABLED": " True "}, "OTEL_SDK_DISABLED"),
        ({"HOOKKIT_TRACING": "off", "OTEL_SDK_DISABLED": "true"}, "HOOKKIT_TRACING"),
        (
            {"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT},
            "OTEL_SDK_DISABLED",
        ),
    ],
)
def test_tracing_off(environ: dict[str, str], disabled_by: str) -> None:
    """``HOOKKIT_TRACING=off`` or ``OTEL_SDK_DISABLED=true`` turns tracing
    off, whatever else is set; ``disabled_by`` names the setting that did."""
    config = load(environ)

    expected = (False, disabled_by, (), False)
    assert expected == (config.enabled, config.disabled_by, config.exporters, config.own_provider)
    assert {"tracing": "off", "disabled_by": disabled_by} == config.describe()


def test_tracing_off_from_a_settings_object() -> None:
    """A ``Settings`` made in code with ``tracing=False`` turns it off too."""
    config = TracingConfig.load(Settings(tracing=False), {})

    expected = (False, "HOOKKIT_TRACING")
    assert expected == (config.enabled, config.disabled_by)


@pytest.mark.parametrize("value", ["", "false", "FALSE", " False "])
def test_otel_sdk_disabled_false_leaves_tracing_on(value: str) -> None:
    """``OTEL_SDK_DISABLED`` empty or false keeps tracing on."""
    config = load({"OTEL_SDK_DISABLED": value})

    expected = (True, None)
    assert expected == (config.enabled, config.disabled_by)


@pytest.mark.parametrize("value", ["maybe", "2", "disabled", "1", "0", "yes", "off"])
def test_otel_sdk_disabled_with_a_bogus_value_is_refused(value: str) -> None:
    """A value of ``OTEL_SDK_DISABLED`` that is neither true nor false stops
    start-up, naming the variable and the value: the OpenTelemetry SDK reads
    only ``true`` as true, so ``1`` would leave an app's own SDK on while
    hookkit's tracing was off."""
    refused({"OTEL_SDK_DISABLED": value}, "OTEL_SDK_DISABLED", repr(value))


# -- exporters -------------------------------------------------------------------


def test_no_exporter_and_no_endpoint_makes_no_provider() -> None:
    """Nothing asks for export: tracing is on, but hookkit builds no
    provider and no exporter (its span only joins a provider the app
    installed); ``describe()`` says so in a note."""
    config = load({})

    expected = (True, (), False, None)
    assert expected == (config.enabled, config.exporters, config.own_provider, config.endpoint)
    described = config.describe()
    assert "on" == described["tracing"]
    assert [] == described["exporters"]
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" in str(described["note"])


def test_settings_defaults_give_the_same_as_an_empty_environment() -> None:
    """``Settings()`` and ``Settings.load({})`` give the same configuration."""
    from_defaults = TracingConfig.load(Settings(), {})
    from_environ = load({})

    assert (from_environ.enabled, from_environ.exporters, from_environ.own_provider) == (
        from_defaults.enabled,
        from_defaults.exporters,
        from_defaults.own_provider,
    )
    assert from_environ.flush_seconds == from_defaults.flush_seconds == 2.0


@pytest.mark.parametrize(
    "variable", ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
)
def test_an_otlp_endpoint_alone_asks_for_otlp_over_http(variable: str) -> None:
    """An OTLP endpoint variable alone means OTLP/HTTP export with a
    provider of hookkit's own."""
    config = load({variable: ENDPOINT})

    expected = (("otlp",), True, ENDPOINT)
    assert expected == (config.exporters, config.own_provider, config.endpoint)
    assert {"tracing": "on", "exporters": ["otlp"], "endpoint": ENDPOINT} == config.describe()


def test_the_traces_endpoint_wins_over_the_general_one() -> None:
    """``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is the endpoint when both are set."""
    config = load(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://general.test:4318",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": ENDPOINT,
        }
    )

    assert ENDPOINT == config.endpoint


def test_otlp_without_an_endpoint_describes_the_default_endpoint() -> None:
    """``OTEL_TRACES_EXPORTER=otlp`` with no endpoint exports to the OTLP/HTTP
    default, and the start-up line says which."""
    config = load({"OTEL_TRACES_EXPORTER": "otlp"})

    expected = {"tracing": "on", "exporters": ["otlp"], "endpoint": "http://localhost:4318"}
    assert expected == config.describe()


@pytest.mark.parametrize(
    ("value", "exporters"),
    [
        ("console", ("console",)),
        ("CONSOLE", ("console",)),
        ("console,otlp", ("console", "otlp")),
        (" otlp , console ", ("otlp", "console")),
        ("otlp,console,otlp", ("otlp", "console")),
        ("otlp_proto_http", ("otlp_proto_http",)),
        ("none,console", ("console",)),
    ],
)
def test_otel_traces_exporter_lists_the_exporters(value: str, exporters: tuple[str, ...]) -> None:
    """``OTEL_TRACES_EXPORTER`` is a case-insensitive list of otlp, console,
    none and installed entry points (``otlp_proto_http``); each exporter
    once, in order, with a provider of hookkit's own."""
    config = load({"OTEL_TRACES_EXPORTER": value})

    expected = (exporters, True)
    assert expected == (config.exporters, config.own_provider)


@pytest.mark.parametrize(
    "environ",
    [
        {"OTEL_TRACES_EXPORTER": "none"},
        {"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT},
    ],
)
def test_exporter_none_makes_a_provider_with_no_exporter(environ: dict[str, str]) -> None:
    """``OTEL_TRACES_EXPORTER=none`` asks for a provider of hookkit's own with
    no exporter (spans are made, for the app's processors), endpoint or not."""
    config = load(environ)

    expected = ((), True)
    assert expected == (config.exporters, config.own_provider)
    assert [] == config.describe()["exporters"]


@pytest.mark.parametrize("value", ["zipkin", "otlp,jaeger", "console,Bogus"])
def test_an_unknown_exporter_is_refused(value: str) -> None:
    """An exporter that is not otlp, console, none or an installed entry
    point stops start-up, naming ``OTEL_TRACES_EXPORTER``."""
    refused({"OTEL_TRACES_EXPORTER": value}, "OTEL_TRACES_EXPORTER", "no span exporter named")


# -- OTLP protocol ---------------------------------------------------------------


@pytest.mark.parametrize(
    "variable", ["OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"]
)
def test_http_protobuf_is_otlp_over_http(variable: str) -> None:
    """``http/protobuf`` (any case) is hookkit's default, OTLP over HTTP."""
    config = load({"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT, variable: "HTTP/Protobuf"})

    assert ("otlp",) == config.exporters


@pytest.mark.parametrize(
    "variable", ["OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"]
)
def test_grpc_without_the_grpc_exporter_is_refused(
    monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    """``grpc`` without the gRPC exporter package installed stops start-up,
    naming the protocol variable and the package to install."""
    monkeypatch.setattr(_tracing_config, "_importable", lambda module: False)

    refused(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT, variable: "grpc"},
        f"{variable}=grpc",
        GRPC_PACKAGE,
    )


def test_grpc_with_the_grpc_exporter_is_otlp_over_grpc(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the gRPC exporter installed, ``grpc`` gives the gRPC flavour."""
    monkeypatch.setattr(_tracing_config, "_importable", lambda module: True)

    config = load({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})

    assert ("otlp_grpc",) == config.exporters
    assert "http://localhost:4318" == config.describe()["endpoint"]


def test_the_traces_protocol_wins_over_the_general_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`` is read first: the general
    variable's ``grpc`` is not even checked."""
    monkeypatch.setattr(_tracing_config, "_importable", lambda module: False)

    config = load(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
        }
    )

    assert ("otlp",) == config.exporters


@pytest.mark.parametrize(
    "variable", ["OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"]
)
@pytest.mark.parametrize("value", ["bogus", "http/json", "udp"])
def test_a_bogus_protocol_is_refused(variable: str, value: str) -> None:
    """A protocol other than http/protobuf or grpc stops start-up, naming
    the variable."""
    refused(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT, variable: value},
        f"{variable}={value!r}",
        "http/protobuf, grpc",
    )


# -- sampler and propagators -----------------------------------------------------


@pytest.mark.parametrize(
    "sampler",
    [
        "always_on",
        "always_off",
        "traceidratio",
        "parentbased_always_on",
        "parentbased_always_off",
        "parentbased_traceidratio",
        "ParentBased_TraceIdRatio",
    ],
)
def test_the_standard_samplers_are_accepted(sampler: str) -> None:
    """The specification's samplers, in any case, are accepted."""
    assert load({"OTEL_TRACES_SAMPLER": sampler}).enabled


@pytest.mark.parametrize("sampler", ["bogus", "always", "ratio"])
def test_a_bogus_sampler_is_refused(sampler: str) -> None:
    """An unknown sampler stops start-up, naming ``OTEL_TRACES_SAMPLER``."""
    refused({"OTEL_TRACES_SAMPLER": sampler}, f"OTEL_TRACES_SAMPLER={sampler!r}")


@pytest.mark.parametrize(
    ("sampler", "arg"),
    [
        ("traceidratio", "0"),
        ("traceidratio", "1"),
        ("traceidratio", "0.25"),
        ("parentbased_traceidratio", " 0.5 "),
        ("always_on", "5"),
        ("parentbased_always_off", "junk"),
    ],
)
def test_a_sampler_argument_in_range_is_accepted(sampler: str, arg: str) -> None:
    """A ratio sampler takes a number from 0 to 1; the other samplers
    ignore their argument."""
    assert load({"OTEL_TRACES_SAMPLER": sampler, "OTEL_TRACES_SAMPLER_ARG": arg}).enabled


@pytest.mark.parametrize(
    ("sampler", "arg"),
    [
        ("traceidratio", "1.5"),
        ("traceidratio", "-0.1"),
        ("traceidratio", "abc"),
        ("traceidratio", "nan"),
        ("parentbased_traceidratio", "2"),
    ],
)
def test_a_ratio_out_of_range_is_refused(sampler: str, arg: str) -> None:
    """A ratio sampler's argument outside 0 to 1, or not a number, stops
    start-up, naming ``OTEL_TRACES_SAMPLER_ARG``."""
    refused(
        {"OTEL_TRACES_SAMPLER": sampler, "OTEL_TRACES_SAMPLER_ARG": arg},
        f"OTEL_TRACES_SAMPLER_ARG={arg!r}",
        sampler,
    )


@pytest.mark.parametrize(
    "propagators", ["tracecontext", "tracecontext,baggage", " Baggage , TraceContext ", "none"]
)
def test_installed_propagators_are_accepted(propagators: str) -> None:
    """Installed propagators (and none), in any case, are accepted."""
    assert load({"OTEL_PROPAGATORS": propagators}).enabled


@pytest.mark.parametrize("propagators", ["xray", "tracecontext,b3multi", "bogus"])
def test_an_unknown_propagator_is_refused(propagators: str) -> None:
    """A propagator that is not installed stops start-up, naming
    ``OTEL_PROPAGATORS``."""
    refused({"OTEL_PROPAGATORS": propagators}, "OTEL_PROPAGATORS", "not an installed propagator")


# -- excluded URLs ---------------------------------------------------------------


def test_the_tracing_exclusions_are_hookkits_tracing_variable_only() -> None:
    """``HOOKKIT_TRACING_EXCLUDED_URLS`` excludes spans only; the tracing
    configuration leaves ``OTEL_PYTHON_EXCLUDED_URLS`` to hookkit's core,
    which keeps those requests out of every sink (tests/test_excluded.py)."""
    config = load(
        {
            "OTEL_PYTHON_EXCLUDED_URLS": "/healthz,/metrics",
            "HOOKKIT_TRACING_EXCLUDED_URLS": r"/readyz$",
        }
    )

    assert config.excluded is not None
    urls = [
        "http://shop.test/healthz",
        "http://shop.test/metrics",
        "http://shop.test/readyz",
        "http://shop.test/readyz/deep",
        "http://shop.test/users",
    ]
    expected = [False, False, True, False, False]
    assert expected == [config.excluded.search(url) for url in urls]


def test_no_excluded_urls_gives_no_pattern() -> None:
    """Without either variable nothing is excluded."""
    assert load({"OTEL_PYTHON_EXCLUDED_URLS": " , "}).excluded is None


def test_a_bad_hookkit_excluded_url_regex_is_refused_by_the_settings() -> None:
    """``HOOKKIT_TRACING_EXCLUDED_URLS`` is checked as the settings are read."""
    with pytest.raises(ConfigError, match="HOOKKIT_TRACING_EXCLUDED_URLS"):
        Settings.load({"HOOKKIT_TRACING_EXCLUDED_URLS": "/bad["})


def test_a_bad_hookkit_excluded_url_regex_in_code_is_refused() -> None:
    """A ``Settings`` made in code, unchecked, is refused by the tracing
    configuration, naming ``HOOKKIT_TRACING_EXCLUDED_URLS``."""
    with pytest.raises(ConfigError, match="HOOKKIT_TRACING_EXCLUDED_URLS"):
        TracingConfig.load(Settings(tracing_excluded_urls="/bad["), {})


# -- query redaction, header capture, flush ----------------------------------------


def test_hookkit_redact_query_adds_to_the_defaults() -> None:
    """``HOOKKIT_REDACT_QUERY`` names more parameters to redact; the defaults
    still apply."""
    config = load({"HOOKKIT_REDACT_QUERY": "ssn, pin"})

    expected = "ssn=REDACTED&pin=REDACTED&token=REDACTED&page=2"
    assert expected == config.redactor.redact("ssn=1&pin=2&token=3&page=2")


def test_hookkit_tracing_redact_query_adds_to_the_defaults() -> None:
    """``HOOKKIT_TRACING_REDACT_QUERY``, the earlier name of
    ``HOOKKIT_REDACT_QUERY``, still works the same; the defaults still apply."""
    config = load({"HOOKKIT_TRACING_REDACT_QUERY": "ssn, pin"})

    expected = "ssn=REDACTED&pin=REDACTED&token=REDACTED&page=2"
    assert expected == config.redactor.redact("ssn=1&pin=2&token=3&page=2")


def test_header_capture_variables() -> None:
    """The capture variables name request and response headers; the
    sanitize list applies to both."""
    config = load(
        {
            "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST": "x-request-id, x-key",
            "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE": "content-type,x-key",
            "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS": "x-key",
        }
    )

    assert ("x-request-id", "x-key") == config.request_headers.names
    assert ("content-type", "x-key") == config.response_headers.names
    expected = {"p.x-request-id": ("r",), "p.x-key": ("[REDACTED]",)}
    assert expected == config.request_headers.attributes(
        "p.", [("X-Request-ID", "r"), ("X-Key", "k")]
    )
    expected = {"p.x-key": ("[REDACTED]",)}
    assert expected == config.response_headers.attributes("p.", [("X-Key", "k")])


def test_no_capture_variables_capture_nothing() -> None:
    """Header capture is off unless asked for."""
    config = load({})

    assert not config.request_headers
    assert not config.response_headers


@pytest.mark.parametrize(
    "variable",
    [
        "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST",
        "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE",
        "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS",
    ],
)
def test_a_bad_header_regex_is_refused(variable: str) -> None:
    """A bad regular expression in a capture variable stops start-up,
    naming the variable."""
    message = refused({variable: "x-ok,x-(bad"}, "'x-(bad'")
    assert re.search(variable, message), message


@pytest.mark.parametrize("value", ["0", "0.0", "off", "", "abc", "-1", "inf"])
def test_a_flush_bound_that_is_not_positive_is_refused(value: str) -> None:
    """``HOOKKIT_TRACING_FLUSH_SECONDS`` must be a positive number of seconds."""
    with pytest.raises(ConfigError, match="HOOKKIT_TRACING_FLUSH_SECONDS"):
        Settings.load({"HOOKKIT_TRACING_FLUSH_SECONDS": value})


def test_the_flush_bound_is_the_settings() -> None:
    """The configuration's flush bound is ``HOOKKIT_TRACING_FLUSH_SECONDS``."""
    assert 0.5 == load({"HOOKKIT_TRACING_FLUSH_SECONDS": "0.5"}).flush_seconds


def test_os_environ_is_read_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without ``environ`` the process environment is read."""
    for name in list(os.environ):
        if name.startswith(("OTEL_", "HOOKKIT_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")

    config = TracingConfig.load(Settings())

    expected = (("console",), True)
    assert expected == (config.exporters, config.own_provider)


def test_excluded_urls_with_global_flags_load() -> None:
    """A pattern with a global flag (``(?i)``) loads and applies: the
    patterns are compiled one by one, never joined."""
    config = load({"HOOKKIT_TRACING_EXCLUDED_URLS": "(?i)/HEALTHZ,(?i)/Ready"})
    assert config.excluded is not None
    expected = [True, True, False]
    actual = [
        config.excluded.search(url)
        for url in ("http://h/healthz", "http://h/READY", "http://h/orders")
    ]
    assert expected == actual
