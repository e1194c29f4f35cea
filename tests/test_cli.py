"""The `hookkit` command: init and check."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import clean_env

pytestmark = pytest.mark.integration


def hookkit(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hookkit", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=clean_env(**env),
        timeout=60,
        check=False,
    )


def test_init_writes_the_dropin_file(tmp_path):
    """`hookkit init` writes ./hookkit.conf, which loads the drop-in."""
    done = hookkit("init", cwd=tmp_path)
    assert 0 == done.returncode
    text = (tmp_path / "hookkit.conf").read_text()
    assert "from hookkit.dropin import load" in text
    assert "gunicorn -c hookkit.conf" in done.stdout


def test_init_refuses_to_overwrite(tmp_path):
    """`hookkit init` keeps an existing file unless --force is given."""
    (tmp_path / "hookkit.conf").write_text("# mine\n")
    refused = hookkit("init", cwd=tmp_path)
    assert (1, "# mine\n") == (refused.returncode, (tmp_path / "hookkit.conf").read_text())
    assert "--force" in refused.stderr
    assert 0 == hookkit("init", "--force", cwd=tmp_path).returncode
    assert "dropin" in (tmp_path / "hookkit.conf").read_text()


def test_check_prints_effective_settings(tmp_path):
    """`hookkit check` prints every setting's effective value and exits 0."""
    (tmp_path / "gunicorn.conf.py").write_text("hookkit_access_log = 'yes'\n")
    done = hookkit("check", cwd=tmp_path, HOOKKIT_LOG_FORMAT="console")
    assert 0 == done.returncode, done.stderr
    rows = dict(
        line.split(None, 1) for line in done.stdout.splitlines() if line.startswith("HOOKKIT_")
    )
    assert ("on", "console", "on", "off") == (
        rows["HOOKKIT_LOGS"],
        rows["HOOKKIT_LOG_FORMAT"],
        rows["HOOKKIT_ACCESS_LOG"],
        rows["HOOKKIT_SLOW_REQUEST_SECONDS"],
    )
    assert str(tmp_path / "gunicorn.conf.py") in done.stdout


def test_check_lists_the_sinks(tmp_path):
    """`hookkit check` lists the sinks a start would use: hookkit's own the
    settings turn on, then those the user's config registers."""
    (tmp_path / "gunicorn.conf.py").write_text(
        "import hookkit\n"
        "class Mine(hookkit.Sink):\n"
        "    name = 'mine'\n"
        "hookkit.configure(sinks=[Mine()])\n"
    )
    done = hookkit("check", cwd=tmp_path, HOOKKIT_METRICS="off")
    assert 0 == done.returncode, done.stderr
    assert "sinks: status, logs, tracing, mine" in done.stdout.splitlines()


def test_check_fails_on_a_bad_value(tmp_path):
    """`hookkit check` exits non-zero naming the bad variable and value."""
    done = hookkit("check", cwd=tmp_path, HOOKKIT_SLOW_REQUEST_SECONDS="soon")
    assert 2 == done.returncode
    assert "HOOKKIT_SLOW_REQUEST_SECONDS='soon'" in done.stderr


def test_check_fails_on_a_missing_user_config(tmp_path):
    """HOOKKIT_GUNICORN_CONFIG naming no file is a problem `check` reports."""
    done = hookkit("check", cwd=tmp_path, HOOKKIT_GUNICORN_CONFIG=str(tmp_path / "nope.py"))
    assert 2 == done.returncode
    assert "HOOKKIT_GUNICORN_CONFIG" in done.stderr
