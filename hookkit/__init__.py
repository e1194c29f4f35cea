"""hookkit: observability for gunicorn's server hooks.

Every gunicorn server hook becomes a typed event (``hookkit.Event``) handed
to independent sinks (``hookkit.Sink``): structured lifecycle logs,
Prometheus metrics and OpenTelemetry spans, and sinks of your own. Three
ways in:

- the drop-in config: ``gunicorn -c python:hookkit.conf app:app``;
- single hooks in your own config: ``from hookkit.hooks import post_fork``,
  with ``hookkit.chain`` to keep your own hook beside hookkit's;
- ``hookkit.configure(...)`` in your gunicorn config, to set hookkit's
  settings from Python and register sinks of your own.

Importing ``hookkit`` is cheap: the backends (prometheus_client, the
OpenTelemetry SDK) are imported when a configuration needs them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from hookkit._core.chain import chain
from hookkit._core.events import Event
from hookkit._core.hooks import CORE_HOOKS, DIRTY_HOOKS, HOOKS, HookSpec
from hookkit._core.settings import SETTINGS, ConfigError, Settings
from hookkit._core.sink import RequestFinished, RequestStarted, Sink, SpanIds
from hookkit._version import __version__


def configure(*, sinks: Sequence[Sink] | None = None, **settings: object) -> Settings:
    """Set hookkit's settings from Python (names without the ``HOOKKIT_``
    prefix, e.g. ``configure(access_log=True)``), over the environment's,
    and register sinks of your own (``sinks=[MySink()]``, subclasses of
    ``hookkit.Sink``; replaces the sinks an earlier call registered).

    Call it in your gunicorn config: under the drop-in it is applied once
    the drop-in has read that config, and again on every SIGHUP, which
    reads the config afresh.

    Raises ConfigError naming a bad setting or sink. Returns the effective
    settings.
    """
    from hookkit._dropin.assemble import configure as assemble_configure

    return assemble_configure(settings, sinks, os.environ)


__all__ = [
    "CORE_HOOKS",
    "DIRTY_HOOKS",
    "HOOKS",
    "SETTINGS",
    "ConfigError",
    "Event",
    "HookSpec",
    "RequestFinished",
    "RequestStarted",
    "Settings",
    "Sink",
    "SpanIds",
    "__version__",
    "chain",
    "configure",
]
