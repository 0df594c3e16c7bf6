"""SlabPool: the one memory pool of a reactor.

Goals: the kernel writes received bytes straight into memory Python can view
without copying; writes are staged in the same kind of memory and sent from
it; nothing on the hot path allocates per byte.

Plan: one page-aligned anonymous ``mmap`` holds the receive slots (slot ``i``
at ``i * slot_size``; registered with the kernel as the provided buffer
ring).  Write segments come from further ``mmap`` chunks made on demand and
are recycled LIFO, so hot segments stay in cache and idle connections hold
none.  Pages are only resident once touched, and ``trim`` gives the pages of
free segments beyond a small reserve back to the operating system
(``MADV_DONTNEED``; the mapping stays), so RSS returns near its baseline
when a burst of large replies is over.  A writer that needs more
contiguous memory than one segment gets a "jumbo" segment: a mapping of its
own, never recycled -- ``release`` forgets it and the pages are unmapped once
nothing references them.

Lifetimes: memoryviews handed out keep their ``mmap`` alive, so nothing can
dangle after shutdown.  A receive slot that went back to the kernel may be
overwritten at any moment; the connection layer releases the views it gave
out when a slot goes back, so stale use fails loudly.
"""

from __future__ import annotations

import mmap
from typing import TYPE_CHECKING, Any

from zerg._native import counters
from zerg._uring import ffi

_CHUNK_BYTES = 1 << 20


if TYPE_CHECKING:
    class _SegmentCounters:
        fill: int
        off: int
        sent: int
else:
    # Read and written per send by the C fast path: C integers, no int objects.
    _SegmentCounters = counters("SegmentCounters", ("fill", "off", "sent"))


class WriteSegment(_SegmentCounters):
    """A writable piece of the pool (``segment_size`` bytes, or any size when
    ``jumbo``).  ``fill`` bytes are staged; ``fill``, ``sent`` and ``off`` are
    C integers with the extension (``zerg._native.counters``)."""

    __slots__ = ("chunk", "jumbo", "ptr", "resident", "view")

    def __init__(self, ptr: Any, off: int, view: memoryview, jumbo: bool = False,
                 chunk: mmap.mmap | None = None) -> None:
        self.chunk = chunk      # the mapping it lives in (for trim)
        self.resident = False   # its pages may be resident (it was handed out)
        self.ptr = ptr          # cdata char* of the chunk (for the shim)
        self.off = off          # offset of this segment in its chunk
        self.view = view        # writable memoryview of the whole segment
        self.fill = 0           # bytes staged
        self.sent = 0           # bytes the kernel has taken
        self.jumbo = jumbo      # a mapping of its own: release() drops it, never recycles


class SlabPool:
    """Receive slots + write segments for one reactor."""

    __slots__ = ("_chunks", "_free", "_jumbo", "_jumbo_bytes", "_room_at", "_room_waiters",
                 "recv_base", "recv_view", "region", "segment_size", "segments_total",
                 "slot_count", "slot_size")

    def __init__(self, slot_size: int, slot_count: int, segment_size: int) -> None:
        self.slot_size = slot_size
        self.slot_count = slot_count
        self.segment_size = segment_size
        self.region = mmap.mmap(-1, slot_size * slot_count,
                                flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        self.recv_view = memoryview(self.region).toreadonly()
        self.recv_base = ffi.from_buffer(self.region)
        self._chunks: list[tuple[mmap.mmap, Any]] = []
        self._free: list[WriteSegment] = []
        self._jumbo: set[WriteSegment] = set()     # jumbo segments out
        self._jumbo_bytes = 0
        self.segments_total = 0
        self._room_waiters: list[Any] = []          # futures: see add_room_waiter
        self._room_at = 0

    def acquire(self) -> WriteSegment:
        free = self._free
        if not free:
            self._grow()
        seg = free.pop()
        seg.resident = True
        return seg

    def trim(self, keep: int) -> int:
        """Give the pages of free segments beyond the ``keep`` most recently
        used back to the operating system; returns how many were trimmed.
        They stay in the pool and are simply zero pages when reused."""
        free = self._free
        cold = len(free) - keep
        trimmed = 0
        size = self.segment_size
        if cold <= 0 or size % mmap.PAGESIZE:
            return 0
        for seg in free[:cold]:         # LIFO: the front of the list is the coldest
            if seg.resident and seg.chunk is not None:
                seg.chunk.madvise(mmap.MADV_DONTNEED, seg.off, size)
                seg.resident = False
                trimmed += 1
        return trimmed

    def acquire_jumbo(self, size: int) -> WriteSegment:
        """A segment of exactly ``size`` bytes over a page-aligned mapping of
        its own, for more contiguous memory than one segment.  It counts in
        ``segments_in_use`` until ``release``, which drops it (releasing it
        again is harmless)."""
        if size <= 0:
            raise ValueError(f"jumbo segment size must be > 0, got {size}")
        region = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        seg = WriteSegment(ffi.from_buffer(region), 0, memoryview(region), jumbo=True)
        self._jumbo.add(seg)
        self._jumbo_bytes += size
        return seg

    def release(self, seg: WriteSegment) -> None:
        seg.fill = 0
        seg.sent = 0
        if seg.jumbo:
            # Not recycled: forgotten here, unmapped once nothing references it.
            if seg in self._jumbo:
                self._jumbo.discard(seg)
                self._jumbo_bytes -= len(seg.view)
        else:
            self._free.append(seg)
        if self._room_waiters and self.bytes_in_use <= self._room_at:
            self._wake_room()

    def add_room_waiter(self, fut: Any, at: int) -> None:
        """Set ``fut`` (an asyncio future) once no more than ``at`` bytes are in
        use: how writers refused by the reactor's write budget wait for room."""
        if self.bytes_in_use <= at:
            fut.set_result(None)
            return
        self._room_waiters.append(fut)
        self._room_at = at

    def _wake_room(self) -> None:
        waiters, self._room_waiters = self._room_waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    @property
    def bytes_in_use(self) -> int:
        """Write memory out of the pool (staged, in flight or lent), in bytes."""
        return ((self.segments_total - len(self._free)) * self.segment_size
                + self._jumbo_bytes)

    @property
    def segments_in_use(self) -> int:
        """Write segments out of the pool, jumbo ones included."""
        return self.segments_total - len(self._free) + len(self._jumbo)

    def _grow(self) -> None:
        size = self.segment_size
        per_chunk = max(1, _CHUNK_BYTES // size)
        chunk = mmap.mmap(-1, per_chunk * size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        ptr = ffi.from_buffer(chunk)
        view = memoryview(chunk)
        self._chunks.append((chunk, ptr))
        # Reverse so pop() hands out the lowest offsets first.
        for i in reversed(range(per_chunk)):
            self._free.append(WriteSegment(ptr, i * size, view[i * size:(i + 1) * size],
                                           chunk=chunk))
        self.segments_total += per_chunk
