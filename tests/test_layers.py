"""hookkit's layers: which part of the package may import which.

An AST walk (nothing is imported) over every ``.py`` file of ``hookkit/``
collects every import, at any depth (imports inside functions and under
``if TYPE_CHECKING:`` included), as an (importing module, imported module)
pair. ``from hookkit import _x`` and ``from hookkit._sinks import logs``
resolve to the module imported (``hookkit._x``, ``hookkit._sinks.logs``), and
relative imports to absolute names; ``from prometheus_client import Counter``
is ``prometheus_client``.

The layers, as ``RULES`` below writes them:

- ``hookkit._core``: the hooks, events, dispatch and runtime; knows no
  backend and no other part of hookkit;
- ``hookkit._sinks.<name>``: one package per backend (logs, prometheus,
  tracing); knows the core and the shared infrastructure, never another sink;
- ``hookkit._aggregate``, ``hookkit._master_http``: shared infrastructure
  (multiprocess directory and collector, the master's HTTP server); knows no sink;
- ``hookkit._dropin``: the composition root, wiring the rest together;
- ``hookkit._face``: the CLI and the demo, reached only through
  ``python -m hookkit`` (the console script is in pyproject.toml, not an import).

``ALLOWED_VIOLATIONS`` lists today's known breaches. It can only shrink: a new
breach fails, and so does an entry that no longer occurs (remove it).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path
from typing import NamedTuple

# Found from this file, not by importing hookkit: the walk imports nothing.
PACKAGE_DIR = Path(__file__).resolve().parent.parent / "hookkit"

# Pseudo-prefixes of the rule table.
STDLIB = "<stdlib>"  # a module of the standard library (sys.stdlib_module_names)
PUBLIC = "<public>"  # one of hookkit's public thin modules
OTHER_SINKS = "<other sinks>"  # hookkit._sinks.<other> seen from hookkit._sinks.<name>

BACKENDS = ("prometheus_client", "opentelemetry", "structlog", "yaml", "bcrypt")

PUBLIC_MODULES = frozenset(
    {
        "hookkit",
        "hookkit.__main__",
        "hookkit._version",
        "hookkit.conf",
        "hookkit.demo_app",
        "hookkit.dropin",
        "hookkit.glogging",
        "hookkit.hooks",
        "hookkit.processors",
        "hookkit.testing",
    }
)


class Rule(NamedTuple):
    """Modules under one of ``importers`` (but not under ``exempt``) import
    only what ``allowed`` names (``None``: anything) and nothing ``forbidden``
    names. A prefix names a module and everything under it."""

    name: str
    importers: tuple[str, ...]
    exempt: tuple[str, ...] = ()
    allowed: tuple[str, ...] | None = None
    forbidden: tuple[str, ...] = ()


SHARED = ("hookkit._aggregate", "hookkit._master_http")

RULES = (
    Rule(
        "1: the core imports only the standard library, gunicorn and the core",
        importers=("hookkit._core",),
        allowed=(STDLIB, "gunicorn", "hookkit._core", "hookkit._version"),
    ),
    Rule(
        "2: a sink imports no other sink, nor the drop-in or the face",
        importers=("hookkit._sinks",),
        forbidden=(OTHER_SINKS, "hookkit._dropin", "hookkit._face"),
    ),
    Rule(
        "3: shared infrastructure imports no sink, nor the drop-in or the face",
        importers=SHARED,
        forbidden=("hookkit._sinks", "hookkit._dropin", "hookkit._face"),
    ),
    Rule(
        "4: only hookkit.__main__ imports the face",
        importers=("hookkit",),
        exempt=("hookkit.__main__", "hookkit._face"),
        forbidden=("hookkit._face",),
    ),
    Rule(
        "5: hookkit.testing imports only the standard library and the core",
        importers=("hookkit.testing",),
        allowed=(STDLIB, "hookkit._core", "hookkit._version"),
    ),
    Rule(
        "6: the drop-in imports itself, the core, the sinks, shared infrastructure, public modules",
        importers=("hookkit._dropin",),
        allowed=(
            STDLIB,
            "gunicorn",
            "hookkit._dropin",
            "hookkit._core",
            "hookkit._sinks",
            *SHARED,
            PUBLIC,
        ),
    ),
)

# (importing module, imported module): known breaches. Empty since the
# architecture refactor: a new breach fails the test.
ALLOWED_VIOLATIONS: set[tuple[str, str]] = set()


class Import(NamedTuple):
    """One import statement's module, where it was found."""

    importer: str
    imported: str
    path: Path
    line: int


