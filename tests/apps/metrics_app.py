"""A WSGI app for the metrics tests.

- ``/``: 200;
- ``/status/CODE``: answers CODE;
- ``/raise``: raises before start_response (the client gets 500);
- ``/sleep?S``: sleeps S seconds;
- ``/burn?S``: uses S seconds of CPU;
- ``/routed/...``: sets ``environ["hookkit.route"]`` to the raw path, as a
  careless app might (the route label must stay bounded anyway);
- ``/user``: increments the app's own prometheus_client counter, created at
  import in the worker, which must appear in hookkit's scrape.
"""

import time

from prometheus_client import Counter

USER_COUNTER = Counter("app_widgets", "Widgets the app made (an app's own metric).")


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path.startswith("/status/"):
        code = int(path.rsplit("/", 1)[1])
        start_response(f"{code} Whatever", [("Content-Type", "text/plain")])
        return [b"status\n"]
    if path == "/raise":
        raise RuntimeError("fails before start_response")
    if path == "/sleep":
        time.sleep(float(environ.get("QUERY_STRING") or "60"))
    if path == "/burn":
        deadline = time.process_time() + float(environ.get("QUERY_STRING") or "0.1")
        while time.process_time() < deadline:
            pass
    if path.startswith("/routed/"):
        environ["hookkit.route"] = path
    if path == "/user":
        USER_COUNTER.inc()
    body = b"ok\n"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "3")])
    return [body]
