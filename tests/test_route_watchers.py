"""The route watchers of ``hookkit._core.frameworks``, in process: the
class-level wrap (made once, never raising into the framework, undone by
``hookkit.testing.reset()``), and each framework's real app copying its
route template into the WSGI environ or the ASGI scope it was given, the
very dict hookkit reads after the request.

The real-gunicorn tests are ``test_routes_django.py`` and
``test_routes_frameworks.py``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hookkit._core import frameworks
from hookkit._core.frameworks import django as django_watch
from hookkit._core.frameworks import falcon as falcon_watch
from hookkit._core.frameworks import pyramid as pyramid_watch
from hookkit._core.frameworks.wrap import is_wrapped, wrap_method
from hookkit._core.routes import route_from_environ
from hookkit.testing import reset

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"


# -- the wrap ------------------------------------------------------------------


class Finder:
    """A stand-in for a framework's class: ``find`` returns what it is given."""

    def find(self, value: object) -> object:
        if isinstance(value, Exception):
            raise value
        return value


def test_a_method_is_wrapped_once_however_often_it_is_asked() -> None:
    """A second wrap (a second post_worker_init) is a no-op: one note per call."""
    notes: list[object] = []
    assert wrap_method(Finder, "find", lambda args, result: notes.append(result), "t")
    wrapper = vars(Finder)["find"]
    assert wrap_method(Finder, "find", lambda args, result: notes.append(result), "t")

    assert ("x", ["x"]) == (Finder().find("x"), notes)
    assert wrapper is vars(Finder)["find"]
    assert "find" == Finder.find.__name__


def test_a_failing_note_never_reaches_the_caller() -> None:
    """The note raises: the method's result still comes back, and the
    reporter hears of it; a reporter that raises too is dropped."""
    heard: list[tuple[str, str]] = []

    def note(args: tuple[Any, ...], result: object) -> None:
        raise RuntimeError("cannot read the route")

    def report(where: str, exc: BaseException) -> None:
        heard.append((where, str(exc)))
        raise ValueError("the reporter fails too")

    frameworks.wrap.report_errors_to(report)
    wrap_method(Finder, "find", note, "finder route")

    assert "x" == Finder().find("x")
    assert [("finder route", "cannot read the route")] == heard


def test_the_methods_own_exception_goes_through_unnoted() -> None:
    """The framework's own exception (Django's Resolver404) is its to raise:
    unchanged, and no note."""
    notes: list[object] = []
    wrap_method(Finder, "find", lambda args, result: notes.append(result), "t")
    error = LookupError("no route")
    with pytest.raises(LookupError) as raised:
        Finder().find(error)
    assert (error, []) == (raised.value, notes)


def test_reset_puts_the_original_back() -> None:
    original = vars(Finder)["find"]
    wrap_method(Finder, "find", lambda args, result: None, "t")
    reset()
    assert (original, False) == (vars(Finder)["find"], is_wrapped(Finder, "find"))


def test_a_wrap_wrapped_again_by_another_library_stays() -> None:
    """Another library wrapped hookkit's wrapper: reset leaves both (taking
    ours out would take theirs), and hookkit does not wrap a second time."""
    original = vars(Finder)["find"]
    notes: list[object] = []
    wrap_method(Finder, "find", lambda args, result: notes.append(result), "t")
    ours = vars(Finder)["find"]

    def theirs(self: Finder, value: object) -> object:
        return ours(self, value)

    Finder.find = theirs  # type: ignore[method-assign]
    try:
        reset()
        assert wrap_method(Finder, "find", lambda args, result: notes.append(result), "t")
        assert ("x", ["x"]) == (Finder().find("x"), notes)
    finally:
        Finder.find = original  # type: ignore[method-assign]


def test_only_a_method_of_the_class_itself_is_wrapped() -> None:
    """Nothing to wrap (an inherited, missing, static or class method, a
    plain attribute): no wrap."""

    class Sub(Finder):
        number = 3

        @staticmethod
        def static() -> None: ...

        @classmethod
        def klass(cls) -> None: ...

    for owner, name in [
        (Sub, "find"),
        (Sub, "missing"),
        (Sub, "static"),
        (Sub, "klass"),
        (Sub, "number"),
    ]:
        assert not wrap_method(owner, name, lambda args, result: None, "t"), name


