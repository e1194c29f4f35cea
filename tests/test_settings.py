"""hookkit._core.settings: ``HOOKKIT_*`` variables and ``hookkit_*`` config names,
parsed eagerly, refused with a message that says what is wrong."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest

from hookkit._core.settings import SETTINGS, SETTINGS_BY_ATTR, ConfigError, Settings, SettingSpec

BOOL_SETTINGS = [spec for spec in SETTINGS if spec.default in (True, False)]
BOOL_WORDS = {"1": True, "0": False, "true": True, "false": False}
BOOL_WORDS.update({"on": True, "off": False, "yes": True, "no": False})


def spellings(word: str) -> list[str]:
    """``word`` in lower, upper, title and mixed case (once each)."""
    mixed = "".join(c.upper() if i % 2 else c for i, c in enumerate(word))
    return sorted({word, word.upper(), word.title(), mixed})


BOOL_CASES = [
    (spec, spelled, expected)
    for spec in BOOL_SETTINGS
    for word, expected in BOOL_WORDS.items()
    for spelled in spellings(word)
]


def test_the_on_off_settings_are_the_eight_there_are() -> None:
    """The on/off settings under test are the eight there are."""
    expected = [
        "logs",
        "access_log",
        "access_log_client",
        "metrics",
        "tracing",
        "otlp_metrics",
        "otlp_logs",
        "status",
    ]
    assert expected == [spec.attr for spec in BOOL_SETTINGS]


def test_each_setting_has_one_variable_and_matches_the_dataclass() -> None:
    """Each setting is read from ``HOOKKIT_`` + its name in upper case, and
    ``SETTINGS`` describes exactly the fields and defaults of ``Settings``."""
    fields = {f.name: f.default for f in dataclasses.fields(Settings)}

    assert {spec.attr: spec.default for spec in SETTINGS} == fields
    assert ["HOOKKIT_" + spec.attr.upper() for spec in SETTINGS] == [s.env for s in SETTINGS]
    assert list(SETTINGS_BY_ATTR) == [spec.attr for spec in SETTINGS]


def test_nothing_set_gives_the_defaults() -> None:
    """With no variable and no config name set, every setting has its default."""
    assert Settings() == Settings.load(environ={}, config={})
    expected = Settings(
        logs=True,
        log_format="json",
        access_log=False,
        slow_request_seconds=None,
        metrics=True,
        metrics_bind="127.0.0.1:9191",
        metrics_web_config=None,
        max_routes=100,
        gunicorn_config=None,
    )
    assert expected == Settings()


def test_other_variables_are_ignored() -> None:
    """Variables that are not ``HOOKKIT_*`` (``HOOKKIT`` alone included) are not read."""
    environ = {"PATH": "/bin", "HOOKKIT": "x", "GUNICORN_CMD_ARGS": "-w 2", "hookkit_x": "1"}

    assert Settings() == Settings.load(environ=environ, config={"workers": 2})


def test_os_environ_is_read_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """``Settings.load()`` without arguments reads the process environment."""
    for spec in SETTINGS:
        monkeypatch.delenv(spec.env, raising=False)
    monkeypatch.setenv("HOOKKIT_ACCESS_LOG", "on")

    assert Settings(access_log=True) == Settings.load()


@pytest.mark.parametrize(
    ("spec", "value", "expected"),
    BOOL_CASES,
    ids=[f"{spec.attr}={value}" for spec, value, _ in BOOL_CASES],
)
def test_on_off_setting_accepts_every_spelling_from_the_environment(
    spec: SettingSpec, value: str, expected: bool
) -> None:
    """An on/off setting accepts 1/0, true/false, on/off, yes/no in any case."""
    settings = Settings.load(environ={spec.env: value}, config={})

    assert expected is getattr(settings, spec.attr)


@pytest.mark.parametrize(
    ("spec", "value", "expected"),
    BOOL_CASES,
    ids=[f"{spec.attr}={value}" for spec, value, _ in BOOL_CASES],
)
def test_on_off_setting_accepts_every_spelling_from_the_config(
    spec: SettingSpec, value: str, expected: bool
) -> None:
    """The same words are accepted as ``hookkit_*`` values in a gunicorn config."""
    settings = Settings.load(environ={}, config={f"hookkit_{spec.attr}": value})

    assert expected is getattr(settings, spec.attr)


@pytest.mark.parametrize("spec", BOOL_SETTINGS, ids=lambda spec: spec.attr)
@pytest.mark.parametrize("value", [True, False, " yes ", 1, 0])
def test_on_off_setting_accepts_python_values_and_spaces(spec: SettingSpec, value: object) -> None:
    """A config file may give a bool or 0/1; surrounding spaces are ignored."""
    settings = Settings.load(environ={}, config={f"hookkit_{spec.attr}": value})

    expected = value.strip() == "yes" if isinstance(value, str) else bool(value)
    assert expected is getattr(settings, spec.attr)


@pytest.mark.parametrize("value", ["json", "console", "JSON", " Console "])
def test_log_format_accepts_json_and_console(value: str) -> None:
    """``HOOKKIT_LOG_FORMAT`` is json or console, in any case."""
    settings = Settings.load(environ={"HOOKKIT_LOG_FORMAT": value}, config={})

    assert value.strip().lower() == settings.log_format


BAD_VALUES = [
    ("logs", "maybe"),
    ("logs", ""),
    ("access_log", "2"),
    ("access_log", "enabled"),
    ("log_format", "xml"),
    ("slow_request_seconds", "-1"),
]


@pytest.mark.parametrize(("attr", "value"), BAD_VALUES)
def test_bad_environment_value_names_variable_value_and_accepted(attr: str, value: str) -> None:
    """A bad value raises ConfigError naming the variable, the value and
    what is accepted."""
    spec = SETTINGS_BY_ATTR[attr]

    with pytest.raises(ConfigError) as raised:
        Settings.load(environ={spec.env: value}, config={})

    message = str(raised.value)
    assert spec.env in message
    assert repr(value) in message
    assert f"accepted: {spec.accepted}" in message


@pytest.mark.parametrize(("attr", "value"), BAD_VALUES)
def test_bad_config_value_names_the_config_name(attr: str, value: str) -> None:
    """A bad ``hookkit_*`` value in a gunicorn config is refused naming that
    name, the value and what is accepted."""
    spec = SETTINGS_BY_ATTR[attr]

    with pytest.raises(ConfigError) as raised:
        Settings.load(environ={}, config={f"hookkit_{attr}": value})

    message = str(raised.value)
    assert f"hookkit_{attr}={value!r}" in message
    assert f"accepted: {spec.accepted}" in message


def test_config_error_is_a_value_error() -> None:
    """ConfigError is a ValueError, so generic handlers of bad values catch it."""
    assert issubclass(ConfigError, ValueError)


def test_the_on_off_message_lists_the_accepted_words() -> None:
    """The message for a bad on/off value is the whole story in one line."""
    with pytest.raises(ConfigError) as raised:
        Settings.load(environ={"HOOKKIT_ACCESS_LOG": "maybe"}, config={})

    expected = (
        "HOOKKIT_ACCESS_LOG='maybe' is not valid: expected one of 1/0, true/false, on/off, "
        "yes/no (accepted: 1/0, true/false, on/off, yes/no)"
    )
    assert expected == str(raised.value)


@pytest.mark.parametrize("name", ["HOOKKIT_ACESS_LOG", "HOOKKIT_", "HOOKKIT_LOG"])
def test_unknown_hookkit_variable_is_refused_by_name(name: str) -> None:
    """An unknown ``HOOKKIT_*`` variable (most often a typo) is refused with
    a message naming it and listing the known ones."""
    with pytest.raises(ConfigError) as raised:
        Settings.load(environ={name: "1"}, config={})

    message = str(raised.value)
    assert message.startswith(f"{name} is not a hookkit setting")
    assert all(spec.env in message for spec in SETTINGS)


def test_unknown_hookkit_config_name_is_refused_by_name() -> None:
    """An unknown ``hookkit_*`` name in a gunicorn config is refused by name."""
    with pytest.raises(ConfigError) as raised:
        Settings.load(environ={}, config={"hookkit_acess_log": True})

    message = str(raised.value)
    assert "hookkit_acess_log" in message
    assert all(f"hookkit_{spec.attr}" in message for spec in SETTINGS)


def test_unknown_variable_is_refused_even_with_valid_ones() -> None:
    """A typo is not hidden by correct variables beside it."""
    with pytest.raises(ConfigError, match="HOOKKIT_SLOW_REQUEST"):
        Settings.load(environ={"HOOKKIT_LOGS": "1", "HOOKKIT_SLOW_REQUEST": "5"}, config={})


def test_environment_wins_over_the_config() -> None:
    """Each ``HOOKKIT_*`` variable wins over the same ``hookkit_*`` name in a
    gunicorn config, as GUNICORN_CMD_ARGS wins over gunicorn's config file."""
    environ = {"HOOKKIT_ACCESS_LOG": "off", "HOOKKIT_LOG_FORMAT": "console"}
    config = {"hookkit_access_log": True, "hookkit_log_format": "json", "hookkit_logs": False}

    settings = Settings.load(environ=environ, config=config)

    assert Settings(logs=False, log_format="console", access_log=False) == settings


