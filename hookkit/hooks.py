"""gunicorn server hooks, one function per hook, to import into your own
gunicorn config:

    # gunicorn.conf.py
    from hookkit.hooks import child_exit, post_fork, post_request, pre_request

Each runs hookkit's handling of that hook (see ``hookkit.HOOKS`` for the
process it runs in and when) and never raises into gunicorn. To keep a hook
of your own beside hookkit's, ``hookkit.chain`` them. Complete worker exit
reasons need ``on_starting``, ``on_reload``, ``nworkers_changed``,
``pre_fork``, ``post_fork``, ``post_worker_init``, ``worker_abort``,
``worker_exit``, ``child_exit`` and ``on_exit`` together (the drop-in
``-c python:hookkit.conf`` installs them all), plus hookkit's logger class
for exit codes and signals.
"""

from __future__ import annotations

from typing import Any

from hookkit._core.runtime import RUNTIME as _RUNTIME
from hookkit._dropin import configure_from_environment as _configure_from_environment

_RUNTIME.configure_from_environment = _configure_from_environment


def on_starting(server: Any) -> None:
    """Master: just before the master is initialized, before the listeners open."""
    _RUNTIME.on_starting(server)


def on_reload(server: Any) -> None:
    """Master: on SIGHUP, after the configuration was reloaded, before new workers spawn."""
    _RUNTIME.on_reload(server)


def when_ready(server: Any) -> None:
    """Master: just after the server is started and listening."""
    _RUNTIME.when_ready(server)


def pre_fork(server: Any, worker: Any) -> None:
    """Master: just before a worker is forked."""
    _RUNTIME.pre_fork(server, worker)


def post_fork(server: Any, worker: Any) -> None:
    """Worker: just after a worker is forked, before the app is loaded."""
    _RUNTIME.post_fork(server, worker)


def post_worker_init(worker: Any) -> None:
    """Worker: just after the worker loaded the application."""
    _RUNTIME.post_worker_init(worker)


def worker_int(worker: Any) -> None:
    """Worker: when the worker receives SIGINT or SIGQUIT."""
    _RUNTIME.worker_int(worker)


def worker_abort(worker: Any) -> None:
    """Worker: when the worker receives SIGABRT: the master timed it out."""
    _RUNTIME.worker_abort(worker)


def pre_exec(server: Any) -> None:
    """Re-exec child: on SIGUSR2, in the forked child just before it executes the new master."""
    _RUNTIME.pre_exec(server)


def pre_request(worker: Any, req: Any) -> None:
    """Worker: just before the worker processes a request."""
    _RUNTIME.requests.pre_request(req)


def post_request(worker: Any, req: Any, environ: Any, resp: Any) -> None:
    """Worker: after the worker processed a request, whatever the outcome."""
    _RUNTIME.requests.post_request(req, environ, resp)


def child_exit(server: Any, worker: Any) -> None:
    """Master: just after a worker exited and was reaped."""
    _RUNTIME.child_exit(server, worker)


def worker_exit(server: Any, worker: Any) -> None:
    """Worker: as a worker exits (also in the master when a worker vanished before a kill)."""
    _RUNTIME.worker_exit(server, worker)


def nworkers_changed(server: Any, new_value: Any, old_value: Any) -> None:
    """Master: when the number of workers changes (old_value is None the first time)."""
    _RUNTIME.nworkers_changed(server, new_value, old_value)


def on_exit(server: Any) -> None:
    """Master: just before the master exits."""
    _RUNTIME.on_exit(server)


def on_dirty_starting(arbiter: Any) -> None:
    """Dirty arbiter: just before the dirty arbiter is initialized."""
    _RUNTIME.on_dirty_starting(arbiter)


def dirty_post_fork(arbiter: Any, worker: Any) -> None:
    """Dirty arbiter: just after a dirty worker is forked, in the dirty arbiter."""
    _RUNTIME.dirty_post_fork(arbiter, worker)


def dirty_worker_init(worker: Any) -> None:
    """Dirty worker: just after a dirty worker initialized its applications."""
    _RUNTIME.dirty_worker_init(worker)


def dirty_worker_exit(arbiter: Any, worker: Any) -> None:
    """Dirty arbiter: when a dirty worker has exited."""
    _RUNTIME.dirty_worker_exit(arbiter, worker)


__all__ = [
    "child_exit",
    "dirty_post_fork",
    "dirty_worker_exit",
    "dirty_worker_init",
    "nworkers_changed",
    "on_dirty_starting",
    "on_exit",
    "on_reload",
    "on_starting",
    "post_fork",
    "post_request",
    "post_worker_init",
    "pre_exec",
    "pre_fork",
    "pre_request",
    "when_ready",
    "worker_abort",
    "worker_exit",
    "worker_int",
]
