"""examples/django's URLs plus a view that calls out with ``requests``
(``fetch/``, to ``DOWNSTREAM_URL``, a loopback server the test runs): the
contrib requests instrumentation's CLIENT span nests under the request's."""

import os

import requests
from django.http import HttpRequest, HttpResponse
from django.urls import path
from mysite.urls import urlpatterns as example_urlpatterns


def fetch(request: HttpRequest) -> HttpResponse:
    answer = requests.get(os.environ["DOWNSTREAM_URL"], timeout=5)
    return HttpResponse(f"downstream said {answer.status_code}: {answer.text}")


urlpatterns = [*example_urlpatterns, path("fetch/", fetch)]
