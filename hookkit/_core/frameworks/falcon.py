"""Falcon's route template: ``req.uri_template``.

Falcon sets the matched template on its own request object
(``req.uri_template``), never in the WSGI environ or the ASGI scope. Its
apps, WSGI ``falcon.App`` and ASGI ``falcon.asgi.App`` (a subclass), find it
in ``App._get_responder(req)``, which returns it last, and set it on the
request from that. hookkit wraps that method on the class and copies the
template into ``req.env`` (WSGI) or ``req.scope`` (ASGI) under
``hookkit.route``. A path that matches no route, or only a sink or a static
route, has no template and no route.

Why not the router's ``find``: each app binds its router's ``find`` once,
when the app is made, before hookkit could wrap it.
"""

from __future__ import annotations

import sys
from collections.abc import MutableMapping
from typing import Any

from hookkit._core.frameworks.wrap import wrap_method
from hookkit._core.live import note_route as note_live_route

MODULE = "falcon.app"


def watch() -> bool:
    """Wrap ``falcon.App._get_responder`` if the app imported Falcon;
    returns whether it is wrapped."""
    app = getattr(sys.modules.get(MODULE), "App", None)
    if not isinstance(app, type):
        return False
    return wrap_method(app, "_get_responder", note_route, "falcon route")


def note_route(args: tuple[Any, ...], found: Any) -> None:
    """After ``_get_responder(self, req)`` returned ``(responder, params,
    resource, uri_template)``: the template into the request's environ or
    scope."""
    if not isinstance(found, tuple) or len(args) < 2:
        return
    template = found[-1]
    if not isinstance(template, str) or not template:
        return
    request = args[1]
    carrier = getattr(request, "scope", None)  # falcon.asgi.Request
    if not isinstance(carrier, MutableMapping):
        carrier = getattr(request, "env", None)  # falcon.Request
    if isinstance(carrier, MutableMapping):
        carrier["hookkit.route"] = template
        note_live_route(template)
