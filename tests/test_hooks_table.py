"""hookkit._core.hooks: the one table of gunicorn's server hooks, checked against
gunicorn's own settings (``gunicorn.config.KNOWN_SETTINGS``)."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import Any

import gunicorn.config
import pytest

import hookkit.hooks
from hookkit._core.hooks import CORE_HOOKS, DIRTY_HOOKS, HOOKS, HOOKS_BY_NAME, HookSpec

pytestmark = pytest.mark.compat

# gunicorn's documentation, "Server Hooks" (docs/source/settings.rst), in order.
GUNICORN_SERVER_HOOKS_DOC = (
    "on_starting",
    "on_reload",
    "when_ready",
    "pre_fork",
    "post_fork",
    "post_worker_init",
    "worker_int",
    "worker_abort",
    "pre_exec",
    "pre_request",
    "post_request",
    "child_exit",
    "worker_exit",
    "nworkers_changed",
    "on_exit",
)
GUNICORN_DIRTY_HOOKS_DOC = (
    "on_dirty_starting",
    "dirty_post_fork",
    "dirty_worker_init",
    "dirty_worker_exit",
)

SETTINGS_BY_NAME = {setting.name: setting for setting in gunicorn.config.KNOWN_SETTINGS}


def hook_settings() -> list[Any]:
    """gunicorn's hook settings: the ones in a "... Hooks" section, and any
    other setting whose value is a callable."""
    return [
        setting
        for setting in gunicorn.config.KNOWN_SETTINGS
        if (setting.section or "").endswith("Hooks") or setting.type is callable
    ]


def function_of_arity(arity: int) -> Callable[..., None]:
    """A plain ``def`` taking ``arity`` positional parameters, as a user writes one."""
    params = ", ".join(f"a{i}" for i in range(arity))
    namespace: dict[str, Any] = {}
    exec(f"def hook({params}):\n    return None\n", namespace)
    func: Callable[..., None] = namespace["hook"]
    return func


@pytest.mark.parametrize("spec", HOOKS, ids=lambda spec: spec.name)
def test_each_hook_is_a_gunicorn_setting(spec: HookSpec) -> None:
    """Every hook in the table is the name of one of gunicorn's settings."""
    assert spec.name in SETTINGS_BY_NAME


@pytest.mark.parametrize("spec", HOOKS, ids=lambda spec: spec.name)
def test_gunicorn_accepts_a_function_of_the_table_arity(spec: HookSpec) -> None:
    """gunicorn's validator for the hook accepts a function taking the
    table's number of positional parameters, and keeps it as it is."""
    func = function_of_arity(spec.arity)

    validated = SETTINGS_BY_NAME[spec.name].validator(func)

    assert func is validated


@pytest.mark.parametrize("spec", HOOKS, ids=lambda spec: spec.name)
@pytest.mark.parametrize("offset", [1, "zero"])
def test_gunicorn_rejects_a_function_of_another_arity(spec: HookSpec, offset: object) -> None:
    """gunicorn's validator refuses a function with one parameter too many,
    and one with none at all: the table's arity is the one gunicorn checks."""
    arity = 0 if offset == "zero" else spec.arity + 1
    func = function_of_arity(arity)

    with pytest.raises(TypeError, match="arity"):
        SETTINGS_BY_NAME[spec.name].validator(func)


@pytest.mark.parametrize("spec", HOOKS, ids=lambda spec: spec.name)
def test_parameter_names_are_gunicorns(spec: HookSpec) -> None:
    """The table's parameter names are those of gunicorn's default hook."""
    default = SETTINGS_BY_NAME[spec.name].default

    assert tuple(inspect.signature(default).parameters) == spec.params


def versionadded(name: str) -> tuple[int, int] | None:
    """The ``versionadded`` of gunicorn's documentation of a setting, if it says one."""
    found = re.search(r"versionadded:: (\d+)\.(\d+)", SETTINGS_BY_NAME[name].desc or "")
    return (int(found.group(1)), int(found.group(2))) if found else None


VERSIONED_HOOKS = [spec for spec in HOOKS if versionadded(spec.name) is not None]


@pytest.mark.parametrize("spec", VERSIONED_HOOKS, ids=lambda spec: spec.name)
def test_since_matches_gunicorns_versionadded(spec: HookSpec) -> None:
    """Where gunicorn's documentation of a hook says ``versionadded``, the
    table's ``since`` (the first gunicorn version that calls it) says the same."""
    assert versionadded(spec.name) == spec.since


