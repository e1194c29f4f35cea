"""A user sink that POSTs chosen hookkit events to a webhook, without ever
blocking gunicorn.

``WebhookSink("https://hooks.example/gunicorn")`` sends every ``worker_exited``
event (``events=`` chooses others) as one JSON object per POST::

    {"name": "worker_exited", "level": "warning", "pid": 4711,
     "fields": {"worker_pid": 4712, "reason": "killed", "signal": "SIGKILL", ...}}

Why it is built the way it is:

- **handle() only enqueues.** hookkit calls ``handle`` inline in gunicorn's
  hooks, the master's reap loop included: a slow ``handle`` delays reaping,
  spawning and serving. So ``handle`` builds a small dict and calls
  ``put_nowait``; it never touches the network, never waits, never writes
  to stderr.
- **The queue is bounded.** A receiver that is down or slow must not make the
  process grow without limit. When the queue is full the event is dropped
  and counted (``sink.dropped``); the sending thread writes a note about the
  drops to stderr at most once a minute. Losing a webhook beats losing the
  server.
- **The sink has its own thread.** One daemon thread per process takes
  events off the queue and POSTs them in order, each with a timeout, so a
  hanging receiver holds up only that thread. A POST that fails (refused,
  timed out, an HTTP error status) goes to ``report_error``, which hookkit
  counts in ``hookkit_sink_errors_total{sink="webhook"}``; it is not retried.
- **It is fork-aware.** gunicorn forks workers from the master, and a fork
  copies memory but not threads: a worker inherits the master's queue (with
  the master's pending events, which the master will send itself, and
  perhaps with its lock held by the master's thread mid-``get``) but no
  thread to drain it. So ``os.register_at_fork(after_in_child=...)`` gives
  the child a fresh lock and an empty queue and forgets the thread; and the
  thread is started lazily, by the first event of each process, checked by
  pid. This covers every fork (gunicorn's workers, the dirty arbiter, an app
  that forks), and a process that never sends an event never has a thread.
- **Stopping is bounded.** ``stop_worker(seconds)`` and ``stop_master(server)``
  ask the thread to send what is already queued and then end, and wait at
  most ``seconds`` (the worker's bound from hookkit) or ``timeout`` (in the
  master). A receiver that hangs cannot hold a worker's or the master's exit
  past that: the thread is a daemon, and what it has not sent by then is
  lost.

Register it in ``gunicorn.conf.py`` (see the one beside this file)::

    import hookkit
    from webhook_sink import WebhookSink

    hookkit.configure(sinks=[WebhookSink("https://hooks.example/gunicorn")])

Only the standard library is used. ``request_started`` and
``request_finished`` reach a sink only when its class sets
``request_events = True``: subclass ``WebhookSink`` for those (and mind the
volume: every request is then a POST).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import sys
import threading
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import hookkit

Payload = dict[str, Any]

# Put on the queue by stop_*: "send what is ahead of me, then end".
_STOP: Payload = {}

# The drop note goes to stderr at most this often (seconds).
DROP_NOTE_INTERVAL = 60.0


class WebhookSink(hookkit.Sink):
    """POST the chosen events as JSON to ``url``, from a thread of each process.

    ``events``: the event names to send. ``queue_size``: how many events may
    wait per process before new ones are dropped. ``timeout``: the seconds
    each POST may take, and the master's bound on stopping.
    """

    name: ClassVar[str] = "webhook"

    # Events dropped because the queue was full, in this process.
    dropped: int

    # This process's state (see _fresh_process_state).
    _lock: threading.Lock
    _queue: queue.Queue[Payload]
    _thread: threading.Thread | None
    _thread_pid: int
    _stopping: bool
    _deadline: float | None
    _dropped_noted: int
    _drop_noted_at: float

    def __init__(
        self,
        url: str,
        events: Iterable[str] = ("worker_exited",),
        queue_size: int = 1000,
        timeout: float = 2.0,
    ) -> None:
        if queue_size < 1:
            raise ValueError(f"queue_size must be at least 1, not {queue_size}")
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, not {timeout}")
        super().__init__()
        self.url = url
        self.events = frozenset(events)
        self.queue_size = queue_size
        self.timeout = timeout
        self._fresh_process_state()
        # A weak reference: a sink replaced by a SIGHUP reload can then be
        # collected (a fork handler cannot be unregistered).
        os.register_at_fork(after_in_child=_after_fork_in_child(weakref.ref(self)))

    # -- gunicorn's side: hookkit calls these ----------------------------

    def handle(self, event: hookkit.Event) -> None:
        """Queue ``event`` if it is one of ours; never blocks."""
        if event.name not in self.events or self._stopping:
            return
        payload = {
            "name": event.name,
            "level": event.level,
            "pid": event.pid,
            "fields": dict(event.fields),
        }
        try:
            self._queue.put_nowait(payload)
        except queue.Full:
            self.dropped += 1
        if self._thread_pid != os.getpid():
            self._start_thread()

    def stop_worker(self, seconds: float) -> None:
        """The worker is leaving: send what is queued, for at most ``seconds``."""
        self.stop(seconds)

    def stop_master(self, server: object) -> None:
        """The master is leaving (or this sink was replaced by a reload):
        send what is queued, for at most ``timeout`` seconds."""
        self.stop(self.timeout)

    # -- the sending thread ----------------------------------------------

    def stop(self, seconds: float) -> bool:
        """Stop this process's thread: it sends what was queued before the
        stop until ``seconds`` have passed, then ends. Events after the stop
        are ignored. Returns whether the thread ended in time."""
        self._stopping = True
        thread = self._thread
        if thread is None or self._thread_pid != os.getpid():
            return True
        self._deadline = time.monotonic() + seconds
        # A full queue means a busy thread: it sees the deadline after each event.
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(_STOP)
        thread.join(max(0.0, seconds))
        return not thread.is_alive()

    def _fresh_process_state(self) -> None:
        """This process's queue and thread state, as in a process that has
        not sent anything yet."""
        self._lock = threading.Lock()
        self._queue = queue.Queue(self.queue_size)
        self._thread = None
        self._thread_pid = 0
        self._stopping = False
        self._deadline = None
        self.dropped = 0
        self._dropped_noted = 0
        self._drop_noted_at = -DROP_NOTE_INTERVAL

    def _start_thread(self) -> None:
        # Without waiting: if another thread holds the lock, it is starting
        # the thread, which will find this event on the queue.
        if not self._lock.acquire(blocking=False):
            return
        try:
            if self._thread_pid != os.getpid():
                thread = threading.Thread(
                    target=self._send_queued,
                    args=(self._queue,),
                    name=f"hookkit-{self.name}",
                    daemon=True,
                )
                thread.start()
                self._thread, self._thread_pid = thread, os.getpid()
        finally:
            self._lock.release()

    def _send_queued(self, events: queue.Queue[Payload]) -> None:
        while True:
            deadline = self._deadline
            try:
                if deadline is None:
                    payload = events.get()
                else:
                    payload = events.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return
            if payload is _STOP:
                return
            try:
                self._post(payload)
            except Exception as exc:
                self.report_error("posting an event", exc)
            self._note_drops()
            if self._deadline is not None and time.monotonic() >= self._deadline:
                return

    def _post(self, payload: Payload) -> None:
        body = json.dumps(payload, default=str).encode()
        request = urllib.request.Request(
            self.url,
            data=body,
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            # A 4xx or 5xx answer: the error holds the connection open.
            exc.close()
            raise

    def _note_drops(self) -> None:
        dropped = self.dropped
        now = time.monotonic()
        if dropped == self._dropped_noted or now - self._drop_noted_at < DROP_NOTE_INTERVAL:
            return
        self._dropped_noted, self._drop_noted_at = dropped, now
        try:
            sys.stderr.write(
                f"hookkit sink {self.name!r}: queue full, {dropped} event(s) dropped "
                f"in process {os.getpid()} so far\n"
            )
            sys.stderr.flush()
        except (OSError, ValueError):
            pass


def _after_fork_in_child(ref: weakref.ReferenceType[WebhookSink]) -> Callable[[], None]:
    """A fork handler that gives the sink, if it still exists, a fresh state
    in the child."""

    def reset() -> None:
        sink = ref()
        if sink is not None:
            sink._fresh_process_state()

    return reset