def test_config_applies_where_the_environment_is_silent() -> None:
    """A ``hookkit_*`` config value applies when its variable is not set."""
    config = {"hookkit_slow_request_seconds": 2.5, "hookkit_gunicorn_config": "conf/gunicorn.py"}

    settings = Settings.load(environ={}, config=config)

    assert Settings(slow_request_seconds=2.5, gunicorn_config="conf/gunicorn.py") == settings


@pytest.mark.parametrize(
    ("value", "expected"),
    [("5", 5.0), ("0.25", 0.25), (" 2 ", 2.0), ("1e1", 10.0), (3, 3.0), (0.5, 0.5)],
)
def test_slow_request_seconds_accepts_positive_numbers(value: object, expected: float) -> None:
    """``slow_request_seconds`` is a positive number of seconds."""
    settings = Settings.load(environ={}, config={"hookkit_slow_request_seconds": value})

    assert expected == settings.slow_request_seconds


@pytest.mark.parametrize("value", ["off", "OFF", "0", "", "  ", 0, None, False])
def test_slow_request_seconds_can_be_off(value: object) -> None:
    """``off``, ``0`` or empty turn the slow-request watchdog off (None)."""
    settings = Settings.load(environ={}, config={"hookkit_slow_request_seconds": value})

    assert settings.slow_request_seconds is None


