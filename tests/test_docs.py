"""The documentation site: its reference pages are what the code's tables
give (``hookkit._face.reference_docs``), every setting, hook, event, exit
reason, metric and status field the code defines is documented, and the
site builds with ``mkdocs build --strict`` (no warning, no broken link or
anchor: mkdocs.yml's ``validation``)."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from hookkit._core import events
from hookkit._core.exits import REASON_DOCS, REASONS
from hookkit._core.hooks import HOOKS
from hookkit._core.master import EXIT_LEVELS
from hookkit._core.settings import SETTINGS, Settings
from hookkit._face import reference_docs
from hookkit._sinks.otlp_metrics import names
from hookkit._sinks.status.snapshot import FIELDS

ROOT = Path(__file__).parent.parent
DOCS = ROOT / "docs"
REFERENCE = DOCS / "reference"


def page(name: str) -> str:
    return (REFERENCE / name).read_text()


def test_the_reference_pages_are_up_to_date() -> None:
    """Each committed page under docs/reference/ is what the code gives now."""
    stale = [
        name
        for name, text in reference_docs.render().items()
        if not (REFERENCE / name).is_file() or (REFERENCE / name).read_text() != text
    ]
    assert [] == stale, "out of date: run `make docs-reference` and commit docs/reference/"


def _rows(text: str) -> list[str]:
    """The first cell of each row of every table of a page."""
    return [
        line.split(" | ", 1)[0].removeprefix("| ")
        for line in text.splitlines()
        if line.startswith("| ") and not line.startswith("|---")
    ]


def test_every_setting_is_in_the_one_table() -> None:
    """The settings page is the one table of settings: a row per setting
    (its variable, and any earlier name), each once, in the code's order,
    with its default, accepted values and description; and the settings
    dataclass has no setting the table lacks."""
    text = page("settings.md")
    rows = [row for row in _rows(text) if row.startswith("`HOOKKIT_")]
    assert [f"`{spec.env}`" for spec in SETTINGS] == [row.split(" ")[0] for row in rows]
    for spec in SETTINGS:
        (line,) = [line for line in text.splitlines() if line.startswith(f"| `{spec.env}`")]
        assert spec.accepted in line
        assert reference_docs._cell(spec.desc) in line
        for alias in spec.alias_envs:
            assert f"`{alias}`" in line
    assert {spec.attr for spec in SETTINGS} == set(Settings.__dataclass_fields__)


def test_no_page_names_a_setting_that_does_not_exist() -> None:
    """Every ``HOOKKIT_*`` name in the README and the docs is a setting (or
    an earlier name of one): a renamed setting leaves no stale mention."""
    known = {spec.env for spec in SETTINGS} | {env for spec in SETTINGS for env in spec.alias_envs}
    texts = [ROOT / "README.md", *DOCS.rglob("*.md")]
    unknown = {
        (path.relative_to(ROOT).as_posix(), name)
        for path in texts
        for name in re.findall(r"\bHOOKKIT_[A-Z_]*[A-Z]", path.read_text())
        if name not in known
    }
    assert set() == unknown


def test_every_hook_is_documented() -> None:
    rows = _rows(page("hooks.md"))
    assert [f"`{spec.name}`" for spec in HOOKS] == rows[1:]


def test_every_event_is_documented() -> None:
    """Every event name the events module defines has one row in EVENTS and
    on the events page; each row's hook is a hook of the table."""
    defined = {
        value
        for name, value in vars(events).items()
        if name.isupper() and isinstance(value, str) and not name.startswith("_")
    }
    assert sorted(defined) == sorted(event.name for event in events.EVENTS)
    assert len(events.EVENTS) == len({event.name for event in events.EVENTS})
    hooks = {spec.name for spec in HOOKS}
    for event in events.EVENTS:
        assert event.hook is None or event.hook in hooks, event
        assert event.level in {"debug", "info", "warning", "error", "by reason"}, event
        assert event.hook is not None or event.source, event
    text = page("events.md")
    for event in events.EVENTS:
        assert f'<span id="{event.name}"></span>`{event.name}`' in text


