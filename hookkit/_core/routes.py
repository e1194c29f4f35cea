"""Route templates: where the application's matched route is read from.

``route_from_environ`` reads the WSGI environ key ``hookkit.route`` (any
framework can set it; hookkit sets it for Flask, Django, Falcon and Pyramid,
see ``hookkit._core.frameworks``), werkzeug's matched rule or Bottle's
matched route; ASGI apps' routes come from the scope
(``hookkit._core.asgi.route_from_scope``).

Flask matches the request's rule (``request.url_rule``) but, when its
request context ends, inside the app and so before gunicorn calls
``post_request``, it sets ``environ["werkzeug.request"]`` to None. hookkit
listens to Flask's ``request_started`` signal instead and copies the rule
into ``environ["hookkit.route"]``, which Flask leaves alone.

Each watcher (this one, and those of ``hookkit._core.frameworks``) also
hands the route to ``hookkit._core.live.note_route`` as soon as it is
found, so the worker's live state names it while the request runs.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from hookkit._core.live import note_route as note_live_route


def route_from_environ(environ: Mapping[str, Any] | None) -> str | None:
    """The route template the application matched, if it says: the WSGI
    environ key ``hookkit.route``, Flask's and werkzeug's matched rule
    (``environ["werkzeug.request"].url_rule.rule``), or Bottle's
    (``environ["bottle.route"].rule``, which Bottle leaves in the environ)."""
    if not environ:
        return None
    route = environ.get("hookkit.route")
    if isinstance(route, str):
        return route
    rule = getattr(getattr(environ.get("werkzeug.request"), "url_rule", None), "rule", None)
    if isinstance(rule, str):
        return rule
    rule = getattr(environ.get("bottle.route"), "rule", None)
    return rule if isinstance(rule, str) else None


def watch_flask_routes() -> bool:
    """Connect the Flask listener, if the app imported Flask; returns
    whether it did. Connecting twice is harmless (blinker keeps one)."""
    flask = sys.modules.get("flask")
    signal = getattr(flask, "request_started", None)
    if signal is None:
        return False
    signal.connect(_note_flask_route)
    return True


def _note_flask_route(_sender: object, **_extra: Any) -> None:
    """Copy the matched rule into the WSGI environ (no rule: a 404)."""
    # Flask is imported: the signal that called this is Flask's.
    request = sys.modules["flask"].request
    rule = request.url_rule
    if rule is not None:
        request.environ["hookkit.route"] = rule.rule
        note_live_route(rule.rule)  # the worker's live state shows it from now
