"""A Flask app with no OpenTelemetry code, as users run it under
``opentelemetry-instrument`` (tests/test_instrument_recipe.py): the contrib
Flask and requests instrumentations are applied by the auto-instrumentation,
not here.

- ``/hello/<name>``: 200, ``hello, NAME``;
- ``/fetch``: an outgoing ``requests`` call to ``DOWNSTREAM_URL`` (a loopback
  server the test runs); answers what it answered.
"""

import os

import requests
from flask import Flask

app = Flask(__name__)


@app.get("/hello/<name>")
def hello(name: str) -> str:
    return f"hello, {name}\n"


@app.get("/fetch")
def fetch() -> str:
    answer = requests.get(os.environ["DOWNSTREAM_URL"], timeout=5)
    return f"downstream said {answer.status_code}: {answer.text}"
