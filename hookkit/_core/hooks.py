"""The one table of gunicorn's server hooks.

Each hook is described once: its name, the positional parameters gunicorn
passes (gunicorn checks the arity of every hook it is given, see
``gunicorn.config.validate_callable``), the process it runs in and when.
Everything else (the importable hooks, ``chain``, the drop-in config, the
demo's report and docs/reference/hooks.md) is derived from this table, so a new
hook costs one row.

``ssl_context`` is deliberately absent: it is a factory that returns an
``SSLContext``, not a notification, and is left to the user.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Process = Literal["master", "worker", "dirty arbiter", "dirty worker", "re-exec child"]


@dataclass(frozen=True)
class HookSpec:
    """One gunicorn server hook."""

    name: str
    params: tuple[str, ...]
    process: Process
    when: str
    since: tuple[int, int] = (19, 0)  # the first gunicorn version that calls it

    @property
    def arity(self) -> int:
        """The number of positional parameters gunicorn passes."""
        return len(self.params)


HOOKS: tuple[HookSpec, ...] = (
    HookSpec(
        "on_starting",
        ("server",),
        "master",
        "just before the master is initialized, before the listeners open",
    ),
    HookSpec(
        "on_reload",
        ("server",),
        "master",
        "on SIGHUP, after the configuration was reloaded, before new workers spawn",
    ),
    HookSpec("when_ready", ("server",), "master", "just after the server is started and listening"),
    HookSpec("pre_fork", ("server", "worker"), "master", "just before a worker is forked"),
    HookSpec(
        "post_fork",
        ("server", "worker"),
        "worker",
        "just after a worker is forked, before the app is loaded",
    ),
    HookSpec(
        "post_worker_init", ("worker",), "worker", "just after the worker loaded the application"
    ),
    HookSpec("worker_int", ("worker",), "worker", "when the worker receives SIGINT or SIGQUIT"),
    HookSpec(
        "worker_abort",
        ("worker",),
        "worker",
        "when the worker receives SIGABRT: the master timed it out",
    ),
    HookSpec(
        "pre_exec",
        ("server",),
        "re-exec child",
        "on SIGUSR2, in the forked child just before it executes the new master",
    ),
    HookSpec(
        "pre_request", ("worker", "req"), "worker", "just before the worker processes a request"
    ),
    HookSpec(
        "post_request",
        ("worker", "req", "environ", "resp"),
        "worker",
        "after the worker processed a request, whatever the outcome",
    ),
    HookSpec(
        "child_exit",
        ("server", "worker"),
        "master",
        "just after a worker exited and was reaped",
        since=(19, 7),
    ),
    HookSpec(
        "worker_exit",
        ("server", "worker"),
        "worker",
        "as a worker exits (also in the master when a worker vanished before a kill)",
    ),
    HookSpec(
        "nworkers_changed",
        ("server", "new_value", "old_value"),
        "master",
        "when the number of workers changes (old_value is None the first time)",
    ),
    HookSpec("on_exit", ("server",), "master", "just before the master exits"),
    HookSpec(
        "on_dirty_starting",
        ("arbiter",),
        "dirty arbiter",
        "just before the dirty arbiter is initialized",
        since=(25, 0),
    ),
    HookSpec(
        "dirty_post_fork",
        ("arbiter", "worker"),
        "dirty arbiter",
        "just after a dirty worker is forked, in the dirty arbiter",
        since=(25, 0),
    ),
    HookSpec(
        "dirty_worker_init",
        ("worker",),
        "dirty worker",
        "just after a dirty worker initialized its applications",
        since=(25, 0),
    ),
    HookSpec(
        "dirty_worker_exit",
        ("arbiter", "worker"),
        "dirty arbiter",
        "when a dirty worker has exited",
        since=(25, 0),
    ),
)

HOOKS_BY_NAME: dict[str, HookSpec] = {spec.name: spec for spec in HOOKS}

# The 15 hooks of gunicorn's "Server Hooks" documentation: any gunicorn
# configuration can fire them. The dirty-worker hooks need a dirty app.
CORE_HOOKS: tuple[str, ...] = tuple(spec.name for spec in HOOKS if spec.since < (25, 0))
DIRTY_HOOKS: tuple[str, ...] = tuple(spec.name for spec in HOOKS if spec.since >= (25, 0))
