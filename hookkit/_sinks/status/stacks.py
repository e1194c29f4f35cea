"""Stacks on demand: the current stack of every thread of every worker (and
its greenlets under gevent, its asyncio tasks under the ASGI classes),
gathered by the master without ptrace, within a deadline.

Why a socketpair and a real OS thread, and not a signal:

- gunicorn resets most signals to their defaults in each worker
  (``Worker.init_signals``, after ``post_fork``): a USR2 or HUP would kill a
  worker still booting, and the signals it keeps are gunicorn's own.
- A Python signal handler runs in the main thread between bytecodes: in the
  very case that matters (a request stuck in a C call: a socket read, a lock,
  a database driver) it either never runs, or its ``EINTR`` breaks the C
  extension's blocking call.
- ptrace (py-spy, gdb) needs ``CAP_SYS_PTRACE`` or a dumpable process;
  containers and hardened hosts forbid both.

So the master makes one ``socketpair`` per worker in ``pre_fork``
(``before_fork``), and each worker starts, in ``post_fork``
(``after_fork``), a daemon thread that blocks in ``read`` on its end and
answers each request with ``sys._current_frames()``. The thread is started
with the operating system's thread API even under gevent: gevent's monkey
patching makes ``threading`` and ``_thread`` start greenlets, and a greenlet
would never run while the hung request keeps the hub from switching. It
reads and writes the socket with ``os.read`` / ``os.write`` on the file
descriptor (never gevent's cooperative socket methods), so it needs no hub.

A worker stuck in C code that holds the GIL cannot answer by any
in-process means: the master waits for every worker at once, under one
deadline, and lists the silent ones as ``not_answering``. An answer that
comes after its deadline is recognised by its request id and dropped at the
next gather.

Wire format, both directions on a stream socket: a request is an 8-byte
request id (``!Q``); an answer is ``HKS1``, the request id (``!Q``) and the
length (``!I``) of a JSON body of at most ``max_bytes`` (1 MiB by default).
A worker that finds several requests waiting answers only the newest.

The answer's bounds: ``max_frames`` (64) innermost frames per stack (a line
says how many outer frames were left out; where a request is stuck is at the
inner end); each stack string at most 64 KiB; threads first, then greenlets,
then tasks, until the answer would pass ``max_bytes``; what did not fit is
counted in ``left_out``.
"""

from __future__ import annotations

import _thread
import contextlib
import gc
import json
import os
import selectors
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from types import FrameType
from typing import Any

from hookkit._core.stacks import bounded_coroutine_stack, bounded_stack

MAX_ANSWER_BYTES = 1 << 20  # per worker
MAX_FRAMES = 64  # per stack, the innermost
MAX_STACK_CHARS = 64 * 1024  # per stack string

_MAGIC = b"HKS1"
_HEADER = struct.Struct("!4sQI")
_REQUEST = struct.Struct("!Q")

# Saved at import: when hookkit is imported before gevent patches (the
# gevent worker patches in init_process, after post_fork), these are the
# real ones. When gevent is imported, its record of the originals wins.
_START_NEW_THREAD = _thread.start_new_thread
_GET_IDENT = _thread.get_ident

# The answering threads of this process (one per ``StackChannels``): hookkit's
# own machinery, left out of every answer.
_ANSWERING: set[int] = set()


def _original(name: str) -> Callable[..., Any]:
    """``_thread.<name>`` as the operating system provides it, even after
    gevent's monkey patching replaced it with a greenlet-based one."""
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None:
        original: Callable[..., Any] = monkey.get_original("_thread", name)
        return original
    return _START_NEW_THREAD if name == "start_new_thread" else _GET_IDENT


def start_os_thread(function: Callable[..., object], *args: object) -> int:
    """Start ``function(*args)`` in a new operating-system thread (a daemon:
    the interpreter does not wait for it at exit), whatever gevent patched."""
    start = _original("start_new_thread")
    ident: int = start(function, args)
    return ident


