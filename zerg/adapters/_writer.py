"""BufferWriter: .NET's ``IBufferWriter<byte>`` over a connection.

Goals: build a response in place in slab memory — ``get_memory`` hands out
writable memory, ``advance`` commits what was written — with no size limit
of one write segment: segments are chained, so one response may be many
megabytes, bounded only by ``ReactorConfig.max_write_buffer``.

Plan: the writer fills segments lent by the connection (from the reactor's
slab pool) privately; ``flush`` hands the whole chain to the connection's
send queue in order (waiting only for back-pressure; ``wait_sent`` waits
until the kernel took it); the segments go back
to the pool as their sends complete (or when the connection closes, if the
writer is dropped unflushed).  Works on the reactor thread (``await
flush()``) and on worker threads (``flush_sync()``).

Warnings: memory from ``get_memory`` is valid until the next ``get_memory``,
``write`` or flush.
"""

from __future__ import annotations

from zerg._buffers import BytesLike
from zerg._connection import Connection, PipeOutput
from zerg._errors import WriteBufferFullError
from zerg._slab import WriteSegment
from zerg.adapters import _threads


class BufferWriter:
    """Chained slab segments, filled in place, sent in order by ``flush``."""

    __slots__ = ("_conn", "_cur", "_granted", "_output", "_segs", "_size")

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._output: PipeOutput = conn.output
        self._segs: list[WriteSegment] = []
        self._cur: WriteSegment | None = None
        self._granted = 0
        self._size = 0

    @property
    def written(self) -> int:
        """Bytes committed and not yet flushed."""
        return self._size

    def _new_segment(self, size: int) -> WriteSegment:
        conn = self._conn
        out = self._output
        cap = out.max_write_buffer
        if out.pending + self._size + size > cap:
            raise WriteBufferFullError(
                f"the response would pass max_write_buffer={cap} bytes "
                f"({self._size} written, {out.pending} queued); flush first"
            )
        # The pool belongs to the reactor thread: lend there.
        seg = out.lend() if _threads.on_reactor_thread(conn) else _threads.call(conn, out.lend)
        self._segs.append(seg)
        self._cur = seg
        return seg

    def get_memory(self, size_hint: int = 0) -> memoryview:
        """Writable memory of at least ``max(size_hint, 1)`` bytes (up to one
        write segment); write into it, then ``advance(n)``."""
        seg_size = self._output.segment_size
        if size_hint < 0:
            raise ValueError(f"size_hint must be >= 0, got {size_hint}")
        if size_hint > seg_size:
            raise ValueError(
                f"size_hint {size_hint} exceeds write_buffer_size={seg_size}; ask for less and "
                "advance() in pieces, or use write()"
            )
        want = size_hint or 1
        seg = self._cur
        if seg is None or seg_size - seg.fill < want:
            seg = self._new_segment(seg_size)
        self._granted = seg_size - seg.fill
        return seg.view[seg.fill:]

    def advance(self, n: int) -> None:
        """Commit ``n`` bytes of the memory from the last ``get_memory``."""
        if not 0 <= n <= self._granted:
            raise ValueError(
                f"advance({n}) past the {self._granted} bytes handed out by get_memory()"
            )
        if n:
            assert self._cur is not None
            self._cur.fill += n
            self._granted -= n
            self._size += n

    def write(self, data: BytesLike) -> None:
        """Copy ``data`` (any buffer) in, chaining segments as needed."""
        view = memoryview(data).cast("B")
        seg_size = self._output.segment_size
        while view:
            mem = self.get_memory(min(len(view), seg_size))
            k = min(len(mem), len(view))
            mem[:k] = view[:k]
            self.advance(k)
            view = view[k:]

    def _take(self) -> list[WriteSegment]:
        segs = self._segs
        self._segs = []
        self._cur = None
        self._granted = 0
        self._size = 0
        return segs

    def _commit(self) -> None:
        segs = self._take()
        if segs:
            self._output.enqueue(segs)

    async def flush(self) -> None:
        """Send everything written, in order, with back-pressure: like
        ``Connection.flush`` (.NET ``FlushAsync``), it waits only while more
        than the pause mark is pending."""
        self._commit()
        await self._output.flush()

    async def wait_sent(self) -> None:
        """Send everything written; returns when the kernel took all of it."""
        self._commit()
        await self._output.wait_sent()

    def flush_sync(self) -> None:
        """For worker threads: send everything written; blocks until the kernel
        took it."""
        _threads.refuse_on_reactor(self._conn, "BufferWriter.flush_sync()")
        _threads.run(self._conn, self.wait_sent())
