# Your own gunicorn config, kept by the drop-in.
#
#   cd examples && gunicorn -c python:hookkit.conf app:app
#
# `-c` hides gunicorn's default ./gunicorn.conf.py; hookkit's drop-in reads
# it itself: these settings apply and this post_fork runs beside hookkit's.
# Edit it and send SIGHUP: the changes take effect, as without hookkit.
import os

bind = "127.0.0.1:8000"
workers = 2
timeout = 30
max_requests = 1000
max_requests_jitter = 100

# hookkit's settings can live here too (the HOOKKIT_* environment wins).
hookkit_access_log = True


def post_fork(server, worker):
    # Your own hook: reseed, reconnect, ...
    os.environ["MY_WORKER_AGE"] = str(worker.age)
