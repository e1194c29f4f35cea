"""A WSGI app that answers ``gc.get_freeze_count()`` of its worker: how
many objects the worker holds in the GC's permanent generation (frozen by
the master before the fork)."""

import gc


def app(environ, start_response):
    body = f"{gc.get_freeze_count()}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