@pytest.mark.parametrize("value", ["off", "0", ""])
def test_slow_request_seconds_off_from_the_environment(value: str) -> None:
    """The environment turns it off too, over a config that set it."""
    settings = Settings.load(
        environ={"HOOKKIT_SLOW_REQUEST_SECONDS": value},
        config={"hookkit_slow_request_seconds": 5},
    )

    assert settings.slow_request_seconds is None


@pytest.mark.parametrize(
    "value", ["-1", "-0.5", "nan", "NaN", "inf", "-inf", "Infinity", "five", "5s", "1,5"]
)
def test_slow_request_seconds_refuses_what_is_not_a_positive_number(value: str) -> None:
    """Negative, nan, infinite and text values are refused, naming the
    variable, the value and what is accepted."""
    with pytest.raises(ConfigError) as raised:
        Settings.load(environ={"HOOKKIT_SLOW_REQUEST_SECONDS": value}, config={})

    message = str(raised.value)
    assert f"HOOKKIT_SLOW_REQUEST_SECONDS={value!r}" in message
    assert "a positive number of seconds, or off" in message


@pytest.mark.parametrize("value", [math.nan, math.inf, -3.0])
def test_slow_request_seconds_refuses_bad_floats_from_the_config(value: float) -> None:
    """A config file's float is checked as strictly as the environment's text."""
    with pytest.raises(ConfigError, match="hookkit_slow_request_seconds"):
        Settings.load(environ={}, config={"hookkit_slow_request_seconds": value})


@pytest.mark.parametrize(("value", "expected"), [("", None), ("  ", None), ("g.py", "g.py")])
def test_gunicorn_config_is_a_path_or_none(value: str, expected: str | None) -> None:
    """``HOOKKIT_GUNICORN_CONFIG`` is a path; empty means none."""
    settings = Settings.load(environ={"HOOKKIT_GUNICORN_CONFIG": value}, config={})

    assert expected == settings.gunicorn_config


def test_replace_parses_each_change() -> None:
    """``Settings.replace`` returns a copy with each change parsed as the
    environment's text would be."""
    settings = Settings()

    changed = settings.replace(access_log="yes", slow_request_seconds="2.5", log_format="CONSOLE")

    assert Settings(access_log=True, slow_request_seconds=2.5, log_format="console") == changed


