"""Bad configuration fails fast and clearly, on a real gunicorn.

Each case starts gunicorn with the drop-in config (``serve(..., wait=False)``)
and one bad setting, and asserts what the README promises: the master exits
with status 1 within a bounded time, no worker is ever forked, nothing is
left behind in the temporary directory, and the output has one message
(no traceback) that names the setting, the value and, where hookkit says
so, what is accepted. ``hookkit check`` is run on the same environments.

The settings' parsers are unit-tested in ``test_settings.py`` and
``test_tracing_config.py``, and a few of these start-ups in
``test_metrics_integration.py`` and ``test_prometheus_server.py``; this
module covers every ``HOOKKIT_*`` setting through a real start-up (a new
setting must say here how it is refused), and the values those modules do
not try.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hookkit._core.settings import SETTINGS, SETTINGS_BY_ATTR, Settings, SettingSpec
from hookkit._face.gunicorn_process import Gunicorn
from hookkit._sinks.tracing.config import TracingConfig
from tests.conftest import ServeFactory, clean_env

pytestmark = pytest.mark.integration

APP = "apps.wsgi:app"
# How long a refused start may take; each takes well under a second here.
BOUND = 20.0

# -- every HOOKKIT_* setting: a value its parser (or the start-up) refuses ----

# attr -> (a value hookkit refuses, what the message must say besides
# "VARIABLE='value'"). Path values are relative to the server's directory,
# where nothing by those names exists.
REFUSED: dict[str, tuple[str, tuple[str, ...]]] = {
    "logs": ("maybe", ()),
    "log_format": ("xml", ()),
    "access_log": ("maybe", ()),
    "access_log_client": ("maybe", ()),
    "excluded_urls": ("(", ("is not a valid regular expression",)),
    "slow_request_seconds": ("ten", ()),
    "metrics": ("maybe", ()),
    "metrics_bind": ("nohost", ()),
    # Read in on_starting, before the first fork; says what is wrong rather
    # than what is accepted (any path to a readable, valid web-config file).
    "metrics_web_config": ("missing-web.yml", ("the file cannot be read",)),
    "max_routes": ("ten", ()),
    "tracing": ("maybe", ()),
    "tracing_excluded_urls": ("(", ("is not a valid regular expression",)),
    "tracing_flush_seconds": ("ten", ()),
    "otlp_metrics": ("maybe", ()),
    "otlp_logs": ("maybe", ()),
    "status": ("maybe", ()),
    "gunicorn_config": ("missing-gunicorn.conf.py", ("no such file",)),
}
# Settings for which no value stops start-up, and why.
ACCEPTS_ANYTHING = {
    "redact_query": "any comma-separated names: each is only compared with "
    "query parameter names, so no value is wrong",
}
# Settings whose message does not carry "(accepted: ...)" (see REFUSED).
NO_ACCEPTED_LIST = {"metrics_web_config"}


@dataclass(frozen=True)
class Refusal:
    """What a refused start-up left: exit status, time taken, output."""

    returncode: int | None
    seconds: float
    lines: list[dict[str, object]]
    leftovers: list[str]

    @property
    def text(self) -> str:
        """The output, one line per line (JSON lines re-serialised)."""
        return "\n".join(
            str(line["raw"]) if "raw" in line else json.dumps(line) for line in self.lines
        )

    def message(self, variable: str) -> str:
        """The one line that names ``variable``."""
        naming = [line for line in self.text.splitlines() if variable in line]
        assert len(naming) == 1, f"expected one line naming {variable}:\n{self.text}"
        return naming[0]


def start_refused(serve: ServeFactory, tmp_path: Path, env: dict[str, str]) -> Refusal:
    """Start gunicorn with ``env``; wait (at most BOUND) for it to exit."""
    scratch = tmp_path / "tmp"  # the master's TMPDIR: a private metrics dir goes here
    scratch.mkdir(exist_ok=True)
    started = time.monotonic()
    server: Gunicorn = serve(APP, env={"TMPDIR": str(scratch), **env}, wait=False)
    assert server.proc is not None
    assert server.stream is not None
    try:
        returncode: int | None = server.proc.wait(BOUND)
    except subprocess.TimeoutExpired:
        returncode = None
    seconds = time.monotonic() - started
    server.stream.wait_closed(5)
    return Refusal(returncode, seconds, server.events(), sorted(os.listdir(scratch)))


def assert_refused(refusal: Refusal, variable: str, *expected: str) -> str:
    """Exit status 1 within BOUND, no worker, nothing left behind, and one
    message (no traceback) naming ``variable`` and saying each of ``expected``.
    Returns the message."""
    assert refusal.returncode == 1, f"not refused (exit {refusal.returncode}):\n{refusal.text}"
    assert refusal.seconds < BOUND
    worker_events = {"worker_forked", "worker_booted", "server_ready"}
    assert not [line for line in refusal.lines if line.get("event") in worker_events]
    assert "Booting worker" not in refusal.text
    assert "Traceback" not in refusal.text
    assert [] == refusal.leftovers
    message = refusal.message(variable)
    for part in expected:
        assert part in message, f"{part!r} is not in {message!r}"
    return message


def refused_value(spec: SettingSpec) -> tuple[str, tuple[str, ...]]:
    """(value, what the message must say) for ``spec``."""
    value, extra = REFUSED[spec.attr]
    accepted = () if spec.attr in NO_ACCEPTED_LIST else (f"accepted: {spec.accepted}",)
    return value, (f"{spec.env}={value!r}", *accepted, *extra)


REFUSABLE = [spec for spec in SETTINGS if spec.attr in REFUSED]


def test_every_setting_is_either_refusable_or_documented_as_accepting_anything() -> None:
    """A new setting must say here how a bad value of it is refused."""
    assert set(SETTINGS_BY_ATTR) == set(REFUSED) | set(ACCEPTS_ANYTHING)
    assert not set(REFUSED) & set(ACCEPTS_ANYTHING)


@pytest.mark.parametrize("attr", sorted(ACCEPTS_ANYTHING))
def test_the_settings_that_accept_anything_do(attr: str) -> None:
    """Odd values of a setting that accepts any string load, settings and
    tracing configuration alike (so they cannot stop start-up)."""
    for value in (",,,", " ; ", "a b,\u00e9,\x7f", "(", "*" * 1000):
        env = {SETTINGS_BY_ATTR[attr].env: value}
        assert TracingConfig.load(Settings.load(env, {}), env).enabled


@pytest.mark.parametrize("spec", REFUSABLE, ids=lambda spec: spec.env)
def test_a_bad_value_of_each_setting_stops_start_up(
    serve: ServeFactory, tmp_path: Path, spec: SettingSpec
) -> None:
    """Every HOOKKIT_* setting: a value it refuses stops gunicorn with exit
    status 1 and one message naming the variable, the value and what is
    accepted, before any worker."""
    value, expected = refused_value(spec)
    assert_refused(start_refused(serve, tmp_path, {spec.env: value}), spec.env, *expected)


MALFORMED = [
    ("HOOKKIT_MAX_ROUTES", "0"),
    ("HOOKKIT_MAX_ROUTES", "-1"),
    ("HOOKKIT_MAX_ROUTES", "1.5"),
    ("HOOKKIT_SLOW_REQUEST_SECONDS", "-2"),
    ("HOOKKIT_TRACING_FLUSH_SECONDS", "0"),
    ("HOOKKIT_METRICS_BIND", "127.0.0.1"),
    ("HOOKKIT_METRICS_BIND", ":9191"),
    ("HOOKKIT_METRICS_BIND", "127.0.0.1:70000"),
]


@pytest.mark.parametrize(("variable", "value"), MALFORMED, ids=[f"{v}={x}" for v, x in MALFORMED])
def test_malformed_numbers_and_addresses_stop_start_up(
    serve: ServeFactory, tmp_path: Path, variable: str, value: str
) -> None:
    """Numbers out of range and addresses without a host or a valid port."""
    spec = next(spec for spec in SETTINGS if spec.env == variable)
    assert_refused(
        start_refused(serve, tmp_path, {variable: value}),
        variable,
        f"{variable}={value!r}",
        f"accepted: {spec.accepted}",
    )


def test_an_unknown_hookkit_variable_stops_start_up(serve: ServeFactory, tmp_path: Path) -> None:
    """A misspelt variable (HOOKKIT_TRACNG) is refused by name, with the
    list of the real ones."""
    message = assert_refused(
        start_refused(serve, tmp_path, {"HOOKKIT_TRACNG": "on"}),
        "HOOKKIT_TRACNG",
        "HOOKKIT_TRACNG is not a hookkit setting",
    )
    assert all(spec.env in message for spec in SETTINGS)


CONFIG_FILE_CASES = [
    ("hookkit_max_routes = 0\n", "hookkit_max_routes", ("hookkit_max_routes=0", "accepted:")),
    (
        "hookkit_tracng = True\n",
        "hookkit_tracng",
        ("hookkit_tracng (in the gunicorn config) is not a hookkit setting",),
    ),
]


@pytest.mark.parametrize(
    ("text", "name", "expected"), CONFIG_FILE_CASES, ids=["bad-value", "unknown-name"]
)
def test_a_bad_hookkit_name_in_the_gunicorn_config_stops_start_up(
    serve: ServeFactory, tmp_path: Path, text: str, name: str, expected: tuple[str, ...]
) -> None:
    """The same checks apply to ``hookkit_*`` names in ./gunicorn.conf.py,
    and the message names the config name."""
    (tmp_path / "gunicorn.conf.py").write_text(text)
    assert_refused(start_refused(serve, tmp_path, {}), name, *expected)


# -- the metrics port and the multiprocess directory ---------------------------


def test_a_metrics_port_already_taken_stops_a_fresh_start(
    serve: ServeFactory, tmp_path: Path
) -> None:
    """A listening socket on the metrics port: exit status 1, no worker, the
    message names HOOKKIT_METRICS_BIND and the address, and the private
    multiprocess directory made just before is removed."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        refusal = start_refused(serve, tmp_path, {"HOOKKIT_METRICS_BIND": address})
    message = assert_refused(
        refusal, "HOOKKIT_METRICS_BIND", f"HOOKKIT_METRICS_BIND={address}", "already in use"
    )
    assert "HOOKKIT_METRICS=off" in message