def test_frameworks_not_imported_are_not_imported(monkeypatch: pytest.MonkeyPatch) -> None:
    """An app with none of them: nothing watched, nothing imported."""
    names = [name for name in sys.modules if name.split(".")[0] in FRAMEWORKS]
    for name in names:
        monkeypatch.delitem(sys.modules, name)
    assert [] == frameworks.watch_routes()
    assert [] == [name for name in sys.modules if name.split(".")[0] in FRAMEWORKS]


FRAMEWORKS = ("django", "falcon", "pyramid", "flask")


def test_a_watcher_that_fails_costs_no_other(monkeypatch: pytest.MonkeyPatch) -> None:
    """One watcher raises: it is reported and the others still watch."""
    import falcon  # noqa: F401 - the app imported Falcon

    def broken() -> bool:
        raise RuntimeError("surprise")

    heard: list[str] = []
    monkeypatch.setattr(
        frameworks, "WATCHERS", (("broken", broken), ("falcon", falcon_watch.watch))
    )
    assert ["falcon"] == frameworks.watch_routes(lambda where, exc: heard.append(where))
    assert ["broken routes"] == heard


@pytest.mark.parametrize(
    ("note", "args", "result"),
    [
        (django_watch.note_route, (), None),
        (django_watch.note_route, (None, object()), object()),
        (django_watch.note_route, (None, object()), type("Match", (), {"route": 3})()),
        (falcon_watch.note_route, (None, object()), (None, None, None, "/x")),
        (falcon_watch.note_route, (None, object()), None),
        (pyramid_watch.note_route, (None, object()), {"route": None}),
        (pyramid_watch.note_route, (None, object()), ["not", "a", "dict"]),
    ],
)
def test_notes_ignore_what_they_do_not_recognise(note: Any, args: Any, result: Any) -> None:
    """Odd shapes (no request, no route, a request without environ or scope):
    nothing written, nothing raised."""
    note(args, result)


# -- Django --------------------------------------------------------------------


def copied(example: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """examples/``example`` copied out of the checkout (whose examples/
    ships in the wheel: no bytecode written there)."""
    where = tmp_path_factory.mktemp("examples") / example
    shutil.copytree(ROOT / "examples" / example, where)
    return str(where)


@pytest.fixture(scope="module")
def django_project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """examples/django with the test URLs, set up in this process."""
    added = [copied("django", tmp_path_factory), str(TESTS)]
    sys.path[:0] = added
    before = os.environ.get("DJANGO_SETTINGS_MODULE")
    os.environ["DJANGO_SETTINGS_MODULE"] = "apps.django_settings"
    import django

    django.setup()
    yield
    for path in added:
        sys.path.remove(path)
    if before is None:
        del os.environ["DJANGO_SETTINGS_MODULE"]
    else:
        os.environ["DJANGO_SETTINGS_MODULE"] = before


def wsgi_call(app: Any, path: str, method: str = "GET") -> tuple[str, dict[str, Any]]:
    """``path`` through a WSGI app: (status, the environ it was given)."""
    from werkzeug.test import EnvironBuilder

    environ = EnvironBuilder(path=path, method=method, base_url="http://127.0.0.1/").get_environ()
    statuses: list[str] = []

    def start_response(status: str, headers: Any, exc_info: Any = None) -> None:
        statuses.append(status)

    body = app(environ, start_response)
    b"".join(body)
    getattr(body, "close", lambda: None)()
    return statuses[0], environ


def asgi_call(app: Any, path: str, method: str = "GET") -> tuple[int, dict[str, Any]]:
    """``path`` through an ASGI app: (status, the scope it was given)."""
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    sent: list[dict[str, Any]] = []
    received: list[bool] = []

    async def receive() -> dict[str, Any]:
        if not received:
            received.append(True)
            return {"type": "http.request", "body": b"", "more_body": False}
        while not sent or sent[-1].get("more_body", True):
            await asyncio.sleep(0.001)  # Django listens for a disconnect meanwhile
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "more_body": True}
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], scope


