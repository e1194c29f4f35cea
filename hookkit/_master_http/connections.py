"""The connection table and the one selector thread that does all socket I/O.

A thread per connection with a timeout per read is held forever by a client
sending a byte every few seconds: 64 such clients took every slot of the old
server and every scrape failed. Here no thread waits on a client:

- One selector thread accepts, does the TLS handshake (non-blocking:
  ``do_handshake`` retried on ``SSLWantReadError``/``SSLWantWriteError``),
  reads request heads and writes responses, all on non-blocking sockets.
- A head, the handshake included, must be complete within ``head_timeout``
  of the accept, however the bytes trickle in, and within ``max_head``
  bytes (else 431).
- A complete head goes to the worker pool; its answer comes back here to be
  written, all of it within ``write_timeout`` (a client that reads too
  slowly is dropped then).
- The table holds at most ``max_connections``. A new connection that finds
  it full drops the connection whose head is oldest and still incomplete
  (a slow client, never a request being answered), else the oldest still
  being written to (a slow reader); only a table of requests being
  answered refuses it. So a new scraper always gets in.

Dropping a connection shuts it down before closing it, so the client sees
the end even if a worker forked meanwhile holds a copy of its descriptor,
and resets it, so nothing unsent lingers in the kernel.
"""

from __future__ import annotations

import contextlib
import functools
import selectors
import socket
import ssl
import struct
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from hookkit._master_http.messages import head_end
from hookkit._master_http.pool import Pool
from hookkit._master_http.routes import HEAD_TOO_LARGE, INTERNAL_ERROR

HANDSHAKE, HEAD, ANSWERING, WRITING = "handshake", "head", "answering", "writing"
INCOMPLETE = (HANDSHAKE, HEAD)
RECV_SIZE = 16384
SEND_SIZE = 65536
ACCEPT_BATCH = 64  # accepts per wake-up, so a flood does not starve the rest
TICK = 0.5  # the longest the selector sleeps


@dataclass(eq=False)
class Connection:
    """One client's connection and where it stands."""

    sock: socket.socket
    opened: float
    deadline: float
    state: str
    buffer: bytearray = field(default_factory=bytearray)
    out: memoryview | None = None
    sent: int = 0
    events: int = 0  # what the selector watches for it; 0: not registered