def os_thread_ident() -> int:
    """The calling thread's operating-system thread id as
    ``sys._current_frames()`` keys it (gevent's patched ``get_ident`` gives
    a greenlet's)."""
    ident: int = _original("get_ident")()
    return ident


@dataclass
class _Pair:
    """One worker's socketpair, as the master holds it."""

    master: socket.socket
    worker: socket.socket | None  # the master closes it once the worker is forked
    buffer: bytearray = field(default_factory=bytearray)

    def close(self) -> None:
        self.master.close()
        if self.worker is not None:
            self.worker.close()
            self.worker = None


class StackChannels:
    """The master's socketpairs to its workers, and each worker's answering
    thread. See the module docstring for why.

    Master: ``before_fork(age)`` (``pre_fork``), ``worker_gone(age)``,
    ``gather({age: pid})`` (from any thread: the HTTP server's), ``close()``.
    Worker: ``after_fork(age)`` (``post_fork``), ``close()``. Another forked
    child (the SIGUSR2 re-exec child): ``close_in_child()``.
    """

    def __init__(self, *, max_bytes: int = MAX_ANSWER_BYTES, max_frames: int = MAX_FRAMES) -> None:
        self.max_bytes = max_bytes
        self.max_frames = max_frames
        self._pairs: dict[int, _Pair] = {}
        # Short critical sections only: before_fork and worker_gone run in
        # the master's main loop, gather in the HTTP server's thread.
        self._lock = threading.Lock()
        self._gather_lock = threading.Lock()  # one gather at a time
        self._in_use: set[int] = set()  # ids of pairs a gather is using
        self._retired: list[_Pair] = []  # closed once that gather ends
        self._request_id = 0
        self._own: socket.socket | None = None  # the worker's end, in a worker
        self.stale_discarded = 0  # late answers dropped (answers to an earlier gather)

    # -- master ---------------------------------------------------------

    def before_fork(self, age: int) -> None:
        """Master, ``pre_fork``: a socketpair for the worker of ``age``.

        Both ends are close-on-exec (Python's default), so the SIGUSR2
        re-exec'd master does not inherit them. The worker ends of workers
        already forked are closed here: the master never uses them."""
        master, worker = socket.socketpair()
        master.setblocking(False)
        with self._lock:
            for pair in self._pairs.values():
                if pair.worker is not None:
                    pair.worker.close()
                    pair.worker = None
            old = self._pairs.pop(age, None)
            if old is not None:
                self._retire(old)
            self._pairs[age] = _Pair(master, worker)

    def worker_gone(self, age: int) -> None:
        """Master: the worker of ``age`` exited; close its pair."""
        with self._lock:
            pair = self._pairs.pop(age, None)
            if pair is not None:
                self._retire(pair)

    def _retire(self, pair: _Pair) -> None:
        """Close ``pair`` now, or when the gather using it ends (its file
        descriptor must not be reused under that gather). Holds ``_lock``."""
        if id(pair) in self._in_use:
            self._retired.append(pair)
        else:
            pair.close()

    def gather(self, workers: Mapping[int, int], timeout: float = 2.0) -> dict[str, Any]:
        """The stacks of ``workers`` (``{age: pid}``, the live ones), asked of
        all at once; never waits past ``timeout`` seconds in all.

        Returns ``{"workers": [{"pid", "age", "threads", "greenlets",
        "tasks", "left_out"}], "not_answering": [{"pid", "age", "reason"}],
        "seconds": how long it took}``, workers in order of age; each
        thread, greenlet and task is ``{"name", "id", "stack"}`` (the stack
        as ``traceback.format_stack`` writes it, outermost frame first).
        ``reason``: ``timeout`` (no answer in time: stuck in C code holding
        the GIL, or swamped), ``no_channel`` (the worker
        was forked before these channels existed), ``closed`` (its end is
        gone: it is exiting), ``garbled``, ``busy`` (another gather held the
        channels past this one's deadline)."""
        started = time.monotonic()
        deadline = started + timeout
        if not self._gather_lock.acquire(timeout=max(0.0, timeout)):
            result = _result({}, dict.fromkeys(workers, "busy"), workers)
        else:
            try:
                result = self._gather(workers, deadline)
            finally:
                self._gather_lock.release()
        result["seconds"] = round(time.monotonic() - started, 4)
        return result

    def _gather(self, workers: Mapping[int, int], deadline: float) -> dict[str, Any]:
        with self._lock:
            for age in workers:  # forked by now: the master never uses their ends
                forked = self._pairs.get(age)
                if forked is not None and forked.worker is not None:
                    forked.worker.close()
                    forked.worker = None
            self._request_id += 1
            request_id = self._request_id
            chosen = {age: self._pairs.get(age) for age in workers}
            self._in_use = {id(pair) for pair in chosen.values() if pair is not None}
        answers: dict[int, dict[str, Any]] = {}
        missing: dict[int, str] = {}
        selector = _selector()
        try:
            for age, pair in chosen.items():
                reason = _ask(pair, request_id)
                if reason is not None:
                    missing[age] = reason
                elif pair is not None:
                    selector.register(pair.master, selectors.EVENT_READ, (age, pair))
            self._wait(selector, request_id, deadline, answers, missing)
        finally:
            selector.close()
            with self._lock:
                self._in_use = set()
                retired, self._retired = self._retired, []
                for pair in retired:
                    pair.close()
        for age in workers:
            if age not in answers:
                missing.setdefault(age, "timeout")
        return _result(answers, missing, workers)

    def _wait(
        self,
        selector: selectors.BaseSelector,
        request_id: int,
        deadline: float,
        answers: dict[int, dict[str, Any]],
        missing: dict[int, str],
    ) -> None:
        """Read the answers as they come, until all came or the deadline."""
        waiting = len(selector.get_map())
        while waiting:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            for key, _events in selector.select(remaining):
                age, pair = key.data
                outcome = self._read(pair, request_id)
                if outcome is None:
                    continue
                selector.unregister(key.fileobj)
                waiting -= 1
                if isinstance(outcome, str):
                    missing[age] = outcome
                else:
                    answers[age] = outcome

    def _read(self, pair: _Pair, request_id: int) -> dict[str, Any] | str | None:
        """Read what ``pair``'s worker sent: its answer to ``request_id``, a
        reason it will not come (``closed``, ``garbled``), or None (not yet).
        Answers to earlier requests are dropped."""
        while True:
            try:
                data = pair.master.recv(256 * 1024)
            except BlockingIOError:
                break
            except OSError:
                return "closed"
            if not data:
                return "closed"
            pair.buffer += data
        buffer = pair.buffer
        while len(buffer) >= _HEADER.size:
            magic, answer_id, length = _HEADER.unpack_from(buffer)
            if magic != _MAGIC or length > self.max_bytes:
                buffer.clear()
                return "garbled"
            end = _HEADER.size + length
            if len(buffer) < end:
                return None
            body = bytes(buffer[_HEADER.size : end])
            del buffer[:end]
            if answer_id != request_id:
                self.stale_discarded += 1
                continue
            try:
                answer = json.loads(body)
            except ValueError:
                return "garbled"
            return answer if isinstance(answer, dict) else "garbled"
        return None

    # -- worker ---------------------------------------------------------

    def after_fork(self, age: int) -> None:
        """Worker of ``age``, ``post_fork``: keep its own end, close every
        other end inherited from the master, and start the answering thread
        (a real OS thread, see the module docstring)."""
        # The master's HTTP thread may have held these locks at the fork:
        # in the child nobody would release them.
        self._lock = threading.Lock()
        self._gather_lock = threading.Lock()
        pairs, self._pairs = self._pairs, {}
        own = pairs.pop(age, None)
        for pair in pairs.values():
            pair.close()
        if own is None:
            return
        own.master.close()
        if own.worker is None:
            return
        self._own = own.worker
        self._own.setblocking(True)
        main_ident = os_thread_ident()  # post_fork runs in the main thread
        start_os_thread(self._serve, self._own, main_ident)

    def _serve(self, sock: socket.socket, main_ident: int) -> None:
        """The answering thread: block on the socket, answer each request."""
        own_ident = os_thread_ident()
        _ANSWERING.add(own_ident)
        fd = sock.fileno()
        pending = b""
        try:
            while True:
                try:
                    data = os.read(fd, 4096)
                except OSError:
                    return
                if not data:  # the master closed its end, or close() shut ours
                    return
                pending += data
                whole = len(pending) // _REQUEST.size * _REQUEST.size
                if not whole:
                    continue
                (request_id,) = _REQUEST.unpack_from(pending, whole - _REQUEST.size)
                pending = pending[whole:]  # the newest request only: the others are stale
                try:
                    body = self.answer(request_id, skip=own_ident, main_ident=main_ident)
                except Exception as exc:  # never let the thread die
                    body = json.dumps({"id": request_id, "error": repr(exc)[:1000]}).encode()
                try:
                    _write_all(fd, _HEADER.pack(_MAGIC, request_id, len(body)) + body)
                except OSError:
                    return
        finally:
            _ANSWERING.discard(own_ident)
            sock.close()

    def answer(
        self, request_id: int, *, skip: int | None = None, main_ident: int | None = None
    ) -> bytes:
        """The JSON answer to ``request_id``: this process's stacks, within
        ``max_bytes``. ``skip``: a thread to leave out (the answering one)."""
        return json.dumps(
            collect(
                request_id,
                skip=skip,
                main_ident=main_ident,
                max_frames=self.max_frames,
                max_bytes=self.max_bytes,
            ),
            separators=(",", ":"),
        ).encode()

    # -- any process ----------------------------------------------------

    def close_in_child(self) -> None:
        """A forked child that is not a worker (the re-exec child): close
        every end inherited, start nothing."""
        self._lock = threading.Lock()
        self._gather_lock = threading.Lock()
        pairs, self._pairs = self._pairs, {}
        for pair in pairs.values():
            pair.close()
        self._in_use = set()
        self._retired = []

    def close(self) -> None:
        """Master: close every pair (a gather in progress keeps its own until
        it ends). Worker: stop the answering thread (it closes its end)."""
        own, self._own = self._own, None
        if own is not None:
            with contextlib.suppress(OSError):
                own.shutdown(socket.SHUT_RDWR)  # wakes the thread's read with EOF
        with self._lock:
            pairs, self._pairs = self._pairs, {}
            for pair in pairs.values():
                self._retire(pair)