def test_replace_keeps_the_original_and_unchanged_values() -> None:
    """``replace`` leaves the original as it was and keeps what it is not given."""
    settings = Settings(logs=False, slow_request_seconds=1.0)

    changed = settings.replace(access_log=True)

    assert Settings(logs=False, slow_request_seconds=1.0) == settings
    assert Settings(logs=False, access_log=True, slow_request_seconds=1.0) == changed


def test_replace_refuses_an_unknown_name() -> None:
    """``replace`` refuses a name that is not a setting, naming it."""
    with pytest.raises(ConfigError, match="acess_log is not a hookkit setting"):
        Settings().replace(acess_log=True)


def test_replace_refuses_a_bad_value_naming_it() -> None:
    """``replace`` refuses a bad value naming the setting, the value and what
    is accepted."""
    with pytest.raises(ConfigError) as raised:
        Settings().replace(slow_request_seconds=-1)

    message = str(raised.value)
    assert "slow_request_seconds=-1 is not valid" in message
    assert "accepted: a positive number of seconds, or off" in message


def test_settings_are_immutable() -> None:
    """Settings are frozen: changing one means ``replace``."""
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings().access_log = True  # type: ignore[misc]


def test_as_rows_of_the_defaults() -> None:
    """``as_rows`` gives each variable with its effective value, on/off for
    switches and for what is unset, in the order of ``SETTINGS``."""
    expected = [
        ("HOOKKIT_LOGS", "on"),
        ("HOOKKIT_LOG_FORMAT", "json"),
        ("HOOKKIT_ACCESS_LOG", "off"),
        ("HOOKKIT_ACCESS_LOG_CLIENT", "off"),
        ("HOOKKIT_EXCLUDED_URLS", "(none)"),
        ("HOOKKIT_SLOW_REQUEST_SECONDS", "off"),
        ("HOOKKIT_METRICS", "on"),
        ("HOOKKIT_METRICS_BIND", "127.0.0.1:9191"),
        ("HOOKKIT_METRICS_WEB_CONFIG", "(none)"),
        ("HOOKKIT_MAX_ROUTES", "100"),
        ("HOOKKIT_TRACING", "on"),
        ("HOOKKIT_TRACING_EXCLUDED_URLS", "(none)"),
        ("HOOKKIT_REDACT_QUERY", "(defaults only)"),
        ("HOOKKIT_TRACING_FLUSH_SECONDS", "2.0"),
        ("HOOKKIT_OTLP_METRICS", "off"),
        ("HOOKKIT_OTLP_LOGS", "off"),
        ("HOOKKIT_STATUS", "on"),
        ("HOOKKIT_GUNICORN_CONFIG", "(none)"),
    ]
    assert expected == Settings().as_rows()


def test_as_rows_of_set_values() -> None:
    """Set values are shown as they are."""
    settings = Settings(
        logs=False,
        log_format="console",
        access_log=True,
        slow_request_seconds=2.5,
        metrics=False,
        metrics_bind="[::1]:9200",
        metrics_web_config="web.yml",
        max_routes=7,
        tracing=False,
        access_log_client=True,
        excluded_urls="^/healthz$",
        tracing_excluded_urls="/healthz,^/ready",
        redact_query="state,nonce",
        tracing_flush_seconds=0.5,
        otlp_metrics=True,
        otlp_logs=True,
        status=False,
        gunicorn_config="gunicorn.conf.py",
    )

    expected = [
        ("HOOKKIT_LOGS", "off"),
        ("HOOKKIT_LOG_FORMAT", "console"),
        ("HOOKKIT_ACCESS_LOG", "on"),
        ("HOOKKIT_ACCESS_LOG_CLIENT", "on"),
        ("HOOKKIT_EXCLUDED_URLS", "^/healthz$"),
        ("HOOKKIT_SLOW_REQUEST_SECONDS", "2.5"),
        ("HOOKKIT_METRICS", "off"),
        ("HOOKKIT_METRICS_BIND", "[::1]:9200"),
        ("HOOKKIT_METRICS_WEB_CONFIG", "web.yml"),
        ("HOOKKIT_MAX_ROUTES", "7"),
        ("HOOKKIT_TRACING", "off"),
        ("HOOKKIT_TRACING_EXCLUDED_URLS", "/healthz,^/ready"),
        ("HOOKKIT_REDACT_QUERY", "state,nonce"),
        ("HOOKKIT_TRACING_FLUSH_SECONDS", "0.5"),
        ("HOOKKIT_OTLP_METRICS", "on"),
        ("HOOKKIT_OTLP_LOGS", "on"),
        ("HOOKKIT_STATUS", "off"),
        ("HOOKKIT_GUNICORN_CONFIG", "gunicorn.conf.py"),
    ]
    assert expected == settings.as_rows()


