"""RecvSlots: the one owner of a reactor's receive slots.

Why one owner: the receive slot is the scarce resource of this design.  Every
connection of a reactor receives into the same provided buffer ring, so a
slot that is not given back -- or given back twice -- starves or corrupts
everyone.  This module is the only place that knows what a slot key means,
how many slots are out, and when they go back to the kernel.

Operations:
  - ``on_cqe(res, flags, bid)``: a receive completion carried a buffer.  Returns
    the key of the bytes to deliver (``res > 0``) or None (nothing to deliver;
    the slot is queued back if the kernel is done with it).
  - ``view(key, n)``: the received bytes, a read-only memoryview, no copy.
  - ``give_back(key)``: the application is done with ``key``.
  - ``flush()``: return the batch to the kernel (many ``buf_ring_add``, one tail
    store, in the shim) and report parked sinks that may re-arm now.
  - ``pin(key)`` / ``unpin(key)``: a send (``Connection.forward``) reads the
    slot; a ``give_back`` meanwhile is deferred until the last unpin, so the
    kernel cannot refill memory a send still reads, whoever gives it back.
  - ``park(sink)``: a multishot recv ended with ``ENOBUFS``; re-arm it when
    slots are back.  Parking also asks for ring relief (``take_relief``): bytes
    waiting for their handler are moved off the ring by their connections.

Keys: a key is an opaque int to everyone else.  Normally it is the slot id.
With incremental consumption (``IOU_PBUF_RING_INC``, Linux 6.12) the kernel
fills one slot with several receives at successive offsets (and says so with
``IORING_CQE_F_BUF_MORE``); a key is then ``slot | offset << 16``, and a slot
goes back only when the kernel is done with it *and* every part handed out
was given back.  Bytes moved off the ring have no key at all (``None`` in the
input pipe), never a sentinel id.

Threading: reactor thread only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from zerg._native import speedups
from zerg._ring import CQE_F_BUF_MORE, Ring
from zerg._slab import SlabPool
from zerg._uring import ffi, lib

if TYPE_CHECKING:
    from zerg._seam import CompletionSink

_OFFSET_SHIFT: Final = 16
_SLOT_MASK: Final = (1 << _OFFSET_SHIFT) - 1


class RecvSlots:
    """Receive region, buffer-ring registration and slot accounting of one reactor."""

    __slots__ = ("_deferred", "_parked", "_pins", "_relief", "_ret_arr", "_returns", "bytes_in",
                 "keys_are_slots", "out", "pool", "ptr", "recv_view", "shared_cqes",
                 "slot_size", "total")

    def __init__(self, ring: Ring, pool: SlabPool) -> None:
        self.pool = pool
        self.ptr = ring.ptr
        self.total = pool.slot_count
        self.slot_size = pool.slot_size
        self.recv_view = pool.recv_view
        self.keys_are_slots = True          # slot_of(key) == key (not incremental)
        self.out = 0                        # slots the application holds (some part of)
        self.bytes_in = 0
        self.shared_cqes = 0                # receives into a slot the kernel still fills
        self._returns: list[int] = []       # slot ids waiting for the next flush
        self._ret_arr = ffi.new("unsigned short[]", self.total)
        self._parked: list[CompletionSink] = []
        self._relief = False
        self._pins: dict[int, int] = {}         # slot -> sends reading it (forward)
        self._deferred: dict[int, int] = {}     # slot -> give_backs held until unpinned

    @classmethod
    def create(cls, ring: Ring, pool: SlabPool, *, incremental: bool) -> RecvSlots:
        """Register ``pool``'s receive region as buffer group 0 of ``ring``; the
        C implementation (``zerg._speedups.RecvSlots``) unless the reference
        was asked for."""
        ring.setup_buffer_ring(0, pool.slot_count, pool.recv_base, pool.slot_size,
                               incremental=incremental)
        if speedups is not None:
            native: RecvSlots = speedups.RecvSlots(
                ring_address=ring.address, owner=ring, recv_view=pool.recv_view,
                slot_size=pool.slot_size, total=pool.slot_count, incremental=incremental)
            return native
        return IncrementalRecvSlots(ring, pool) if incremental else cls(ring, pool)

    # ------------------------------------------------------------ hot path
    def on_cqe(self, res: int, flags: int, bid: int) -> int | None:
        """A receive completion with a buffer: the key to deliver, or None."""
        self.out += 1
        if res > 0:
            self.bytes_in += res
            return bid
        self.give_back(bid)
        return None

    def view(self, key: int, n: int) -> memoryview:
        """The ``n`` received bytes of ``key``: read-only, zero-copy.  Valid
        until the key is given back (the kernel may overwrite them after)."""
        start = key * self.slot_size
        return self.recv_view[start:start + n]

    def slot_of(self, key: int) -> int:
        """The buffer-ring slot a key lives in (``RingItem.buffer_id``)."""
        return key

    def give_back(self, key: int) -> None:
        """The application is done with ``key``; it goes back at the next flush
        (or, while a send reads its slot, at the last ``unpin``)."""
        if self._pins and self._defer(key):
            return
        self._returns.append(key)
        self.out -= 1

    # ------------------------------------------------------------- pinning
    def pin(self, key: int) -> None:
        """A send reads ``key``'s memory: its slot may not go back until ``unpin``."""
        bid = self.slot_of(key)
        self._pins[bid] = self._pins.get(bid, 0) + 1

    def unpin(self, key: int) -> None:
        """The send that read ``key`` completed (or was dropped); give-backs
        that came meanwhile happen now, if this was the last pin."""
        bid = self.slot_of(key)
        left = self._pins.get(bid, 0) - 1
        if left < 0:
            raise RuntimeError(f"zerg bug: slot {bid} unpinned more often than pinned")
        if left:
            self._pins[bid] = left
            return
        del self._pins[bid]
        for _ in range(self._deferred.pop(bid, 0)):
            self.give_back(key)

    def _defer(self, key: int) -> bool:
        bid = self.slot_of(key)
        if bid not in self._pins:
            return False
        self._deferred[bid] = self._deferred.get(bid, 0) + 1
        return True

    @property
    def pinned(self) -> int:
        """Slots a send still reads (``Connection.forward``)."""
        return len(self._pins)

    # ------------------------------------------------------------ batching
    @property
    def returns_pending(self) -> bool:
        """Slots wait to go back, or parked receives wait to re-arm."""
        return bool(self._returns) or bool(self._parked)

    def flush(self) -> list[CompletionSink]:
        """Return every given-back slot to the kernel in one batch; the parked
        sinks that can re-arm now (the caller re-arms them)."""
        rets = self._returns
        if rets:
            arr = self._ret_arr
            cap = len(arr)
            for i in range(0, len(rets), cap):
                chunk = rets[i:i + cap]
                arr[0:len(chunk)] = chunk
                lib.zu_bufring_return(self.ptr, arr, len(chunk))
            rets.clear()
        parked = self._parked
        if parked and self.out < self.total:
            self._parked = []
            return parked
        return []

    def park(self, sink: CompletionSink) -> None:
        """``sink``'s receive ended for lack of slots: report it from ``flush``
        once some are free, and ask for relief meanwhile."""
        self._parked.append(sink)
        self._relief = True

    def take_relief(self) -> bool:
        """True once after the ring ran dry: every connection should move the
        bytes that wait for their handler off the ring (``relieve``)."""
        relief = self._relief
        self._relief = False
        return relief

    @property
    def in_use(self) -> int:
        """Slots held by the application or waiting to go back to the kernel."""
        return self.out + len(self._returns)


