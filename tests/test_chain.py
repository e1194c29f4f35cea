"""hookkit.chain: several callables as one gunicorn hook, checked when chained
as gunicorn checks hooks when it loads them."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pytest
from gunicorn.config import validate_callable

import hookkit.hooks
from hookkit import chain
from hookkit._core.hooks import HOOKS, HookSpec
from hookkit.testing import FakeRequest, FakeResponse, FakeWorker, capture_events

pytestmark = pytest.mark.compat


def recorder(calls: list[tuple[str, tuple[Any, ...]]], label: str, params: str) -> Any:
    """A user hook taking ``params`` that records its calls under ``label``."""
    namespace: dict[str, Any] = {"calls": calls, "label": label}
    exec(f"def {label}({params}):\n    calls.append((label, ({params},)))\n", namespace)
    return namespace[label]


def spec_params(spec: HookSpec) -> str:
    return ", ".join(spec.params)


@pytest.mark.parametrize("spec", HOOKS, ids=lambda spec: spec.name)
def test_gunicorn_accepts_the_chained_hook(spec: HookSpec) -> None:
    """The chained hook has the hook's arity: gunicorn's validator accepts it."""
    calls: list[tuple[str, tuple[Any, ...]]] = []
    chained = chain(spec.name, recorder(calls, "mine", spec_params(spec)))

    assert chained is validate_callable(spec.arity)(chained)


@pytest.mark.parametrize("spec", HOOKS, ids=lambda spec: spec.name)
def test_chained_hook_has_the_hooks_name_and_parameters(spec: HookSpec) -> None:
    """The chained hook is named after the hook and shows its parameters."""
    chained = chain(spec.name, getattr(hookkit.hooks, spec.name))

    assert spec.name == chained.__name__
    assert spec.params == tuple(inspect.signature(chained).parameters)


@pytest.mark.parametrize("spec", HOOKS, ids=lambda spec: spec.name)
def test_gunicorn_accepts_hookkit_hook_chained_with_a_users(spec: HookSpec) -> None:
    """hookkit's own hook chained with a user's passes gunicorn's validator."""
    calls: list[tuple[str, tuple[Any, ...]]] = []
    chained = chain(
        spec.name, getattr(hookkit.hooks, spec.name), recorder(calls, "mine", spec_params(spec))
    )

    assert chained is validate_callable(spec.arity)(chained)


def test_members_are_called_in_order_with_the_arguments() -> None:
    """Each member is called in the order given, with gunicorn's arguments."""
    calls: list[tuple[str, tuple[Any, ...]]] = []
    chained = chain(
        "post_fork",
        recorder(calls, "first", "server, worker"),
        recorder(calls, "second", "server, worker"),
        recorder(calls, "third", "server, worker"),
    )

    chained("the server", "the worker")

    expected = [
        ("first", ("the server", "the worker")),
        ("second", ("the server", "the worker")),
        ("third", ("the server", "the worker")),
    ]
    assert expected == calls


def test_all_members_run_and_the_first_exception_is_reraised() -> None:
    """A raising member does not stop the others; once all ran, the first
    exception is re-raised (a user hook that fails a request still fails it)."""
    ran: list[str] = []
    first_error = ValueError("first")

    def fails_first(worker: Any, req: Any) -> None:
        ran.append("fails_first")
        raise first_error

    def fails_second(worker: Any, req: Any) -> None:
        ran.append("fails_second")
        raise RuntimeError("second")

    def succeeds(worker: Any, req: Any) -> None:
        ran.append("succeeds")

    chained = chain("pre_request", fails_first, fails_second, succeeds)

    with pytest.raises(ValueError, match="first") as raised:
        chained("worker", "req")

    expected = ["fails_first", "fails_second", "succeeds"]
    assert expected == ran
    assert first_error is raised.value


def test_no_exception_when_every_member_succeeds() -> None:
    """The chained hook returns None when nothing raises."""
    chained = chain("on_exit", lambda server: None, lambda server: 42)

    assert chained("server") is None


def test_wrong_arity_member_is_refused_when_chained() -> None:
    """A member that does not take the hook's parameters is refused at chain
    time (as gunicorn would at load), with a message naming it and the hook."""

    def my_post_fork(server: Any) -> None:
        pass

    with pytest.raises(TypeError) as raised:
        chain("post_fork", hookkit.hooks.post_fork, my_post_fork)

    message = str(raised.value)
    assert "my_post_fork" in message
    assert "'post_fork'" in message
    assert "2 positional parameters (server, worker)" in message


def test_unknown_hook_name_is_refused_naming_it() -> None:
    """A name that is not a gunicorn hook is refused, naming it."""
    with pytest.raises(ValueError, match="'post_forks' is not a gunicorn hook"):
        chain("post_forks", lambda server, worker: None)