def _selector() -> selectors.BaseSelector:
    """A selector that holds no file descriptor of its own (poll), so a
    worker forked during a gather inherits nothing from it."""
    poll = getattr(selectors, "PollSelector", None)
    return poll() if poll is not None else selectors.DefaultSelector()


def _ask(pair: _Pair | None, request_id: int) -> str | None:
    """Send ``request_id`` on ``pair``; why it cannot be, or None."""
    if pair is None:
        return "no_channel"
    try:
        pair.master.send(_REQUEST.pack(request_id))
    except BlockingIOError:  # its unread requests fill the buffer: long stuck
        return "timeout"
    except OSError:
        return "closed"
    return None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _result(
    answers: Mapping[int, dict[str, Any]], missing: Mapping[int, str], workers: Mapping[int, int]
) -> dict[str, Any]:
    listed = [
        {
            "pid": workers[age],
            "age": age,
            "threads": answer.get("threads", []),
            "greenlets": answer.get("greenlets", []),
            "tasks": answer.get("tasks", []),
            "left_out": answer.get("left_out", 0),
            **({"error": answer["error"]} if "error" in answer else {}),
        }
        for age, answer in sorted(answers.items())
    ]
    silent = [
        {"pid": workers[age], "age": age, "reason": reason}
        for age, reason in sorted(missing.items())
    ]
    return {"workers": listed, "not_answering": silent}