class IncrementalRecvSlots(RecvSlots):
    """``IOU_PBUF_RING_INC``: several receives share a slot at growing offsets."""

    __slots__ = ("_done", "_off", "_parts")

    def __init__(self, ring: Ring, pool: SlabPool) -> None:
        super().__init__(ring, pool)
        self.keys_are_slots = False
        n = self.total
        self._off = [0] * n         # next offset the kernel fills in each slot
        self._parts = [0] * n       # parts of the slot the application holds
        self._done = [False] * n    # the kernel moved on from the slot

    def on_cqe(self, res: int, flags: int, bid: int) -> int | None:
        off = self._off[bid]
        if flags & CQE_F_BUF_MORE:
            self.shared_cqes += 1
        else:
            self._done[bid] = True
        if res > 0:
            self._off[bid] = off + res
            if not self._parts[bid]:
                self.out += 1               # the application holds part of this slot
            self._parts[bid] += 1
            self.bytes_in += res
            return bid | (off << _OFFSET_SHIFT)
        if self._done[bid] and not self._parts[bid]:
            self._recycle(bid)
        return None

    def view(self, key: int, n: int) -> memoryview:
        start = (key & _SLOT_MASK) * self.slot_size + (key >> _OFFSET_SHIFT)
        return self.recv_view[start:start + n]

    def slot_of(self, key: int) -> int:
        return key & _SLOT_MASK

    def give_back(self, key: int) -> None:
        if self._pins and self._defer(key):
            return
        bid = key & _SLOT_MASK
        parts = self._parts[bid] - 1
        self._parts[bid] = parts
        if not parts:
            self.out -= 1
            if self._done[bid]:
                self._recycle(bid)

    def _recycle(self, bid: int) -> None:
        self._off[bid] = 0
        self._done[bid] = False
        self._returns.append(bid)
