"""The seam between a reactor and its connections, both ways, as interfaces.

Why: the reactor and the connection used to read each other's private
fields and import each other.  Now each sees only a small interface of the
other, defined here, so either side can be replaced -- the native hot path
replaces the connection side, a TLS layer wraps it, a test drives it with
synthetic completions -- without the other noticing.

- ``CompletionSink`` is all the reactor knows of a connection: the
  completions it routes to it (``on_recv``, ``on_recv_end``, ``on_send``),
  and the few lifecycle calls a reactor makes (re-arm after parking, relief,
  pending sends, idle check, close/abort at shutdown).
- ``ConnectionHost`` is all a connection knows of its reactor: where its
  requests go (``RingSubmitter``), the receive slots, the write pool, the thresholds,
  the loop, and three notifications (send me at the end of this iteration,
  I am closed, a callback of mine failed).
- ``StartStrategy`` is how a reactor turns an accepted fd into a sink; the
  engine picks one (task, worker thread, Protocol) once, at ``serve``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from zerg._native import counters

if TYPE_CHECKING:
    from zerg._config import PipeOptions
    from zerg._ring import IoVec
    from zerg._slab import SlabPool


if TYPE_CHECKING:
    class _TrafficCounters:
        bytes_out: int
        forward_copied: int
        forwarded: int
        lent: int
        sends: int
else:
    _TrafficCounters = counters("TrafficCounters",
                                ("bytes_out", "forward_copied", "forwarded", "lent", "sends"))


class Traffic(_TrafficCounters):
    """Counters a reactor keeps and its connections bump (stats only; C
    integers with the extension, ``zerg._native.counters``)."""

    __slots__ = ()

    def __init__(self) -> None:
        self.sends = 0
        self.bytes_out = 0
        self.forwarded = 0          # Connection.forward: bytes sent from receive slots
        self.forward_copied = 0     # ... and bytes it had to copy instead
        self.lent = 0               # Connection.write: bytes sent from receive slots


class CompletionSink(Protocol):
    """A connection, as the reactor sees it."""

    @property
    def id(self) -> int:
        """The key its completions carry (unique for the reactor's life)."""
        ...

    def on_recv(self, key: int, n: int) -> None:
        """``n`` bytes arrived in receive slot ``key`` (the sink owns the key now)."""

    def on_recv_end(self, res: int) -> None:
        """The multishot receive ended (a completion without ``F_MORE``)."""

    def on_send(self, res: int) -> None:
        """The send in flight completed."""

    def on_slots_free(self) -> None:
        """Parked for lack of slots (``RecvSlots.park``): slots are back."""

    def relieve(self) -> None:
        """The ring ran dry: move bytes nobody looks at off it."""

    @property
    def fd(self) -> int:
        """The socket (closed by the reactor itself only at the very end of shutdown)."""
        ...

    @property
    def slots_held(self) -> int:
        """Receive slots it holds (stats, and the ring-dry warning)."""
        ...

    @property
    def is_receiving_paused(self) -> bool:
        """``max_read_buffer`` holds its receive back (stats)."""
        ...

    def send_pending(self) -> None:
        """Submit staged bytes now (the sink asked with ``host.want_send``)."""

    def idle_since(self) -> float | None:
        """When it last received (loop time), or None if it is not open."""

    @property
    def bytes_in(self) -> int:
        """Bytes received so far (0: a client that has not sent anything yet)."""

    close_reason: str | None
    """Why it ended (the first cause wins; the reactor sets ``idle_timeout`` and
    ``stop``): counted by reason when it is closed."""

    def request_stop(self) -> None:
        """The reactor is stopping: finish what is in progress, close when idle."""

    def close(self) -> None:
        """Close gracefully (staged bytes are still sent)."""

    def abort(self) -> None:
        """Close now, dropping staged bytes."""


class Submitter(Protocol):
    """Where a connection's requests go (``zerg._ring.RingSubmitter`` on a real ring)."""

    def recv(self, fd: int, user_data: int) -> None:
        """A multishot receive into the provided buffer ring."""

    def send(self, fd: int, base: object, offset: int, length: int, user_data: int) -> int:
        """Send ``length`` bytes at ``base + offset``: 0, or -errno (``check`` raises)."""
        ...

    def sendv(self, fd: int, iov: IoVec, user_data: int) -> int:
        """One send of every piece ``iov`` holds, in order: 0, or -errno."""
        ...

    def resend(self, fd: int, base: object, offset: int, length: int, user_data: int) -> int:
        """``send`` once the socket is writable (the last one got -EAGAIN)."""
        ...

    def resendv(self, fd: int, iov: IoVec, user_data: int) -> int:
        """``sendv`` once the socket is writable (the last one got -EAGAIN)."""
        ...

    def check(self, ret: int, what: str) -> None:
        """Raise the error a ``send`` returned."""

    def cancel(self, target: int) -> None:
        """Cancel the request whose user_data is ``target``."""

    def close(self, fd: int) -> None:
        """Close ``fd`` (nothing of ours is in the kernel for it any more)."""


class ReceiveSlots(Protocol):
    """The receive slots, as a connection uses them (``zerg._recvslots.RecvSlots``)."""

    def view(self, key: int, n: int) -> memoryview:
        """The ``n`` bytes received under ``key`` (read-only, no copy)."""
        ...

    @property
    def recv_view(self) -> memoryview:
        """All the slots' memory (read-only): every ``view`` is a slice of it."""
        ...

    @property
    def slot_size(self) -> int:
        """Bytes in one slot (``recv_view`` is ``total`` of them)."""
        ...

    def slot_of(self, key: int) -> int:
        """The buffer-ring slot of ``key``."""
        ...

    @property
    def keys_are_slots(self) -> bool:
        """``slot_of(key) == key`` for every key (lets hot paths skip the call)."""
        ...

    def give_back(self, key: int) -> None:
        """Done with ``key``: it goes back to the kernel (exactly once)."""

    def pin(self, key: int) -> None:
        """A send reads ``key``'s memory: a ``give_back`` waits for ``unpin``."""

    def unpin(self, key: int) -> None:
        """The send that read ``key`` is over (deferred give-backs happen now)."""

    def park(self, sink: CompletionSink) -> None:
        """The receive of ``sink`` ended for lack of slots."""

    @property
    def out(self) -> int:
        """Slots the application holds now (in pipes or in handlers' hands)."""
        ...

    @property
    def total(self) -> int:
        """Slots in the ring."""
        ...


def give_back_keys(slots: ReceiveSlots, keys: list[int | None]) -> None:
    """Give back every key of ``keys`` that is not None (a lease's slots; None
    stands for bytes kept off the ring).  A host binds it to its slots once
    (``ConnectionHost.give_back_keys``), for all its connections' leases."""
    give_back = slots.give_back
    for key in keys:
        if key is not None:
            give_back(key)


class ConnectionHost(Protocol):
    """A reactor, as its connections see it."""

    @property
    def submitter(self) -> Submitter:
        """Where this connection's requests go (recv, send, cancel, close)."""
        ...

    @property
    def slots(self) -> ReceiveSlots:
        """The receive slots (view and give back what arrives)."""
        ...

    @property
    def give_back_keys(self) -> Callable[[list[int | None]], None]:
        """``give_back_keys`` bound to ``slots``, made once: the give-back of
        every lease a ``ProtocolConnection`` hands out (one callable per host,
        not one per connection)."""
        ...

    @property
    def pool(self) -> SlabPool:
        """Write segments."""
        ...

    @property
    def options(self) -> PipeOptions:
        """Every threshold of the pipes."""
        ...

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The reactor's event loop."""
        ...

    @property
    def now(self) -> float:
        """Monotonic time of the last completion harvest."""
        ...

    @property
    def thread_id(self) -> int:
        """The reactor's thread."""
        ...

    @property
    def traffic(self) -> Traffic:
        """Counters to bump."""
        ...

    def opened(self, sink: CompletionSink) -> None:
        """Route completions keyed ``sink.id`` to ``sink`` from now on."""

    def want_send(self, sink: CompletionSink) -> None:
        """Call ``sink.send_pending()`` before the next ``io_uring_enter``."""

    def closed(self, sink: CompletionSink) -> None:
        """``sink`` is fully closed: nothing of it is left in the kernel."""

    def handshake_failed(self, sink: CompletionSink) -> None:
        """A TLS handshake of ``sink`` failed or timed out (counted in stats)."""

    def sink_failed(self, sink: CompletionSink, exc: BaseException) -> None:
        """A callback of ``sink``'s raised: log it (rate-limited, a client can make
        callbacks raise at will) and abort the connection if it is still open
        (``connection_lost`` raises after the close)."""

    def proxied_peer(self, conn_id: int) -> tuple[str, int] | tuple[str, int, int, int] | None:
        """The client address a PROXY protocol header gave the connection, if any."""


class ProtocolCallbacks(Protocol):
    """What ``ProtocolConnection`` calls on the application's ``zerg.Protocol``
    (``zerg._protocol.Protocol`` is the base users subclass).  Connections and
    sequences are ``Any`` here so that this seam needs neither module: the
    sink and the protocol each import only downward."""

    def data_received(self, conn: Any, seq: Any, /) -> int | None: ...

    def eof_received(self, conn: Any, /) -> bool: ...

    def pause_writing(self, conn: Any, /) -> None: ...

    def resume_writing(self, conn: Any, /) -> None: ...

    def shutdown_requested(self, conn: Any, /) -> None: ...

    def connection_lost(self, conn: Any, exc: BaseException | None, /) -> None: ...


class StartStrategy(Protocol):
    """How accepted connections are served (chosen once by ``Engine``)."""

    def start(self, host: ConnectionHost, conn_id: int, fd: int) -> CompletionSink:
        """Make the sink for a new connection (it registers with
        ``host.opened``) and start serving it.  Raising before the sink
        registered closes the fd; after, aborts it; the reactor goes on."""
        ...

    async def drain(self, timeout: float) -> None:
        """At shutdown: wait up to ``timeout`` for running handlers, then cancel them."""