DJANGO = [
    ("GET", "/polls/7/", "200", "polls/<int:question_id>/"),
    ("GET", "/polls/archive/2024/", "200", "polls/archive/(?P<year>[0-9]{4})/$"),
    ("GET", "/legacy/faq.html", "200", r"^legacy/(?P<page>[a-z]+)\.html$"),
    ("POST", "/polls/7/vote/", "403", "polls/<int:question_id>/vote/"),
    ("GET", "/crash/7/", "500", "^crash/(?P<n>[0-9]+)/$"),
    ("GET", "/nope/", "404", None),
    ("GET", "/", "404", None),
]


@pytest.mark.parametrize(("method", "path", "status", "route"), DJANGO)
def test_django_wsgi_route_is_left_in_the_environ(
    django_project: None, method: str, path: str, status: str, route: str | None
) -> None:
    from django.core.wsgi import get_wsgi_application

    assert ["django"] == [name for name in frameworks.watch_routes() if name == "django"]
    got, environ = wsgi_call(get_wsgi_application(), path, method)
    assert (status, route) == (got.split()[0], route_from_environ(environ))


@pytest.mark.parametrize(("method", "path", "status", "route"), DJANGO)
def test_django_asgi_route_is_left_in_the_servers_scope(
    django_project: None, method: str, path: str, status: str, route: str | None
) -> None:
    """Django's ``ASGIRequest.scope`` is the dict the server passed (and so
    the one hookkit's ASGI middleware holds): the route is there after."""
    from django.core.asgi import get_asgi_application

    frameworks.watch_routes()
    got, scope = asgi_call(get_asgi_application(), path, method)
    assert (int(status), route) == (got, scope.get("hookkit.route"))


def test_django_without_the_watch_leaves_nothing(django_project: None) -> None:
    """The control: without the wrap, no route (what hookkit saw before)."""
    from django.core.wsgi import get_wsgi_application

    _, environ = wsgi_call(get_wsgi_application(), "/polls/7/")
    assert route_from_environ(environ) is None


# -- Falcon, Pyramid, Bottle ---------------------------------------------------


@pytest.fixture
def apps_importable(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    monkeypatch.syspath_prepend(copied("falcon", tmp_path_factory))
    monkeypatch.syspath_prepend(str(TESTS))


# webob, under Pyramid, imports the cgi module.
@pytest.mark.filterwarnings("ignore:'cgi' is deprecated:DeprecationWarning")
@pytest.mark.parametrize(
    ("module", "path", "status", "route"),
    [
        ("apps.falcon_wsgi", "/items/3", "200", "/items/{item_id:int}"),
        ("apps.falcon_wsgi", "/crash/3", "500", "/crash/{n:int}"),
        ("apps.falcon_wsgi", "/items/x", "404", None),
        ("apps.pyramid_app", "/users/ada/items/3", "200", r"/users/{user}/items/{item_id:\d+}"),
        ("apps.pyramid_app", "/api/things/t", "200", "api/things/{name}"),
        ("apps.pyramid_app", "/users/ada/items/x", "404", None),
        ("apps.bottle_app", "/api/things/t", "200", "/api/things/<name>"),
        ("apps.bottle_app", "/nope", "404", None),
    ],
)
def test_wsgi_frameworks_route_is_left_in_the_environ(
    apps_importable: None, module: str, path: str, status: str, route: str | None
) -> None:
    import importlib

    app = importlib.import_module(module).app
    frameworks.watch_routes()
    got, environ = wsgi_call(app, path)
    assert (status, route) == (got.split()[0], route_from_environ(environ))


def test_falcon_asgi_route_is_left_in_the_servers_scope(apps_importable: None) -> None:
    from apps.falcon_asgi import app

    frameworks.watch_routes()
    status, scope = asgi_call(app, "/items/3")
    assert (200, "/items/{item_id:int}") == (status, scope.get("hookkit.route"))
