"""gunicorn logger classes that put gunicorn's own error-log lines through
hookkit's structlog pipeline.

The drop-in config sets ``logger_class = "hookkit.glogging.Logger"`` unless
the user's config names a logger class of its own. With ``statsd_host`` set
(in a config or on the command line) it becomes the statsd-aware variant, as
gunicorn itself switches to ``gunicorn.instrument.statsd.Statsd``.

What it adds to gunicorn's logger:

- the error-log handlers render with hookkit's formatter (JSON by default),
  and hookkit's own events share those handlers, so ``--error-logfile`` and
  ``--log-level`` apply to both; with ``logconfig``, ``logconfig_dict`` or
  ``logconfig_json`` the user's formatters are kept for gunicorn's lines;
- it notes each reaped worker's exit status for the ``worker_exited`` event;
- it reports the access log as enabled, so that the ASGI worker hands
  ``post_request`` the response (it passes ``None`` otherwise), while writing
  gunicorn's own access lines only when gunicorn's settings ask for them.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from gunicorn import glogging
from gunicorn.instrument.statsd import Statsd

from hookkit._core.runtime import RUNTIME as _RUNTIME
from hookkit._core.stderr import NonBlockingStderrHandler as _NonBlockingStderrHandler
from hookkit._core.stderr import is_stderr_stream_handler as _is_stderr_stream_handler
from hookkit._sinks.logs import pipeline as _logging


class Logger(glogging.Logger):  # type: ignore[misc]
    """gunicorn's logger, rendering through hookkit's pipeline."""

    # How hookkit's master_starting tells its logger class from another.
    hookkit_logger = True

    def __new__(cls, cfg: Any) -> Logger:
        if cls is Logger and getattr(cfg, "statsd_host", None) is not None:
            return super().__new__(StatsdLogger)  # type: ignore[no-any-return]
        return super().__new__(cls)  # type: ignore[no-any-return]

    def setup(self, cfg: Any) -> None:
        """gunicorn's setup (at start and on every reload), then hookkit's formatter."""
        super().setup(cfg)
        self._gunicorn_access_wanted = bool(
            cfg.accesslog
            or cfg.logconfig
            or cfg.logconfig_dict
            or getattr(cfg, "logconfig_json", None)
            or (cfg.syslog and not cfg.disable_redirect_access_to_syslog)
        )
        self._access_log_enabled = True
        settings = _RUNTIME.settings
        if cfg.logconfig or cfg.logconfig_dict or getattr(cfg, "logconfig_json", None):
            # The user's logging configuration owns gunicorn's handlers.
            _logging.ensure_stderr_handler(settings)
            return
        formatter = _logging.make_formatter(settings.log_format)
        _never_block_on_stderr(self.error_log)
        for handler in self.error_log.handlers:
            handler.setFormatter(formatter)
        _logging.set_handlers(list(self.error_log.handlers), self.loglevel)

    @property
    def access_log_enabled(self) -> bool:
        """Always true: the ASGI worker then passes ``post_request`` the response."""
        return True

    def access(self, resp: Any, req: Any, environ: Any, request_time: Any) -> None:
        """gunicorn's access line, only when gunicorn's settings ask for it,
        and never for a request the excluded URLs keep out (a probe)."""
        if self._gunicorn_access_wanted and not _RUNTIME.requests.is_excluded(req):
            super().access(resp, req, environ, request_time)

    def exception(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        """gunicorn logs a request's error here: note it for the access event
        (the ASGI worker catches the app's exception before post_request)."""
        _RUNTIME.note_request_error(sys.exc_info()[1])
        super().exception(msg, *args, **kwargs)

    def info(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        _RUNTIME.note_reap_line(msg, args)
        super().info(msg, *args, **kwargs)

    def warning(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        _RUNTIME.note_reap_line(msg, args)
        super().warning(msg, *args, **kwargs)

    def error(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        _RUNTIME.note_reap_line(msg, args)
        super().error(msg, *args, **kwargs)


def _never_block_on_stderr(log: logging.Logger) -> None:
    """gunicorn's error log to stderr (``--error-logfile -``, the default)
    becomes hookkit's non-blocking stderr handler, so neither the master nor
    a worker waits on a reader that stopped reading (see hookkit._core.stderr)."""
    for handler in list(log.handlers):
        if _is_stderr_stream_handler(handler):
            replacement = _NonBlockingStderrHandler(handler.level)
            replacement._gunicorn = True  # type: ignore[attr-defined]  # gunicorn's reload removes it
            log.removeHandler(handler)
            log.addHandler(replacement)


class StatsdLogger(Logger, Statsd):  # type: ignore[misc]
    """hookkit's logger with gunicorn's statsd instrumentation kept."""

    def access(self, resp: Any, req: Any, environ: Any, request_time: Any) -> None:
        """Always statsd's request metrics. Its access line goes to the
        ``gunicorn.access`` logger, which has no handler unless gunicorn's
        settings asked for the access log, so nothing extra is written."""
        Statsd.access(self, resp, req, environ, request_time)


__all__ = ["Logger", "StatsdLogger"]