def test_as_rows_round_trips_through_the_environment() -> None:
    """The rows, set as the environment, load the same settings back."""
    settings = Settings(
        logs=False,
        log_format="console",
        access_log=True,
        slow_request_seconds=2.5,
        metrics=False,
        metrics_bind="[::1]:9200",
        metrics_web_config="web.yml",
        max_routes=7,
        tracing=False,
        access_log_client=True,
        excluded_urls="^/healthz$",
        tracing_excluded_urls="/healthz,^/ready",
        redact_query="state,nonce",
        tracing_flush_seconds=0.5,
        otlp_metrics=True,
        otlp_logs=True,
        status=False,
        gunicorn_config="gunicorn.conf.py",
    )

    assert settings == Settings.load(environ=dict(settings.as_rows()), config={})


@pytest.mark.parametrize("zero", [0, 0.0, "0.0", "0e3"])
def test_slow_request_seconds_zero_in_any_spelling_is_off(zero) -> None:
    """Zero seconds means off however it is written, in a config or the environment."""
    assert None is Settings.load({}, {"hookkit_slow_request_seconds": zero}).slow_request_seconds


@pytest.mark.parametrize(
    "value", ["127.0.0.1:9191", "[::1]:9191", "0.0.0.0:1", "metrics.internal:65535"]
)
def test_metrics_bind_accepts_host_and_port(value) -> None:
    """HOOKKIT_METRICS_BIND takes host:port, IPv6 in brackets."""
    assert value == Settings.load({"HOOKKIT_METRICS_BIND": value}).metrics_bind


@pytest.mark.parametrize("value", ["none", "None", " NONE "])
def test_metrics_bind_none_opens_no_port(value) -> None:
    """HOOKKIT_METRICS_BIND=none (any case): no /metrics port."""
    assert None is Settings.load({"HOOKKIT_METRICS_BIND": value}).metrics_bind


@pytest.mark.parametrize(
    "value", ["9191", "localhost", ":9191", "127.0.0.1:0", "127.0.0.1:70000", "h:p", "nil"]
)
def test_metrics_bind_refuses_malformed_addresses(value) -> None:
    """A malformed address or port is refused, naming the variable."""
    with pytest.raises(ConfigError, match="HOOKKIT_METRICS_BIND"):
        Settings.load({"HOOKKIT_METRICS_BIND": value})


@pytest.mark.parametrize("value", ["0", "-1", "ten", "1.5", ""])
def test_max_routes_refuses_what_is_not_a_positive_whole_number(value) -> None:
    """HOOKKIT_MAX_ROUTES is a whole number, 1 or more."""
    with pytest.raises(ConfigError, match="HOOKKIT_MAX_ROUTES"):
        Settings.load({"HOOKKIT_MAX_ROUTES": value})


@pytest.mark.parametrize(
    "source",
    [
        {"environ": {"HOOKKIT_TRACING_REDACT_QUERY": "ssn"}, "config": {}},
        {"environ": {}, "config": {"hookkit_tracing_redact_query": "ssn"}},
    ],
)
def test_the_earlier_name_of_redact_query_still_works(source: dict[str, Any]) -> None:
    """``HOOKKIT_TRACING_REDACT_QUERY`` (and its config-file name) sets
    ``redact_query``, the name that says it governs logs too."""
    assert "ssn" == Settings.load(**source).redact_query


def test_the_new_name_of_redact_query_wins_over_the_earlier_one() -> None:
    """Both set: ``HOOKKIT_REDACT_QUERY`` is used."""
    environ = {"HOOKKIT_REDACT_QUERY": "new", "HOOKKIT_TRACING_REDACT_QUERY": "old"}
    assert "new" == Settings.load(environ, {}).redact_query


def test_replace_takes_the_earlier_name_too() -> None:
    """``hookkit.configure(tracing_redact_query=...)`` keeps working."""
    assert "ssn" == Settings().replace(tracing_redact_query="ssn").redact_query
