"""Protocol: the callback-style fast path, for the tightest loops.

Why: an ``async def`` handler costs a Task step and a future per read.  A
``Protocol`` is called straight from completion dispatch instead — no Task,
no future — and what it writes is sent by one send per connection per loop
iteration, submitted with the next ``io_uring_enter``.

Contract: ``data_received(conn, seq)`` gets the received bytes as an owning
``BufferSequence`` over the receive slots.  Return None to consume all of
them (the slots go back at once), or the number of bytes consumed: the rest
stays, uncopied, and comes back at the start of the next ``data_received``.
``seq`` is valid only during the call.

Flow control, with asyncio's names: ``pause_writing``/``resume_writing``
around ``conn.set_write_buffer_limits(high, low)``, and
``conn.pause_reading()``/``resume_reading()`` (no ``data_received`` while
paused).  One Protocol instance serves every
connection (state per connection goes in your own dict keyed by ``conn.id``,
or in ``conn.context``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from zerg._buffers import BufferSequence
    from zerg._connection import Connection


class Protocol:
    """Subclass and override; pass an instance to ``Engine.serve``."""

    def connection_made(self, conn: Connection) -> None:
        """A connection was accepted.  Writes here are sent with the loop iteration."""

    def data_received(self, conn: Connection, seq: BufferSequence) -> int | None:
        """Bytes arrived.  Return None (all consumed) or how many were consumed.

        Looked up once, when the server starts (``engine.serve(proto)``), and
        called for every connection: one instance serves them all."""
        return None

    def eof_received(self, conn: Connection) -> bool:
        """The peer closed its side.  Return True to keep writing (half-close);
        otherwise the connection closes once staged bytes are sent."""
        return False

    def pause_writing(self, conn: Connection) -> None:
        """More than the high-water mark (``conn.set_write_buffer_limits``,
        64 KiB by default) is pending: stop writing until ``resume_writing``.
        Writing on regardless raises ``WriteBufferFullError`` once
        ``max_write_buffer`` is reached; nothing is dropped."""

    def resume_writing(self, conn: Connection) -> None:
        """Pending bytes fell to the low-water mark: write again."""

    def shutdown_requested(self, conn: Connection) -> None:
        """The engine is stopping (``conn.stopping`` is now True).  The default
        closes the connection gracefully: staged bytes are still sent.  Override
        to finish a request in progress first, then ``conn.close()``; whatever
        is still open after ``shutdown_timeout_s`` is aborted."""
        conn.close()

    def connection_lost(self, conn: Connection, exc: BaseException | None) -> None:
        """The connection is closed and every slot is back.  ``exc`` is the
        error that ended it, if any."""
