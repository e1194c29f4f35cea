"""`make bench`'s harness in its smoke mode: one 1 s round of every
configuration with the Python load generator and 20 recycles (about 35 s on 2
cores). Checks the harness, not the figures: timings belong to the benchmark.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SMOKE = {
    "BENCH_SECONDS": "1",
    "BENCH_ROUNDS": "1",
    "BENCH_RECYCLES": "20",
    "BENCH_LOADGEN": "python",
}


@pytest.mark.integration
def test_smoke_run_prints_the_targets_and_every_signal_arrived(tmp_path: Path) -> None:
    output = tmp_path / "bench.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BENCH_")}
    env.update(SMOKE, BENCH_OUTPUT=str(output))
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench.py")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "## targets" in out
    assert "| target | measured, median (min\u2013max) | met? |" in out
    for name in ("bare", "metrics", "tracing", "everything", "handrolled"):
        assert f"\n- {name}: " in out  # its settings line

    result = json.loads(output.read_text())
    # The check run: the headers and the route took effect, every signal came.
    assert result["checks"]
    assert all(check["ok"] for check in result["checks"]), result["checks"]
    targets = {row["target"]: row for row in result["targets"]}
    assert len(targets) == 14
    for row in targets.values():
        assert row["met"] in (True, False, None)
        assert row["measured"]
    assert all(row["met"] is not None for row in result["targets"])  # recycles ran

    runs = {run["config"]: run for run in result["runs"]}
    assert set(runs) == {"bare", "metrics", "tracing", "everything", "handrolled"}
    assert all("error" not in run for run in runs.values()), [
        run.get("error") for run in runs.values()
    ]
    assert runs["everything"]["exported"]["traces"] > 0
    assert runs["everything"]["exported"]["logs"] > 0
    assert runs["everything"]["exported"]["metrics"] > 0
    assert runs["tracing"]["exported"]["traces"] > 0
    assert runs["handrolled"]["exported"]["traces"] > 0
    for name in ("bare", "metrics", "tracing", "everything", "handrolled"):
        assert runs[name]["warmup_requests"] >= 1000
    assert [point["recycles"] for point in result["recycles"]["checkpoints"]] == [10, 20]
