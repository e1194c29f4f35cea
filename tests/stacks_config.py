"""A user gunicorn config (``HOOKKIT_GUNICORN_CONFIG``) for the stacks on
demand tests: it wires ``StackChannels`` as a user sink until the status
sink registers ``/stacks.json`` on hookkit's own endpoint.

The sink serves ``GET /stacks.json`` itself, from the master, on
``127.0.0.1:$STACKS_PORT`` (a stdlib HTTP server on a thread of the
master), with ``stacks_response``: so ``hookkit stacks`` runs against it
exactly as it will against the real endpoint. With ``STACKS_NOT_DUMPABLE``
set, each worker makes itself non-dumpable in ``post_fork``
(``prctl(PR_SET_DUMPABLE, 0)``): no ptrace, no ``/proc/<pid>/mem``, even
for root without ``CAP_SYS_PTRACE``.
"""

import ctypes
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import hookkit
from hookkit._sinks.status.stacks import StackChannels, stacks_response

workers = 2
timeout = 120
PR_SET_DUMPABLE = 4


class StacksSink(hookkit.Sink):
    name = "stacks_test"

    def __init__(self):
        self.channels = StackChannels()
        self.arbiter = None
        self.server = None

    def start_master(self, server):
        self.arbiter = server
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path != "/stacks.json":
                    status, body = 404, b'{"error": "not found"}'
                else:
                    status, body = stacks_response(sink.channels, sink.live_workers())
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", int(os.environ["STACKS_PORT"])), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def live_workers(self):
        """{age: pid} of the arbiter's workers (its dict changes on the
        master's main thread: copy it, retrying if it changed meanwhile)."""
        for _ in range(100):
            try:
                return {worker.age: pid for pid, worker in list(self.arbiter.WORKERS.items())}
            except RuntimeError:
                continue
        return {}

    def before_fork(self, age):
        self.channels.before_fork(age)

    def after_fork(self, age):
        if self.server is not None:
            self.server.socket.close()  # the master's listener, inherited
        self.channels.after_fork(age)

    def worker_gone(self, age):
        self.channels.worker_gone(age)

    def stop_master(self, server):
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
        self.channels.close()


def post_fork(server, worker):
    if os.environ.get("STACKS_NOT_DUMPABLE"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE, 0)")


hookkit.configure(sinks=[StacksSink()])
