"""InputPipe: the received bytes of one connection, and their lease on the ring.

Operations we support (every read level is a view of this one object):
  - level 1: ``snapshot``/``take``/``give_back_item``: ring items one by one;
  - level 2: ``sequence(snapshot)``: the items of a snapshot as one owning
    ``BufferSequence``;
  - level 3 (``PipeReader`` and the duplex pipe's input side): ``read()`` /
    ``try_read()`` / ``advance_to(consumed, examined)`` /
    ``cancel_pending_read()`` / ``complete()`` with .NET ``PipeReader``
    semantics over one owning buffer of unconsumed bytes.

Goals: zero copies between the kernel and the reader; every receive slot
given back exactly once; a reader that sits on bytes cannot starve the
reactor's shared ring (relief and compaction copy them off it, and once
three quarters of the ring are held, what is handed out is a copy).

Plan: received bytes arrive as ``RingItem``s (``push``).  ``held`` is the
authority on which slots this pipe holds: whatever path gives an item back
(``return_ring``, a sequence's ``advance``/``release``, close) goes through
``_drop``, which gives the slot back only if the item is still in ``held``.
``held`` is a list in no order, each item knowing its place (``_held_at``):
taking one out moves the last into its place, so holding and giving back
cost a few stores, where a dict paid a hash insert and delete per message
and rebuilt its table every few messages from the deleted entries.
Owning sequences get a ``SlotLease`` (the record ``zerg._buffers`` defines)
whose tokens are the items themselves; the pipe makes and owns every lease.

Reporting upward: the pipe never calls the transport.  ``push`` returns True
when unconsumed bytes passed ``max_read_buffer`` (the transport pauses the
receive); ``below_resume_mark`` tells the transport when it may resume.

Threading: reactor thread only.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, NamedTuple

from zerg._buffers import (
    BufferSequence,
    SlotLease,
    held_slots,
    leased,
    leased_single,
    retire,
    unconsumed,
    window,
)
from zerg._config import PipeOptions
from zerg._native import counters

if TYPE_CHECKING:
    from zerg._seam import ReceiveSlots

EMPTY_SEQ = BufferSequence()
"""The buffer of a read that has no bytes (shared; it holds nothing)."""


_MARKS: dict[int, int] = {}


def _hand_out_mark(total: int) -> int:
    """``total - total // 4`` (at least one below ``total``), one int object per
    ring size rather than one per connection."""
    mark = _MARKS.get(total)
    if mark is None:
        mark = _MARKS[total] = total - max(total // 4, 1)
    return mark


# A NamedTuple's __new__ is Python code; tuple.__new__ builds one in C.
_new_tuple: Final = tuple.__new__


class RingSnapshot(NamedTuple):
    """What ``read()`` saw: items up to ``tail`` may be taken; ``is_closed``
    means the stream ended and this snapshot carries no items."""

    tail: int
    is_closed: bool


class ReadResult(NamedTuple):
    """What ``PipeReader.read`` saw.

    ``buffer`` holds every unconsumed byte; ``is_completed`` means the peer
    ended the stream (the buffer may still hold its last bytes);
    ``is_canceled`` means ``cancel_pending_read()`` cut this read short.
    """

    buffer: BufferSequence
    is_completed: bool
    is_canceled: bool


if TYPE_CHECKING:
    class _ItemCounters:
        _held_at: int
else:
    # Its index in the held list is written twice per message (held, given
    # back): a C integer with the extension, no int object each time.
    _ItemCounters = counters("RingItemCounters", ("_held_at",))


class RingItem(_ItemCounters):
    """One received slot.  ``view`` is valid until ``return_ring(item)``.

    A negative ``buffer_id`` means the bytes were moved off the ring into
    private memory (``max_read_buffer`` back-pressure); return it all the same.

    After the slot goes back the view is released, so stale use raises
    ``ValueError`` instead of reading bytes of some later message.
    """

    __slots__ = ("_key", "_live", "buffer_id", "length", "view")

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
        self._key = key         # the RecvSlots key; None once off the ring
        self._live = True       # False once returned
        self._held_at = -1      # its index in its pipe's held list, while there

    if sys.version_info >= (3, 12):
        def __buffer__(self, flags: int) -> memoryview:
            return self.view.__buffer__(flags)

    def __repr__(self) -> str:
        return f"<RingItem buffer_id={self.buffer_id} length={self.length}>"


def slot_key_of(token: object) -> int | None:
    """The receive-slot key behind a lease token: this pipe's leases hold
    ``RingItem``s, a Protocol sink's hold keys (None: private memory)."""
    if type(token) is RingItem:
        return token._key
    return token if type(token) is int else None


