"""PipeReader: System.IO.Pipelines' reader contract over a zerg connection.

Goals: a parser sees every unconsumed byte as one ``BufferSequence``, with no
copies between the kernel and the parser, and never rescans what it already
examined.

Plan: the reader is a view of the input side of the connection's duplex pipe
(``conn.input``), which keeps one owning ``BufferSequence`` of unconsumed
bytes.  ``read()`` appends newly received slots to it (ownership moves,
nothing is copied) and hands out a view of it.  ``advance_to(consumed,
examined)`` gives fully consumed slots back to the kernel; if everything was
examined, the next ``read()`` waits for new bytes instead of returning the
same ones.

Slots are shared by every connection of a reactor, so a reader must not sit
on many of them: when its unconsumed bytes occupy many slots that are mostly
empty (a peer trickling a message one small recv at a time;
``PipeOptions.should_compact``), they are copied once into private memory
and the slots go back.  Full slots (large messages) are never copied.

Warnings: a ``ReadResult.buffer`` is valid until the next ``advance_to``;
bytes consumed by it may be overwritten by the kernel at any time after, so
the view raises ``ValueError`` if used.  Copy (``tobytes()``) what must live
longer.  ``read()`` and ``advance_to()`` must alternate.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from zerg._connection import Connection, PipeInput, ReadResult

__all__ = ["PipeReader", "ReadResult"]


class PipeReader:
    """Reads a connection the way .NET's ``PipeReader`` reads a pipe."""

    __slots__ = ("_conn", "_input")

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._input: PipeInput = conn.input

    @property
    def connection(self) -> Connection:
        """The connection this reader reads."""
        return self._conn

    def read(self) -> Coroutine[Any, Any, ReadResult]:
        """Every unconsumed byte; waits only when all of it was examined.

        ``await reader.read()``: this returns the input pipe's own coroutine
        rather than wrapping it in another (one frame less per read)."""
        return self._input.read()

    def read_at_least(self, n: int) -> Coroutine[Any, Any, ReadResult]:
        """``await reader.read_at_least(n)``: completes once at least ``n``
        unconsumed bytes are buffered, or the peer finished, or the read was
        canceled; nothing is consumed (.NET ``ReadAtLeastAsync``).  Then
        ``advance_to`` as after ``read``.  ``n`` may not pass
        ``max_read_buffer`` (``ValueError``).

        ``readexactly`` and ``readuntil`` on top of it::

            res = await reader.read_at_least(n)              # readexactly(n)
            data = res.buffer[:n].tobytes()
            reader.advance_to(min(n, len(res.buffer)))
        """
        return self._input.read_at_least(n)

    def try_read(self) -> ReadResult | None:
        """Like ``read`` but never waits: None when it would have to."""
        return self._input.try_read()

    def advance_to(self, consumed: int, examined: int | None = None) -> None:
        """Consume ``consumed`` bytes of the last buffer; ``examined`` (>= consumed)
        bytes were looked at.  Offsets are into the last ``ReadResult.buffer``."""
        self._input.advance_to(consumed, examined)

    def cancel_pending_read(self) -> None:
        """Make the pending ``read()`` (or the next one) return with ``is_canceled``."""
        self._input.cancel_pending_read()

    def complete(self) -> None:
        """Done reading: every slot goes back; later reads raise.  Idempotent.
        The connection stays open for writing."""
        self._input.complete()
