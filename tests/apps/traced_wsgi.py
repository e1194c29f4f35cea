"""A WSGI app for the tracing tests. Each answer's body is the trace id
and span id current inside the app (``TRACE_ID SPAN_ID``), so a test can tell
which span the app ran under.

- ``/``: 200, and the app makes a span of its own (``app.work``);
- ``/status/CODE``: answers CODE;
- ``/raise``: raises before start_response (the client gets 500);
- ``/sleep?S``: sleeps S seconds inside ``stuck_in_sleep``;
- ``/users/ID``: sets ``environ["hookkit.route"] = "/users/{id}"``;
- ``/stream?N``: N chunks, 0.1 s apart;
- ``/healthz``: 200 (for excluded-URL tests).
"""

import time

from opentelemetry import trace

tracer = trace.get_tracer("tests.apps.traced_wsgi")


def stuck_in_sleep(seconds):
    time.sleep(seconds)


def current_ids():
    context = trace.get_current_span().get_span_context()
    return f"{context.trace_id:032x} {context.span_id:016x}\n".encode()


def app(environ, start_response):
    path = environ["PATH_INFO"]
    query = environ.get("QUERY_STRING", "")
    body = current_ids()
    status = "200 OK"
    if path == "/":
        with tracer.start_as_current_span("app.work"):
            pass
    elif path.startswith("/status/"):
        status = f"{int(path.rsplit('/', 1)[1])} Whatever"
    elif path == "/raise":
        raise RuntimeError("fails before start_response")
    elif path == "/sleep":
        stuck_in_sleep(float(query or "60"))
    elif path.startswith("/users/"):
        environ["hookkit.route"] = "/users/{id}"
    elif path == "/stream":
        start_response(status, [("Content-Type", "text/plain")])
        return stream(body, int(query or "3"))
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def stream(first, chunks):
    yield first
    for _ in range(chunks):
        time.sleep(0.1)
        yield b"chunk\n"
