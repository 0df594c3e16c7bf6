"""BufferWriter: .NET's ``IBufferWriter<byte>`` over a connection.

Goals: build a response in place in slab memory — ``get_memory`` hands out
writable memory, ``advance`` commits what was written — with no size limit
of one write segment: segments are chained, so one response may be many
megabytes, bounded only by ``ReactorConfig.max_write_buffer``; and
``get_memory(size_hint)`` is served in one piece for any size_hint up to
that bound (past one segment, from a jumbo segment: a mapping of its own).

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

import mmap

import zerg.adapters._threads as _threads
from zerg._buffers import BytesLike
from zerg._connection import Connection, PipeOutput
from zerg._errors import WriteBufferFullError
from zerg._slab import WriteSegment


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

    def _new_segment(self, want: int) -> WriteSegment:
        """Lend a segment with room for ``want`` bytes and make it current."""
        conn = self._conn
        out = self._output
        cap = out.max_write_buffer
        room = cap - out.pending - self._size
        size = out.segment_size
        if want > size:
            # Jumbo: a mapping of its own, rounded up to whole pages but never
            # past the cap, so all it hands out may be committed.
            size = min(-(-want // mmap.PAGESIZE) * mmap.PAGESIZE, max(room, want))
        if size > room:
            raise WriteBufferFullError(
                f"the response would pass max_write_buffer={cap} bytes "
                f"({self._size} written, {out.pending} queued); flush first"
            )
        # The pool belongs to the reactor thread: lend there.
        if _threads.on_reactor_thread(conn):
            seg = out.lend(size)
        else:
            seg = _threads.call(conn, out.lend, size)
        self._segs.append(seg)
        self._cur = seg
        return seg

    def get_memory(self, size_hint: int = 0) -> memoryview:
        """Writable memory of at least ``max(size_hint, 1)`` bytes; write into
        it, then ``advance(n)`` for the ``n`` bytes written.

        Any ``size_hint`` up to the connection's ``max_write_buffer`` is served
        in one contiguous piece, without copies: up to ``write_buffer_size``
        from the pool's segments, beyond it from a segment with a mapping of
        its own (freed once sent).  The memory may be longer than asked;
        it stays valid until the next ``get_memory``, ``write`` or flush.

        Raises ``WriteBufferFullError`` when ``size_hint`` is over
        ``max_write_buffer``, or when the new segment it needs would take the
        bytes written and queued past it (flush first); ``ValueError`` when
        ``size_hint`` is negative."""
        if size_hint < 0:
            raise ValueError(f"size_hint must be >= 0, got {size_hint}")
        cap = self._output.max_write_buffer
        if size_hint > cap:
            raise WriteBufferFullError(
                f"get_memory({size_hint}) asks for more than max_write_buffer={cap} bytes"
            )
        want = size_hint or 1
        seg = self._cur
        if seg is None or len(seg.view) - seg.fill < want:
            seg = self._new_segment(want)
        self._granted = len(seg.view) - seg.fill
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
        """Copy ``data`` (any buffer) in, chaining pool segments as needed."""
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
