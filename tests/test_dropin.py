"""The drop-in config, three ways in, beside the user's own gunicorn config.

gunicorn's ``-c`` hides its default ``./gunicorn.conf.py``; the drop-in
applies it (or ``$HOOKKIT_GUNICORN_CONFIG``) itself, keeps its settings and
runs its hooks beside hookkit's, and re-reads it on every SIGHUP.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import pytest

from hookkit._face.gunicorn_process import http_get, match
from tests.conftest import hookkit_init

pytestmark = [pytest.mark.integration, pytest.mark.compat]

USER_CONFIG = """\
import os, sys
workers = {workers}

def post_fork(server, worker):
    # One write: the master and the workers share the pipe, and print()
    # writes its pieces one system call at a time.
    os.write(2, ("user-post-fork {marker} %d\\n" % os.getpid()).encode())
"""


def user_lines(server, marker):
    return [
        line
        for line in server.events()
        if line.get("raw", "").startswith(f"user-post-fork {marker}")
    ]


def write_user_config(directory: Path, workers: int, marker: str) -> Path:
    path = directory / "gunicorn.conf.py"
    path.write_text(USER_CONFIG.format(workers=workers, marker=marker))
    return path


@pytest.fixture(params=["python:hookkit.conf", "hookkit.conf"])
def dropin(request, tmp_path: Path) -> str:
    """Each form of the drop-in: the module, and the file `hookkit init` writes."""
    if request.param == "hookkit.conf":
        hookkit_init(tmp_path)
    return request.param


def test_user_config_settings_and_hooks_are_kept(serve, tmp_path, dropin):
    """`./gunicorn.conf.py` with `workers = 3` and its own post_fork: under the
    drop-in there are 3 workers, and the user's post_fork ran in each, beside
    hookkit's."""
    write_user_config(tmp_path, 3, "v1")
    server = serve("apps.wsgi:app", config=dropin)
    booted = server.wait_for(match(event="worker_booted"), count=3)
    assert 200 == http_get(server.port, "/")[0]
    time.sleep(0.3)
    assert 3 == len(server.events(match(event="worker_booted")))
    assert sorted(b["worker_pid"] for b in booted) == sorted(
        int(line["raw"].split()[-1]) for line in user_lines(server, "v1")
    )


def test_hookkit_gunicorn_config_names_the_user_config(serve, tmp_path):
    """HOOKKIT_GUNICORN_CONFIG names the config the drop-in applies."""
    elsewhere = tmp_path / "conf"
    elsewhere.mkdir()
    path = write_user_config(elsewhere, 2, "named")
    server = serve("apps.wsgi:app", env={"HOOKKIT_GUNICORN_CONFIG": str(path)})
    server.wait_for(match(event="worker_booted"), count=2)
    assert 2 == len(user_lines(server, "named"))


def test_sighup_applies_changes_to_the_user_config(serve, tmp_path, dropin):
    """Changing `gunicorn.conf.py` then SIGHUP takes effect, as without hookkit:
    the new generation has the new worker count and runs the new hook."""
    write_user_config(tmp_path, 2, "before")
    server = serve("apps.wsgi:app", config=dropin)
    server.wait_for(match(event="worker_booted"), count=2)
    write_user_config(tmp_path, 3, "after")
    server.signal(signal.SIGHUP)
    server.wait_for(match(event="server_reloaded"))
    server.wait_for(lambda line: line.get("raw", "").startswith("user-post-fork after"), count=3)
    server.wait_for(match(event="worker_exited", reason="reload"), count=2)
    assert 3 == server.events(match(event="server_reloaded"))[0]["workers"]
    assert 200 == http_get(server.port, "/")[0]


def test_ten_sighups_duplicate_nothing(serve, tmp_path, dropin):
    """Ten SIGHUPs in a row: gunicorn still serves, one `server_reloaded` line
    per reload, and every hook ran once per worker (nothing chained twice)."""
    write_user_config(tmp_path, 1, "hup")
    server = serve("apps.wsgi:app", config=dropin)
    server.wait_for(match(event="worker_booted"))
    for n in range(1, 11):
        server.signal(signal.SIGHUP)
        server.wait_for(match(event="server_reloaded"), count=n)
    server.wait_for(match(event="worker_booted"), count=11)
    assert 200 == http_get(server.port, "/")[0]
    server.stop()
    assert 10 == len(server.events(match(event="server_reloaded")))
    forked = [line["worker_pid"] for line in server.events(match(event="worker_forked"))]
    booted = [line["worker_pid"] for line in server.events(match(event="worker_booted"))]
    user = [int(line["raw"].split()[-1]) for line in user_lines(server, "hup")]
    assert len(set(forked)) == len(forked)
    assert sorted(forked) == sorted(booted) == sorted(user)
    exits = [line["worker_pid"] for line in server.events(match(event="worker_exited"))]
    assert sorted(exits) == sorted(forked)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"HOOKKIT_LOGS": "maybe"}, "HOOKKIT_LOGS"),
        ({"HOOKKIT_SLOW_REQUEST_SECONDS": "-3"}, "HOOKKIT_SLOW_REQUEST_SECONDS"),
        ({"HOOKKIT_LOG_FORMAT": "xml"}, "HOOKKIT_LOG_FORMAT"),
        ({"HOOKKIT_ACESS_LOG": "1"}, "HOOKKIT_ACESS_LOG"),
    ],
)
def test_bad_setting_stops_gunicorn_at_start(serve, dropin, env, named):
    """A bad HOOKKIT_* value (or an unknown HOOKKIT_* name) stops gunicorn at
    start-up, exit status 1, with a message that names it."""
    server = serve("apps.wsgi:app", config=dropin, env=env, wait=False)
    assert 1 == server.proc.wait(20)
    server.stream.wait_closed(5)
    text = "\n".join(line.get("raw", "") for line in server.events())
    assert named in text
    assert not server.events(match(event="server_ready"))