def _release_view(view: memoryview) -> None:
    try:
        view.release()
    except BufferError:
        pass    # someone holds an export of it; the slot still goes back


if TYPE_CHECKING:
    class _InputCounters:
        _handed: int
        _ipos: int
        head: int
        tail: int
        unread: int
else:
    _InputCounters = counters("InputCounters", ("_handed", "_ipos", "head", "tail", "unread"))


class InputPipe(_InputCounters):
    """Received items, the lease on their slots, and the reader's buffer.  Its
    per-message counters (``head``, ``tail``, ``unread`` and two private ones)
    are C integers with the extension (``zerg._native.counters``)."""

    __slots__ = (
        "_cancel",
        "_examined_all",
        "_give",
        "_hand_out_mark",
        "_items",
        "_loop",
        "_plain",
        "_slots",
        "backlog",
        "buffer",
        "buffer_movable",
        "completed",
        "discarding",
        "ended",
        "error",
        "held",
        "opts",
        "paused",
        "waiter",
    )

    def __init__(self, slots: ReceiveSlots, opts: PipeOptions,
                 loop: asyncio.AbstractEventLoop) -> None:
        # No bound methods of ``slots`` are cached here: every connection has a
        # pipe, and three bound methods each cost more idle memory per
        # connection (216 B) than the attribute loads they save.
        self._slots = slots
        self._plain = slots.keys_are_slots
        # Once more than this many slots of the shared ring are held, items handed to a
        # handler are copies and their slots go back at once: a handler may keep
        # what it took across an await (a backend call, or a bug), and enough
        # such handlers would otherwise hold every slot, so that nobody --
        # their own peers' FIN included -- could receive again.
        self._hand_out_mark = _hand_out_mark(slots.total)
        self.opts = opts
        self._loop = loop
        self._items: list[RingItem] = []     # untaken items are _items[_ipos:]
        self._ipos = 0
        self.head = 0                       # items taken so far
        self.tail = 0                       # items received so far
        # Items whose slot we hold (on the ring), in no order: item._held_at
        # is the index (_hold, _unhold).
        self.held: list[RingItem] = []
        self.unread = 0                     # received bytes not yet consumed
        self.buffer: BufferSequence | None = None   # the owning sequence of level 2/3
        self.buffer_movable = False         # True when a PipeReader owns ``buffer``
        self.discarding = False
        self.paused = False                 # set by the transport while receiving is paused
        self.backlog = False                # the last read left received items waiting
        self.ended = False
        self.error = 0
        self.waiter: asyncio.Future[None] | None = None
        self.completed = False              # PipeReader.complete() was called
        self._handed = -1                   # PipeReader: length handed out, -1 if none
        self._examined_all = False
        self._cancel = False
        # The extension binds _drop_tokens here on the first sequence it makes
        # (one bound method per connection instead of one per read); the
        # reference binds it each time.  release_all() drops it: it refers
        # back to the pipe.
        self._give: Callable[[list[RingItem]], None] | None = None

    # ------------------------------------------------------------- intake
    def push(self, key: int, n: int) -> bool:
        """``n`` bytes arrived under slot ``key``.  True when unconsumed bytes
        just passed ``max_read_buffer`` (pause the receive)."""
        if self.discarding:
            self._slots.give_back(key)
            return False
        slots = self._slots
        item = RingItem(key if self._plain else slots.slot_of(key), n, slots.view(key, n), key)
        self._hold(item)
        self._items.append(item)
        self.tail += 1
        self.unread += n
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)
        opts = self.opts
        # Held slots count too: a slot holding one byte still takes a whole
        # slot of the ring every connection shares.
        return self.unread > opts.max_read_buffer or len(self.held) > opts.max_held_slots

    def push_private(self, data: bytes) -> None:
        """Bytes that arrived while paused: kept, but off the shared ring."""
        if self.discarding:
            return
        item = RingItem(-1, len(data), memoryview(data))
        self._items.append(item)
        self.tail += 1
        self.unread += len(data)
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    def end(self, error: int) -> None:
        """The peer ended the stream (``error``: 0, or the errno that ended it)."""
        self.ended = True
        self.error = error
        self.wake()

    def wake(self) -> None:
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _hold(self, item: RingItem) -> None:
        item._held_at = len(self.held)
        self.held.append(item)

    def _unhold(self, item: RingItem) -> bool:
        """Take ``item`` out of ``held``; False if it is not there (given back
        already, moved off the ring, or another pipe's)."""
        held = self.held
        at = item._held_at
        if not 0 <= at < len(held) or held[at] is not item:
            return False
        last = held.pop()
        if last is not item:
            held[at] = last
            last._held_at = at
        item._held_at = -1
        return True

    def below_resume_mark(self) -> bool:
        opts = self.opts
        return (self.unread <= opts.resume_read_at
                and len(self.held) <= opts.max_held_slots // 2)

    # ---------------------------------------------------------- level 1
    @property
    def has_data(self) -> bool:
        return self.head < self.tail

    def take(self, snapshot_tail: int) -> RingItem | None:
        """Next item up to ``snapshot_tail``, or None when the batch is drained."""
        if self.head >= snapshot_tail:
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
        self.head += 1
        if item._key is not None and self._slots.out > self._hand_out_mark:
            self._move_off(item)    # the ring is nearly all held: hand out a copy
        return item

    def give_back_item(self, item: RingItem) -> bool:
        """Return one item; False if it was already returned (or is foreign)."""
        if not item._live:
            return False
        key = item._key
        if key is not None:
            if not self._unhold(item):
                return False
            self._slots.give_back(key)
        # _drop, inline (level 1 returns every item through here).
        item._live = False
        try:
            item.view.release()
        except BufferError:
            pass    # someone holds an export of it; the slot still goes back
        self.unread -= item.length
        return True

    def _drop(self, item: RingItem) -> None:
        """The application is done with ``item``: its view dies and its slot
        goes back (unless it was moved off the ring)."""
        if not item._live:
            return
        item._live = False
        _release_view(item.view)
        key = item._key
        if key is not None:
            self._unhold(item)
            self._slots.give_back(key)
        self.unread -= item.length

    def _drop_tokens(self, items: list[RingItem]) -> None:
        """A lease's give_back: the items of consumed segments."""
        for item in items:
            self._drop(item)

    # ---------------------------------------------------------- level 2
    def sequence(self, snapshot_tail: int) -> BufferSequence:
        """The items up to ``snapshot_tail`` as one owning sequence."""
        segs: list[memoryview] = []
        items: list[RingItem] = []
        while (item := self.take(snapshot_tail)) is not None:
            segs.append(item.view)
            items.append(item)
        seq = leased(segs, SlotLease(items, self._drop_tokens))
        self.buffer = seq
        self.buffer_movable = False         # the caller holds it: never move it
        return seq

    # ---------------------------------------------------------- level 3
    def _pull(self) -> bool:
        """Move waiting items into the reader's buffer; True if any arrived."""
        if self.head >= self.tail:
            return False
        pos = self._ipos
        if self.buffer is None and len(self._items) == pos + 1:
            # The common case (a request, then its reply): one fresh item and
            # nothing kept from before -- a one-segment sequence, built directly.
            item = self._items[pos]
            self._items.clear()
            self._ipos = 0
            self.head = self.tail
            one, _ = leased_single(item.view, item, self._drop_tokens)
            if item._key is not None and self._slots.out > self._hand_out_mark:
                one = self._compacted(one)  # the ring is nearly held: a copy
            self.buffer = one
            self.buffer_movable = True
            return True
        end = pos + self.opts.read_chunk_items
        if end < len(self._items):          # fairness: one chunk per read
            items = self._items[pos:end]
            self._ipos = end
            self.head += len(items)
            self.backlog = True
        else:
            items = self._items[pos:]
            self._items.clear()
            self._ipos = 0
            self.head = self.tail
        segs = [it.view for it in items]
        buf = self.buffer
        if buf is not None:
            old_segs, old_items = unconsumed(buf)
            segs = old_segs + segs
            items = old_items + items
        buf = leased(segs, SlotLease(items, self._drop_tokens))
        nheld = held_slots(buf)
        if nheld and (self.opts.should_compact(nheld, len(buf))  # many slots, few bytes
                      or self._slots.out > self._hand_out_mark):  # the ring is nearly held
            buf = self._compacted(buf)      # copy once, free the slots
        self.buffer = buf
        self.buffer_movable = True
        return True

    def _compacted(self, buf: BufferSequence) -> BufferSequence:
        """One private copy of ``buf``'s unconsumed bytes; its slots go back now."""
        data = buf.tobytes()
        old = retire(buf)
        items: list[RingItem] = []
        if data:
            items.append(RingItem(-1, len(data), memoryview(data)))
            self.unread += len(data)
        new = leased([items[0].view] if items else [], SlotLease(items, self._drop_tokens))
        self._drop_tokens(old)
        return new

    def _check_can_read(self) -> None:
        if self.completed:
            raise RuntimeError("PipeReader.read() after complete()")
        if self._handed >= 0:
            raise RuntimeError(
                "PipeReader.read() before advance_to(): call advance_to() on the last result"
            )

    def _result(self, canceled: bool, closed: bool) -> ReadResult:
        buf = self.buffer
        view = window(buf) if buf is not None else EMPTY_SEQ
        self._handed = len(view)
        return _new_tuple(ReadResult, (view, closed and self.head >= self.tail, canceled))

    def _ready(self, fresh: bool, closed: bool) -> bool:
        if fresh:
            return True
        buf = self.buffer
        if buf is not None and len(buf) and not self._examined_all:
            return True
        return closed

    def try_read(self, closed: bool) -> ReadResult | None:
        """Like ``read`` but never waits: None when it would have to."""
        self._check_can_read()
        closed = closed or self.ended
        if self._cancel:
            self._cancel = False
            self._pull()
            return self._result(True, closed)
        if self._ready(self._pull(), closed):
            self._examined_all = False
            return self._result(False, closed)
        return None

    def advance_to(self, consumed: int, examined: int | None = None) -> None:
        """Consume ``consumed`` bytes of the last buffer; ``examined`` (>= consumed)
        bytes were looked at.  Offsets are into the last ``ReadResult.buffer``."""
        n = self._handed
        if n < 0:
            raise RuntimeError("advance_to() without a preceding read()")
        if examined is None:
            examined = consumed
        if not 0 <= consumed <= n:
            raise ValueError(f"consumed={consumed} outside the buffer (0..{n})")
        if not consumed <= examined <= n:
            raise ValueError(
                f"examined={examined} must lie between consumed={consumed} and the end ({n})"
            )
        buf = self.buffer
        if buf is not None and consumed:
            buf.advance(consumed)
            if not buf:
                self.buffer = None          # all of it: the next read starts afresh
        self._examined_all = examined == n
        self._handed = -1

    def cancel_pending_read(self) -> None:
        """Make the pending ``read()`` (or the next one) return with ``is_canceled``."""
        self._cancel = True
        self.wake()

    def complete(self) -> None:
        """Done reading: every slot goes back; later input is dropped."""
        if self.completed:
            return
        self.completed = True
        self._handed = -1
        self.discard()

    # ----------------------------------------------------------- waiting
    def arm_waiter(self) -> asyncio.Future[None]:
        """The future a read waits on until an item arrives, the stream ends,
        or ``wake`` (the caller awaits it, then sets ``waiter`` to None: no
        coroutine of its own, one frame less per waiting read)."""
        if self.waiter is not None:
            raise RuntimeError("read() called while another read() is waiting on this connection")
        fut: asyncio.Future[None] = self._loop.create_future()
        self.waiter = fut
        if self.paused:
            self.relieve()      # waiting while paused: free our slots for others
        return fut

    # ------------------------------------------------------ back-pressure
    def relieve(self) -> None:
        """Move bytes nobody is looking at off the shared ring (one copy each).

        Safe at any time for items the handler has not taken yet, and for the
        reader's buffer while the reader waits for more data (no view of it is
        out).  Called when the receive pauses and, for every connection, when
        the reactor's ring runs dry -- so readers waiting for the rest of a
        message cannot starve everyone.
        """
        for item in self._items[self._ipos:]:
            if item._key is not None:
                self._move_off(item)
        buf = self.buffer
        if (buf is not None and self.buffer_movable and self.waiter is not None
                and held_slots(buf)):
            self.buffer = self._compacted(buf)

    def _move_off(self, item: RingItem) -> None:
        """Copy ``item``'s bytes off the ring and give its slot back now."""
        key = item._key
        assert key is not None
        self._unhold(item)
        item.view = memoryview(item.view.tobytes())
        self._slots.give_back(key)
        item._key = None
        item.buffer_id = -1

    def discard(self) -> None:
        """Stop reading: every slot goes back now; later input is dropped."""
        self.discarding = True
        self.release_all()
        self.wake()

    def release_all(self) -> None:
        """Give every slot back (close): views die now, loudly."""
        buf = self.buffer
        if buf is not None:
            self.buffer = None
            buf.release()
        for item in list(self.held):
            self._drop(item)
        for item in self._items[self._ipos:]:
            self._drop(item)
        self.held.clear()
        self._give = None
        self._items.clear()
        self._ipos = 0
        self.head = self.tail
        self.unread = 0