def module_name(path: Path, package_dir: Path) -> str:
    """The dotted name of the module at ``path`` in the package at ``package_dir``."""
    parts = [package_dir.name, *path.relative_to(package_dir).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def collect_imports(package_dir: Path) -> list[Import]:
    """Every import of every module under ``package_dir``, resolved to module
    names, once per statement and module."""
    paths = sorted(package_dir.rglob("*.py"))
    modules = {module_name(path, package_dir) for path in paths}
    found: list[Import] = []
    for path in paths:
        importer = module_name(path, package_dir)
        package = importer if path.name == "__init__.py" else importer.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                found.extend(Import(importer, a.name, path, node.lineno) for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                for alias in node.names:
                    submodule = f"{base}.{alias.name}"
                    imported = submodule if submodule in modules else base
                    found.append(Import(importer, imported, path, node.lineno))
    return list(dict.fromkeys(found))


def sink_of(module: str) -> str | None:
    """The sink package ``module`` belongs to (``hookkit._sinks.logs``), if any."""
    parts = module.split(".")
    if len(parts) > 2 and parts[1] == "_sinks":
        return ".".join(parts[:3])
    return None


def matches(imported: str, prefix: str, importer: str) -> bool:
    """Whether ``imported`` is named by ``prefix`` (a module prefix or a pseudo-prefix)."""
    if prefix == STDLIB:
        return imported.split(".", maxsplit=1)[0] in sys.stdlib_module_names
    if prefix == PUBLIC:
        return imported in PUBLIC_MODULES
    if prefix == OTHER_SINKS:
        own, other = sink_of(importer), sink_of(imported)
        return own is not None and other is not None and own != other
    return imported == prefix or imported.startswith(prefix + ".")


def broken_rules(imported: str, importer: str) -> list[str]:
    """The names of the rules an import of ``imported`` by ``importer`` breaks."""
    broken = []
    for rule in RULES:
        if not any(matches(importer, prefix, "") for prefix in rule.importers):
            continue
        if any(matches(importer, prefix, "") for prefix in rule.exempt):
            continue
        if (
            rule.allowed is not None
            and not any(matches(imported, prefix, importer) for prefix in rule.allowed)
        ) or any(matches(imported, prefix, importer) for prefix in rule.forbidden):
            broken.append(rule.name)
    return broken


def find_violations(package_dir: Path) -> dict[tuple[str, str], list[str]]:
    """(importing module, imported module) -> one message per import and rule broken."""
    violations: dict[tuple[str, str], list[str]] = {}
    for imp in collect_imports(package_dir):
        for rule in broken_rules(imp.imported, imp.importer):
            where = imp.path.relative_to(package_dir.parent)
            violations.setdefault((imp.importer, imp.imported), []).append(
                f"{where}:{imp.line}: {imp.importer} imports {imp.imported}, breaking rule {rule}"
            )
    return violations


def test_no_new_violations() -> None:
    """No import breaks a layer rule, except those in ``ALLOWED_VIOLATIONS``."""
    violations = find_violations(PACKAGE_DIR)
    new = sorted(
        message
        for pair, messages in violations.items()
        if pair not in ALLOWED_VIOLATIONS
        for message in messages
    )

    expected: list[str] = []
    assert expected == new, "\n".join(new)


def test_allowed_violations_still_occur() -> None:
    """Every entry of ``ALLOWED_VIOLATIONS`` still occurs: a fixed one must be
    removed from the list, so that it can only shrink."""
    fixed = sorted(ALLOWED_VIOLATIONS - find_violations(PACKAGE_DIR).keys())

    expected: list[tuple[str, str]] = []
    assert expected == fixed, "fixed, remove from ALLOWED_VIOLATIONS: " + repr(fixed)


def test_rules_name_the_backends_as_forbidden_in_the_core() -> None:
    """The core's rule forbids every backend library (none is standard library,
    gunicorn, or hookkit's core)."""
    allowed = [backend for backend in BACKENDS if not broken_rules(backend, "hookkit._core.x")]

    expected: list[str] = []
    assert expected == allowed


def test_walker_catches_violations(tmp_path: Path) -> None:
    """The walker reports deliberate breaches in a fake ``hookkit`` tree (only
    parsed, never imported): a backend imported by the core inside a function,
    a sink reaching another through a relative import, the face imported by a
    public module, and a submodule imported by ``from package import name``."""
    files = {
        "__init__.py": "",
        "conf.py": "from hookkit import _face\n",
        "testing.py": "import os\nfrom hookkit._core import x\n",
        "_core/__init__.py": "",
        "_core/x.py": "import os\n\ndef f():\n    import prometheus_client.core\n",
        "_face/__init__.py": "",
        "_sinks/__init__.py": "",
        "_sinks/logs/__init__.py": "",
        "_sinks/logs/pipeline.py": "from .. import tracing\nfrom . import pipeline\n",
        "_sinks/tracing/__init__.py": "",
    }
    package_dir = tmp_path / "hookkit"
    for name, text in files.items():
        (package_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (package_dir / name).write_text(text, encoding="utf-8")

    violations = find_violations(package_dir)

    expected = {
        ("hookkit._core.x", "prometheus_client.core"),
        ("hookkit._sinks.logs.pipeline", "hookkit._sinks.tracing"),
        ("hookkit.conf", "hookkit._face"),
    }
    assert expected == violations.keys()
    assert [
        "hookkit/_core/x.py:4: hookkit._core.x imports prometheus_client.core, breaking rule "
        + RULES[0].name
    ] == violations["hookkit._core.x", "prometheus_client.core"]