# -- collecting, in the worker ------------------------------------------


def collect(
    request_id: int,
    *,
    skip: int | None = None,
    main_ident: int | None = None,
    max_frames: int = MAX_FRAMES,
    max_bytes: int = MAX_ANSWER_BYTES,
) -> dict[str, Any]:
    """This process's stacks: every thread (``sys._current_frames()``), every
    greenlet that is suspended (when greenlet is imported), every asyncio
    task not done (when asyncio is imported); at most about ``max_bytes`` of
    JSON. Safe from any thread: it only reads."""
    started = time.monotonic()
    budget = _Budget(max_bytes - 512)  # the envelope
    threads: list[dict[str, Any]] = []
    names = _thread_names(main_ident)
    frames = sys._current_frames()
    # The main thread first: under the sync worker, the request is there.
    for ident in sorted(frames, key=lambda i: (i != main_ident, i)):
        if ident == skip or ident in _ANSWERING:
            continue
        budget.add(threads, partial(_thread_entry, ident, names, frames[ident], max_frames))
    greenlets: list[dict[str, Any]] = []
    tasks: list[dict[str, Any]] = []
    greenlet_type = _greenlet_type()
    task_types = _task_types() if _event_loop_in(frames.values()) else ()
    del frames
    if greenlet_type is not None or task_types:
        # One snapshot of the heap, taken in one C call under the GIL: nothing
        # changes under the list while it is built. (The worker's other
        # threads wait for it: milliseconds for a few hundred thousand
        # objects; on demand only.) For asyncio this is the thread-safe way
        # to see a loop's tasks from another thread: ``asyncio.all_tasks``
        # reads a weak set that the loop's thread changes as tasks come and
        # go (the documentation calls it not thread-safe), and it needs the
        # loop, which the worker class keeps to itself. Each task's await
        # chain is then read from its coroutine (``cr_await``), not with
        # ``task.get_stack()``, which gives only the outermost coroutine's
        # frame of a suspended task.
        objects = gc.get_objects()
        for thing in objects:
            if greenlet_type is not None and isinstance(thing, greenlet_type):
                budget.add(greenlets, partial(_greenlet_entry, thing, max_frames))
            elif task_types and isinstance(thing, task_types):
                budget.add(tasks, partial(_task_entry, thing, max_frames))
        del objects
    return {
        "id": request_id,
        "pid": os.getpid(),
        "threads": threads,
        "greenlets": greenlets,
        "tasks": tasks,
        "left_out": budget.left_out,
        "seconds": round(time.monotonic() - started, 6),
    }


