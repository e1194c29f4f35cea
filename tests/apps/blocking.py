"""A WSGI app that blocks its worker without ever yielding, for timeout tests.

- ``/``: 200 ok;
- ``/spin?S``: busy-waits S seconds inside ``stuck_in_spin``. Pure Python
  that never sleeps: a gevent worker's hub (unlike with ``/sleep`` of
  ``apps.wsgi``, whose ``time.sleep`` gevent patches) cannot run, the worker
  stops beating and gunicorn's timeout aborts it.
"""

import time


def stuck_in_spin(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def app(environ, start_response):
    if environ["PATH_INFO"] == "/spin":
        stuck_in_spin(float(environ.get("QUERY_STRING") or "30"))
    body = b"ok\n"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
