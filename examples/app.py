"""A hello-world WSGI app for the examples: ``gunicorn -c python:hookkit.conf app:app``."""


def app(environ, start_response):
    body = b"hello\n"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