def test_every_event_name_emitted_by_its_literal_is_documented() -> None:
    """An event emitted under a literal name (``emit("x", ...)``, ``Event("x", ...)``)
    rather than the module's constant is documented too."""
    documented = {event.name for event in events.EVENTS}
    literals = set()
    for path in (ROOT / "hookkit").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
                and (
                    (isinstance(node.func, ast.Attribute) and node.func.attr in ("emit", "_emit"))
                    or (isinstance(node.func, ast.Name) and node.func.id in ("emit", "Event"))
                )
            ):
                literals.add((path.relative_to(ROOT).as_posix(), node.args[0].value))
    assert set() == {(path, name) for path, name in literals if name not in documented}


def test_every_exit_reason_is_documented() -> None:
    assert list(REASONS) == list(REASON_DOCS)
    assert set(REASONS) == set(EXIT_LEVELS)
    rows = _rows(page("exit-reasons.md"))
    assert [f'<span id="{reason}"></span>`{reason}`' for reason in REASONS] == rows[1:]


def test_every_metric_is_documented() -> None:
    """Every family /metrics serves (made from the metric objects) has a row,
    every row of the OTLP names table is on the page, and every family with
    a unit of its own has a row in the names table."""
    families = reference_docs.metric_families()
    text = page("metrics.md")
    rows = _rows(text)
    assert [f'<span id="{f.exposed}"></span>`{f.exposed}`' for f in families] == [
        row for row in rows if row.startswith("<span")
    ]
    for row in names.NAMES:
        assert f"| `{row.otlp}` |" in text
    ours = [f.name for f in families if not f.name.startswith(("process_", "python_"))]
    assert sorted(ours) == sorted(row.prometheus for row in names.NAMES)


def test_every_status_field_is_documented() -> None:
    """Each field /status.json has (as the snapshot builder makes it, with a
    worker and an exit) is in FIELDS, and FIELDS has no field it lacks."""
    from tests.test_status_snapshot import build

    document: dict[str, Any] = build()
    made = {f"master.{key}" for key in document["master"]}
    made |= {f"workers[].{key}" for worker in document["workers"] for key in worker}
    made |= {f"{key}[]" for key in ("dirty_workers", "recent_exits")}
    assert set(document) == {"master", "workers", "dirty_workers", "recent_exits"}
    documented = [name for field_names, _ in FIELDS for name in field_names]
    assert sorted(made) == sorted(documented)
    meanings = {field_names[0]: meaning for field_names, meaning in FIELDS}
    for exit in document["recent_exits"]:
        for key in exit:
            assert f"`{key}`" in meanings["recent_exits[]"], key
    text = page("status.md")
    for name in documented:
        assert f"`{name}`" in text


def test_the_readme_links_into_the_site() -> None:
    """The README's relative links name pages that exist, and it stays short."""
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    assert readme.index("make demo") < readme.index("make test") < readme.index("\n## ")
    links = re.findall(r"\]\(((?:docs|dashboards|examples)/[^)#]*)(?:#[^)]*)?\)", readme)
    assert links
    assert [] == [link for link in links if not (ROOT / link).exists()]
    for name in ("reference/settings.md", "reference/metrics.md", "reference/events.md"):
        assert f"docs/{name}" in readme


def _mkdocs() -> None:
    try:
        import mkdocs  # noqa: F401
        import mkdocstrings  # noqa: F401
    except ImportError:
        if os.environ.get("CI") == "true":
            raise pytest.UsageError(
                "CI=true but mkdocs is not installed: pip install -e '.[test,docs]'"
            ) from None
        pytest.skip("mkdocs is not installed: pip install -e '.[docs]'")


def test_the_site_builds_with_no_warning(tmp_path: Path) -> None:
    """``mkdocs build --strict`` (no network needed): every page, link and
    anchor resolves, and the API page's docstrings render without a warning."""
    _mkdocs()
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = built.stdout + built.stderr
    assert 0 == built.returncode, output
    assert "WARNING" not in output, output
    quickstart = tmp_path / "site" / "quickstart" / "wsgi" / "index.html"
    assert "start_response" in quickstart.read_text()  # the example's code, included
    assert (tmp_path / "site" / "dashboards" / "preview-overview.png").is_file()
