"""OutputPipe: the bytes a connection will send, and the one send in flight.

Operations: ``write(data)`` (one copy into slab segments), ``get_memory`` /
``advance`` (fill a segment in place), ``lend`` / ``enqueue`` (a
``BufferWriter`` fills private segments -- pool ones, or a jumbo one of its
own for more than a segment -- and hands the chain over in order),
``forward(views, keys, slots)`` (send memory the pipe does not own, e.g.
receive slots, without copying: ``LoanSegment``s, each unpinned in ``slots``
once the kernel took it or it was dropped),
``flush_waiter`` (a future done when every staged byte was taken).

Goals: bytes leave in the order they were written, nothing is dropped
silently, and memory is bounded: past ``max_write_buffer`` staged + in-flight
bytes a write raises ``WriteBufferFullError`` (nothing staged) instead of
growing.

Plan: staged bytes live in write segments from the reactor's ``SlabPool``.
At most one send is in flight (``sending``), so order is kept; a short send
is resubmitted from where the kernel stopped.  A segment goes back to the
pool once the kernel took all of it.

Reporting upward: the pipe does not know the fd or the ring.  ``next_send``
returns the segment whose unsent bytes the transport must submit;
``on_sent(res, conn_id)`` returns True when another send should follow.

Threading: reactor thread only (``BufferWriter`` fills lent segments on a
worker thread, but lends and enqueues on the reactor thread).
"""

from __future__ import annotations

import asyncio
import errno
import os
from typing import TYPE_CHECKING, Any, NoReturn

from zerg._config import PipeOptions
from zerg._errors import WriteBufferFullError
from zerg._native import counters
from zerg._ring import IoVec
from zerg._slab import SlabPool, WriteSegment
from zerg._uring import ffi


def send_error(code: int, conn_id: int) -> OSError:
    """The exception for a failed send, with the subclass asyncio would use."""
    if code == errno.ECANCELED:
        code = errno.ECONNABORTED
    exc_type: type[OSError] = {
        errno.EPIPE: BrokenPipeError, errno.ECONNRESET: ConnectionResetError,
        errno.ECONNABORTED: ConnectionAbortedError,
    }.get(code, OSError)
    return exc_type(code, f"send on connection {conn_id} failed: {os.strerror(code)}")


LEND_MIN = 4096
"""``Connection.write`` lends a receive slot to the send instead of copying it
from this many bytes on (the C extension's ``LEND_MIN``, checked equal by the
tests): copying 16 KiB costs more than a loan's bookkeeping, copying a short
reply less, and short replies coalesce in one write segment."""

_MAX_SEND = 1 << 31
"""The most bytes one send is asked for (the shim takes an unsigned 32-bit
length); a jumbo segment with more staged is queued as pieces of this size."""


def _pieces(seg: WriteSegment, limit: int) -> list[WriteSegment]:
    """``seg``'s staged bytes as consecutive segments of at most ``limit``
    bytes, in order.  The leading pieces are views of ``seg``'s memory that the
    pool's ``release`` ignores (jumbo, never acquired); ``seg`` itself, narrowed
    to the last piece, stays the one the pool accounts for, released once."""
    last = (seg.fill - 1) // limit * limit
    out: list[WriteSegment] = []
    for start in range(0, last, limit):
        piece = WriteSegment(seg.ptr, seg.off + start, seg.view[start:start + limit], jumbo=True)
        piece.fill = limit
        out.append(piece)
    seg.off += last
    seg.view = seg.view[last:]
    seg.fill -= last
    out.append(seg)
    return out


class LoanSegment(WriteSegment):
    """Staged bytes that live in memory the pipe borrows (``forward``): a
    receive slot, pinned until the kernel took them, or a private buffer kept
    alive by the view.  Sent like any segment (from ``view``: ``ptr`` is
    None), never written into, never returned to the pool: ``done`` unpins
    the slot instead."""

    __slots__ = ("key", "slots")

    def __init__(self, view: memoryview, key: Any, slots: Any) -> None:
        super().__init__(None, 0, view, jumbo=True)
        self.fill = len(view)
        self.key = key          # the slot key to unpin, or None
        self.slots = slots      # the ReceiveSlots it is pinned in

    def done(self) -> None:
        """Sent or dropped: the memory is no longer read (idempotent)."""
        slots, self.slots = self.slots, None
        self.view = None    # type: ignore[assignment]
        if slots is not None and self.key is not None:
            slots.unpin(self.key)


