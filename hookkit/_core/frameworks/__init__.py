"""Route templates from the frameworks that keep them to themselves.

``hookkit._core.routes`` reads the route where ``post_request`` can see it:
``environ["hookkit.route"]``, werkzeug's rule, Bottle's route. Flask, Django,
Falcon and Pyramid keep theirs on objects that are gone by then; once the
app is loaded (``post_worker_init``), ``watch_routes`` makes each of them
that the app imported copy its route into the environ or the ASGI scope,
under ``hookkit.route``:

- Flask: a listener of its ``request_started`` signal (``routes``);
- Django, Falcon, Pyramid: a class-level wrap of the method where each
  matches the route (``django``, ``falcon``, ``pyramid``, over ``wrap``).

A framework the app did not import is not imported here: each is looked up
in ``sys.modules``, so an app without any of them pays a few dictionary
look-ups, once per worker.
"""

from __future__ import annotations

from collections.abc import Callable

from hookkit._core.frameworks import django, falcon, pyramid
from hookkit._core.frameworks.wrap import Reporter, report_errors_to
from hookkit._core.routes import watch_flask_routes

WATCHERS: tuple[tuple[str, Callable[[], bool]], ...] = (
    ("flask", watch_flask_routes),
    ("django", django.watch),
    ("falcon", falcon.watch),
    ("pyramid", pyramid.watch),
)


def watch_routes(report: Reporter | None = None) -> list[str]:
    """Watch the routes of every framework the app imported; returns their
    names. ``report(where, exception)`` is told of a route that could not be
    noted (the request itself goes on)."""
    report_errors_to(report)
    watched = []
    for name, watch in WATCHERS:
        try:
            if watch():
                watched.append(name)
        except Exception as exc:  # one framework's surprise must not cost the others
            if report is not None:
                report(f"{name} routes", exc)
    return watched
