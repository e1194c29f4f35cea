"""The drop-in gunicorn config: hookkit's hooks beside the user's own config.

``gunicorn -c python:hookkit.conf`` (or ``-c hookkit.conf``, written by
``hookkit init``) replaces gunicorn's default ``./gunicorn.conf.py``, so the
drop-in reads that file itself (or the one ``HOOKKIT_GUNICORN_CONFIG``
names), applies its settings and chains its hooks after hookkit's.

On SIGHUP gunicorn reloads its config: a config *file* is executed again,
but a ``python:`` *module* is imported again only if it is not in
``sys.modules``. The ``python:`` form therefore removes itself from
``sys.modules`` once gunicorn has read it (in ``when_ready`` and
``on_reload``, both in the master after a config load), so every reload
reads the user's file afresh. hookkit's state lives in ``hookkit._core.runtime``,
which is never re-imported, so nothing is duplicated.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

from hookkit import hooks
from hookkit._core.chain import chain
from hookkit._core.hooks import HOOKS
from hookkit._core.settings import ConfigError
from hookkit._dropin import assemble

DEFAULT_USER_CONFIG = "gunicorn.conf.py"
LOGGER_CLASS = "hookkit.glogging.Logger"

CONFIG_FILE_TEXT = """\
# hookkit drop-in gunicorn config, written by `hookkit init`.
# Use: gunicorn -c hookkit.conf app:app
# Your own ./gunicorn.conf.py (or $HOOKKIT_GUNICORN_CONFIG) still applies:
# its settings are kept and its hooks run beside hookkit's.
from hookkit.dropin import load as _load

globals().update(_load())
"""


def gunicorn_setting_names() -> frozenset[str]:
    """Every setting name gunicorn knows (hooks included)."""
    from gunicorn.config import KNOWN_SETTINGS

    return frozenset(setting.name for setting in KNOWN_SETTINGS)


def user_config_path(environ: Mapping[str, str]) -> str | None:
    """The user's gunicorn config the drop-in applies, if any."""
    named = environ.get("HOOKKIT_GUNICORN_CONFIG", "").strip()
    if named:
        if not os.path.isfile(named):
            raise ConfigError(
                f"HOOKKIT_GUNICORN_CONFIG={named!r} is not valid: no such file "
                "(accepted: a path to a gunicorn config file)"
            )
        return named
    default = os.path.join(os.getcwd(), DEFAULT_USER_CONFIG)
    return default if os.path.isfile(default) else None


def read_user_config(path: str) -> dict[str, Any]:
    """Execute a gunicorn config file afresh, as gunicorn does, and return
    its names (the module is not kept in ``sys.modules``)."""
    loader = importlib.machinery.SourceFileLoader("__hookkit_user_config__", path)
    spec = importlib.util.spec_from_file_location("__hookkit_user_config__", path, loader=loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return dict(vars(module))


def load(
    environ: Mapping[str, str] | None = None,
    forget_module: str | None = None,
) -> dict[str, Any]:
    """The drop-in config: the user's settings and hooks, hookkit's hooks
    chained in front, and hookkit's logger class unless the user named one.

    Validates hookkit's settings now: a bad value raises ConfigError, which
    gunicorn prints before it exits with status 1.
    """
    environ = os.environ if environ is None else environ
    path = user_config_path(environ)
    # hookkit.configure() in the user's config is recorded while it is
    # read, then applied once with the rest (and again on each reload,
    # when gunicorn loads this config afresh).
    assemble.begin_config_load()
    try:
        user = read_user_config(path) if path else {}
    finally:
        assemble.finish_loading()
    assemble.finish_config_load(environ, user)

    known = gunicorn_setting_names()
    config: dict[str, Any] = {
        name: value for name, value in user.items() if name in known and not name.startswith("_")
    }
    forget: tuple[Callable[..., Any], ...] = ()
    if forget_module is not None:
        forget = (_forget(forget_module),)
    for spec in HOOKS:
        ours: Callable[..., Any] = getattr(hooks, spec.name)
        members = [ours]
        theirs = user.get(spec.name)
        if callable(theirs):
            members.append(theirs)
        if spec.name in ("when_ready", "on_reload"):
            members.extend(forget)
        config[spec.name] = chain(spec.name, *members) if len(members) > 1 else ours
    config.setdefault("logger_class", LOGGER_CLASS)
    return config


def _forget(module_name: str) -> Callable[[Any], None]:
    def forget_dropin_module(server: Any) -> None:
        """Let gunicorn's next reload import the drop-in module again."""
        sys.modules.pop(module_name, None)

    return forget_dropin_module