def offset_in(view: memoryview, region: memoryview) -> int:
    """Where ``view``'s bytes start in ``region`` (a view of the same memory)."""
    return (int(ffi.cast("uintptr_t", ffi.from_buffer(view)))
            - int(ffi.cast("uintptr_t", ffi.from_buffer(region))))


def send_base(seg: WriteSegment) -> tuple[Any, int]:
    """Where ``seg``'s bytes start, for the shim: (base, offset)."""
    if seg.ptr is None:                 # a loan: the view is the memory
        return ffi.from_buffer(seg.view), 0
    return seg.ptr, seg.off


if TYPE_CHECKING:
    class _OutputCounters:
        _budget: int
        _granted: int
        bytes_out: int
        loans: int
        max_write_buffer: int
        pause_at: int
        pending: int
        pin_limit: int
        resume_at: int
else:
    # The counters, and the limits every write compares them with.
    _OutputCounters = counters("OutputCounters", (
        "_budget", "_granted", "bytes_out", "loans", "max_write_buffer", "pause_at", "pending",
        "pin_limit", "resume_at"))


class OutputPipe(_OutputCounters):
    """Write segments, the send in flight, and flush waiters of one connection.
    ``pending``, ``bytes_out``, ``loans`` and the limits are C integers with the extension
    (``zerg._native.counters``)."""

    __slots__ = (
        "_cur",
        "_drain_waiters",
        "_flush_waiters",
        "_lent",
        "_pool",
        "_staged",
        "eof",
        "iov",
        "over_budget",
        "refused",
        "sending",
        "sending_batch",
        "write_exc",
    )

    # What a pipe does not keep (an idle connection is mostly its objects'
    # slots): its connection's id and loop are passed in where needed, the
    # segment size is the pool's, and the bytes lent are summed when asked.
    def __init__(self, pool: SlabPool, opts: PipeOptions) -> None:
        self._pool = pool
        self.max_write_buffer = opts.max_write_buffer
        self._budget = opts.max_write_memory     # reactor-wide; 0: none
        self.pause_at = opts.write_pause_at         # flush() waits above this ...
        self.resume_at = opts.write_resume_at       # ... until pending falls to this
        self._staged: list[WriteSegment] = []
        self._cur: WriteSegment | None = None      # the segment writes append to
        self._granted = 0                           # bytes of _cur lent by get_memory
        self.pending = 0                            # staged + in flight, in bytes
        self.refused = False                        # a write raised WriteBufferFullError
        self.over_budget = False                    # ... because of max_write_memory
        self.sending: WriteSegment | None = None
        # A gathered send in flight: its segments, with the bytes asked of each
        # (``sending`` is the first).  None for a single-segment send.
        self.sending_batch: list[tuple[WriteSegment, int]] | None = None
        self.iov: IoVec | None = None       # the gathered sends' memory (made on first use)
        self.loans = 0                      # receive slots staged sends pin (forward)
        self.pin_limit = opts.max_pinned_slots
        self._flush_waiters: list[asyncio.Future[None]] | None = None
        self._drain_waiters: list[asyncio.Future[None]] | None = None
        self.write_exc: BaseException | None = None
        self.eof = False                            # write_eof(): no more writes
        self._lent: set[WriteSegment] | None = None    # made on first use
        self.bytes_out = 0

    @property
    def segment_size(self) -> int:
        """Bytes of one write segment (the pool's)."""
        return self._pool.segment_size

    def _lent_bytes(self) -> int:
        """Bytes of the segments lent to writers and not enqueued yet."""
        lent = self._lent
        return sum(len(seg.view) for seg in lent) if lent else 0

    # ------------------------------------------------------------ staging
    def write(self, buf: bytes | memoryview) -> None:
        """Stage ``buf`` (bytes, or a 1-D format 'B' memoryview): one copy."""
        n = len(buf)
        if n == 0:
            return
        if self.pending + n > self.max_write_buffer:
            self.over_cap(n)
        if self.pending + n > self.pause_at and self._budget:
            self._check_budget(n)
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
        self.pending += n

    def _check_budget(self, n: int) -> None:
        """The reactor-wide ``max_write_memory``: a write that would take its
        connection past the pause mark is refused while the pool is full, so
        the biggest writers wait and small replies still go out."""
        used = self._pool.bytes_in_use
        if used + n > self._budget:
            self.refused = True
            self.over_budget = True
            raise WriteBufferFullError(
                f"the reactor's write memory is in use ({used} bytes of "
                f"max_write_memory={self._budget}) and this connection has {self.pending} "
                "bytes pending; await conn.flush() (or the writer's flush()) first"
            )

    def over_cap(self, n: int) -> NoReturn:
        self.refused = True         # the next flush() waits until every byte is out
        raise WriteBufferFullError(
            f"writing {n} bytes would stage {self.pending + n} bytes, over "
            f"max_write_buffer={self.max_write_buffer}; await conn.flush() first"
        )

    def get_memory(self, size_hint: int = 0) -> memoryview:
        """Writable memory for at least ``max(size_hint, 1)`` bytes (at most one
        write segment); fill it, then ``advance(n)``."""
        size = self.segment_size
        if size_hint > size:
            raise ValueError(
                f"size_hint {size_hint} exceeds write_buffer_size={size}; use write() "
                f"or BufferWriter for larger pieces"
            )
        want = size_hint if size_hint > 0 else 1
        if self.pending + want > self.pause_at and self._budget:
            self._check_budget(want)
        if self.pending + want > self.max_write_buffer:
            self.refused = True
            raise WriteBufferFullError(
                f"{self.pending} bytes already staged (max_write_buffer="
                f"{self.max_write_buffer}); await conn.flush() first"
            )
        seg = self._cur
        if seg is None or len(seg.view) - seg.fill < want:
            seg = self._new_segment()
        self._granted = len(seg.view) - seg.fill
        return seg.view[seg.fill:]

    def advance(self, n: int) -> None:
        """Commit ``n`` bytes written into the last ``get_memory`` memory."""
        if not 0 <= n <= self._granted:
            raise ValueError(
                f"advance({n}) outside the {self._granted} bytes of the last get_buffer()"
            )
        if n and self.pending + n > self.max_write_buffer:
            self.refused = True
            raise WriteBufferFullError(
                f"advance({n}) would pass max_write_buffer={self.max_write_buffer}"
            )
        seg = self._cur
        assert seg is not None or n == 0
        if seg is not None:
            seg.fill += n
        self._granted -= n
        self.pending += n

    def _new_segment(self) -> WriteSegment:
        seg = self._pool.acquire()
        self._staged.append(seg)
        self._cur = seg
        self._granted = 0
        return seg

    # ------------------------------------------------- BufferWriter chains
    def lend(self, min_size: int = 0) -> WriteSegment:
        """A segment of at least ``min_size`` bytes for a ``BufferWriter``: a
        pool segment, or when ``min_size`` exceeds ``segment_size`` a jumbo
        segment of exactly ``min_size`` bytes (the pool drops it once sent).
        It comes back via ``enqueue`` or, if never flushed, when the
        connection closes (``drop_all``)."""
        pool = self._pool
        size = max(min_size, self.segment_size)
        if self._budget and self.pending + self._lent_bytes() + size > self.pause_at:
            self._check_budget(size)
        seg = pool.acquire() if min_size <= self.segment_size else pool.acquire_jumbo(min_size)
        if self._lent is None:
            self._lent = set()
        self._lent.add(seg)
        return seg

    def enqueue(self, segs: list[WriteSegment], writable: bool) -> None:
        """Append a writer's filled segments to the send queue, in order
        (``writable`` False: the connection is closed; they go back)."""
        pool = self._pool
        lent = self._lent
        if lent is None:
            lent = self._lent = set()
        ok = writable and self.write_exc is None
        for seg in segs:
            if seg not in lent:
                continue            # reclaimed by the close; never release twice
            lent.remove(seg)
            if ok and seg.fill:
                self.pending += seg.fill
                if seg.fill > _MAX_SEND:
                    self._staged.extend(_pieces(seg, _MAX_SEND))
                else:
                    self._staged.append(seg)
            else:
                pool.release(seg)
        if ok:
            self._cur = None        # later writes go after these segments
            self._granted = 0

    # ------------------------------------------------------------ forward
    @property
    def pressure(self) -> bool:
        """Past the pause mark: pending bytes, or receive slots pinned."""
        return self.pending > self.pause_at or self.loans >= self.pin_limit

    @property
    def relieved(self) -> bool:
        """Back under the resume marks: pending bytes, and receive slots pinned."""
        return self.pending <= self.resume_at and self.loans <= self.pin_limit // 2

    def forward(self, views: list[memoryview], keys: list[Any], slots: Any) -> None:
        """Queue ``views`` for sending as they are, after everything staged
        (``keys[i]``: the slot key ``views[i]`` lives in, pinned by the caller
        in ``slots``, or None).  Each is unpinned once sent or dropped.
        Raises ``WriteBufferFullError`` first, taking nothing, past
        ``max_write_buffer``; the caller unpins then."""
        n = 0
        for v in views:
            if len(v) > _MAX_SEND:
                raise ValueError(f"forward: one segment of {len(v)} bytes is over {_MAX_SEND}")
            n += len(v)
        if self.pending + n > self.max_write_buffer:
            self.over_cap(n)
        staged = self._staged
        for view, key in zip(views, keys, strict=True):
            staged.append(LoanSegment(view, key, slots))
            if key is not None:
                self.loans += 1
        self.pending += n
        self._cur = None            # later writes go after these bytes
        self._granted = 0

    def _release(self, seg: WriteSegment) -> None:
        """``seg`` was sent or dropped: back to the pool, or a loan handed back."""
        if type(seg) is LoanSegment:
            if seg.key is not None and seg.slots is not None:
                self.loans -= 1
            seg.done()
        else:
            self._pool.release(seg)

    # -------------------------------------------------------------- sends
    def next_send(self) -> WriteSegment | None:
        """The segment to send from (its bytes ``sent:fill``), now in flight;
        None when a send is already in flight or nothing is ready."""
        if self.sending is not None:
            return None
        staged = self._staged
        while staged:
            seg = staged[0]
            if seg.sent < seg.fill:
                self.sending = seg
                return seg
            if seg is self._cur:
                return None             # still being filled; nothing to send yet
            staged.pop(0)
            self._release(seg)
        return None

    def gather(self, limit: int, max_bytes: int) -> list[WriteSegment]:
        """After ``next_send`` put a segment in flight: it and the ready
        segments behind it (at most ``limit``, ``max_bytes`` in all), as one
        gathered send -- recorded in ``sending_batch`` when there are several.
        Each segment's unsent bytes are ``sent:fill`` as of now."""
        first = self.sending
        assert first is not None
        batch = [first]
        total = first.fill - first.sent
        for seg in self._staged[1:]:
            n = seg.fill - seg.sent
            if len(batch) >= limit or total + n > max_bytes:
                break
            if n > 0:
                batch.append(seg)
                total += n
            if seg is self._cur:
                break
        if len(batch) > 1:
            self.sending_batch = [(s, s.fill - s.sent) for s in batch]
        return batch

    def _on_batch_sent(self, batch: list[tuple[WriteSegment, int]], res: int,
                       conn_id: int) -> bool:
        """A gathered send completed with ``res`` bytes (of the batch, in order)."""
        if self._send_ended(res, conn_id):
            return False
        self.pending -= res
        self.bytes_out += res
        left = res
        for seg, asked in batch:
            take = asked if left >= asked else left
            seg.sent += take
            left -= take
            if seg.sent >= seg.fill:
                self._sent_whole(seg)
            if take < asked:
                break
        return self._after_send()

    def _send_ended(self, res: int, conn_id: int) -> bool:
        """True when the completed send ends the writing: it failed (``res``
        <= 0: every waiter gets the error), or an abort came while it ran."""
        if res <= 0:
            self.fail(send_error(-res if res < 0 else errno.EPIPE, conn_id))
            return True
        if self.write_exc is not None:
            self._drop_staged()
            return True
        return False

    def _sent_whole(self, seg: WriteSegment) -> None:
        """The kernel took all of ``seg``: out of the queue (unless writes still
        fill it through memory ``get_memory`` lent)."""
        if seg is self._cur:
            if self._granted:       # get_memory memory still lent out: keep it as is
                return
            self._cur = None
        self._staged.remove(seg)
        self._release(seg)

    def _after_send(self) -> bool:
        """Wake who waits for the sent bytes; True when more are staged."""
        if self._staged and self.pending:
            if self._drain_waiters and self.relieved:
                self._wake(self._drain_waiters, None)
                self._drain_waiters = None
            return True
        self._wake_flushers(None)
        return False

    def on_sent(self, res: int, conn_id: int) -> bool:
        """The send in flight (of connection ``conn_id``) completed with
        ``res``.  True: send again."""
        seg = self.sending
        self.sending = None
        if seg is None:
            return False
        batch = self.sending_batch
        if batch is not None:
            self.sending_batch = None
            return self._on_batch_sent(batch, res, conn_id)
        if (res > 0 and res == seg.fill - seg.sent and seg is self._cur and not self._granted
                and self.write_exc is None and len(self._staged) == 1):
            # Common case: the only segment went out whole.
            self.pending -= res
            self.bytes_out += res
            self._cur = None
            self._staged.clear()
            self._pool.release(seg)
            if self._flush_waiters or self._drain_waiters:
                self._wake_flushers(None)
            return False
        if self._send_ended(res, conn_id):
            return False
        seg.sent += res
        self.pending -= res
        self.bytes_out += res
        if seg.sent >= seg.fill:
            self._sent_whole(seg)
        return self._after_send()

    # ------------------------------------------------------------ flushing
    def flush_waiter(self, loop: asyncio.AbstractEventLoop) -> asyncio.Future[None]:
        """A future of ``loop`` done when every byte staged now was taken (or failed)."""
        fut: asyncio.Future[None] = loop.create_future()
        if self._flush_waiters is None:
            self._flush_waiters = [fut]
        else:
            self._flush_waiters.append(fut)
        return fut

    def room_waiter(self, loop: asyncio.AbstractEventLoop) -> asyncio.Future[None]:
        """A future of ``loop`` done once the reactor's write memory fell to seven eighths
        of ``max_write_memory``: what a writer refused by the budget, with
        nothing of its own pending, waits for."""
        fut: asyncio.Future[None] = loop.create_future()
        budget = self._budget
        self._pool.add_room_waiter(fut, budget - budget // 8)
        return fut

    def drain_waiter(self, loop: asyncio.AbstractEventLoop) -> asyncio.Future[None]:
        """A future of ``loop`` done once pending bytes fell to ``resume_at`` (or
        failed): the back-pressure wait of ``flush()``, like asyncio's ``drain()``."""
        fut: asyncio.Future[None] = loop.create_future()
        if self._drain_waiters is None:
            self._drain_waiters = [fut]
        else:
            self._drain_waiters.append(fut)
        return fut

    def _wake_flushers(self, exc: BaseException | None) -> None:
        """Everything was sent (``exc`` None) or never will be: wake every waiter."""
        flushers, drainers = self._flush_waiters, self._drain_waiters
        self._flush_waiters = self._drain_waiters = None
        if flushers:
            self._wake(flushers, exc)
        if drainers:
            self._wake(drainers, exc)

    @staticmethod
    def _wake(waiters: list[asyncio.Future[None]], exc: BaseException | None) -> None:
        for w in waiters:
            if not w.done():
                if exc is None:
                    w.set_result(None)
                else:
                    w.set_exception(exc)

    # ------------------------------------------------------------- failure
    def fail(self, exc: BaseException) -> None:
        """Writes are over (``exc`` is raised by every later write and flush):
        staged bytes are dropped, flush waiters get ``exc``."""
        if self.write_exc is None:
            self.write_exc = exc
        self._drop_staged()
        self._wake_flushers(exc)

    def _drop_staged(self) -> None:
        # What a send in flight reads stays until its completion.
        flying = ([seg for seg, _ in self.sending_batch] if self.sending_batch is not None
                  else [self.sending] if self.sending is not None else [])
        for seg in self._staged:
            if seg not in flying:
                self._release(seg)
        self._staged = flying
        self._cur = None
        self._granted = 0
        self.pending = 0

    def drop_all(self, exc: BaseException) -> None:
        """The connection is closed: every segment, lent ones included, goes
        back; flush waiters get ``exc``."""
        self._drop_staged()
        if self._lent:
            pool = self._pool
            for seg in self._lent:
                pool.release(seg)
            self._lent.clear()
        self._wake_flushers(exc)
