"""A Flask app for the live-state tests: requests that stay in flight.

- ``/``: 200 ok;
- ``/slow/<name>``: touches ``entered-<name>`` in the working directory (so
  a test knows the request is in the app), then sleeps 60 s;
- ``/exit/<int:code>``: the worker process exits at once with CODE
  (``os._exit``), inside the request.
"""

import os
import time
from pathlib import Path

from flask import Flask

app = Flask(__name__)


@app.route("/")
def index():
    return "ok\n"


@app.route("/slow/<name>")
def slow(name):
    Path(f"entered-{name}").touch()
    time.sleep(60)
    return "late\n"


@app.route("/exit/<int:code>")
def leave(code):
    os._exit(code)
