"""The WSGI app the integration tests serve.

- ``/``: 200 hello;
- ``/sleep?S``: sleeps S seconds inside ``stuck_in_sleep`` (so a stack names it);
- ``/raise-before``: raises before ``start_response`` (the client gets 500);
- ``/raise-after-start``: calls ``start_response("200 OK")``, then raises
  before any body (gunicorn answers 500: nothing was sent yet);
- ``/raise-mid-body``: sends headers and a first chunk, then raises (the
  client got 200 and a truncated body);
- ``/exit?CODE``: the worker process exits at once with CODE (``os._exit``);
- ``/stream?N``: N chunks of 10 bytes.
"""

import os
import time


def stuck_in_sleep(seconds):
    time.sleep(seconds)


def app(environ, start_response):
    path = environ["PATH_INFO"]
    query = environ.get("QUERY_STRING", "")
    if path == "/sleep":
        stuck_in_sleep(float(query or "60"))
    elif path == "/raise-before":
        raise RuntimeError("before start_response")
    elif path == "/raise-after-start":
        start_response("200 OK", [("Content-Type", "text/plain")])
        raise RuntimeError("after start_response")
    elif path == "/raise-mid-body":
        return mid_body(start_response)
    elif path == "/exit":
        os._exit(int(query or "7"))
    elif path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"0123456789"] * int(query or "3")
    body = b"hello\n"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def mid_body(start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield b"first chunk\n"
    raise RuntimeError("in the middle of the body")
