"""The polls app's views: plain text, no database."""

from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_POST


def index(request: HttpRequest) -> HttpResponse:
    return HttpResponse("polls\n")


def detail(request: HttpRequest, question_id: int) -> HttpResponse:
    return HttpResponse(f"question {question_id}\n")


def results(request: HttpRequest, question_id: int) -> HttpResponse:
    return HttpResponse(f"results of question {question_id}\n")


@require_POST
def vote(request: HttpRequest, question_id: int) -> HttpResponse:
    """CSRF-protected, as every POST view is by default: a POST without the
    token is refused (403) before the view runs, and still has its route."""
    return HttpResponse(f"voted on question {question_id}\n")


def tag(request: HttpRequest, tag: str) -> HttpResponse:
    return HttpResponse(f"tag {tag}\n")


def archive(request: HttpRequest, year: str) -> HttpResponse:
    return HttpResponse(f"archive of {year}\n")
