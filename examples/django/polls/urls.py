"""The polls app's URLs, included under ``polls/``: a path converter
(``<int:...>``, ``<slug:...>``) and a regular expression (``re_path``).
The route hookkit reports is the full pattern as Django joins it, for
instance ``polls/<int:question_id>/`` or
``polls/archive/(?P<year>[0-9]{4})/$`` (a ``re_path``'s regular
expression, its ``^`` dropped inside an ``include()``)."""

from django.urls import path, re_path

from polls import views

app_name = "polls"
urlpatterns = [
    path("", views.index, name="index"),
    path("<int:question_id>/", views.detail, name="detail"),
    path("<int:question_id>/results/", views.results, name="results"),
    path("<int:question_id>/vote/", views.vote, name="vote"),
    path("tags/<slug:tag>/", views.tag, name="tag"),
    re_path(r"^archive/(?P<year>[0-9]{4})/$", views.archive, name="archive"),
]
