"""examples/django's settings with the test URLs (``apps.django_urls``):
gunicorn gets ``DJANGO_SETTINGS_MODULE=apps.django_settings`` and the
example on its Python path, so the example itself is what runs."""

from mysite.settings import *  # noqa: F403 - the example's settings, all of them

ROOT_URLCONF = "apps.django_urls"
