"""``__all__`` of hookkit's public modules: sorted, and exactly the module's
public names (in the style of httpx's tests/test_exported_members.py).

Sorted means in the order of the project's linter (ruff's RUF022,
"isort-style"): SCREAMING_SNAKE_CASE names first, then CamelCase names,
then the rest, each group in natural order (digits compare as numbers).

A public name is one that does not start with an underscore (``__version__``
is listed on purpose), except:

- modules (``hookkit.hooks`` is reached as a submodule, not through ``__all__``);
- names the module imports from outside hookkit for its own use
  (``from typing import Any``, ``from __future__ import annotations``).

A name imported from one of hookkit's private modules is public: it is how
users reach it (``hookkit.Event``), so it must be listed, or be imported
under a private name.
"""

from __future__ import annotations

import ast
import inspect
import re
import types

import pytest

import hookkit
import hookkit.dropin
import hookkit.glogging
import hookkit.hooks
import hookkit.processors
import hookkit.testing

INCLUDED_PRIVATE_MEMBERS = {"__version__"}

PUBLIC_MODULES = [
    hookkit,
    hookkit.hooks,
    hookkit.testing,
    hookkit.processors,
    hookkit.glogging,
    hookkit.dropin,
]


def isort_style_key(name: str) -> tuple[int, list[tuple[int, int | str]]]:
    """Sort key of ruff's RUF022 isort-style order."""
    if len(name) > 1 and name.isupper():
        group = 0  # SCREAMING_SNAKE_CASE: constants
    elif name[:1].isupper():
        group = 1  # CamelCase: classes
    else:
        group = 2
    natural = [
        (0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", name) if part
    ]
    return group, natural


def borrowed_names(module: types.ModuleType) -> set[str]:
    """Names ``module`` binds by importing from outside the hookkit package."""
    tree = ast.parse(inspect.getsource(module))
    borrowed: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] != "hookkit":
                    borrowed.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            source = node.module or ""
            if node.level == 0 and source.split(".")[0] != "hookkit":
                borrowed.update(alias.asname or alias.name for alias in node.names)
    return borrowed


def public_names(module: types.ModuleType) -> list[str]:
    """The public names of ``module``, as the module docstring defines them."""
    borrowed = borrowed_names(module)
    return sorted(
        name
        for name, value in vars(module).items()
        if (not name.startswith("_") or name in INCLUDED_PRIVATE_MEMBERS)
        and not isinstance(value, types.ModuleType)
        and name not in borrowed
    )


@pytest.mark.parametrize("module", PUBLIC_MODULES, ids=lambda module: module.__name__)
def test_all_is_sorted(module: types.ModuleType) -> None:
    """``__all__`` is sorted (isort-style, as ruff sorts it), so a new name
    has one place to go."""
    assert sorted(module.__all__, key=isort_style_key) == module.__all__


@pytest.mark.parametrize("module", PUBLIC_MODULES, ids=lambda module: module.__name__)
def test_all_lists_exactly_the_public_names(module: types.ModuleType) -> None:
    """``__all__`` lists every public name of the module, once, and nothing else."""
    assert set(public_names(module)) == set(module.__all__)
    assert len(set(module.__all__)) == len(module.__all__)


@pytest.mark.parametrize("module", PUBLIC_MODULES, ids=lambda module: module.__name__)
def test_every_listed_name_exists(module: types.ModuleType) -> None:
    """Every name in ``__all__`` can be imported from the module."""
    missing = [name for name in module.__all__ if not hasattr(module, name)]

    expected: list[str] = []
    assert expected == missing


def test_star_import_gives_the_listed_names() -> None:
    """``from hookkit import *`` binds exactly ``hookkit.__all__``."""
    namespace: dict[str, object] = {}
    exec("from hookkit import *", namespace)

    assert sorted(hookkit.__all__) == sorted(k for k in namespace if k != "__builtins__")
