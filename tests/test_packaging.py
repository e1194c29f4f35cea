"""The release artifacts, built from this checkout as a release would be.

``python -m build`` makes the sdist and, from it, the wheel; the wheel is
installed with its dependencies into a new venv, as a user installs it.
Checked: one version everywhere (``hookkit/_version.py``'s); the ``hookkit``
script runs; ``py.typed`` ships; the files the README tells users to copy
(dashboards, alert rules, runbooks, examples) are installed under
``<prefix>/share/hookkit/``, laid out as in the repository, and are in the
sdist; nothing of ``tests/`` ships.

Needs PyPI: build's isolated environment gets hatchling, pip the
dependencies (about 20 s here with a warm pip cache).
"""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).parent.parent
VERSION = re.findall(r'^__version__ = "(.+)"$', (ROOT / "hookkit/_version.py").read_text(), re.M)[0]

# What users are told to copy, by path in the repository; installed at the
# same path under <prefix>/share/hookkit/ (examples/prometheus.yml loads
# ../dashboards/hookkit-alerts.rules.yml, so the layout matters).
SHARED = {
    "dashboards/hookkit-overview.json",
    "dashboards/hookkit-workers.json",
    "dashboards/hookkit-alerts.rules.yml",
    "dashboards/hookkit-alerts.test.yml",
    *(
        path.relative_to(ROOT).as_posix()
        for directory in ("docs", "examples")
        for path in (ROOT / directory).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    ),
}
# Named in the README or the docs, but for working on hookkit itself, not for users.
DEVELOPMENT_ONLY = {
    "dashboards/build.py",
    "dashboards/render_previews.py",
    "dashboards/preview-overview.png",
    "dashboards/preview-workers.png",
}


@dataclass(frozen=True)
class Built:
    wheel: Path
    sdist: Path
    venv: Path

    @property
    def share(self) -> Path:
        return self.venv / "share" / "hookkit"


def run(*argv: str | Path, cwd: Path, timeout: float) -> str:
    done = subprocess.run(
        [str(arg) for arg in argv],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert 0 == done.returncode, f"{argv}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """The sdist and the wheel built from it, and a venv with the wheel installed."""
    tmp = tmp_path_factory.mktemp("packaging")
    dist = tmp / "dist"
    run(sys.executable, "-m", "build", "--outdir", dist, ROOT, cwd=tmp, timeout=300)
    (wheel,) = dist.glob("*.whl")
    (sdist,) = dist.glob("*.tar.gz")
    venv = tmp / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp, timeout=120)
    # This interpreter's pip installs into the new venv (no ensurepip there).
    run(
        sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install",
        "--quiet", "--disable-pip-version-check", wheel,
        cwd=tmp, timeout=300,
    )  # fmt: skip
    return Built(wheel, sdist, venv)


def test_artifacts_are_named_by_the_one_version(built: Built) -> None:
    """hatch reads the version from hookkit/_version.py: the file names and
    the wheel's metadata carry it."""
    assert f"hookkit-{VERSION}-py3-none-any.whl" == built.wheel.name
    assert f"hookkit-{VERSION}.tar.gz" == built.sdist.name
    with zipfile.ZipFile(built.wheel) as wheel:
        metadata = wheel.read(f"hookkit-{VERSION}.dist-info/METADATA").decode()
    assert f"\nVersion: {VERSION}\n" in metadata


def test_the_wheel_ships_the_package_typed_and_no_tests(built: Built) -> None:
    with zipfile.ZipFile(built.wheel) as wheel:
        names = set(wheel.namelist())
        entry_points = wheel.read(f"hookkit-{VERSION}.dist-info/entry_points.txt").decode()
    assert "hookkit/py.typed" in names
    assert {"hookkit/__init__.py", "hookkit/conf.py", "hookkit/_version.py"} <= names
    assert "hookkit = hookkit._face.cli:main" in entry_points
    assert [] == sorted(name for name in names if name.startswith("tests/") or "/tests/" in name)
    assert [] == sorted(name for name in names if "__pycache__" in name or name.endswith(".pyc"))


def test_the_installed_script_runs_from_the_installed_package(built: Built) -> None:
    """``hookkit --version`` from the venv's bin/, and ``import hookkit``
    there finds the installed copy, not this checkout."""
    bin_dir = built.venv / "bin"
    version = run(bin_dir / "hookkit", "--version", cwd=built.venv, timeout=60)
    assert f"hookkit {VERSION}\n" == version
    where = run(
        bin_dir / "python", "-c", "import hookkit; print(hookkit.__file__, hookkit.__version__)",
        cwd=built.venv, timeout=60,
    )  # fmt: skip
    path, imported = where.split()
    assert VERSION == imported
    assert Path(path).is_relative_to(built.venv)


def test_what_users_copy_is_installed_under_share_hookkit(built: Built) -> None:
    # pip byte-compiles the .py files it installs, these too.
    installed = {
        path.relative_to(built.share).as_posix()
        for path in built.share.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert SHARED == installed
    for name in SHARED:
        assert (ROOT / name).read_bytes() == (built.share / name).read_bytes(), name
    # examples/prometheus.yml's rule_files entry, relative to the file, resolves.
    rules = built.share / "examples" / "../dashboards/hookkit-alerts.rules.yml"
    assert rules.is_file()


def test_every_path_the_docs_name_for_users_ships(built: Built) -> None:
    """Each dashboards/, docs/ or examples/ path in README.md or in a page of
    the documentation site, docs/ (a directory: each file in it), is
    installed, unless it is for development only."""
    texts = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    named = {
        # A directory named without its slash (`cd examples/django`) is a directory.
        name + "/" if not name.endswith("/") and (ROOT / name).is_dir() else name
        for text in texts
        for name in re.findall(r"(?:dashboards|docs|examples)/[\w./-]*", text.read_text())
    }
    missing = []
    for name in sorted(named - DEVELOPMENT_ONLY):
        if name.endswith("/"):
            files = [p for p in (ROOT / name).rglob("*") if p.is_file()]
            files = [p for p in files if "__pycache__" not in p.parts]
            if name == "dashboards/":
                files = [p for p in files if p.relative_to(ROOT).as_posix() in SHARED]
            assert files, name
            missing += [
                p.relative_to(ROOT).as_posix()
                for p in files
                if not (built.share / p.relative_to(ROOT)).is_file()
            ]
        elif not (built.share / name).is_file():
            missing.append(name)
    assert [] == missing


def test_the_sdist_has_what_the_wheel_is_built_from(built: Built) -> None:
    """The wheel above was built from this sdist, so it is complete; and it
    keeps the tests and the dashboards' sources for anyone building from it."""
    prefix = f"hookkit-{VERSION}/"
    with tarfile.open(built.sdist) as sdist:
        names = {name.removeprefix(prefix) for name in sdist.getnames()}
    assert {"pyproject.toml", "README.md", "hookkit/_version.py", "hookkit/py.typed"} <= names
    assert SHARED <= names
    assert {"dashboards/build.py", "tests/conftest.py"} <= names
