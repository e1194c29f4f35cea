"""hookkit: observability for gunicorn's server hooks.

Every gunicorn server hook becomes a typed event (``hookkit.Event``) handed
to independent sinks: structured lifecycle logs now, Prometheus metrics and
OpenTelemetry spans next. Three ways in:

- the drop-in config: ``gunicorn -c python:hookkit.conf app:app``;
- single hooks in your own config: ``from hookkit.hooks import post_fork``,
  with ``hookkit.chain`` to keep your own hook beside hookkit's;
- ``hookkit.configure(...)`` to set hookkit's settings from Python.
"""

from __future__ import annotations

from hookkit._core.chain import chain
from hookkit._core.events import Event, Sink
from hookkit._core.hooks import CORE_HOOKS, DIRTY_HOOKS, HOOKS, HookSpec
from hookkit._core.runtime import RUNTIME as _RUNTIME
from hookkit._core.settings import SETTINGS, ConfigError, Settings
from hookkit._version import __version__


def configure(**settings: object) -> Settings:
    """Set hookkit's settings from Python (names without the ``HOOKKIT_``
    prefix, e.g. ``configure(access_log=True)``), over the environment's.

    Raises ConfigError naming a bad setting. Returns the effective settings.
    """
    effective = Settings.load().replace(**settings)
    _RUNTIME.configure(effective)
    return effective


__all__ = [
    "CORE_HOOKS",
    "DIRTY_HOOKS",
    "HOOKS",
    "SETTINGS",
    "ConfigError",
    "Event",
    "HookSpec",
    "Settings",
    "Sink",
    "__version__",
    "chain",
    "configure",
]
