"""PipeReader: System.IO.Pipelines' reader contract over a zerg connection.

Goals: a parser sees every unconsumed byte as one ``BufferSequence``, with no
copies between the kernel and the parser, and never rescans what it already
examined.

Plan: the reader keeps one owning ``BufferSequence`` of unconsumed bytes.
``read()`` appends newly received slots to it (ownership moves, nothing is
copied) and hands out a view of it.  ``advance_to(consumed, examined)``
gives fully consumed slots back to the kernel; if everything was examined,
the next ``read()`` waits for new bytes instead of returning the same ones.

Slots are shared by every connection of a reactor, so a reader must not sit
on many of them: when its unconsumed bytes occupy more than ``_COMPACT_AT``
slots that are less than a quarter full (a peer trickling a message one small
recv at a time), they are copied once into a private segment and the slots
go back.  Full slots (large messages) are never copied.

Warnings: a ``ReadResult.buffer`` is valid until the next ``advance_to``;
bytes consumed by it may be overwritten by the kernel at any time after, so
the view raises ``ValueError`` if used.  Copy (``tobytes()``) what must live
longer.  ``read()`` and ``advance_to()`` must alternate.
"""

from __future__ import annotations

from typing import NamedTuple

from zerg._buffers import BufferSequence
from zerg._connection import Connection

_EMPTY = BufferSequence()
# A buffer holding more slots than this while they are less than a quarter
# full is copied into one private segment and its slots go back at once.
_COMPACT_AT = 8


class ReadResult(NamedTuple):
    """What ``PipeReader.read`` saw.

    ``buffer`` holds every unconsumed byte; ``is_completed`` means the peer
    ended the stream (the buffer may still hold its last bytes);
    ``is_canceled`` means ``cancel_pending_read()`` cut this read short.
    """

    buffer: BufferSequence
    is_completed: bool
    is_canceled: bool


class PipeReader:
    """Reads a connection the way .NET's ``PipeReader`` reads a pipe."""

    __slots__ = ("_buf", "_cancel", "_completed", "_conn", "_examined_all", "_handed")

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._buf: BufferSequence | None = None     # owning, unconsumed bytes
        self._handed = -1          # length of the buffer handed out; -1: none outstanding
        self._examined_all = False
        self._cancel = False
        self._completed = False

    @property
    def connection(self) -> Connection:
        """The connection this reader reads."""
        return self._conn

    def _current(self) -> BufferSequence | None:
        """The buffer, as the connection holds it: it may have moved it off the
        ring (a copy) while we waited, or released it when it closed."""
        live = self._conn._live_seq
        if self._buf is not live:
            self._buf = live
        return live

    def _pull(self) -> bool:
        """Move waiting slots into the buffer; True if any arrived."""
        conn = self._conn
        if not conn.has_data:
            return False
        segs, ids = conn._take_all()
        buf = self._current()
        if buf is None:
            buf = BufferSequence._owning(segs, ids, conn._give_back_ids)
        else:
            buf = buf._extended(segs, ids)
        held = buf._held_slots()
        if held > _COMPACT_AT and len(buf) * 4 < held * conn._reactor.pool.slot_size:
            buf = buf._compacted()      # many slots, few bytes: copy once, free them
        self._buf = buf
        conn._live_seq = buf
        conn._live_compactable = True
        return True

    def _check_can_read(self) -> None:
        if self._completed:
            raise RuntimeError("PipeReader.read() after complete()")
        if self._handed >= 0:
            raise RuntimeError(
                "PipeReader.read() before advance_to(): call advance_to() on the last result"
            )

    def _result(self, canceled: bool) -> ReadResult:
        buf = self._current()
        view = buf[:] if buf is not None else _EMPTY
        self._handed = len(view)
        completed = self._conn.is_closed and not self._conn.has_data
        return ReadResult(view, completed, canceled)

    def _ready(self, fresh: bool) -> bool:
        if fresh:
            return True
        buf = self._current()
        if buf is not None and len(buf) and not self._examined_all:
            return True
        return self._conn.is_closed

    async def read(self) -> ReadResult:
        """Every unconsumed byte; waits only when all of it was examined."""
        self._check_can_read()
        while True:
            if self._cancel:
                self._cancel = False
                self._pull()
                return self._result(True)
            fresh = self._pull()
            if self._ready(fresh):
                self._examined_all = False
                return self._result(False)
            await self._conn._wait_data()

    def try_read(self) -> ReadResult | None:
        """Like ``read`` but never waits: None when it would have to."""
        self._check_can_read()
        if self._cancel:
            self._cancel = False
            self._pull()
            return self._result(True)
        if self._ready(self._pull()):
            self._examined_all = False
            return self._result(False)
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
        buf = self._current()
        if buf is not None and consumed:
            buf.advance(consumed)
        self._examined_all = examined == n
        self._handed = -1

    def cancel_pending_read(self) -> None:
        """Make the pending ``read()`` (or the next one) return with ``is_canceled``."""
        self._cancel = True
        self._conn._interrupt()

    def complete(self) -> None:
        """Done reading: every slot goes back; later reads raise.  Idempotent.
        The connection stays open for writing."""
        if self._completed:
            return
        self._completed = True
        self._handed = -1
        buf = self._current()
        self._buf = None
        if buf is not None:
            buf.release()
        if self._conn._live_seq is buf:
            self._conn._live_seq = None
        self._conn.discard_input()
