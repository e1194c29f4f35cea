"""examples/django's settings with one more view (``apps.instrument_django_urls``),
for tests/test_instrument_recipe.py: gunicorn gets
``DJANGO_SETTINGS_MODULE=apps.instrument_django_settings`` (exported before
start, as ``opentelemetry-instrument``'s Django instrumentation needs) and
the example on its Python path, so the example itself is what runs."""

from mysite.settings import *  # noqa: F403 - the example's settings, all of them

ROOT_URLCONF = "apps.instrument_django_urls"
