"""Django's route template: ``request.resolver_match.route``.

The full matched pattern as Django spells it, which is what OpenTelemetry's
Django instrumentation reports as ``http.route``: the ``include()``
prefixes joined, no leading slash (``polls/<int:question_id>/``), a
``re_path`` pattern as its regular expression (inside an ``include()``
without its leading ``^``: ``polls/archive/(?P<year>[0-9]{4})/$``), a
language prefix from ``i18n_patterns`` included (one route per language).
The site root's pattern is empty: like OpenTelemetry, hookkit then has no
route.

Where it is read: Django's signals cannot carry it (``request_started``
fires before the URL is resolved), and adding a middleware or changing the
settings at start-up would change the user's app. Both request paths, WSGI
(``get_response``) and ASGI (``get_response_async``), resolve the URL in
``BaseHandler.resolve_request``, after the ``process_request`` middleware
and before the view: a request that middleware then refuses (a CSRF 403) or
whose view raises still has its route; a path that matches no pattern
raises ``Resolver404`` there and has none. hookkit wraps that method on the
class (``hookkit._core.frameworks.wrap``) and copies the route into the
request's WSGI environ (``WSGIRequest.environ``, the dict gunicorn passed)
or ASGI scope (``ASGIRequest.scope``, the dict the server, and so hookkit's
ASGI middleware, passed), under ``hookkit.route``.
"""

from __future__ import annotations

import sys
from collections.abc import MutableMapping
from typing import Any

from hookkit._core.frameworks.wrap import wrap_method
from hookkit._core.live import note_route as note_live_route

MODULE = "django.core.handlers.base"


def watch() -> bool:
    """Wrap ``BaseHandler.resolve_request`` if the app imported Django's
    handlers; returns whether it is wrapped."""
    handler = getattr(sys.modules.get(MODULE), "BaseHandler", None)
    if not isinstance(handler, type):
        return False
    return wrap_method(handler, "resolve_request", note_route, "django route")


def note_route(args: tuple[Any, ...], match: Any) -> None:
    """After ``resolve_request(self, request)`` returned ``match``: the
    route into the request's environ or scope."""
    route = getattr(match, "route", None)
    if not isinstance(route, str) or not route or len(args) < 2:
        return
    request = args[1]
    carrier = getattr(request, "scope", None)  # ASGIRequest
    if not isinstance(carrier, MutableMapping):
        carrier = getattr(request, "environ", None)  # WSGIRequest
    if isinstance(carrier, MutableMapping):
        carrier["hookkit.route"] = route
        note_live_route(route)
