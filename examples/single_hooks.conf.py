# hookkit's hooks imported one by one into your own gunicorn config, for
# when you keep full control of the config:
#
#   cd examples && gunicorn -c single_hooks.conf.py app:app
import hookkit
from hookkit.hooks import (
    child_exit,
    nworkers_changed,
    on_exit,
    on_reload,
    on_starting,
    post_request,
    post_worker_init,
    pre_fork,
    pre_request,
    when_ready,
    worker_abort,
    worker_exit,
)
from hookkit.hooks import post_fork as hookkit_post_fork

bind = "127.0.0.1:8000"
workers = 2

# hookkit's logger class puts gunicorn's own lines through the same JSON
# pipeline and lets hookkit see each worker's exit status.
logger_class = "hookkit.glogging.Logger"

# Settings from Python (over the environment's HOOKKIT_* values).
hookkit.configure(access_log=True)


def my_post_fork(server, worker):
    server.log.info("my own post_fork for worker %s", worker.pid)


# Your hook beside hookkit's, with the arity gunicorn checks.
post_fork = hookkit.chain("post_fork", hookkit_post_fork, my_post_fork)

# gunicorn reads the hooks as this module's names; __all__ tells linters the
# imports above are used.
__all__ = [
    "child_exit",
    "nworkers_changed",
    "on_exit",
    "on_reload",
    "on_starting",
    "post_fork",
    "post_request",
    "post_worker_init",
    "pre_fork",
    "pre_request",
    "when_ready",
    "worker_abort",
    "worker_exit",
]