def test_ssl_context_is_not_a_hook_to_chain() -> None:
    """``ssl_context`` is a factory, not a notification: it cannot be chained."""
    with pytest.raises(ValueError, match="'ssl_context'"):
        chain("ssl_context", lambda config, factory: None)


def test_non_callable_member_is_refused_naming_it() -> None:
    """A member that is not callable is refused at chain time."""
    with pytest.raises(TypeError, match="'not a function' is not callable"):
        chain("on_exit", "not a function")  # type: ignore[arg-type]


def function_shapes() -> list[tuple[str, Callable[..., Any]]]:
    """Ways of writing a two-parameter hook, right and wrong."""

    def plain(server, worker): ...  # type: ignore[no-untyped-def]
    def default(server, worker=None): ...  # type: ignore[no-untyped-def]
    def keyword_only(server, worker, *, extra=1): ...  # type: ignore[no-untyped-def]
    def var_positional(server, worker, *rest): ...  # type: ignore[no-untyped-def]
    def var_keyword(server, worker, **kwargs): ...  # type: ignore[no-untyped-def]
    def only_args(*args): ...  # type: ignore[no-untyped-def]
    def one(server): ...  # type: ignore[no-untyped-def]
    def three(server, worker, extra): ...  # type: ignore[no-untyped-def]

    class Hooks:
        def method(self, server, worker): ...  # type: ignore[no-untyped-def]

    return [
        ("plain", plain),
        ("default", default),
        ("keyword_only", keyword_only),
        ("var_positional", var_positional),
        ("var_keyword", var_keyword),
        ("only_args", only_args),
        ("one", one),
        ("three", three),
        ("lambda", lambda server, worker: None),
        ("bound_method", Hooks().method),
    ]


SHAPES = function_shapes()


@pytest.mark.parametrize(("shape", "func"), SHAPES, ids=[shape for shape, _ in SHAPES])
def test_chain_accepts_exactly_what_gunicorn_accepts(shape: str, func: Callable[..., Any]) -> None:
    """chain counts positional parameters as gunicorn does: a member is
    accepted exactly when gunicorn would accept it as the hook itself."""
    try:
        validate_callable(2)(func)
        gunicorn_accepts = True
    except TypeError:
        gunicorn_accepts = False
    try:
        chain("post_fork", func)
        chain_accepts = True
    except TypeError:
        chain_accepts = False

    assert gunicorn_accepts == chain_accepts


def test_the_same_member_twice_runs_once() -> None:
    """Chaining the same callable twice runs it once (it would count twice)."""
    calls: list[tuple[str, tuple[Any, ...]]] = []
    mine = recorder(calls, "mine", "worker, req")

    chain("pre_request", mine, mine)("w", "r")

    expected = [("mine", ("w", "r"))]
    assert expected == calls


def test_a_chain_inside_a_chain_is_flattened() -> None:
    """A chain given to chain() contributes its members, each run once, in
    the order they first appear."""
    calls: list[tuple[str, tuple[Any, ...]]] = []
    first = recorder(calls, "first", "worker, req")
    second = recorder(calls, "second", "worker, req")
    third = recorder(calls, "third", "worker, req")

    inner = chain("pre_request", first, second)
    outer = chain("pre_request", second, inner, third, first)
    outer("w", "r")

    expected = ["second", "first", "third"]
    assert expected == [label for label, _ in calls]
    assert (second, first, third) == outer.hookkit_chain  # type: ignore[attr-defined]


def test_hookkit_hook_chained_twice_emits_once() -> None:
    """hookkit's own hook chained twice (directly and through a chain)
    handles each request once: one request_started, one request_finished."""
    pre = chain("pre_request", hookkit.hooks.pre_request, hookkit.hooks.pre_request)
    post = chain(
        "post_request",
        chain("post_request", hookkit.hooks.post_request),
        hookkit.hooks.post_request,
    )
    worker, req = FakeWorker(), FakeRequest("GET", "/once")

    with capture_events() as events:
        pre(worker, req)
        post(worker, req, {}, FakeResponse("200 OK"))

    expected = ["request_started", "request_finished"]
    assert expected == [e.name for e in events]


def test_docstring_names_the_members() -> None:
    """The chained hook's docstring names the hook and its members."""

    def mine(server: Any, worker: Any) -> None:
        pass

    chained = chain("post_fork", hookkit.hooks.post_fork, mine)

    assert chained.__doc__ is not None
    assert chained.__doc__.startswith("gunicorn's post_fork hook: hookkit.hooks.post_fork, ")
    assert "test_docstring_names_the_members.<locals>.mine" in chained.__doc__
