"""Pyramid's route template: ``request.matched_route.pattern``.

Pyramid keeps the matched route on its request (``request.matched_route``)
and, since Pyramid 2, nowhere in the WSGI environ. A ``ContextFound``
subscriber would need the app's configuration; the router's
``handle_request`` is bound into the tweens when the app is made, before
hookkit could wrap it. Every request's routes are matched by calling the
routes mapper (``pyramid.urldispatch.RoutesMapper.__call__``), which returns
the route whose pattern matched and whose predicates held: hookkit wraps it
on the class and copies the pattern, as the app wrote it (a
``route_prefix`` included), into ``request.environ["hookkit.route"]``. A
path no route matches has no route.
"""

from __future__ import annotations

import sys
from collections.abc import MutableMapping
from typing import Any

from hookkit._core.frameworks.wrap import wrap_method
from hookkit._core.live import note_route as note_live_route

MODULE = "pyramid.urldispatch"


def watch() -> bool:
    """Wrap ``RoutesMapper.__call__`` if the app imported Pyramid's URL
    dispatch; returns whether it is wrapped."""
    mapper = getattr(sys.modules.get(MODULE), "RoutesMapper", None)
    if not isinstance(mapper, type):
        return False
    return wrap_method(mapper, "__call__", note_route, "pyramid route")


def note_route(args: tuple[Any, ...], info: Any) -> None:
    """After ``mapper(request)`` returned ``{"match": ..., "route": ...}``:
    the route's pattern into the request's environ."""
    if not isinstance(info, dict) or len(args) < 2:
        return
    pattern = getattr(info.get("route"), "pattern", None)
    if not isinstance(pattern, str) or not pattern:
        return
    environ = getattr(args[1], "environ", None)
    if isinstance(environ, MutableMapping):
        environ["hookkit.route"] = pattern
        note_live_route(pattern)
