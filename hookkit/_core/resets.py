"""What ``hookkit.testing.reset()`` undoes, registered by the module that
changed it (the core knows no backend, so each part registers its own undo).

Each undo runs in the order registered and must not raise.
"""

from __future__ import annotations

from collections.abc import Callable

_UNDO: list[Callable[[], None]] = []


def on_reset(undo: Callable[[], None]) -> Callable[[], None]:
    """Register ``undo`` (usable as a decorator)."""
    _UNDO.append(undo)
    return undo


def run_resets() -> None:
    """Run every registered undo."""
    for undo in _UNDO:
        undo()
