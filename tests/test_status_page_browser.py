"""``/status`` in a real headless browser (Debian's ``chromium``): the page's
script runs under its own Content-Security-Policy, shows the busy worker and
its request, and shows a path holding ``<script>`` as text, never markup.

The screenshots in ``docs/`` (``status-1280.png``, ``status-390.png``: a
laptop and a phone) are taken by this test on every run, and copied into
``docs/`` when ``UPDATE_SCREENSHOTS=1`` asks (a test run leaves the
work tree as it found it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ServeFactory
from tests.test_status_live import busy_workers, hanging, wait_status

pytestmark = [pytest.mark.integration]

# The requests hang as long as the test needs them; under a loaded CI
# machine that can pass gunicorn's default 30 s timeout, which would abort
# the workers (state "stopping") in the middle of the test.
NO_TIMEOUT = ("--timeout", "300")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DOCS = Path(__file__).resolve().parent.parent / "docs"
EVIL = "/hang/<script>alert(1)</script>%1b[2J<img/src=x/onerror=alert(2)>"
# gunicorn answers 400 to a raw ESC in the request line, so an escape
# sequence reaches a path only percent-encoded, as above; a raw one is
# covered by the unit tests of hookkit top's printable().


def chromium(tmp_path: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run headless chromium once, in a profile of its own, waiting for the
    page's first fetch and render (virtual time)."""
    command = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=3000",
        *args,
        url,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=90, check=False)


@pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)"
)
def test_the_page_shows_the_busy_worker_and_paths_as_text(
    serve: ServeFactory, tmp_path: Path
) -> None:
    """Three sync workers, two requests hanging: the rendered page lists
    the busy workers' pids and paths; the path with <script> is text (its
    characters escaped in the DOM, no element made from it)."""
    server = serve("apps.hanging:app", "-w", "3", *NO_TIMEOUT)
    server.cwd = tmp_path  # type: ignore[attr-defined]
    port = server.metrics_port  # type: ignore[attr-defined]
    url = f"http://127.0.0.1:{port}/status"
    wait_status(
        port, lambda d: len(d["workers"]) == 3 and all(w["state"] == "idle" for w in d["workers"])
    )
    with hanging(server, "/hang/reports/2026/export.csv", EVIL):
        document = wait_status(port, lambda d: len(busy_workers(d)) == 2)
        pids = [str(w["pid"]) for w in busy_workers(document)]
        done = chromium(tmp_path, url, "--dump-dom")
        assert 0 == done.returncode, done.stderr[-2000:]
        dom = done.stdout
        assert "Loading status.json" not in dom, "the script did not run (CSP?)"
        for pid in pids:
            assert f">{pid}<" in dom
        assert "/hang/reports/2026/export.csv" in dom
        assert (
            "/hang/&lt;script&gt;alert(1)&lt;/script&gt;%1b[2J&lt;img/src=x/onerror=alert(2)&gt;"
            in dom
        )
        assert "<script>alert" not in dom
        assert "<img" not in dom
        assert ">busy<" in dom
        assert ">idle<" in dom
        DOCS.mkdir(exist_ok=True)
        for width, height, name in ((1280, 900, "status-1280.png"), (390, 844, "status-390.png")):
            shot = tmp_path / name
            done = chromium(
                tmp_path, url, f"--screenshot={shot}", f"--window-size={width},{height}"
            )
            assert 0 == done.returncode, done.stderr[-2000:]
            assert shot.exists(), done.stderr[-2000:]
            assert shot.read_bytes().startswith(b"\x89PNG")
            if os.environ.get("UPDATE_SCREENSHOTS") == "1":
                shutil.copyfile(shot, DOCS / name)
        # The page said nothing the JSON does not: the same busy workers.
        assert json.dumps(document)
