"""A WSGI app whose requests can hang until the test releases them, for the
status page's tests (a worker seen busy with its request).

- ``/hang/...``: waits inside ``hang_in_view`` until a file named
  ``release`` exists in the server's working directory (the test creates
  it at the end), at most 120 s; then 200.
- anything else: 200 ok at once.
"""

import os
import time

RELEASE = "release"


def hang_in_view(limit=120.0):
    end = time.monotonic() + limit
    while not os.path.exists(RELEASE) and time.monotonic() < end:
        time.sleep(0.05)


def app(environ, start_response):
    if environ["PATH_INFO"].startswith("/hang"):
        hang_in_view()
    body = b"ok\n"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
