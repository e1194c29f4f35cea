"""Route templates from frameworks that do not leave them where
``post_request`` can read them.

Flask matches the request's rule (``request.url_rule``) but, when its
request context ends, inside the app and so before gunicorn calls
``post_request``, it sets ``environ["werkzeug.request"]`` to None. hookkit
listens to Flask's ``request_started`` signal instead and copies the rule
into ``environ["hookkit.route"]``, which Flask leaves alone.
"""

from __future__ import annotations

import sys
from typing import Any


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
    from flask import request

    rule = request.url_rule
    if rule is not None:
        request.environ["hookkit.route"] = rule.rule