class _Budget:
    """Adds entries while they fit in ``remaining`` bytes of JSON; counts
    (without building) the ones that do not."""

    def __init__(self, remaining: int) -> None:
        self.remaining = remaining
        self.left_out = 0

    def add(
        self, entries: list[dict[str, Any]], build: Callable[[], dict[str, Any] | None]
    ) -> None:
        if self.remaining <= 0:
            self.left_out += 1
            return
        try:
            entry = build()
        except Exception:  # a greenlet or task that ended while read
            return
        if entry is None:
            return
        size = len(json.dumps(entry, separators=(",", ":"))) + 1
        if size > self.remaining:
            self.left_out += 1
            return
        self.remaining -= size
        entries.append(entry)


def _cap(stack: str) -> str:
    """At most ``MAX_STACK_CHARS`` of a stack, keeping its inner end."""
    if len(stack) <= MAX_STACK_CHARS:
        return stack
    return "  ... (cut)\n" + stack[-MAX_STACK_CHARS:]


def _thread_names(main_ident: int | None) -> dict[int, str]:
    """Thread names by OS thread id. Read from a copy of ``threading._active``
    (one C-level dict copy, atomic under the GIL) rather than through
    ``threading.enumerate()``, whose lock gevent replaces with a greenlet
    lock that a foreign OS thread must not wait on."""
    active = getattr(threading, "_active", None)
    names: dict[int, str] = {}
    if isinstance(active, dict):
        for ident, thread in dict(active).items():
            name = getattr(thread, "_name", None) or getattr(thread, "name", None)
            if isinstance(ident, int) and isinstance(name, str):
                names[ident] = name
    else:  # pragma: no cover - an interpreter without threading._active
        names = {t.ident: t.name for t in threading.enumerate() if t.ident is not None}
    if main_ident is not None:
        names.setdefault(main_ident, "MainThread")
    return names


