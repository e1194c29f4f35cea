"""Importing hookkit's light public modules stays cheap: ``import hookkit``,
``import hookkit.processors`` and ``import hookkit.testing`` load no backend
that only a sink needs (the Prometheus client, the OpenTelemetry SDK) nor
what only the master's HTTP server needs (bcrypt, PyYAML).

Each import runs in a fresh interpreter (this session has imported
everything already), with this checkout first on its path; the check is on
``sys.modules``: no module equal to, or under, a heavy name.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent

HEAVY = ("prometheus_client", "opentelemetry.sdk", "bcrypt", "yaml")

LIGHT_MODULES = ["hookkit", "hookkit.processors", "hookkit.testing"]


def modules_loaded_by(module: str) -> list[str]:
    """The names in ``sys.modules`` after ``import <module>`` in a fresh interpreter."""
    code = f"import json, sys\nimport {module}\nprint(json.dumps(sorted(sys.modules)))"
    path = [str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(path)},
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def heavy(modules: list[str]) -> list[str]:
    """The names of ``HEAVY`` loaded: each equal to or a parent of one of ``modules``."""
    return [h for h in HEAVY if any(name == h or name.startswith(h + ".") for name in modules)]


@pytest.mark.parametrize("module", LIGHT_MODULES)
def test_import_loads_no_heavy_backend(module: str) -> None:
    """``import <module>`` loads neither prometheus_client, opentelemetry.sdk,
    bcrypt nor yaml."""
    expected: list[str] = []
    assert expected == heavy(modules_loaded_by(module))


def test_check_sees_a_heavy_import() -> None:
    """The check reports a heavy module when one is imported (so it can fail);
    ``opentelemetry`` alone (the API) and ``yamlish`` names are not heavy."""
    loaded = modules_loaded_by("yaml")

    assert ["yaml"] == heavy(loaded)
    assert [] == heavy(["opentelemetry", "opentelemetry.trace", "yamlish", "bcrypt_like"])