def test_bad_setting_in_user_config_names_it(serve, tmp_path):
    """`hookkit_access_log = "perhaps"` in gunicorn.conf.py stops gunicorn with its name."""
    (tmp_path / "gunicorn.conf.py").write_text('hookkit_access_log = "perhaps"\n')
    server = serve("apps.wsgi:app", wait=False)
    assert 1 == server.proc.wait(20)
    server.stream.wait_closed(5)
    assert any("hookkit_access_log" in line.get("raw", "") for line in server.events())


def test_hookkit_settings_from_user_config(serve, tmp_path):
    """`hookkit_access_log = True` in gunicorn.conf.py turns the access log on."""
    (tmp_path / "gunicorn.conf.py").write_text("hookkit_access_log = True\n")
    server = serve("apps.wsgi:app", "-w", "1")
    assert 200 == http_get(server.port, "/?token=secret")[0]
    line = server.wait_for(match(event="request_finished"))[0]
    assert ("GET", "/", 200) == (line["method"], line["path"], line["status"])
    assert "secret" not in str(line)


def test_user_logger_class_is_kept_and_start_up_says_so(serve, tmp_path):
    """A user's own logger_class is kept; the start-up line says what that costs."""
    (tmp_path / "gunicorn.conf.py").write_text('logger_class = "gunicorn.glogging.Logger"\n')
    server = serve("apps.wsgi:app", "-w", "1")
    starting = server.wait_for(match(event="master_starting"))[0]
    assert ("gunicorn.glogging.Logger", "warning") == (
        starting["gunicorn_logger"],
        starting["level"],
    )
    assert "logger_class" in starting["note"]
    # gunicorn's own lines keep gunicorn's text format
    assert any("Listening at" in line.get("raw", "") for line in server.events())


def test_gunicorn_lines_are_json_under_the_dropin(serve):
    """gunicorn's own error-log lines go through hookkit's pipeline: JSON."""
    server = serve("apps.wsgi:app", "-w", "1")
    listening = server.wait_for(lambda line: str(line.get("event", "")).startswith("Listening at"))
    assert "gunicorn.error" == listening[0]["logger"]
    assert [] == [line for line in server.events() if "raw" in line]


def test_statsd_keeps_working(serve):
    """With statsd_host set, gunicorn's statsd metrics still go out (to a UDP
    socket the test listens on, on 127.0.0.1) and hookkit's lines are JSON."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        udp.settimeout(5)
        port = udp.getsockname()[1]
        server = serve("apps.wsgi:app", "-w", "1", "--statsd-host", f"127.0.0.1:{port}")
        server.wait_for(match(event="worker_booted"))
        assert 200 == http_get(server.port, "/")[0]
        packets = set()
        deadline = time.monotonic() + 5
        while b"gunicorn.requests" not in b"".join(packets) and time.monotonic() < deadline:
            packets.add(udp.recv(4096))
        assert b"gunicorn.requests:1|c" in b"\n".join(packets)
    assert server.events(match(event="master_starting"))[0]["gunicorn_logger"].endswith(
        "StatsdLogger"
    )


def test_user_logconfig_dict_owns_gunicorn_lines(serve, tmp_path):
    """With logconfig_dict, gunicorn's lines follow the user's formatter, and
    hookkit's events are still JSON lines."""
    (tmp_path / "gunicorn.conf.py").write_text(
        "logconfig_dict = {\n"
        "  'version': 1, 'disable_existing_loggers': False,\n"
        "  'formatters': {'mine': {'format': 'MINE %(message)s'}},\n"
        "  'handlers': {'err': {'class': 'logging.StreamHandler', 'formatter': 'mine',\n"
        "                       'stream': 'ext://sys.stderr'}},\n"
        "  'root': {'level': 'INFO', 'handlers': []},\n"
        "  'loggers': {'gunicorn.error': {'handlers': ['err'], 'level': 'INFO',\n"
        "                                 'propagate': False}},\n"
        "}\n"
    )
    server = serve("apps.wsgi:app", "-w", "1")
    server.wait_for(match(event="worker_booted"))
    assert any(line.get("raw", "").startswith("MINE Listening at") for line in server.events())


def test_the_drop_in_loads_only_what_its_settings_turn_on():
    """What a start with the defaults imports (time to the first 200, issue
    16): not the OTLP metrics sink (the OpenTelemetry metrics SDK) nor the
    OTLP logs sink while they are off, nor bcrypt without basic auth users;
    turned on, the sinks load."""
    import subprocess
    import sys

    probe = (
        "import sys, hookkit.conf\n"
        "print(sorted(m for m in ('opentelemetry.sdk.metrics', 'hookkit._sinks.otlp_logs.sink',"
        " 'bcrypt') if m in sys.modules))"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("HOOKKIT_", "OTEL_"))}
    off = subprocess.run(
        [sys.executable, "-c", probe], env=clean, capture_output=True, text=True, check=True
    )
    assert "[]" == off.stdout.strip()
    on = subprocess.run(
        [sys.executable, "-c", probe],
        env={**clean, "HOOKKIT_OTLP_METRICS": "on", "HOOKKIT_OTLP_LOGS": "on"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert "['hookkit._sinks.otlp_logs.sink', 'opentelemetry.sdk.metrics']" == on.stdout.strip()
