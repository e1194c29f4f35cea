"""examples/django's URLs plus two the tests need and the example does
not: a view that raises (its 500 keeps its route) and a top-level
``re_path`` (outside any ``include()``)."""

from django.http import HttpRequest, HttpResponse
from django.urls import re_path
from mysite.urls import urlpatterns as example_urlpatterns


def crash(request: HttpRequest, n: str) -> HttpResponse:
    raise RuntimeError(f"crash {n}")


def legacy(request: HttpRequest, page: str) -> HttpResponse:
    return HttpResponse(f"legacy {page}\n")


urlpatterns = [
    *example_urlpatterns,
    re_path(r"^crash/(?P<n>[0-9]+)/$", crash),
    re_path(r"^legacy/(?P<page>[a-z]+)\.html$", legacy),
]