class Connections:
    """Serve ``listener`` until ``stop``; ``run`` is the selector thread."""

    def __init__(
        self,
        listener: socket.socket,
        context: ssl.SSLContext | None,
        answer: Callable[[bytes], bytes],
        pool: Pool,
        *,
        head_timeout: float,
        write_timeout: float,
        max_head: int,
        max_connections: int,
    ) -> None:
        self.listener = listener
        self.context = context
        self.answer = answer
        self.pool = pool
        self.head_timeout = head_timeout
        self.write_timeout = write_timeout
        self.max_head = max_head
        self.max_connections = max_connections
        self.refused = 0  # new connections closed: the table held only requests being answered
        self.evicted = 0  # connections dropped to make room for a new one
        self.table: set[Connection] = set()
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._done: deque[tuple[Connection, bytes]] = deque()
        self._stop_at: float | None = None  # monotonic time to give up at, once stopping
        self._listening = True

    # -- other threads ---------------------------------------------------------

    def stop(self, wait: float) -> None:
        """Accept no more; finish the requests in hand within ``wait`` s."""
        self._stop_at = time.monotonic() + wait
        self._wake()

    def close_in_child(self) -> None:
        """In a forked child (no threads here): close every descriptor the
        server had, without a shutdown (the master's connections go on)."""
        for sock in (
            self.listener,
            self._wake_r,
            self._wake_w,
            *(c.sock for c in list(self.table)),
        ):
            with contextlib.suppress(OSError):
                sock.close()
        with contextlib.suppress(OSError):
            self._selector.close()  # this process's descriptor of it only

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # full: a wake-up is already pending
            self._wake_w.send(b"\0")

    def _answered(self, conn: Connection, head: bytes) -> None:
        """In a worker: answer, and hand the bytes back to be written."""
        try:
            data = self.answer(head)
        except Exception:
            data = INTERNAL_ERROR
        self._done.append((conn, data))
        self._wake()

    # -- the selector thread ---------------------------------------------------

    def run(self) -> None:
        self.listener.setblocking(False)
        self._selector.register(self.listener, selectors.EVENT_READ, self.listener)
        self._selector.register(self._wake_r, selectors.EVENT_READ, self._wake_r)
        try:
            while not self._finished():
                with contextlib.suppress(Exception):  # a bug met by one client never stops it
                    self._round()
        finally:
            for conn in list(self.table):
                self._drop(conn)
            self._stop_listening()
            self._selector.close()
            for sock in (self._wake_r, self._wake_w):
                sock.close()

    def _round(self) -> None:
        for key, _ in self._selector.select(self._timeout()):
            if key.data is self.listener:
                self._accept()
            elif key.data is self._wake_r:
                self._woken()
            else:
                self._step(key.data)
        self._expire()

    def _finished(self) -> bool:
        if self._stop_at is None:
            return False
        self._stop_listening()
        return not self.table or time.monotonic() >= self._stop_at

    def _stop_listening(self) -> None:
        if self._listening:
            self._listening = False
            with contextlib.suppress(KeyError, ValueError, OSError):
                self._selector.unregister(self.listener)
            with contextlib.suppress(OSError):
                self.listener.close()

    def _timeout(self) -> float:
        now = time.monotonic()
        deadlines = [c.deadline for c in self.table if c.state != ANSWERING]
        if self._stop_at is not None:
            deadlines.append(self._stop_at)
        if not deadlines:
            return TICK
        return min(TICK, max(0.0, min(deadlines) - now))

    def _accept(self) -> None:
        for _ in range(ACCEPT_BATCH):
            if not self._listening:
                return
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # out of descriptors, or the listener closed
                return
            self._admit(sock)

    def _admit(self, sock: socket.socket) -> None:
        if len(self.table) >= self.max_connections and not self._make_room():
            self.refused += 1
            _shut(sock)
            return
        now = time.monotonic()
        try:
            sock.setblocking(False)
            if self.context is not None:
                sock = self.context.wrap_socket(
                    sock, server_side=True, do_handshake_on_connect=False
                )
        except (OSError, ValueError):
            _shut(sock)
            return
        state = HEAD if self.context is None else HANDSHAKE
        conn = Connection(sock, now, now + self.head_timeout, state)
        self.table.add(conn)
        self._watch(conn, selectors.EVENT_READ)

    def _make_room(self) -> bool:
        """Drop the connection whose head is oldest and incomplete, else the
        oldest being written to; False if every one is being answered."""
        for states in (INCOMPLETE, (WRITING,)):
            candidates = [c for c in self.table if c.state in states]
            if candidates:
                self._drop(min(candidates, key=lambda c: c.opened))
                self.evicted += 1
                return True
        return False

    def _woken(self) -> None:
        with contextlib.suppress(OSError):
            while self._wake_r.recv(4096):
                pass
        while self._done:
            conn, data = self._done.popleft()
            if conn in self.table:
                self._reply(conn, data)

    def _step(self, conn: Connection) -> None:
        if conn not in self.table:  # dropped earlier in this round
            return
        try:
            if conn.state == HANDSHAKE:
                self._handshake(conn)
            elif conn.state == HEAD:
                self._read(conn)
            elif conn.state == WRITING:
                self._write(conn)
        except Exception:
            self._drop(conn)

    def _handshake(self, conn: Connection) -> None:
        assert isinstance(conn.sock, ssl.SSLSocket)
        try:
            conn.sock.do_handshake()
        except ssl.SSLWantReadError:
            self._watch(conn, selectors.EVENT_READ)
            return
        except ssl.SSLWantWriteError:
            self._watch(conn, selectors.EVENT_WRITE)
            return
        except (OSError, ValueError):  # not TLS, an untrusted client, gone
            self._drop(conn)
            return
        conn.state = HEAD
        self._read(conn)  # what came with the handshake is buffered in ssl

    def _read(self, conn: Connection) -> None:
        while True:
            try:
                data = conn.sock.recv(RECV_SIZE)
            except (BlockingIOError, InterruptedError, ssl.SSLWantReadError):
                self._watch(conn, selectors.EVENT_READ)
                return
            except ssl.SSLWantWriteError:
                self._watch(conn, selectors.EVENT_WRITE)
                return
            except OSError:
                self._drop(conn)
                return
            if not data:
                self._drop(conn)
                return
            conn.buffer += data
            end = head_end(conn.buffer)
            if end > self.max_head or (end < 0 and len(conn.buffer) > self.max_head):
                self._reply(conn, HEAD_TOO_LARGE)
                return
            if end >= 0:
                head = bytes(conn.buffer[:end])
                conn.buffer = bytearray()
                conn.state = ANSWERING
                self._watch(conn, 0)
                self.pool.submit(functools.partial(self._answered, conn, head))
                return

    def _reply(self, conn: Connection, data: bytes) -> None:
        conn.state = WRITING
        conn.deadline = time.monotonic() + self.write_timeout
        conn.out, conn.sent = memoryview(data), 0
        self._write(conn)

    def _write(self, conn: Connection) -> None:
        out = conn.out
        assert out is not None
        while conn.sent < len(out):
            try:
                conn.sent += conn.sock.send(out[conn.sent : conn.sent + SEND_SIZE])
            except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError):
                self._watch(conn, selectors.EVENT_WRITE)
                return
            except ssl.SSLWantReadError:
                self._watch(conn, selectors.EVENT_READ)
                return
            except OSError:
                self._drop(conn)
                return
        self._close(conn)

    def _expire(self) -> None:
        now = time.monotonic()
        for conn in [c for c in self.table if c.state != ANSWERING and c.deadline <= now]:
            self._drop(conn)

    def _watch(self, conn: Connection, events: int) -> None:
        if events == conn.events:
            return
        if events == 0:
            self._selector.unregister(conn.sock)
        elif conn.events == 0:
            self._selector.register(conn.sock, events, conn)
        else:
            self._selector.modify(conn.sock, events, conn)
        conn.events = events

    def _forget(self, conn: Connection) -> None:
        self.table.discard(conn)
        if conn.events:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self._selector.unregister(conn.sock)
            conn.events = 0

    def _close(self, conn: Connection) -> None:
        """The response is written: end the connection in order."""
        self._forget(conn)
        with contextlib.suppress(OSError):
            conn.sock.shutdown(socket.SHUT_WR)
        with contextlib.suppress(OSError):
            conn.sock.close()

    def _drop(self, conn: Connection) -> None:
        """End the connection at once (a deadline, an error, room needed)."""
        self._forget(conn)
        _shut(conn.sock)


def _shut(sock: socket.socket) -> None:
    """Shut down and close at once, discarding what is unsent (a reset):
    a dropped slow reader leaves no orphan socket with a full buffer behind."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
