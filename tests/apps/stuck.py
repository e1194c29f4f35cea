"""A WSGI app with one request that hangs in a function with a known name,
for the stacks-on-demand tests (tests/test_status_stacks_live.py).

- ``/hang``: writes this worker's pid to ``hung.pid`` in the server's
  working directory, then sleeps in ``stuck_in_here`` (30 s; the test
  stops the server long before).
- anything else: 200 ok at once.
"""

import os
import time


def stuck_in_here():
    time.sleep(30)


def app(environ, start_response):
    if environ["PATH_INFO"] == "/hang":
        with open("hung.pid.tmp", "w") as out:
            out.write(str(os.getpid()))
        os.replace("hung.pid.tmp", "hung.pid")
        stuck_in_here()
    body = b"ok\n"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
