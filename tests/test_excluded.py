"""Requests kept out (``HOOKKIT_EXCLUDED_URLS``, ``OTEL_PYTHON_EXCLUDED_URLS``):
the patterns, and the request path's side of it with the sink contract.
The real-gunicorn side (metrics, both access logs, spans, busy time) is in
tests/test_excluded_live.py."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hookkit._core.excluded import ExcludedUrls
from hookkit._core.runtime import RUNTIME
from hookkit._core.settings import ConfigError, Settings
from hookkit._core.sink import RequestFinished, RequestStarted, Sink
from hookkit.hooks import post_request, pre_request
from hookkit.testing import FakeRequest, FakeResponse, FakeWorker


class Keeper(Sink):
    """Notes what reaches each hot-path method."""

    name = "keeper"

    def __init__(self) -> None:
        self.started: list[RequestStarted] = []
        self.finished: list[RequestFinished] = []
        self.excluded: list[RequestFinished] = []

    def request_started(self, request: RequestStarted) -> None:
        self.started.append(request)

    def request_finished(self, request: RequestFinished) -> None:
        self.finished.append(request)

    def request_excluded(self, request: RequestFinished) -> None:
        self.excluded.append(request)


def excluded(setting: str | None, environ: dict[str, str] | None = None) -> ExcludedUrls:
    loaded = ExcludedUrls.load(setting, environ or {})
    assert loaded is not None
    return loaded


def request(path: str, host: str = "shop.test", scheme: str = "http") -> FakeRequest:
    return FakeRequest("GET", path, headers=[("HOST", host)], scheme=scheme)


def test_nothing_configured_excludes_nothing() -> None:
    assert ExcludedUrls.load(None, {}) is None
    assert ExcludedUrls.load(" , ", {"OTEL_PYTHON_EXCLUDED_URLS": ""}) is None


def test_a_pattern_is_searched_in_the_path_and_in_the_url() -> None:
    """``^/healthz$`` matches the path; the contrib's URL-style patterns
    match ``scheme://host/path``; the query never takes part."""
    urls = excluded(r"^/healthz$,^https://internal\.test/,readyz")
    cases = [
        (request("/healthz"), True),
        (request("/healthz/deep"), False),
        (request("/api", host="internal.test", scheme="https"), True),
        (request("/api", host="internal.test"), False),
        (request("/v1/readyz"), True),
        (request("/users"), False),
    ]
    assert [expected for _, expected in cases] == [urls.excludes(req) for req, _ in cases]


def test_the_otel_variable_applies_with_hookkits_and_flags_stay_per_pattern() -> None:
    urls = excluded("^/healthz$", {"OTEL_PYTHON_EXCLUDED_URLS": "(?i)/METRICS"})
    assert [True, True, False] == [
        urls.excludes(request(path)) for path in ("/healthz", "/metrics", "/users")
    ]


def test_the_asgi_requests_raw_headers_give_the_host() -> None:
    """gunicorn's ASGI request keeps lower-case bytes (``headers_bytes``)."""

    class AsgiRequest:
        path = "/api"
        scheme = "http"
        headers_bytes = ((b"host", b"internal.test"),)

    assert excluded(r"//internal\.test/").excludes(AsgiRequest())


@pytest.mark.parametrize(
    ("setting", "environ", "named"),
    [
        ("/ok,/bad(", {}, "HOOKKIT_EXCLUDED_URLS"),
        (None, {"OTEL_PYTHON_EXCLUDED_URLS": "/bad["}, "OTEL_PYTHON_EXCLUDED_URLS"),
    ],
)
def test_a_bad_pattern_is_refused_naming_its_variable(
    setting: str | None, environ: dict[str, str], named: str
) -> None:
    with pytest.raises(ConfigError, match=named):
        ExcludedUrls.load(setting, environ)


def test_a_bad_setting_is_refused_when_the_settings_are_read() -> None:
    with pytest.raises(ConfigError, match="HOOKKIT_EXCLUDED_URLS"):
        Settings.load({"HOOKKIT_EXCLUDED_URLS": "/bad("})