@pytest.fixture
def unwritable_directory(tmp_path: Path) -> Iterator[str]:
    """A directory that hookkit's check (``os.access(path, W_OK | X_OK)``)
    finds unwritable for the user the tests (and gunicorn) run as.

    Mode 0500 for an ordinary user. Root bypasses permission bits, so as
    root the directory is made immutable (``chattr +i``: even root cannot
    create files in it, and access(2) says so); where that is not possible
    (no CAP_LINUX_IMMUTABLE, a file system without the flag) it falls back
    to ``/proc/1``, a procfs directory no one may create files in. The
    premise is checked in this process before it is used.
    """
    directory = tmp_path / "unwritable"
    directory.mkdir()
    directory.chmod(0o500)
    immutable = False
    path = str(directory)
    if os.geteuid() == 0:
        chattr = shutil.which("chattr")
        if chattr is not None:
            done = subprocess.run(
                [chattr, "+i", path], capture_output=True, timeout=10, check=False
            )
            immutable = done.returncode == 0
        if not immutable:
            path = "/proc/1"
    try:
        if os.access(path, os.W_OK | os.X_OK):
            pytest.skip(f"cannot make a directory unwritable for uid {os.geteuid()} here")
        yield path
    finally:
        if immutable:
            chattr = shutil.which("chattr") or "chattr"
            subprocess.run([chattr, "-i", str(directory)], timeout=10, check=True)
        directory.chmod(0o700)


