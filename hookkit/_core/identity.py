"""Which gunicorn worker this process is, for lines that name it.

Set by hookkit's ``post_fork`` in the worker; ``hookkit.processors``'
``add_worker_info`` reads it (and so do hookkit's own lines). The pid is
kept with it: a process forked from a worker is not that worker.
"""

from __future__ import annotations

# (pid, age) of this worker; None in the master and in other processes.
worker: tuple[int, int] | None = None


def set_worker(pid: int, age: int) -> None:
    """Record which gunicorn worker this process is (post_fork)."""
    global worker  # noqa: PLW0603 - one identity per process, set after fork
    worker = (pid, age)


def clear_worker() -> None:
    """Forget the worker identity (tests, and processes that are not workers)."""
    global worker  # noqa: PLW0603
    worker = None
