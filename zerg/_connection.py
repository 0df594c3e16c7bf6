"""Connection: one accepted TCP socket served by a reactor (level 1 API).

Read side — a monotonic ring of received slots, as in the C# zerg:
every recv completion appends one ``RingItem`` (a slot of the provided
buffer ring holding ``length`` bytes).  ``read()`` returns a snapshot whose
``tail`` fences what this batch may take; ``try_get_ring`` dequeues items up
to that fence; ``return_ring`` hands a slot back to the kernel (batched by the
reactor into one ring-tail update per loop iteration).  The end of the
stream is reported only after every byte before it was handed out.

Write side — staged bytes live in write segments from the reactor's slab
pool.  At most one send per connection is in flight, so bytes leave in the
order they were written; a short send is resubmitted from where the kernel
stopped.  Past ``max_write_buffer`` staged bytes, writes raise instead of
growing or dropping anything.

States: OPEN -> CLOSING (no more reads delivered; staged bytes still sent,
recv cancelled) -> CLOSED (every request of this connection completed, fd
closed, slots and segments back in the pool).  The fd is closed only when
the kernel holds no request on it, so a recycled fd number can never receive
a completion meant for this connection.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import sys
from typing import TYPE_CHECKING, Any, Final, NamedTuple, NoReturn

from zerg._buffers import BufferSequence, BytesLike
from zerg._errors import WriteBufferFullError
from zerg._ring import Op, encode
from zerg._slab import WriteSegment
from zerg._uring import lib

_single = BufferSequence._single
_UD_CANCEL = encode(Op.CANCEL)
_prep_send = lib.zu_prep_send


def _send_error(code: int, conn_id: int) -> OSError:
    if code == errno.ECANCELED:
        code = errno.ECONNABORTED
    exc_type: type[OSError] = {
        errno.EPIPE: BrokenPipeError, errno.ECONNRESET: ConnectionResetError,
        errno.ECONNABORTED: ConnectionAbortedError,
    }.get(code, OSError)
    return exc_type(code, f"send on connection {conn_id} failed: {os.strerror(code)}")

if TYPE_CHECKING:
    from zerg._protocol import Protocol
    from zerg._reactor import Reactor

OPEN: Final = 0
CLOSING: Final = 1
CLOSED: Final = 2


class RingSnapshot(NamedTuple):
    """What ``read()`` saw: items up to ``tail`` may be taken; ``is_closed``
    means the stream ended and this snapshot carries no items."""

    tail: int
    is_closed: bool


class RingItem:
    """One received slot.  ``view`` is valid until ``return_ring(item)``.

    A negative ``buffer_id`` means the bytes were moved off the ring into
    private memory (``max_read_buffer`` back-pressure); return it all the same.

    After the slot goes back the view is released, so stale use raises
    ``ValueError`` instead of reading bytes of some later message.
    """

    __slots__ = ("_key", "buffer_id", "length", "view")

    buffer_id: int
    """The slot in the provided buffer ring (negative: moved off the ring)."""
    length: int
    """Bytes received into this item."""
    view: memoryview
    """Read-only view of the bytes; released when the item is returned."""

    def __init__(self, buffer_id: int, length: int, view: memoryview,
                 key: int | None = None) -> None:
        self.buffer_id = buffer_id
        self.length = length
        self.view = view
        # Internal identity of this part of the slot: the slot id, plus its
        # offset << 16 when several receives share one slot (incremental mode).
        self._key = buffer_id if key is None else key

    if sys.version_info >= (3, 12):
        def __buffer__(self, flags: int) -> memoryview:
            return self.view.__buffer__(flags)

    def __repr__(self) -> str:
        return f"<RingItem buffer_id={self.buffer_id} length={self.length}>"


def _release_view(view: memoryview) -> None:
    try:
        view.release()
    except BufferError:
        pass    # someone holds an export of it; the slot still goes back


class Connection:
    """A TCP connection owned by one reactor.  Not thread-safe: use it on the
    reactor's loop (adapters exist for worker threads)."""

    id: int
    """Unique within its reactor for the reactor's life (fds are reused, ids not)."""
    fd: int
    """The socket; zerg owns it (do not close it, or read or write it directly)."""
    bytes_in: int
    """Bytes received."""
    bytes_out: int
    """Bytes the kernel took from sends."""
    context: Any
    """Free for the application (e.g. a Protocol's per-connection state)."""

    __slots__ = (
        "__weakref__",
        "_cur",
        "_dirty",
        "_discard",
        "_eof",
        "_error",
        "_error_exc",
        "_flush_waiters",
        "_granted",
        "_head",
        "_held",
        "_ipos",
        "_items",
        "_last_rx",
        "_lent",
        "_live_compactable",
        "_live_seq",
        "_loop",
        "_paused",
        "_pending",
        "_proto",
        "_reactor",
        "_recv_armed",
        "_recv_cancelling",
        "_sending",
        "_spill",
        "_staged",
        "_state",
        "_tail",
        "_ud_recv",
        "_ud_send",
        "_unread",
        "_waiter",
        "_write_exc",
        "bytes_in",
        "bytes_out",
        "context",
        "fd",
        "id",
    )

    def __init__(self, reactor: Reactor, conn_id: int, fd: int) -> None:
        self._reactor = reactor
        self._loop: asyncio.AbstractEventLoop = reactor.loop
        self.id = conn_id
        self.fd = fd
        self._ud_recv = encode(Op.RECV, conn_id)
        self._ud_send = encode(Op.SEND, conn_id)
        self._state = OPEN
        # read side
        self._items: list[RingItem] = []     # untaken items are _items[_ipos:]
        self._ipos = 0
        self._held: dict[int, RingItem] = {}
        self._tail = 0
        self._head = 0
        self._eof = False
        self._error = 0
        self._waiter: asyncio.Future[None] | None = None
        self._recv_armed = False
        self._live_seq: BufferSequence | None = None
        self._live_compactable = False  # True when an adapter/Protocol owns _live_seq
        self._discard = False
        self._unread = 0                # received bytes the application still holds
        self._paused = False            # recv cancelled by max_read_buffer
        self._spill = -1
        self._recv_cancelling = False   # our cancel of the recv is in flight
        self._last_rx = reactor.now
        self._proto: Protocol | None = reactor.protocol
        if self._proto is not None:
            self._live_compactable = True
        self._dirty = False
        self._error_exc: BaseException | None = None
        self.context = None
        # write side
        self._staged: list[WriteSegment] = []
        self._cur: WriteSegment | None = None
        self._granted = 0
        self._pending = 0               # staged + in flight, in bytes
        self._sending: WriteSegment | None = None
        self._flush_waiters: list[asyncio.Future[None]] | None = None
        self._write_exc: BaseException | None = None
        self._lent: set[WriteSegment] | None = None    # made on first use
        self.bytes_in = 0
        self.bytes_out = 0

    def __repr__(self) -> str:
        state = ("open", "closing", "closed")[self._state]
        return f"<zerg.Connection id={self.id} fd={self.fd} {state}>"

    # ------------------------------------------------------------------ read
    async def read(self) -> RingSnapshot:
        """Wait until received slots are waiting or the stream ended.

        Returns at once (no future) when items are already waiting.  Only one
        ``read()`` may wait at a time.  A snapshot with ``is_closed`` carries
        no items: every byte before the end was handed out earlier.
        """
        if self._head < self._tail:
            return RingSnapshot(self._tail, False)
        if self._eof or self._state != OPEN:
            return RingSnapshot(self._tail, True)
        # Inline of _wait_data: one coroutine frame less per waiting read.
        if self._waiter is not None:
            raise RuntimeError("read() called while another read() is waiting on this connection")
        fut = self._loop.create_future()
        self._waiter = fut
        try:
            await fut
        finally:
            self._waiter = None
        if self._head < self._tail:
            return RingSnapshot(self._tail, False)
        return RingSnapshot(self._tail, self._eof or self._state != OPEN)

    async def _wait_data(self) -> None:
        """Wait for items, the end, or ``_interrupt`` (for adapters)."""
        if self._head < self._tail or self._eof or self._state != OPEN:
            return
        if self._waiter is not None:
            raise RuntimeError("read() called while another read() is waiting on this connection")
        fut: asyncio.Future[None] = self._loop.create_future()
        if self._paused and self._live_compactable and self._live_seq is not None:
            self._waiter = fut
            self._relieve()     # waiting while paused: free our slots for others
        self._waiter = fut
        try:
            await fut
        finally:
            self._waiter = None

    def _handler_done(self, task: asyncio.Future[None]) -> None:
        # A bound method is the cheapest done-callback that knows its connection.
        self._reactor._handler_done(self, task)

    def _interrupt(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def get_sequence(self, snapshot: RingSnapshot) -> BufferSequence:
        """Drain the items of ``snapshot`` into one owning ``BufferSequence``.

        Its ``advance(n)`` gives fully consumed slots back; ``release()`` gives
        back the rest.  Closing the connection releases it.
        """
        segs: list[memoryview] = []
        ids: list[int] = []
        while (item := self.try_get_ring(snapshot)) is not None:
            segs.append(item.view)
            ids.append(item._key)
        seq = BufferSequence._owning(segs, ids, self._give_back_ids)
        self._live_seq = seq
        self._live_compactable = False      # the caller holds it: never move it
        return seq

    def _take_all(self) -> tuple[list[memoryview], list[int]]:
        """Every waiting item's view and slot id (for adapters)."""
        items = self._items
        pos = self._ipos
        segs = [it.view for it in items[pos:]]
        ids = [it._key for it in items[pos:]]
        items.clear()
        self._ipos = 0
        self._head = self._tail
        return segs, ids

    def _give_back_ids(self, ids: list[int]) -> None:
        held = self._held
        for key in ids:
            item = held.pop(key, None)
            if item is not None:
                self._drop(item)
        if self._paused:
            self._maybe_resume()

    def _drop(self, item: RingItem) -> None:
        """The application is done with ``item``: its view dies and its slot part
        goes back to the kernel (unless it was moved off the ring)."""
        _release_view(item.view)
        if item._key >= 0:
            self._reactor.give_back(item._key)
        self._unread -= item.length

    def _disown(self, items: list[RingItem]) -> None:
        """Hand ``items`` to an adapter that reads them on another thread: the
        connection stops tracking them, so closing it cannot give their slots
        back while that thread still copies from them.  The adapter must pass
        them to ``_return_disowned`` (on the reactor thread) when done."""
        held = self._held
        for item in items:
            held.pop(item._key, None)

    def _return_disowned(self, items: list[RingItem]) -> None:
        for item in items:
            self._drop(item)
        if self._paused:
            self._maybe_resume()

    def discard_input(self) -> None:
        """Stop reading: every received slot goes back now and later input is
        dropped as it arrives, so it cannot tie up the reactor's shared ring.
        Writing still works."""
        self._discard = True
        segs, ids = self._take_all()
        del segs
        self._give_back_ids(ids)
        self._interrupt()

    @property
    def has_data(self) -> bool:
        """Received bytes are waiting to be taken."""
        return self._head < self._tail

    def try_get_ring(self, snapshot: RingSnapshot) -> RingItem | None:
        """Next item up to ``snapshot.tail``, or None when the batch is drained."""
        if self._head >= snapshot.tail:
            return None
        items = self._items
        pos = self._ipos
        n = len(items)
        if pos >= n:
            return None
        item = items[pos]
        pos += 1
        if pos == n:
            items.clear()       # drained: the list starts over (no deque needed)
            pos = 0
        self._ipos = pos
        self._head += 1
        return item

    def return_ring(self, item: RingItem) -> None:
        """Give ``item``'s slot back to the kernel; its view dies now."""
        if self._held.pop(item._key, None) is not item:
            if self._state == OPEN:
                raise ValueError(f"{item!r} was already returned or is not from this connection")
            return          # the close already gave it back
        self._drop(item)
        if self._paused:
            self._maybe_resume()

    def reset_read(self) -> None:
        """End a read cycle.  Kept for parity with the C# API: state is
        derived from the ring, so this only checks nothing is waiting."""
        if self._waiter is not None:
            raise RuntimeError("reset_read() while a read() is waiting")

    @property
    def peername(self) -> tuple[str, int] | tuple[str, int, int, int] | None:
        """The peer's address, as ``socket.getpeername()`` gives it (None once closed)."""
        if self._state == CLOSED:
            return None
        sock = socket.socket(fileno=self.fd)
        try:
            addr: tuple[str, int] | tuple[str, int, int, int] = sock.getpeername()
            return addr
        except OSError:
            return None
        finally:
            sock.detach()

    @property
    def error(self) -> OSError | None:
        """The error that ended the stream (e.g. ``ConnectionResetError``), if any."""
        if not self._error:
            return None
        code = self._error
        exc_type: type[OSError] = {errno.ECONNRESET: ConnectionResetError,
                                   errno.EPIPE: BrokenPipeError}.get(code, OSError)
        return exc_type(code, os.strerror(code))

    @property
    def is_closed(self) -> bool:
        """True once the peer ended the stream or the connection is closing."""
        return self._eof or self._state != OPEN

    @property
    def slots_held(self) -> int:
        """Receive slots this connection holds (handed out, not yet returned)."""
        return len(self._held)

    # Called by the reactor's dispatcher -------------------------------------
    def _on_data(self, key: int, n: int) -> None:
        """``n`` bytes arrived in slot ``key & 0xFFFF`` at offset ``key >> 16``."""
        if self._state != OPEN or self._discard:
            self._reactor.give_back(key)
            return
        if self._proto is not None:
            self._deliver(key, n)
            return
        reactor = self._reactor
        view = reactor.pool.slot_view(key & 0xFFFF, n, key >> 16)
        self._last_rx = reactor.now
        self._unread += n
        if self._paused:
            # Over max_read_buffer and still receiving what was in flight:
            # keep the bytes, but off the shared ring.
            view = memoryview(view.tobytes())
            reactor.give_back(key)
            key = bid = self._next_spill_id()
        else:
            bid = key & 0xFFFF
            if self._unread > reactor.max_read_buffer:
                self._pause()
        item = RingItem(bid, n, view, key)
        self._held[key] = item
        self._items.append(item)
        self._tail += 1
        self.bytes_in += n
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _deliver(self, key: int, n: int) -> None:
        """Fast path: hand the bytes to the Protocol, straight from dispatch."""
        reactor = self._reactor
        self.bytes_in += n
        pool = reactor.pool
        start = (key & 0xFFFF) * pool.slot_size + (key >> 16)
        view = pool.recv_view[start:start + n]
        held = self._live_seq
        if held is None:
            seq = _single(view, key, reactor.give_back_ids)
        else:
            seq = held._extended([view], [key])
        self._live_seq = seq
        proto = self._proto
        assert proto is not None
        try:
            consumed = proto.data_received(self, seq)
        except Exception as exc:
            reactor.protocol_failed(self, exc)
            return
        if self._state != OPEN:
            return                      # closed inside the callback: slots went back
        if consumed is not None and (type(consumed) is not int or consumed < 0):
            reactor.protocol_failed(self, TypeError(
                f"data_received must return None or a byte count >= 0, got {consumed!r}"))
            return
        self._last_rx = reactor.now
        if consumed is None or consumed >= len(seq):
            self._live_seq = None
            if held is None and seq._slots.held_from == 0:     # type: ignore[union-attr]
                seq._drop_single()          # the common case: one fresh slot, all used
                reactor.give_back(key)
            else:
                seq.release()
            if self._paused:
                self._unread = 0
                self._maybe_resume()
        else:
            if consumed:
                seq.advance(consumed)
            if seq._held_slots() > 8 and len(seq) * 4 < seq._held_slots() * reactor.pool.slot_size:
                seq = seq._compacted()
            self._live_seq = seq
            self._unread = len(seq)
            if self._unread > reactor.max_read_buffer and not self._paused:
                self._pause()

    def _on_recv_end(self, res: int) -> None:
        """The multishot recv ended (no F_MORE).  Decide whether to re-arm."""
        self._recv_armed = False
        if self._state != OPEN:
            self._maybe_finish()
            return
        stopped_by_us = self._recv_cancelling
        self._recv_cancelling = False
        if res > 0 or (stopped_by_us and res in (-errno.ECANCELED, -errno.ENOBUFS)):
            # The kernel just stopped, or our max_read_buffer cancel landed.
            if self._paused and self._unread_over_low():
                return                        # resumed once the handler consumes
            self._paused = False
            self._arm_recv()
            return
        if res == -errno.ENOBUFS:
            self._reactor.starved(self)       # re-armed when slots come back
            return
        # 0 = orderly shutdown by the peer; < 0 = reset or other error.
        self._eof = True
        if res < 0 and res != -errno.ECANCELED:
            self._error = -res
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)
        if self._proto is not None:
            self._reactor.protocol_eof(self)

    # Back-pressure: max_read_buffer -------------------------------------------
    def _pause(self) -> None:
        """Too many unconsumed bytes: stop receiving until the handler catches up.

        Slots the handler has not taken yet are copied out of the shared ring
        (and given back) so one flooding peer cannot hold the ring that every
        connection of the reactor receives into.  Memory stays bounded: the
        receive is cancelled, so at most what was already in flight follows.
        """
        self._paused = True
        if self._recv_armed and not self._recv_cancelling:
            self._cancel(self._ud_recv)
            self._recv_cancelling = True
        self._relieve()

    def _relieve(self) -> None:
        """Move bytes nobody is looking at off the shared ring (one copy each).

        Safe at any time for items the handler has not taken yet, and for the
        adapters' buffer while the handler waits for more data (no view of it
        is out) or between Protocol callbacks.  Called when this connection is
        paused and, for every connection, when the reactor's ring runs dry —
        so readers waiting for the rest of a message cannot starve everyone.
        """
        held = self._held
        give_back = self._reactor.give_back
        for item in self._items[self._ipos:]:
            key = item._key
            if key < 0:
                continue
            del held[key]
            item.view = memoryview(item.view.tobytes())
            give_back(key)
            item.buffer_id = item._key = self._next_spill_id()
            held[item._key] = item
        seq = self._live_seq
        if (seq is not None and self._live_compactable
                and (self._proto is not None or self._waiter is not None)
                and seq._held_slots()):
            self._live_seq = seq._compacted()

    def _next_spill_id(self) -> int:
        """Ids of items copied off the ring: negative, unique per connection,
        never -1 (which marks a compacted private segment)."""
        self._spill -= 1
        return self._spill

    def _unread_over_low(self) -> bool:
        return self._unread > self._reactor.max_read_buffer // 2

    def _maybe_resume(self) -> None:
        if not self._unread_over_low():
            self._resume()

    def _resume(self) -> None:
        self._paused = False
        if not self._recv_armed:
            self._arm_recv()
        # else: the old recv is still armed (its cancel is in flight); its
        # final CQE re-arms it in _on_recv_end.

    @property
    def is_receiving_paused(self) -> bool:
        """True while ``max_read_buffer`` holds this connection's receive back."""
        return self._paused

    def _arm_recv(self) -> None:
        if self._state != OPEN or self._recv_armed or self._eof or self._paused:
            return
        r = self._reactor.ring
        r.check(lib.zu_prep_recv_multishot(r.ptr, self.fd, self._ud_recv), "recv")
        self._recv_armed = True

    # ----------------------------------------------------------------- write
    def write(self, data: BytesLike | BufferSequence) -> None:
        """Stage ``data`` (any buffer, or a ``BufferSequence``) for sending; one
        copy into the pool.

        Raises ``WriteBufferFullError`` (nothing staged) when it would pass
        ``max_write_buffer``; ``ConnectionError`` once the connection is closed
        or a send failed.
        """
        if self._state or self._write_exc is not None:
            self._check_writable()
        buf: bytes | memoryview
        if isinstance(data, bytes):
            buf = data
        elif isinstance(data, memoryview):
            buf = data if data.format == "B" and data.ndim == 1 else data.cast("B")
        elif isinstance(data, BufferSequence):
            if len(data._segs) != 1:
                self._write_sequence(data)
                return
            buf = data._whole()                 # the common single-slot case
        else:
            buf = memoryview(data).cast("B")
        n = len(buf)
        if n == 0:
            return
        if self._pending + n > self._reactor.max_write_buffer:
            self._over_cap(n)
        seg = self._cur
        pos = 0
        while pos < n:
            if seg is None:
                seg = self._new_segment()
            room = len(seg.view) - seg.fill
            if room == 0:
                seg = self._new_segment()
                room = len(seg.view)
            take = n - pos if n - pos <= room else room
            if pos == 0 and take == n:
                seg.view[seg.fill:seg.fill + n] = buf
            else:
                seg.view[seg.fill:seg.fill + take] = buf[pos:pos + take]
            seg.fill += take
            pos += take
        self._pending += n
        if self._proto is not None and not self._dirty:
            self._dirty = True
            self._reactor.dirty.append(self)

    def _over_cap(self, n: int) -> NoReturn:
        raise WriteBufferFullError(
            f"writing {n} bytes would stage {self._pending + n} bytes, over "
            f"max_write_buffer={self._reactor.max_write_buffer}; await conn.flush() first"
        )

    def _write_sequence(self, seq: BufferSequence) -> None:
        n = len(seq)
        if self._pending + n > self._reactor.max_write_buffer:
            self._over_cap(n)
        for segment in seq:
            self.write(segment)

    def get_buffer(self, size_hint: int = 0) -> memoryview:
        """Writable memory for at least ``max(size_hint, 1)`` bytes (at most one
        write segment); fill it, then ``advance(n)``."""
        self._check_writable()
        size = self._reactor.pool.segment_size
        if size_hint > size:
            raise ValueError(
                f"size_hint {size_hint} exceeds write_buffer_size={size}; use write() "
                f"or BufferWriter for larger pieces"
            )
        want = size_hint if size_hint > 0 else 1
        if self._pending + want > self._reactor.max_write_buffer:
            raise WriteBufferFullError(
                f"{self._pending} bytes already staged (max_write_buffer="
                f"{self._reactor.max_write_buffer}); await conn.flush() first"
            )
        seg = self._cur
        if seg is None or len(seg.view) - seg.fill < want:
            seg = self._new_segment()
        self._granted = len(seg.view) - seg.fill
        return seg.view[seg.fill:]

    def advance(self, n: int) -> None:
        """Commit ``n`` bytes written into the last ``get_buffer`` memory."""
        if not 0 <= n <= self._granted:
            raise ValueError(
                f"advance({n}) outside the {self._granted} bytes of the last get_buffer()"
            )
        if n and self._pending + n > self._reactor.max_write_buffer:
            raise WriteBufferFullError(
                f"advance({n}) would pass max_write_buffer={self._reactor.max_write_buffer}"
            )
        seg = self._cur
        assert seg is not None or n == 0
        if seg is not None:
            seg.fill += n
        self._granted -= n
        self._pending += n
        if n and self._proto is not None and not self._dirty:
            self._dirty = True
            self._reactor.dirty.append(self)

    async def flush(self) -> None:
        """Send everything staged; returns when the kernel took all of it."""
        if self._pending == 0:
            if self._write_exc is not None:
                raise self._write_exc
            return
        if self._write_exc is not None:
            raise self._write_exc
        self._kick_send()
        fut: asyncio.Future[None] = self._loop.create_future()
        if self._flush_waiters is None:
            self._flush_waiters = [fut]
        else:
            self._flush_waiters.append(fut)
        await fut

    def flush_nowait(self) -> None:
        """Start sending everything staged without waiting for it."""
        if self._pending and self._write_exc is None and self._state != CLOSED:
            self._kick_send()

    @property
    def pending_write_bytes(self) -> int:
        """Bytes staged or in flight, not yet taken by the kernel."""
        return self._pending

    def _check_writable(self) -> None:
        if self._write_exc is not None:
            raise self._write_exc
        if self._state != OPEN:
            raise ConnectionError(f"connection {self.id} is closed")

    def _new_segment(self) -> WriteSegment:
        seg = self._reactor.pool.acquire()
        self._staged.append(seg)
        self._cur = seg
        self._granted = 0
        return seg

    def _kick_send(self) -> None:
        if self._sending is not None:
            return
        staged = self._staged
        while staged:
            seg = staged[0]
            sent = seg.sent
            if sent < seg.fill:
                reactor = self._reactor
                ret = _prep_send(reactor._ptr, self.fd, seg.ptr, seg.off + sent,
                                 seg.fill - sent, self._ud_send)
                if ret:
                    reactor.ring.check(ret, "send")
                self._sending = seg
                reactor.sends += 1
                return
            if seg is self._cur:
                return                  # still being filled; nothing to send yet
            staged.pop(0)
            self._reactor.pool.release(seg)

    def _lend_segment(self) -> WriteSegment:
        """A pool segment for a BufferWriter; it comes back via ``_enqueue``
        or, if never flushed, when the connection closes."""
        self._check_writable()
        seg = self._reactor.pool.acquire()
        if self._lent is None:
            self._lent = set()
        self._lent.add(seg)
        return seg

    def _enqueue(self, segs: list[WriteSegment]) -> None:
        """Append a BufferWriter's filled segments to the send queue, in order."""
        pool = self._reactor.pool
        lent = self._lent
        if lent is None:
            lent = self._lent = set()
        ok = self._state == OPEN and self._write_exc is None
        for seg in segs:
            if seg not in lent:
                continue            # reclaimed by close(); never release twice
            lent.remove(seg)
            if ok and seg.fill:
                self._staged.append(seg)
                self._pending += seg.fill
            else:
                pool.release(seg)
        if ok:
            self._cur = None        # later writes go after these segments
            self._granted = 0
        else:
            self._check_writable()

    def _on_send(self, res: int) -> None:
        seg = self._sending
        self._sending = None
        if seg is None:
            return
        if (res > 0 and res == seg.fill - seg.sent and seg is self._cur and not self._granted
                and self._write_exc is None and len(self._staged) == 1):
            # Common case: the only segment went out whole.
            self._pending -= res
            self.bytes_out += res
            reactor = self._reactor
            reactor.bytes_out += res
            self._cur = None
            self._staged.clear()
            reactor.pool.release(seg)
            if self._flush_waiters:
                self._wake_flushers(None)
            if self._state == CLOSING:
                self._maybe_finish()
            return
        if res <= 0:
            code = -res if res < 0 else errno.EPIPE
            self._fail_writes(_send_error(code, self.id))
            self._maybe_finish()
            return
        if self._write_exc is not None:         # aborted while this send ran
            self._drop_segments()
            self._maybe_finish()
            return
        seg.sent += res
        self._pending -= res
        self.bytes_out += res
        self._reactor.bytes_out += res
        if seg.sent >= seg.fill:
            if seg is self._cur:
                if self._granted:       # get_buffer memory still lent out: keep it as is
                    seg = None
                else:
                    self._cur = None
            if seg is not None:
                self._staged.remove(seg)
                self._reactor.pool.release(seg)
        if self._staged and self._pending:
            self._kick_send()
            return
        self._wake_flushers(None)
        if self._state == CLOSING:
            self._maybe_finish()

    def _wake_flushers(self, exc: BaseException | None) -> None:
        waiters = self._flush_waiters
        if not waiters:
            return
        self._flush_waiters = None
        for w in waiters:
            if not w.done():
                if exc is None:
                    w.set_result(None)
                else:
                    w.set_exception(exc)

    def _fail_writes(self, exc: BaseException) -> None:
        if self._write_exc is None:
            self._write_exc = exc
        self._drop_segments()
        self._wake_flushers(exc)

    def _drop_segments(self) -> None:
        pool = self._reactor.pool
        for seg in self._staged:
            if seg is not self._sending:
                pool.release(seg)
        self._staged = [self._sending] if self._sending is not None else []
        self._cur = None
        self._granted = 0
        self._pending = 0
        if self._state == CLOSED and self._lent:
            for seg in self._lent:
                pool.release(seg)
            self._lent.clear()

    # ----------------------------------------------------------------- close
    def close(self) -> None:
        """Close gracefully: staged bytes are still sent, then the fd closes.

        Idempotent.  Pending and later ``read()`` calls report ``is_closed``.
        """
        if self._state != OPEN:
            return
        self._state = CLOSING
        self._interrupt()
        self._release_slots()
        if self._pending and self._write_exc is None:
            self._kick_send()
        if self._recv_armed:
            self._cancel(self._ud_recv)
        self._maybe_finish()

    def abort(self) -> None:
        """Close now: staged bytes are dropped, in-flight requests cancelled."""
        if self._state == CLOSED:
            return
        if self._state == OPEN:
            self.close()
        if self._write_exc is None:
            self._fail_writes(ConnectionAbortedError(errno.ECONNABORTED,
                                                     f"connection {self.id} was aborted"))
        if self._sending is not None:
            self._cancel(self._ud_send)
        self._maybe_finish()

    def _cancel(self, ud: int) -> None:
        r = self._reactor.ring
        if not r.closed:
            lib.zu_prep_cancel(r.ptr, ud, _UD_CANCEL)

    def _release_slots(self) -> None:
        seq = self._live_seq
        if seq is not None:
            self._live_seq = None
            seq.release()       # its views die now, loudly, not silently recycled
        held = self._held
        if not held:
            return
        for item in held.values():
            self._drop(item)
        held.clear()
        self._items.clear()
        self._ipos = 0
        self._head = self._tail
        self._unread = 0

    def _maybe_finish(self) -> None:
        if self._state != CLOSING or self._recv_armed or self._sending is not None:
            return
        if self._pending and self._write_exc is None:
            self._kick_send()
            if self._sending is not None:
                return
        self._state = CLOSED
        self._drop_segments()       # also gives back segments lent to writers
        self._wake_flushers(ConnectionError(f"connection {self.id} closed before the "
                                            f"data was sent"))
        try:
            os.close(self.fd)
        except OSError:
            pass
        self._reactor.forget(self)