def test_an_unwritable_multiprocess_directory_stops_start_up(
    serve: ServeFactory, tmp_path: Path, unwritable_directory: str
) -> None:
    """PROMETHEUS_MULTIPROC_DIR naming a directory this user cannot write:
    refused, naming the variable, the directory and the user."""
    refusal = start_refused(serve, tmp_path, {"PROMETHEUS_MULTIPROC_DIR": unwritable_directory})
    assert_refused(
        refusal,
        "PROMETHEUS_MULTIPROC_DIR",
        f"PROMETHEUS_MULTIPROC_DIR={unwritable_directory!r}",
        f"not writable by this user (uid {os.geteuid()})",
    )


@pytest.mark.parametrize("kind", ["missing", "a-file"])
def test_a_multiprocess_directory_that_is_not_one_stops_start_up(
    serve: ServeFactory, tmp_path: Path, kind: str
) -> None:
    """PROMETHEUS_MULTIPROC_DIR naming nothing, or a regular file."""
    path = tmp_path / "metrics-dir"
    if kind == "a-file":
        path.write_text("not a directory\n")
    refusal = start_refused(serve, tmp_path, {"PROMETHEUS_MULTIPROC_DIR": str(path)})
    assert_refused(
        refusal,
        "PROMETHEUS_MULTIPROC_DIR",
        f"PROMETHEUS_MULTIPROC_DIR={str(path)!r}",
        "no such directory",
    )


