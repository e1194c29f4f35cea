"""`hookkit demo`: the reference server tour, as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from hookkit import CORE_HOOKS, DIRTY_HOOKS
from tests.conftest import clean_env

pytestmark = [pytest.mark.integration, pytest.mark.compat]


def run_demo(*args: str) -> tuple[int, dict]:
    done = subprocess.run(
        [sys.executable, "-m", "hookkit", "demo", "--json", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=clean_env(),
        check=False,
    )
    return done.returncode, json.loads(done.stdout)


def test_demo_fires_every_core_hook():
    """`hookkit demo --json` exits 0 and reports all 15 hooks of gunicorn's
    Server Hooks docs as fired with the sync worker; no step failed."""
    code, report = run_demo()
    assert [] == [s for s in report["steps"] if not s["ok"]]
    assert dict.fromkeys(CORE_HOOKS, True) == {
        name: report["hooks"][name]["fired"] for name in CORE_HOOKS
    }
    assert (0, True, []) == (code, report["ok"], report["missing"])
    assert report["seconds"] < 60


def test_demo_dirty_fires_the_dirty_worker_hooks():
    """`hookkit demo --dirty --json` also fires the four dirty-worker hooks."""
    code, report = run_demo("--dirty")
    assert dict.fromkeys(DIRTY_HOOKS, True) == {
        name: report["hooks"][name]["fired"] for name in DIRTY_HOOKS
    }
    assert (0, True) == (code, report["ok"])


def test_demo_table_lists_every_hook():
    """Without --json the tour streams events and ends with the table."""
    done = subprocess.run(
        [sys.executable, "-m", "hookkit", "demo"],
        capture_output=True,
        text=True,
        timeout=120,
        env=clean_env(),
        check=False,
    )
    assert 0 == done.returncode, done.stdout[-2000:]
    table = done.stdout.split("\nhook ", 1)[1]
    for name in (*CORE_HOOKS, *DIRTY_HOOKS):
        assert f"\n{name} " in table
    assert "worker_exited" in done.stdout
    assert "reason=timeout" in done.stdout
