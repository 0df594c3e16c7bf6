"""ConnectionStream: a zerg connection as an ``io.RawIOBase`` for stdlib code.

Goals: ``io.BufferedReader``, ``io.BufferedWriter``, ``io.BufferedRWPair`` and
``io.TextIOWrapper`` work on a connection unchanged, from a worker thread,
losing nothing and copying once.

Plan: the stream is built on the connection's duplex pipe (``conn.input``,
``conn.output``), so it works unchanged over any layer that offers the same
faces.  ``readinto`` makes one round trip to the reactor: there it reads the
input pipe (waiting for data, the end, or ``timeout``), copies into the
caller's buffer (the one copy; the caller's thread is blocked meanwhile, so
nothing races) and consumes what it copied; what does not fit stays in its
slot for the next call.  Copying on the reactor thread means a close can
never pull slots away under a copy.  ``write`` stages a copy on the reactor
and, past the output's high-water mark, waits for it to drain, so a slow
peer slows the writer instead of growing memory.

Warnings: blocking calls run on worker threads (a plain ``def handler``).
On the reactor thread they raise ``RuntimeError`` rather than deadlock.
"""

from __future__ import annotations

import asyncio
import io
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

import zerg.adapters._threads as _threads
from zerg._buffers import BytesLike
from zerg._connection import Connection, PipeInput, PipeOutput
from zerg._errors import WriteBufferFullError


class ConnectionStream(io.RawIOBase):
    """Blocking, unbuffered file object over a connection (not seekable)."""

    def __init__(self, conn: Connection, timeout: float | None = None) -> None:
        super().__init__()
        if timeout is not None and timeout <= 0:
            raise ValueError(f"timeout must be None or > 0, got {timeout!r}")
        self._conn = conn
        self._input: PipeInput = conn.input
        self._output: PipeOutput = conn.output
        self.timeout = timeout
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
    async def _read_into(self, mv: memoryview) -> int:
        """On the reactor: wait for bytes, copy what fits into ``mv``, consume it."""
        inp = self._input
        if self.timeout is None:
            result = await inp.read()
        else:
            try:
                result = await asyncio.wait_for(inp.read(), self.timeout)
            except TimeoutError:
                raise TimeoutError(
                    f"no data from the peer within {self.timeout}s (ConnectionStream timeout)"
                ) from None
        buf = result.buffer
        n = buf.copy_into(mv)
        # Everything copied was examined; a rest that did not fit was not.
        inp.advance_to(n, n)
        if n == 0 and result.is_completed:
            self._eof = True
        return n

    def readinto(self, b: WriteableBuffer) -> int:
        """Copy at least one byte into ``b``; 0 only at the end of the stream."""
        self._checkClosed()
        mv = memoryview(b).cast("B")
        if len(mv) == 0 or self._eof:
            return 0
        _threads.refuse_on_reactor(self._conn, "ConnectionStream.readinto()")
        try:
            return _threads.run(self._conn, self._read_into(mv))
        except ConnectionError:
            self._eof = True
            return 0

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
        out = self._output
        cap = out.max_write_buffer
        view = memoryview(data)
        while view:
            room = cap - conn.pending_write_bytes
            if room <= 0:
                await conn.wait_sent()
                continue
            chunk = view[:room]
            try:
                conn.write(chunk)
            except WriteBufferFullError:
                await conn.flush()
                continue
            view = view[len(chunk):]
        if out.pending >= out.high_water:
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
            _threads.run(self._conn, self._conn.wait_sent())

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
                _threads.post(conn, conn.close)
            else:
                conn.close()
        finally:
            super().close()