# -- the web-config file ------------------------------------------------------
# test_prometheus_server.py starts gunicorn with a missing file, a missing
# key_file, a bad hash, an unknown top-level key and unclosed YAML; these
# are other ways to get each kind wrong.

WEB_CONFIGS = {
    "yaml-garbage": ("basic_auth_users: {prometheus: [\n\t: :\n", "not valid YAML"),
    "not-a-mapping": ("just some text\n", "the file must be a mapping"),
    "unknown-nested-key": (
        "tls_server_config:\n  certfile: server.pem\n",
        "tls_server_config.certfile is not a known key",
    ),
    "hash-not-bcrypt": (
        "basic_auth_users:\n  prometheus: $2b$99$" + "a" * 53 + "\n",
        "basic_auth_users.prometheus is not a bcrypt hash",
    ),
    "plain-password": ("basic_auth_users:\n  prometheus: hunter2\n", "is not a bcrypt hash"),
    "missing-cert-file": (
        "tls_server_config:\n  cert_file: missing-cert.pem\n  key_file: missing-key.pem\n",
        "tls_server_config.cert_file",
    ),
}


@pytest.mark.parametrize(("text", "problem"), WEB_CONFIGS.values(), ids=WEB_CONFIGS.keys())
def test_an_invalid_web_config_stops_start_up(
    serve: ServeFactory, tmp_path: Path, text: str, problem: str
) -> None:
    """HOOKKIT_METRICS_WEB_CONFIG naming a file hookkit cannot use: refused,
    naming the variable, the file and the problem; a password given in
    place of a hash is never echoed."""
    path = tmp_path / "web.yml"
    path.write_text(text)
    message = assert_refused(
        start_refused(serve, tmp_path, {"HOOKKIT_METRICS_WEB_CONFIG": str(path)}),
        "HOOKKIT_METRICS_WEB_CONFIG",
        f"HOOKKIT_METRICS_WEB_CONFIG={str(path)!r}",
        problem,
    )
    assert "hunter2" not in message
    if "missing-cert" in text:
        assert str(tmp_path / "missing-cert.pem") in message


# -- the OTEL_* variables hookkit checks --------------------------------------

