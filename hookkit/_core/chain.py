"""Several callables as one gunicorn hook, with the arity gunicorn checks."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from hookkit._core.hooks import HOOKS_BY_NAME

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def _arity(func: Callable[..., Any]) -> int:
    # The count gunicorn's util.get_arity makes: positional parameters.
    return sum(1 for p in inspect.signature(func).parameters.values() if p.kind in _POSITIONAL)


def chain(hook: str, *callables: Callable[..., Any]) -> Callable[..., None]:
    """One ``hook`` that calls each of ``callables`` in order.

    Every callable must take the hook's positional parameters (checked now,
    as gunicorn checks hooks at load). All of them run even if one raises;
    then the first exception is re-raised, so a user hook that fails a
    request still fails it, as it would without hookkit.

    ```pycon
    >>> from hookkit.hooks import post_fork
    >>> def my_post_fork(server, worker): ...
    >>> post_fork = chain("post_fork", post_fork, my_post_fork)
    ```
    """
    spec = HOOKS_BY_NAME.get(hook)
    if spec is None:
        raise ValueError(f"{hook!r} is not a gunicorn hook; hooks: {', '.join(HOOKS_BY_NAME)}")
    flat: list[Callable[..., Any]] = []
    for func in callables:
        if not callable(func):
            raise TypeError(f"chain({hook!r}): {func!r} is not callable")
        if _arity(func) != spec.arity:
            raise TypeError(
                f"chain({hook!r}): {getattr(func, '__qualname__', func)!r} must take "
                f"{spec.arity} positional parameters ({', '.join(spec.params)})"
            )
        for inner in getattr(func, "hookkit_chain", (func,)):
            if inner not in flat:  # the same hook twice would run (and count) twice
                flat.append(inner)
    members = tuple(flat)

    def chained(*args: Any) -> None:
        first: Exception | None = None
        for func in members:
            try:
                func(*args)
            except Exception as exc:
                if first is None:
                    first = exc
        if first is not None:
            raise first

    chained.__name__ = chained.__qualname__ = hook
    chained.__doc__ = f"gunicorn's {hook} hook: {', '.join(_name(f) for f in members)}."
    chained.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(p, inspect.Parameter.POSITIONAL_OR_KEYWORD) for p in spec.params]
    )
    chained.hookkit_chain = members  # type: ignore[attr-defined]
    return chained


def _name(func: Callable[..., Any]) -> str:
    return f"{getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', func)}"
