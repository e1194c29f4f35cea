"""The multiprocess directory is safe from other users of the machine.

- hookkit's own directory is private (0700), made by ``mkdtemp`` (an
  exclusive ``mkdir`` under a random name: a symlink or directory planted at
  a guessable path cannot be used in its place);
- handed over to a USR2-re-executed master by name, it is checked again: a
  symlink, a directory of another mode, or one that is gone is refused;
- a directory the user names that anyone can write to is used, with one
  warning at start-up that names it (a Kubernetes ``emptyDir`` is 0777).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pytest

from hookkit._aggregate.directory import ENV_DIR, ENV_PRIVATE, MetricsDir
from hookkit._core.settings import ConfigError
from hookkit._face.gunicorn_process import Gunicorn, match


def test_the_private_directory_is_made_exclusively_under_a_random_name(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Paths planted in the temporary directory beforehand (a symlink to a
    directory of the attacker's, a directory of theirs) are never the one
    hookkit uses: its directory is new, not a symlink, 0700 and its own."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    attacker = tmp_path / "attacker"
    attacker.mkdir(mode=0o777)
    for n in range(20):
        (tmp_path / f"hookkit-metrics-planted{n}").symlink_to(attacker)
    directory = MetricsDir.open({}, reexec=False)
    try:
        info = os.lstat(directory.path)
        assert (False, 0o700, os.geteuid()) == (
            Path(directory.path).is_symlink(),
            info.st_mode & 0o777,
            info.st_uid,
        )
        assert [] == list(attacker.iterdir())
    finally:
        directory.remove()


@pytest.mark.parametrize("replacement", ["symlink", "mode", "gone"])
def test_a_replaced_private_directory_is_refused_on_reexec(
    tmp_path: Path, replacement: str
) -> None:
    """The directory name a re-executed master inherits must still be a
    0700 directory of this user, not a symlink, nor anything else."""
    private = tmp_path / "hookkit-metrics-x"
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)
    if replacement == "symlink":
        private.symlink_to(target)
    elif replacement == "mode":
        private.mkdir()
        private.chmod(0o755)
    environ = {ENV_DIR: str(private), ENV_PRIVATE: str(private)}
    if replacement == "gone":
        environ[ENV_DIR] = environ[ENV_PRIVATE] = str(tmp_path / "missing")
    with pytest.raises(ConfigError, match=ENV_DIR):
        MetricsDir.open(environ, reexec=True)


def test_the_private_directory_itself_is_accepted_on_reexec(tmp_path: Path) -> None:
    """The directory hookkit made passes its own check."""
    made = MetricsDir.open({}, reexec=False)
    try:
        environ = {ENV_DIR: made.path, ENV_PRIVATE: made.path}
        assert (made.path, True) == (
            MetricsDir.open(environ, reexec=True).path,
            MetricsDir.open(environ, reexec=True).private,
        )
    finally:
        made.remove()


def start(serve: Any, directory: Path) -> Gunicorn:
    server: Gunicorn = serve("apps.wsgi:app", env={ENV_DIR: str(directory)})
    server.wait_for(match(event="worker_booted"))
    return server


@pytest.mark.integration
def test_a_world_writable_directory_is_used_with_one_warning(serve: Any, tmp_path: Path) -> None:
    """A named directory anyone can write to (mode 0777, as a Kubernetes
    emptyDir) is used, and one warning at start-up names it."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    server = start(serve, shared)
    warnings = server.events(match(event="metrics_directory_world_writable"))
    (ready,) = server.events(match(event="server_ready"))
    assert [(str(shared), "warning")] == [(line["path"], line["level"]) for line in warnings]
    assert str(shared) == ready["metrics_directory"]
    assert any(name.endswith(".db") for name in os.listdir(shared))


@pytest.mark.integration
def test_a_directory_of_mode_0700_gets_no_warning(serve: Any, tmp_path: Path) -> None:
    """A named directory only its owner can write to: no warning."""
    own = tmp_path / "own"
    own.mkdir(mode=0o700)
    server = start(serve, own)
    assert [] == server.events(match(event="metrics_directory_world_writable"))
