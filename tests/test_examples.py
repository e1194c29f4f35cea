"""The examples in examples/ work as their comments say."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from hookkit._face.gunicorn_process import http_get, match

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).parent.parent / "examples"


def copy_examples(tmp_path: Path) -> Path:
    for name in ("app.py", "gunicorn.conf.py", "single_hooks.conf.py"):
        shutil.copy(EXAMPLES / name, tmp_path / name)
    return tmp_path


def test_dropin_example_applies_the_users_config(serve, tmp_path):
    """examples/gunicorn.conf.py under the drop-in: 2 workers, access log on."""
    where = copy_examples(tmp_path)
    server = serve("app:app", config="python:hookkit.conf", cwd=where)
    server.wait_for(match(event="worker_booted"), count=2)
    assert 200 == http_get(server.port, "/")[0]
    assert 200 == server.wait_for(match(event="request_finished"))[0]["status"]


def test_single_hooks_example(serve, tmp_path):
    """examples/single_hooks.conf.py: imported hooks, a chained post_fork and
    hookkit.configure() work without the drop-in."""
    where = copy_examples(tmp_path)
    (where / "gunicorn.conf.py").unlink()
    server = serve("app:app", config="single_hooks.conf.py", cwd=where)
    server.wait_for(match(event="worker_booted"), count=2)
    assert 200 == http_get(server.port, "/")[0]
    assert 200 == server.wait_for(match(event="request_finished"))[0]["status"]
    assert server.wait_for(lambda line: "my own post_fork" in str(line.get("event")), count=2)
    starting = server.events(match(event="master_starting"))[0]
    assert "hookkit.glogging.Logger" == starting["gunicorn_logger"]