def test_every_gunicorn_hook_setting_is_in_the_table_but_ssl_context() -> None:
    """Each hook setting gunicorn defines is in the table, except
    ``ssl_context`` (a factory that returns an SSLContext, not a notification)."""
    gunicorn_hooks = {setting.name for setting in hook_settings()}

    assert gunicorn_hooks - {"ssl_context"} == {spec.name for spec in HOOKS}
    assert "ssl_context" in gunicorn_hooks
    assert "ssl_context" not in HOOKS_BY_NAME


def test_hook_names_are_unique_and_indexed() -> None:
    """Each hook appears once, and ``HOOKS_BY_NAME`` finds every one."""
    names = [spec.name for spec in HOOKS]

    assert len(set(names)) == len(names)
    assert names == list(HOOKS_BY_NAME)
    assert all(HOOKS_BY_NAME[spec.name] is spec for spec in HOOKS)


def test_arity_is_the_number_of_parameters() -> None:
    """``HookSpec.arity`` counts the positional parameters gunicorn passes."""
    assert [len(spec.params) for spec in HOOKS] == [spec.arity for spec in HOOKS]
    assert HOOKS_BY_NAME["post_request"].arity == 4


def test_core_hooks_are_gunicorns_server_hooks_doc_list() -> None:
    """The 15 CORE_HOOKS are exactly the "Server Hooks" of gunicorn's
    documentation, in its order."""
    assert GUNICORN_SERVER_HOOKS_DOC == CORE_HOOKS


def test_core_hooks_are_gunicorns_server_hooks_section() -> None:
    """CORE_HOOKS are the settings of gunicorn's "Server Hooks" section but
    ``ssl_context``, in gunicorn's order."""
    section = [
        setting.name
        for setting in gunicorn.config.KNOWN_SETTINGS
        if setting.section == "Server Hooks" and setting.name != "ssl_context"
    ]

    assert section == list(CORE_HOOKS)


def test_dirty_hooks_are_gunicorns_dirty_arbiter_hooks() -> None:
    """DIRTY_HOOKS are the four dirty-arbiter hooks, in gunicorn's order."""
    section = [
        setting.name
        for setting in gunicorn.config.KNOWN_SETTINGS
        if setting.section == "Dirty Arbiter Hooks"
    ]

    assert GUNICORN_DIRTY_HOOKS_DOC == DIRTY_HOOKS
    assert section == list(DIRTY_HOOKS)


def test_core_and_dirty_hooks_partition_the_table() -> None:
    """Every hook is either core or dirty, never both."""
    assert set() == set(CORE_HOOKS) & set(DIRTY_HOOKS)
    assert [spec.name for spec in HOOKS] == [*CORE_HOOKS, *DIRTY_HOOKS]


def test_hookkit_hooks_has_one_function_per_hook() -> None:
    """``hookkit.hooks`` defines one function per hook of the table, and no other."""
    functions = {
        name
        for name, value in vars(hookkit.hooks).items()
        if inspect.isfunction(value) and value.__module__ == hookkit.hooks.__name__
    }

    assert {spec.name for spec in HOOKS} == functions


@pytest.mark.parametrize("spec", HOOKS, ids=lambda spec: spec.name)
def test_hookkit_hook_takes_the_table_parameters(spec: HookSpec) -> None:
    """Each function in ``hookkit.hooks`` takes the table's parameters, by
    name and count, all positional."""
    func = getattr(hookkit.hooks, spec.name)
    params = inspect.signature(func).parameters.values()

    assert spec.params == tuple(p.name for p in params)
    assert all(p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD for p in params)


@pytest.mark.parametrize("spec", HOOKS, ids=lambda spec: spec.name)
def test_gunicorn_accepts_each_hookkit_hook(spec: HookSpec) -> None:
    """gunicorn's own validator accepts each function in ``hookkit.hooks``
    for its setting, also given as an import string."""
    func = getattr(hookkit.hooks, spec.name)
    validator = SETTINGS_BY_NAME[spec.name].validator

    assert func is validator(func)
    assert func is validator(f"hookkit.hooks.{spec.name}")


@pytest.mark.parametrize("spec", HOOKS, ids=lambda spec: spec.name)
def test_hookkit_hook_docstring_comes_from_the_table(spec: HookSpec) -> None:
    """Each hook's docstring says the process it runs in and when, as the table does."""
    func = getattr(hookkit.hooks, spec.name)
    process = spec.process[0].upper() + spec.process[1:]

    assert f"{process}: {spec.when}." == func.__doc__