def _greenlet_type() -> type | None:
    module = sys.modules.get("greenlet")
    kind = getattr(module, "greenlet", None)
    return kind if isinstance(kind, type) else None


def _event_loop_in(frames: Iterable[FrameType]) -> bool:
    """Whether a thread runs an asyncio event loop (a frame of the asyncio
    package on its stack; uvloop's loop is C, but ``asyncio.run`` and its
    runner are not): only then is the heap searched for tasks. Many sync
    apps import asyncio; they should not pay for a heap walk."""
    asyncio = sys.modules.get("asyncio")
    if asyncio is None:
        return False
    if "uvloop" in sys.modules:
        return True
    package = os.path.dirname(getattr(asyncio, "__file__", "") or "") + os.sep
    if package == os.sep:
        return True
    for frame in frames:
        outer: FrameType | None = frame
        depth = 0
        while outer is not None and depth < 1000:
            if outer.f_code.co_filename.startswith(package):
                return True
            outer = outer.f_back
            depth += 1
    return False


def _task_types() -> tuple[type, ...]:
    asyncio = sys.modules.get("asyncio")
    if asyncio is None:
        return ()
    kinds = [
        getattr(asyncio, "Task", None),
        getattr(getattr(asyncio, "tasks", None), "_PyTask", None),
    ]
    return tuple({kind for kind in kinds if isinstance(kind, type)})


def _thread_entry(
    ident: int, names: Mapping[int, str], frame: FrameType, max_frames: int
) -> dict[str, Any]:
    return {
        "name": names.get(ident, "thread"),
        "id": ident,
        "stack": _cap(bounded_stack(frame, max_frames)),
    }


def _greenlet_entry(greenlet: Any, max_frames: int) -> dict[str, Any] | None:
    """A suspended greenlet (the running one, and dead ones, have no
    ``gr_frame``: the running one is on its thread's stack)."""
    frame: FrameType | None = greenlet.gr_frame
    if frame is None:
        return None
    outer = frame
    while outer.f_back is not None:
        outer = outer.f_back
    return {
        "name": f"{type(greenlet).__name__} {outer.f_code.co_name}",
        "id": id(greenlet),
        "stack": _cap(bounded_stack(frame, max_frames)),
    }


def _task_entry(task: Any, max_frames: int) -> dict[str, Any] | None:
    """An asyncio task not done: its name and its coroutine's await chain."""
    if task.done():
        return None
    stack = bounded_coroutine_stack(task.get_coro(), max_frames)
    return {"name": str(task.get_name()), "id": id(task), "stack": _cap(stack or "")}


def stacks_response(
    channels: StackChannels | None, workers: Mapping[int, int], timeout: float = 1.5
) -> tuple[int, bytes]:
    """``GET /stacks.json``: ``(status, JSON body)``. ``workers`` is
    ``{age: pid}`` of the live workers. The default deadline, 1.5 s, leaves
    room to encode and send within the 2 s the page promises."""
    if channels is None:
        body = {"error": "stacks are not gathered in this server (no status sink)"}
        return 503, json.dumps(body).encode()
    return 200, json.dumps(channels.gather(workers, timeout)).encode()
