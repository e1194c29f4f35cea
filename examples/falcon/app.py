"""Falcon under hookkit: each request named from Falcon's route template.

Run it from this directory (self-contained: no gunicorn.conf.py here, so
only the drop-in's defaults and the environment apply)::

    pip install hookkit falcon
    cd examples/falcon
    gunicorn -c python:hookkit.conf app:app
    curl http://127.0.0.1:8000/items/42
    curl http://127.0.0.1:8000/users/ada/items
    curl http://127.0.0.1:9191/metrics   # hookkit's metrics (HOOKKIT_METRICS_BIND)

Falcon keeps the matched template on its request (``req.uri_template``),
which is gone when gunicorn's ``post_request`` runs. Once the app is loaded,
hookkit wraps the method where Falcon finds it (``App._get_responder``, on
the class, for every app) and copies the template into the request's
environ: ``/items/42`` is counted under
``http_server_request_duration_seconds_count{http_route="/items/{item_id:int}"}``
and, with ``OTEL_EXPORTER_OTLP_ENDPOINT`` set, gives a SERVER span named
``GET /items/{item_id:int}``. Nothing in this file mentions hookkit.

A path that matches no route (a 404) has no route: ``http_route=""``.
"""

import falcon


class Item:
    def on_get(self, req: falcon.Request, resp: falcon.Response, item_id: int) -> None:
        resp.media = {"item_id": item_id}


class UserItems:
    def on_get(self, req: falcon.Request, resp: falcon.Response, user: str) -> None:
        resp.media = {"user": user, "items": []}

    def on_post(self, req: falcon.Request, resp: falcon.Response, user: str) -> None:
        resp.status = falcon.HTTP_201
        resp.media = {"user": user, "created": True}


app = falcon.App()
app.add_route("/items/{item_id:int}", Item())
app.add_route("/users/{user}/items", UserItems())
