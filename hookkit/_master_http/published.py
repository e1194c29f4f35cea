"""The master's endpoint, for the backends that add routes to it.

The Prometheus sink makes the endpoint and publishes it; another sink (the
status page, the stacks) finds it with ``current_endpoint`` and calls
``route``, without importing the Prometheus sink (a sink never imports
another). Like ``hookkit._aggregate.collect.publish``/``current``: a process
forked from the master (a worker) sees None, as the endpoint's threads do
not exist there.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from hookkit._core.resets import on_reset

if TYPE_CHECKING:
    from hookkit._master_http.server import MetricsEndpoint

_published: tuple[int, MetricsEndpoint] | None = None


def publish_endpoint(endpoint: MetricsEndpoint) -> None:
    """Make ``endpoint`` this master's, for every backend that routes on it."""
    global _published  # noqa: PLW0603 - one endpoint per master
    _published = (os.getpid(), endpoint)


def current_endpoint() -> MetricsEndpoint | None:
    """This master's endpoint; None before one is published, and in any
    process forked from the master."""
    published = _published
    if published is None or published[0] != os.getpid():
        return None
    return published[1]


@on_reset
def _unpublish() -> None:
    """hookkit.testing.reset(): no endpoint."""
    global _published  # noqa: PLW0603
    _published = None
