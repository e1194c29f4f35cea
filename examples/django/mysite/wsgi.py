"""The WSGI callable, ``application``: ``gunicorn -c python:hookkit.conf mysite.wsgi``."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")

application = get_wsgi_application()
