"""The multiprocess directory and the bounded set of process identities.

prometheus_client's multiprocess mode keeps one file per process per metric
type (``counter_<id>.db``, ``gauge_livesum_<id>.db``, ...) and sums them at
scrape time. Keyed by pid, the directory grows with every recycled worker
and deleting a dead worker's files makes counters go backwards. hookkit keys
them by *slot* instead: a worker takes the lowest free slot of its master,
so a replacement reopens its predecessor's files and carries its counts on
(counters never go backwards) while the directory stays bounded by the
number of slots ever used at once. A dead worker's live gauges (requests in
flight) are removed before its slot is reused, so they never stay stuck.

Identities contain no ``_``: prometheus_client splits file names on it.
The master's pid is part of each identity, so during a USR2 re-exec the old
and the new master (and their workers) never share a file.
"""

from __future__ import annotations

import glob
import os
import shutil
import stat
import tempfile
from collections.abc import Callable

from prometheus_client import values
from prometheus_client.multiprocess import mark_process_dead

from hookkit._core.resets import on_reset
from hookkit._core.settings import ConfigError

ENV_DIR = "PROMETHEUS_MULTIPROC_DIR"
# Passed to a re-executed master (USR2) so it knows the directory is hookkit's
# private one and removes it when it finally exits. Not a HOOKKIT_* setting.
ENV_PRIVATE = "_HOOKKIT_PRIVATE_METRICS_DIR"

_identity = f"p{os.getpid()}"


def identity() -> str:
    """This process's identity in the directory's file names."""
    return _identity


def set_identity(value: str) -> None:
    """Change this process's identity; prometheus_client reopens its files on
    the next metric update (it compares identities, as it does pids)."""
    global _identity  # noqa: PLW0603 - one identity per process
    _identity = value


def master_identity(master_pid: int) -> str:
    """The master's own files."""
    return f"m{master_pid}"


def slot_identity(master_pid: int, slot: int) -> str:
    """The files of whichever worker holds ``slot`` under this master."""
    return f"w{master_pid}s{slot}"


_VALUE_CLASS = values.ValueClass  # what prometheus_client chose at import
# The variables a master sets for prometheus_client and its re-executed
# successor, as they were before hookkit set them.
_ENVIRON = {name: os.environ.get(name) for name in (ENV_DIR, ENV_PRIVATE)}


def use_slot_identities() -> None:
    """Make every prometheus_client metric created from now on (hookkit's and
    the application's) multiprocess, keyed by identity instead of pid."""
    values.ValueClass = values.MultiProcessValue(process_identifier=identity)  # type: ignore[no-untyped-call]


@on_reset
def _restore_value_class() -> None:
    """hookkit.testing.reset(): prometheus_client's own value class again,
    and the multiprocess variables as they were."""
    global _identity  # noqa: PLW0603
    values.ValueClass = _VALUE_CLASS
    _identity = f"p{os.getpid()}"
    for name, value in _ENVIRON.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


class MetricsDir:
    """The directory this master's metrics live in."""

    def __init__(self, path: str, private: bool) -> None:
        self.path = path
        self.private = private

    @classmethod
    def open(cls, environ: dict[str, str] | os._Environ[str], reexec: bool) -> MetricsDir:
        """``PROMETHEUS_MULTIPROC_DIR`` when set, else a private directory
        (mode 0700). On a fresh start stale ``.db`` files are removed; on a
        USR2 re-exec the directory is shared with the old master and kept."""
        path = environ.get(ENV_DIR, "").strip()
        if not path:
            directory = cls(tempfile.mkdtemp(prefix="hookkit-metrics-"), private=True)
        else:
            check_named_directory(path)
            private = environ.get(ENV_PRIVATE) == path
            if private:
                _check_private(path)
            directory = cls(path, private=private)
            if not reexec:
                directory.clear()
        environ[ENV_DIR] = directory.path
        if directory.private:
            environ[ENV_PRIVATE] = directory.path
        return directory

    @property
    def world_writable(self) -> bool:
        """Whether any user may create files in it (a Kubernetes ``emptyDir``
        is 0777: fine inside a pod, worth a warning elsewhere)."""
        try:
            return bool(os.stat(self.path).st_mode & stat.S_IWOTH)
        except OSError:
            return False

    def clear(self) -> None:
        """Remove stale metric files (a fresh start only)."""
        for name in self.files():
            try:
                os.remove(name)
            except FileNotFoundError:
                continue

    def files(self) -> list[str]:
        """The metric files now in the directory."""
        return sorted(glob.glob(os.path.join(self.path, "*.db")))

    def mark_dead(self, ident: str) -> None:
        """Forget a dead process's live gauges, before its slot is reused."""
        mark_process_dead(ident, self.path)  # type: ignore[no-untyped-call]

    def remove(self) -> None:
        """Delete a private directory when its last master exits."""
        if self.private:
            shutil.rmtree(self.path, ignore_errors=True)


def check_named_directory(path: str) -> None:
    """The directory named in ``PROMETHEUS_MULTIPROC_DIR`` must exist and be
    writable; raises ConfigError naming the variable otherwise."""
    if not os.path.isdir(path):
        raise ConfigError(
            f"{ENV_DIR}={path!r} is not valid: no such directory "
            "(create it, or unset it to let hookkit make a private one)"
        )
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(
            f"{ENV_DIR}={path!r} is not valid: not writable by this user "
            f"(uid {os.geteuid()}); fix its permissions or point it elsewhere"
        )


def _check_private(path: str) -> None:
    """A private directory handed over by a USR2 re-exec must still be the
    one hookkit made: a real directory (not a symlink), owned by this user,
    mode 0700. Anything else was put there by someone else."""
    try:
        info = os.lstat(path)
    except OSError as exc:
        raise ConfigError(
            f"{ENV_DIR}={path!r}: hookkit's private directory is gone ({exc})"
        ) from None
    if (
        not stat.S_ISDIR(info.st_mode)
        or info.st_uid != os.geteuid()
        or stat.S_IMODE(info.st_mode) != 0o700
    ):
        raise ConfigError(
            f"{ENV_DIR}={path!r}: hookkit's private directory was replaced (not a 0700 "
            f"directory owned by uid {os.geteuid()}); refusing to use it"
        )


class Slots:
    """The lowest free slot for each new worker; freed when it is reaped."""

    def __init__(self, on_free: Callable[[int], None]) -> None:
        self.by_age: dict[int, int] = {}
        self._on_free = on_free

    def take(self, age: int) -> int:
        """Give the worker of ``age`` the lowest free slot."""
        used = set(self.by_age.values())
        slot = next(index for index in range(len(used) + 1) if index not in used)
        self.by_age[age] = slot
        return slot

    def free(self, age: int) -> int | None:
        """The worker of ``age`` is gone: its slot can be taken again."""
        slot = self.by_age.pop(age, None)
        if slot is not None:
            self._on_free(slot)
        return slot

    def __len__(self) -> int:
        return len(self.by_age)
