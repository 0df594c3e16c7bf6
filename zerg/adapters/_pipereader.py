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

from zerg._connection import PipeInput, ReadResult

__all__ = ["PipeReader", "ReadResult"]


class PipeReader(PipeInput):
    """Reads a connection the way .NET's ``PipeReader`` reads a pipe.

    It *is* the connection's input face (``PipeInput``, the same as
    ``conn.input``) under .NET's name, made with ``PipeReader(conn)``: ``read``, ``read_at_least``,
    ``try_read``, ``advance_to``, ``cancel_pending_read`` and ``complete`` are
    that class's own, so ``await reader.read()`` and ``reader.advance_to()``
    cost no frame of a wrapper (with the extension both are C).  Several
    readers of one connection share its one input pipe, as ``conn.input`` does.
    """

    __slots__ = ()
