"""ConnectionStream: a zerg connection as an ``io.RawIOBase`` for stdlib code.

Goals: ``io.BufferedReader``, ``io.BufferedWriter``, ``io.BufferedRWPair`` and
``io.TextIOWrapper`` work on a connection unchanged, from a worker thread,
losing nothing and copying once.

Plan: ``readinto`` copies from received slots into the caller's buffer (the
one copy); what does not fit stays in its slot for the next call, and every
slot whose bytes were all copied goes back to the kernel right after the
call.  When nothing is buffered, one round trip to the reactor waits for the
next batch of slots (or the end, or ``timeout``).  ``write`` stages a copy on
the reactor and, past a high-water mark, waits for it to drain, so a slow
peer slows the writer instead of growing memory.

Warnings: blocking calls run on worker threads (a plain ``def handler``).
On the reactor thread they raise ``RuntimeError`` rather than deadlock.
"""

from __future__ import annotations

import asyncio
import io
from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

from zerg._buffers import BytesLike
from zerg._connection import Connection, RingItem
from zerg._errors import WriteBufferFullError
from zerg.adapters import _threads


class ConnectionStream(io.RawIOBase):
    """Blocking, unbuffered file object over a connection (not seekable)."""

    def __init__(self, conn: Connection, timeout: float | None = None) -> None:
        super().__init__()
        if timeout is not None and timeout <= 0:
            raise ValueError(f"timeout must be None or > 0, got {timeout!r}")
        self._conn = conn
        self.timeout = timeout
        self._items: deque[RingItem] = deque()
        self._off = 0               # bytes of _items[0] already copied out
        self._eof = False

    timeout: float | None
    """Seconds ``readinto`` waits for data before ``TimeoutError`` (None: forever)."""

    @property
    def connection(self) -> Connection:
        """The connection this stream reads and writes."""
        return self._conn

    def readable(self) -> bool:
        """Always True."""
        return True

    def writable(self) -> bool:
        """Always True."""
        return True

    def seekable(self) -> bool:
        """Always False: a connection is a stream."""
        return False

    # ------------------------------------------------------------------ read
    async def _fetch(self) -> tuple[list[RingItem], bool]:
        conn = self._conn
        if self.timeout is None:
            snap = await conn.read()
        else:
            try:
                snap = await asyncio.wait_for(conn.read(), self.timeout)
            except TimeoutError:
                raise TimeoutError(
                    f"no data from the peer within {self.timeout}s (ConnectionStream timeout)"
                ) from None
        items: list[RingItem] = []
        while (item := conn.try_get_ring(snap)) is not None:
            items.append(item)
        conn._disown(items)     # ours now: a close on the loop must not pull them away
        return items, snap.is_closed

    def _give_back(self, items: list[RingItem]) -> None:
        self._conn._return_disowned(items)

    def readinto(self, b: WriteableBuffer) -> int:
        """Copy at least one byte into ``b``; 0 only at the end of the stream."""
        self._checkClosed()
        mv = memoryview(b).cast("B")
        n = len(mv)
        if n == 0:
            return 0
        items = self._items
        if not items:
            if self._eof:
                return 0
            _threads.refuse_on_reactor(self._conn, "ConnectionStream.readinto()")
            try:
                got, closed = _threads.run(self._conn, self._fetch())
            except ConnectionError:
                got, closed = [], True
            items.extend(got)
            self._eof = closed
            if not items:
                return 0
        filled = 0
        done: list[RingItem] = []
        off = self._off
        while filled < n and items:
            item = items[0]
            take = min(item.length - off, n - filled)
            mv[filled:filled + take] = item.view[off:off + take]
            filled += take
            off += take
            if off == item.length:
                done.append(items.popleft())
                off = 0
        self._off = off
        if done:
            _threads.post(self._conn, self._give_back, done)
        return filled

    def read(self, size: int = -1, /) -> bytes:
        """Up to ``size`` bytes (all until EOF if negative); b"" only at EOF.

        Never None: the stream blocks instead (it is not non-blocking), which
        is what lets ``io.BufferedReader`` and friends type-check on it.
        """
        data = super().read(size)
        assert data is not None
        return data

    def readall(self) -> bytes:
        """Every byte until the peer ends the stream."""
        data = super().readall()
        assert data is not None
        return data

    # ----------------------------------------------------------------- write
    async def _write(self, data: bytes) -> None:
        conn = self._conn
        cap = conn._reactor.max_write_buffer
        view = memoryview(data)
        while view:
            room = cap - conn.pending_write_bytes
            if room <= 0:
                await conn.flush()
                continue
            chunk = view[:room]
            try:
                conn.write(chunk)
            except WriteBufferFullError:
                await conn.flush()
                continue
            view = view[len(chunk):]
        if conn.pending_write_bytes >= conn._reactor.pool.segment_size * 4:
            await conn.flush()      # high-water mark: let a slow peer slow us down
        else:
            conn.flush_nowait()     # a raw write goes out now, without waiting

    def write(self, b: BytesLike) -> int:
        """Stage all of ``b`` for sending and return its length."""
        self._checkClosed()
        _threads.refuse_on_reactor(self._conn, "ConnectionStream.write()")
        data = bytes(b)
        if data:
            _threads.run(self._conn, self._write(data))
        return len(data)

    def flush(self) -> None:
        """Block until the kernel took every staged byte."""
        if self.closed:
            return
        if _threads.on_reactor_thread(self._conn):
            return          # io's close() and __del__ flush; never block the loop
        if self._conn.pending_write_bytes:
            _threads.run(self._conn, self._conn.flush())

    def close(self) -> None:
        """Flush, then close the connection.  Idempotent; never blocks the loop."""
        if self.closed:
            return
        conn = self._conn
        try:
            if not _threads.on_reactor_thread(conn):
                try:
                    self.flush()
                except (ConnectionError, OSError):
                    pass
                items = list(self._items)
                self._items.clear()
                _threads.post(conn, self._close_on_loop, items)
            else:
                self._close_on_loop(list(self._items))
                self._items.clear()
        finally:
            super().close()

    def _close_on_loop(self, items: list[RingItem]) -> None:
        self._give_back(items)
        self._conn.close()