OTEL_CASES = {
    "exporter": (
        {"OTEL_TRACES_EXPORTER": "nope"},
        "OTEL_TRACES_EXPORTER",
        ("OTEL_TRACES_EXPORTER='nope'", "accepted: otlp, console, none"),
    ),
    "sampler": (
        {"OTEL_TRACES_SAMPLER": "nope"},
        "OTEL_TRACES_SAMPLER",
        ("OTEL_TRACES_SAMPLER='nope'", "accepted: ", "parentbased_always_on"),
    ),
    "sdk-disabled": (
        {"OTEL_SDK_DISABLED": "1"},
        "OTEL_SDK_DISABLED",
        ("OTEL_SDK_DISABLED='1'", "accepted: true, false"),
    ),
    "sampler-arg": (
        {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "2"},
        "OTEL_TRACES_SAMPLER_ARG",
        ("OTEL_TRACES_SAMPLER_ARG='2'", "a number from 0 to 1"),
    ),
    "protocol": (
        {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        ("OTEL_EXPORTER_OTLP_PROTOCOL='http/json'", "accepted: http/protobuf, grpc"),
    ),
    "excluded-urls": (
        {"OTEL_PYTHON_EXCLUDED_URLS": "^/healthz$,("},
        "OTEL_PYTHON_EXCLUDED_URLS",
        ("'(' is not a valid regular expression",),
    ),
    "header-capture": (
        {"OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST": "("},
        "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST",
        ("'(' is not a valid regular expression",),
    ),
    # HOOKKIT_OTLP_METRICS=on: the master's export is checked before any fork.
    "otlp_metrics_grpc": (
        {"HOOKKIT_OTLP_METRICS": "on", "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "grpc"},
        "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
        ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL=grpc is not supported", "http/protobuf"),
    ),
    "otlp_metrics_interval": (
        {"HOOKKIT_OTLP_METRICS": "on", "OTEL_METRIC_EXPORT_INTERVAL": "0"},
        "OTEL_METRIC_EXPORT_INTERVAL",
        ("OTEL_METRIC_EXPORT_INTERVAL='0' is not valid", "milliseconds"),
    ),
    "otlp_metrics_timeout": (
        {"HOOKKIT_OTLP_METRICS": "on", "OTEL_EXPORTER_OTLP_TIMEOUT": "never"},
        "OTEL_EXPORTER_OTLP_TIMEOUT",
        ("OTEL_EXPORTER_OTLP_TIMEOUT='never' is not valid",),
    ),
    "otlp_metrics_without_metrics": (
        {"HOOKKIT_OTLP_METRICS": "on", "HOOKKIT_METRICS": "off"},
        "HOOKKIT_OTLP_METRICS",
        ("needs HOOKKIT_METRICS=on",),
    ),
}


@pytest.mark.parametrize(
    ("env", "variable", "expected"), OTEL_CASES.values(), ids=OTEL_CASES.keys()
)
def test_a_bad_otel_value_stops_start_up(
    serve: ServeFactory,
    tmp_path: Path,
    env: dict[str, str],
    variable: str,
    expected: tuple[str, ...],
) -> None:
    """The OTEL_* values hookkit checks are refused in the master, naming
    the variable, before any worker sets tracing up."""
    assert_refused(start_refused(serve, tmp_path, env), variable, *expected)


def test_an_unknown_propagator_stops_start_up_naming_otel_propagators(
    serve: ServeFactory, tmp_path: Path
) -> None:
    """OTEL_PROPAGATORS naming no installed propagator is refused as the
    README says: one message naming the variable and what is accepted."""
    assert_refused(
        start_refused(serve, tmp_path, {"OTEL_PROPAGATORS": "tracecontext,nope"}),
        "OTEL_PROPAGATORS",
        "'nope' is not an installed propagator",
        "accepted: ",
    )


# -- hookkit check ---------------------------------------------------------------


def hookkit_check(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``hookkit check`` (the script beside this interpreter) with ``env``."""
    script = Path(sys.executable).with_name("hookkit")
    command = [str(script)] if os.access(script, os.X_OK) else [sys.executable, "-m", "hookkit"]
    return subprocess.run(
        [*command, "check"],
        cwd=tmp_path,
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def spec_case(attr: str) -> tuple[dict[str, str], str, tuple[str, ...]]:
    spec = SETTINGS_BY_ATTR[attr]
    value, expected = refused_value(spec)
    return {spec.env: value}, spec.env, expected


CHECK_CASES = {
    "logs": spec_case("logs"),
    "metrics_bind": spec_case("metrics_bind"),
    "max_routes": spec_case("max_routes"),
    "gunicorn_config": spec_case("gunicorn_config"),
    "unknown-name": ({"HOOKKIT_TRACNG": "on"}, "HOOKKIT_TRACNG", ("is not a hookkit setting",)),
    **{f"otel-{key}": case for key, case in OTEL_CASES.items() if key != "header-capture"},
}


@pytest.mark.parametrize(
    ("env", "variable", "expected"), CHECK_CASES.values(), ids=CHECK_CASES.keys()
)
def test_hookkit_check_fails_naming_the_variable(
    tmp_path: Path, env: dict[str, str], variable: str, expected: tuple[str, ...]
) -> None:
    """``hookkit check`` with the same environment exits non-zero and says
    the same thing on stderr, without a traceback."""
    done = hookkit_check(tmp_path, env)
    assert done.returncode != 0, done.stdout
    assert "Traceback" not in done.stderr
    assert variable in done.stderr
    for part in expected:
        assert part in done.stderr


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        pytest.param(
            {"HOOKKIT_METRICS_WEB_CONFIG": "missing-web.yml"},
            "HOOKKIT_METRICS_WEB_CONFIG",
            id="web-config-missing",
        ),
        pytest.param(
            {"PROMETHEUS_MULTIPROC_DIR": "/nonexistent/hookkit-metrics"},
            "PROMETHEUS_MULTIPROC_DIR",
            id="multiproc-dir-missing",
        ),
        pytest.param(
            {"OTEL_PROPAGATORS": "nope"},
            "OTEL_PROPAGATORS",
            id="otel-propagators",
        ),
    ],
)
def test_hookkit_check_fails_on_what_stops_gunicorn(
    tmp_path: Path, env: dict[str, str], variable: str
) -> None:
    """What stops gunicorn at start-up is a problem ``hookkit check`` reports too."""
    done = hookkit_check(tmp_path, env)
    assert (done.returncode != 0, "Traceback" in done.stderr) == (True, False), done.stdout
    assert variable in done.stderr
