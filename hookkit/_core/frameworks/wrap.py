"""Class-level wraps that note a framework's matched route as it is found.

Some frameworks keep the matched route template only on their own request
object (Django's ``request.resolver_match``, Falcon's ``req.uri_template``,
Pyramid's ``request.matched_route``), which is gone by the time gunicorn
calls ``post_request``. Where the framework finds the route, one method call
has both the request and the match: wrapping that method on its class, once
the app is loaded (``post_worker_init``), lets hookkit copy the template into
the WSGI environ or the ASGI scope (key ``hookkit.route``), which
``post_request`` and hookkit's ASGI middleware read. The app, its settings
and its middleware stay as they are.

Why on the class: the app object exists before ``post_worker_init`` (and
before the fork under ``--preload``); a class attribute is looked up on
every call, so instances made earlier see the wrap too.

A wrap is made once per class and method in a process, however often
``post_worker_init`` runs (a runtime reset, a worker that boots twice in
tests): a second ``wrap_method`` is a no-op. The wrapper calls the original
first and returns its result or lets its exception through unchanged; the
note runs afterwards and never raises into the framework: a failure is
handed to the reporter the runtime set (counted as hookkit's own error)
and otherwise dropped.

``hookkit.testing.reset()`` puts the originals back, unless something else
wrapped the method since (removing ours would remove theirs): such a wrap
stays, and stays known, so it is not made twice.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import Any

from hookkit._core.resets import on_reset

# What to do with a note's exception: (where, exception).
Reporter = Callable[[str, BaseException], None]
# A note: the wrapped call's positional arguments (self first) and its result.
Note = Callable[[tuple[Any, ...], Any], None]

# (class, method name) -> (the original function, hookkit's wrapper).
_WRAPS: dict[tuple[type, str], tuple[Callable[..., Any], Callable[..., Any]]] = {}
_reporter: list[Reporter] = []


def report_errors_to(reporter: Reporter | None) -> None:
    """Where the notes' failures go from now on (None: nowhere)."""
    _reporter[:] = [reporter] if reporter is not None else []


def wrap_method(owner: type, name: str, note: Note, where: str) -> bool:
    """Wrap ``owner.name`` (a method defined on ``owner`` itself) so that
    ``note`` runs after each call that returns; returns whether the method
    is wrapped now. ``where`` names the wrap in error reports."""
    if (owner, name) in _WRAPS:
        return True
    original = vars(owner).get(name)
    # A function, or a compiled one (Cython's, as in some frameworks' wheels,
    # is no ``types.FunctionType``); not a static or class method, whose
    # wrapper would be bound differently.
    if not callable(original) or isinstance(original, (staticmethod, classmethod, type)):
        return False

    def noting(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        try:
            note(args, result)
        except Exception as exc:
            _report(where, exc)
        return result

    functools.update_wrapper(noting, original)
    _WRAPS[(owner, name)] = (original, noting)
    setattr(owner, name, noting)
    return True


def is_wrapped(owner: type, name: str) -> bool:
    """Whether hookkit wrapped ``owner.name`` in this process."""
    return (owner, name) in _WRAPS


def _report(where: str, exc: Exception) -> None:
    for reporter in _reporter:
        with contextlib.suppress(Exception):  # the framework's request must go on
            reporter(where, exc)


@on_reset
def unwrap_all() -> None:
    """Put back every original still directly under hookkit's wrapper."""
    for (owner, name), (original, wrapper) in list(_WRAPS.items()):
        if vars(owner).get(name) is wrapper:
            setattr(owner, name, original)
            del _WRAPS[(owner, name)]
    _reporter.clear()
