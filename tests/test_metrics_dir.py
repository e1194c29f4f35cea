"""hookkit._aggregate.directory: slots keep the multiprocess directory bounded."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hookkit._aggregate.directory import (
    ENV_DIR,
    ENV_PRIVATE,
    MetricsDir,
    Slots,
    master_identity,
    slot_identity,
)
from hookkit._core.settings import ConfigError


def test_slots_reuse_the_lowest_free_index():
    """A new worker takes the lowest free slot; a freed slot is taken again."""
    freed: list[int] = []
    slots = Slots(freed.append)
    assert [0, 1, 2] == [slots.take(age) for age in (1, 2, 3)]
    assert 1 == slots.free(2)
    assert [1] == freed
    assert 1 == slots.take(4)
    assert 3 == slots.take(5)
    assert None is slots.free(99)


def test_a_thousand_recycles_use_two_slots():
    """With two workers recycled one after the other, only slots 0 and 1 exist."""
    slots = Slots(lambda slot: None)
    used = {slots.take(1), slots.take(2)}
    for age in range(3, 1003):
        slots.free(age - 2)
        used.add(slots.take(age))
    assert {0, 1} == used


def test_identities_have_no_underscore_and_differ_per_master():
    """prometheus_client splits file names on `_`; two masters never share a name."""
    names = [master_identity(10), master_identity(11), slot_identity(10, 0), slot_identity(11, 0)]
    assert all("_" not in name for name in names)
    assert len(set(names)) == len(names)


def test_private_directory_is_0700_and_removed(tmp_path: Path):
    """Without PROMETHEUS_MULTIPROC_DIR hookkit makes a private directory
    (mode 0700), names it in the environment, and removes it at the end."""
    environ: dict[str, str] = {}
    directory = MetricsDir.open(environ, reexec=False)
    assert 0o700 == os.stat(directory.path).st_mode & 0o777
    assert (directory.path, directory.path) == (environ[ENV_DIR], environ[ENV_PRIVATE])
    directory.remove()
    assert not os.path.exists(directory.path)


def test_user_directory_is_cleared_on_a_fresh_start_only(tmp_path: Path):
    """A user's directory loses its stale .db files at a fresh start, keeps
    them on a USR2 re-exec, and is never removed."""
    (tmp_path / "counter_m1.db").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("kept")
    MetricsDir.open({ENV_DIR: str(tmp_path)}, reexec=True)
    assert (tmp_path / "counter_m1.db").exists()
    directory = MetricsDir.open({ENV_DIR: str(tmp_path)}, reexec=False)
    assert ["notes.txt"] == sorted(p.name for p in tmp_path.iterdir())
    directory.remove()
    assert tmp_path.exists()


def test_missing_directory_names_the_variable(tmp_path: Path):
    """A PROMETHEUS_MULTIPROC_DIR that does not exist is a configuration error naming it."""
    with pytest.raises(ConfigError, match="PROMETHEUS_MULTIPROC_DIR"):
        MetricsDir.open({ENV_DIR: str(tmp_path / "nope")}, reexec=False)


def test_mark_dead_removes_only_live_gauges(tmp_path: Path):
    """A dead slot loses its live gauges; its counters stay (never backwards)."""
    for name in ("gauge_livesum_w1s0.db", "counter_w1s0.db", "gauge_livesum_w1s1.db"):
        (tmp_path / name).write_bytes(b"x")
    MetricsDir(str(tmp_path), private=False).mark_dead(slot_identity(1, 0))
    assert ["counter_w1s0.db", "gauge_livesum_w1s1.db"] == sorted(
        p.name for p in tmp_path.iterdir()
    )