def test_a_bad_otel_pattern_stops_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    """``OTEL_PYTHON_EXCLUDED_URLS`` is read as hookkit is configured: a bad
    pattern stops start-up there, with every sink left as it was."""
    monkeypatch.setenv("OTEL_PYTHON_EXCLUDED_URLS", "/bad(")
    keeper = Keeper()
    with pytest.raises(ConfigError, match="OTEL_PYTHON_EXCLUDED_URLS"):
        RUNTIME.use(Settings(), [keeper])
    assert keeper not in RUNTIME.dispatcher.sinks


def one(path: str, worker: Any) -> None:
    req = FakeRequest("GET", path, headers=[("HOST", "shop.test")])
    pre_request(worker, req)
    post_request(worker, req, {}, FakeResponse("200 OK", sent=2))


def test_an_excluded_request_reaches_only_request_excluded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A probe: no request_started, no request_finished; its end, with its
    duration, reaches request_excluded; other requests are untouched."""
    keeper = Keeper()
    RUNTIME.use(Settings(excluded_urls="^/healthz$"), [keeper])
    worker = FakeWorker()
    for path in ("/healthz", "/users", "/healthz"):
        one(path, worker)

    assert (["/users"], ["/users"]) == (
        [r.path for r in keeper.started],
        [r.path for r in keeper.finished],
    )
    assert ["/healthz", "/healthz"] == [r.path for r in keeper.excluded]
    assert all(r.duration >= 0 and r.status == 200 for r in keeper.excluded)


def test_gunicorns_access_line_is_told_about_an_excluded_request_in_flight() -> None:
    """gunicorn writes its access line before post_request: the request
    path answers for a request still in flight."""
    RUNTIME.use(Settings(excluded_urls="^/healthz$"), [Keeper()])
    worker = FakeWorker()
    probe, page = FakeRequest("GET", "/healthz"), FakeRequest("GET", "/users")
    pre_request(worker, probe)
    pre_request(worker, page)
    assert (True, False) == (
        RUNTIME.requests.is_excluded(probe),
        RUNTIME.requests.is_excluded(page),
    )
    post_request(worker, probe, {}, FakeResponse())
    post_request(worker, page, {}, FakeResponse())
    assert not RUNTIME.requests.is_excluded(probe)


# The patterns hookkit folds together and the one it searches in the path
# alone must decide exactly as searching each pattern in both would.
PATTERNS = [
    r"^/healthz$",
    r"^/readyz$",
    r"^/livez",
    r"^/(a|b)$",
    r"^/x|internal",
    r"(?i)^/PING$",
    r"(?m)^/m",
    r"^https://internal\.test/",
    r"readyz",
    r"(z)\1",
    r"(?P<n>q)(?P=n)",
    r"^/(?P<n>k)$",
    r"\.test/h",
]


@settings(max_examples=300, deadline=None)
@given(
    chosen=st.lists(st.sampled_from(PATTERNS), min_size=1, max_size=5),
    path=st.text(alphabet="/abxzqkhmPINGreadyzlive.", max_size=12).map(lambda p: "/" + p),
    host=st.sampled_from(["internal.test", "shop.test", "", "a\nb"]),
    scheme=st.sampled_from(["http", "https"]),
)
def test_folded_patterns_decide_as_each_pattern_searched_in_path_and_url(
    chosen: list[str], path: str, host: str, scheme: str
) -> None:
    urls = excluded(",".join(chosen))
    naive = any(
        re.search(pattern, path) or re.search(pattern, f"{scheme}://{host}{path}")
        for pattern in chosen
    )
    assert naive == urls.excludes(request(path, host, scheme))


def test_the_kubernetes_probes_are_searched_once_in_the_path_alone() -> None:
    """``^/...`` patterns cannot be found in ``scheme://host/path``: the
    usual probe set is one search of the path, no URL is built."""
    urls = excluded(r"^/healthz$,^/readyz$,^/livez$")
    assert 1 == len(urls.path_only.patterns)
    assert urls.anywhere is None
    mixed = excluded(r"^/healthz$,^https://internal\.test/,(?i)^/PING$")
    assert 2 == len(mixed.path_only.patterns)  # the flagged one on its own
    assert mixed.anywhere is not None
