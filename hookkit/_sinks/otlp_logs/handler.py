"""gunicorn's own error lines, from the ``gunicorn.error`` logger.

How they reach the sink: a standard ``logging.Handler`` added to the
``gunicorn.error`` logger, beside the handlers that write the stderr lines
(which stay as they are). hookkit's logger class (``hookkit.glogging``)
is not involved: it belongs to the public face and the log sink, and a
handler works as well under a user's own logger class or ``logconfig``.
The SDK's ``LoggingHandler`` is not used: the SDK deprecates it (1.45: for
the contrib logging instrumentation), and hookkit wants its records made the
same way as its events' (``records.from_stdlib``) and handed to this
process's own pipeline, whichever process the line was logged in.

Only records of ``gunicorn.error`` itself pass: hookkit's log sink shares
gunicorn's error-log handlers with its own ``hookkit`` logger, and a reload
may copy this handler there too; those records are already events.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

GUNICORN_ERROR = "gunicorn.error"


class GunicornErrorHandler(logging.Handler):
    """Hands each ``gunicorn.error`` record to ``forward``; never raises
    (``fail`` is told instead)."""

    def __init__(
        self,
        forward: Callable[[logging.LogRecord], None],
        fail: Callable[[Exception], None],
    ) -> None:
        super().__init__(logging.NOTSET)
        self.forward = forward
        self.fail = fail

    def emit(self, record: logging.LogRecord) -> None:
        if record.name != GUNICORN_ERROR:
            return
        try:
            self.forward(record)
        except Exception as exc:
            self.fail(exc)


def attach(handler: logging.Handler) -> None:
    """Add ``handler`` to ``gunicorn.error`` unless it is there (a reload's
    logging configuration may have removed it)."""
    logger = logging.getLogger(GUNICORN_ERROR)
    if handler not in logger.handlers:
        logger.addHandler(handler)


def detach(handler: logging.Handler) -> None:
    """Take ``handler`` off ``gunicorn.error``."""
    logging.getLogger(GUNICORN_ERROR).removeHandler(handler)
