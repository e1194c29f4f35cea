"""The ASGI callable, ``application``: ``gunicorn -c python:hookkit.conf -k
uvicorn_worker.UvicornWorker mysite.asgi`` (or ``-k asgi``, gunicorn's own)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")

application = get_asgi_application()
