"""The project's URLs: the polls app included under ``polls/``, as in
Django's tutorial. hookkit names each request from the full pattern that
matched, as Django joins it (``polls/<int:question_id>/``)."""

from django.urls import include, path

urlpatterns = [
    path("polls/", include("polls.urls")),
]
