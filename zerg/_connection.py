"""Connection: one TCP socket served by a reactor = transport core + two pipes.

Ownership (one owner per resource):
  - the transport core (this class) owns the fd, the receive state
    (``zerg._recvstate``: one enum, one transition table) and the close state
    machine, and is the only code that prepares requests for this socket;
  - the ``InputPipe`` owns received items and their lease on receive slots
    (levels 1 and 2 and ``PipeReader`` are views of it);
  - the ``OutputPipe`` owns write segments, the one send in flight and flush
    waiters (``write``, ``get_buffer``/``advance`` and ``BufferWriter``).
The pipes report to the core by return value; the core reports to its
reactor through ``ConnectionHost`` and is seen by it only as a
``CompletionSink`` (``zerg._seam``).

Read side -- a monotonic ring of received slots, as in the C# zerg: every
recv completion appends one ``RingItem``.  ``read()`` returns a snapshot whose
``tail`` fences what this batch may take; ``try_get_ring`` dequeues items up
to that fence; ``return_ring`` hands a slot back to the kernel (batched into
one ring-tail update per loop iteration).  The end of the stream is reported
only after every byte before it was handed out.

Close states: OPEN -> CLOSING (no more reads delivered; staged bytes still
sent, recv cancelled) -> CLOSED (every request of this connection completed,
fd closed, slots and segments back in the pool).  The fd is closed only when
the kernel holds no request on it, so a recycled fd number can never receive
a completion meant for this connection.

``ProtocolConnection`` is the sink of the ``zerg.Protocol`` fast path: the
same transport, but received bytes go straight to ``data_received`` from
completion dispatch, and writes are sent with the loop iteration.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import struct
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Final, NoReturn

from zerg._buffers import (
    BufferSequence,
    BytesLike,
    SlotLease,
    drop_single,
    held_slots,
    leased,
    leased_single,
    pieces,
    retire,
    single_view,
    unconsumed,
)
from zerg._errors import WriteBufferFullError
from zerg._inputpipe import (
    EMPTY_SEQ,
    InputPipe,
    ReadResult,
    RingItem,
    RingSnapshot,
    slot_key_of,
)
from zerg._native import counters, speedups
from zerg._outputpipe import LEND_MIN, LoanSegment, OutputPipe, offset_in, send_base
from zerg._recvstate import ARMED_STATES, RecvAction, RecvEvent, RecvState, end_event, transition
from zerg._ring import IoVec, Op, Ring, RingSubmitter, encode
from zerg._seam import Traffic
from zerg._slab import SlabPool, WriteSegment

if TYPE_CHECKING:
    from zerg._seam import ConnectionHost, ProtocolCallbacks
    from zerg._tlsinfo import TlsInfo

# Held while a lazily made pipe is made (Connection._in/_out): rare, once
# per pipe.
_making_pipes: Final = threading.Lock()

__all__ = ["Connection", "PipeInput", "PipeOutput", "ProtocolConnection", "ReadResult",
           "RingItem", "RingSnapshot"]

OPEN: Final = 0
CLOSING: Final = 1
CLOSED: Final = 2

_LINGER_ZERO: Final = struct.pack("ii", 1, 0)      # struct linger {l_onoff=1, l_linger=0}
_get_ident: Final = threading.get_ident
# A NamedTuple's __new__ is Python code: read() builds its snapshot in C.
_new_tuple: Final = tuple.__new__

# Enum hashing is Python code: hot paths read ``InputPipe.paused``, which
# ``_recv_event`` keeps equal to ``state in _PAUSED_STATES``.
_PAUSED_STATES: Final = frozenset({RecvState.CANCELLING, RecvState.PAUSED})

_IOV_MAX: Final = 64            # segments one gathered send takes at most
_MAX_GATHER: Final = 1 << 30    # ... and bytes


if TYPE_CHECKING:
    class _ConnectionCounters:
        _state: int
        bytes_in: int
        fd: int
else:
    # bytes_in is bumped per receive: a C integer with the extension; so are
    # the socket's fd, read per send, and the state, read per write and
    # receive (and no int object per connection).
    _ConnectionCounters = counters("ConnectionCounters", ("_state", "bytes_in", "fd"))


class Connection(_ConnectionCounters):
    """A TCP connection owned by one reactor.  Not thread-safe: use it on the
    reactor's loop (adapters exist for worker threads)."""

    id: int
    """Unique within its reactor for the reactor's life (fds are reused, ids not)."""
    fd: int
    """The socket; zerg owns it (do not close it, or read or write it directly)."""
    bytes_in: int
    """Bytes received."""
    context: Any
    """Free for the application (e.g. a Protocol's per-connection state)."""

    __slots__ = (
        "__weakref__",
        "_host",
        "_in_pipe",
        "_last_rx",
        "_loop",
        "_out_pipe",
        "_owner",
        "_rare",
        "_reading_paused",
        "_recv",
        "_send",
        "_stopping",
        "_sub",
        "_traffic",
        "context",
        "id",
    )

    def __init__(self, host: ConnectionHost, conn_id: int, fd: int) -> None:
        self._host = host
        self._owner = host.thread_id        # the reactor's thread: the only one allowed in
        self._loop: asyncio.AbstractEventLoop = host.loop
        self._sub = sub = host.submitter
        self._send = sub.send
        self._traffic = host.traffic
        self.id = conn_id
        self.fd = fd
        self._state = OPEN
        self._stopping = False
        self._reading_paused = False
        self._recv = RecvState.IDLE
        self._in_pipe: InputPipe | None = None
        self._out_pipe: OutputPipe | None = None
        if not self._lazy_pipes:
            # A handler's connection: its handler reads at once, and an
            # adapter's constructor may look at the input pipe from its worker
            # thread, so it is made here, on the reactor's thread.  The output
            # pipe waits for the first write (``_out``, under the lock): an idle
            # connection never needs one (208 bytes and its list).
            self._in_pipe = InputPipe(host.slots, host.options, host.loop)
        self._last_rx = host.now
        self._rare: _Rare | None = None
        self.context = None
        self.bytes_in = 0

    def __repr__(self) -> str:
        state = ("open", "closing", "closed")[self._state]
        return f"<zerg.Connection id={self.id} fd={self.fd} {state}>"

    @property
    def close_reason(self) -> str | None:
        """Why the connection ended, once it is ending (the first cause wins):
        ``peer_eof`` (the peer shut down), ``peer_reset``, ``idle_timeout``,
        ``stop`` (the engine stopped), ``abort``, ``limit`` (a peer that stopped
        reading outlived ``close_timeout_s``), ``closed`` (the application closed
        it, or its handler returned).  Counted per reactor in
        ``ReactorStats.closed_by``."""
        rare = self._rare
        return None if rare is None else rare.close_reason

    @close_reason.setter
    def close_reason(self, reason: str | None) -> None:
        self._more().close_reason = reason

    def _more(self) -> _Rare:
        """The connection's rarely needed state, made on first use."""
        rare = self._rare
        if rare is None:
            rare = self._rare = _Rare()
        return rare

    def start(self) -> None:
        """Register with the reactor and arm the first receive (the reactor's
        start strategy calls this once)."""
        self._host.opened(self)
        self._recv_event(RecvEvent.START)

    _lazy_pipes: ClassVar[bool] = False
    """True: the pipes are made on first use (``ProtocolConnection``)."""

    @property
    def _in(self) -> InputPipe:
        """The input pipe, made on first use where ``_lazy_pipes``.  Until
        then the connection behaves as if it had a fresh one: nothing
        received, not discarding, and not paused (``_recv_event`` makes it
        when receiving pauses).  Made under a lock: it may be asked for from
        another thread (an adapter's constructor) while the reactor's thread
        needs it, and two pipes would split the bytes between them."""
        inp = self._in_pipe
        if inp is None:
            with _making_pipes:
                inp = self._in_pipe
                if inp is None:
                    host = self._host
                    inp = InputPipe(host.slots, host.options, self._loop)
                    inp.paused = self._recv in _PAUSED_STATES
                    self._in_pipe = inp
        return inp

    @property
    def _out(self) -> OutputPipe:
        """The output pipe, made on first use where ``_lazy_pipes`` (nothing
        staged until then; under the lock, as ``_in``)."""
        out = self._out_pipe
        if out is None:
            with _making_pipes:
                out = self._out_pipe
                if out is None:
                    host = self._host
                    out = OutputPipe(host.pool, host.options)
                    self._out_pipe = out
        return out

    # ------------------------------------------------------------ level 1
    async def read(self) -> RingSnapshot:
        """Wait until received slots are waiting or the stream ended.

        Returns at once (no future) when items are already waiting.  Only one
        ``read()`` may wait at a time.  A snapshot with ``is_closed`` carries
        no items: every byte before the end was handed out earlier.
        (No thread check here: awaiting it on another thread's loop fails in
        asyncio already, and ``return_ring`` checks.)
        """
        inp = self._in_pipe or self._in
        if inp.backlog:
            # The last read was cut at max_read_chunk: let the loop run once
            # (other connections' I/O and handlers) before the next chunk.
            inp.backlog = False
            await asyncio.sleep(0)
        head = inp.head
        if head < inp.tail:
            tail = inp.tail
            if tail - head > inp.opts.read_chunk_items:     # fairness: one chunk a read
                tail = head + inp.opts.read_chunk_items
                inp.backlog = True
            return _new_tuple(RingSnapshot, (tail, False))
        if inp.ended or self._state != OPEN or self._stopping:
            return _new_tuple(RingSnapshot, (inp.tail, True))
        if inp.paused:
            self._maybe_resume()
        fut = inp.arm_waiter()
        try:
            await fut
        finally:
            inp.waiter = None
        head = inp.head
        if head < inp.tail:
            tail = inp.tail
            if tail - head > inp.opts.read_chunk_items:
                tail = head + inp.opts.read_chunk_items
                inp.backlog = True
            return _new_tuple(RingSnapshot, (tail, False))
        closed = inp.ended or self._state != OPEN or self._stopping
        return _new_tuple(RingSnapshot, (inp.tail, closed))

    def try_get_ring(self, snapshot: RingSnapshot) -> RingItem | None:
        """Next item up to ``snapshot.tail``, or None when the batch is drained."""
        return (self._in_pipe or self._in).take(snapshot.tail)

    def return_ring(self, item: RingItem) -> None:
        """Give ``item``'s slot back to the kernel; its view dies now."""
        if _get_ident() != self._owner:
            self._foreign_thread()
        inp = self._in_pipe or self._in
        if not inp.give_back_item(item):
            if self._state == OPEN:
                raise ValueError(f"{item!r} was already returned or is not from this connection")
            return          # the close already gave it back
        if inp.paused:
            self._maybe_resume()

    def reset_read(self) -> None:
        """End a read cycle.  Kept for parity with the C# API: state is
        derived from the ring, so this only checks nothing is waiting."""
        inp = self._in_pipe
        if inp is not None and inp.waiter is not None:
            raise RuntimeError("reset_read() while a read() is waiting")

    # ------------------------------------------------------------ level 2
    def get_sequence(self, snapshot: RingSnapshot) -> BufferSequence:
        """Drain the items of ``snapshot`` into one owning ``BufferSequence``.

        Its ``advance(n)`` gives fully consumed slots back; ``release()`` gives
        back the rest.  Closing the connection releases it.
        """
        if _get_ident() != self._owner:
            self._foreign_thread()
        return (self._in_pipe or self._in).sequence(snapshot.tail)

    # ------------------------------------------------------- level 3 faces
    @property
    def input(self) -> PipeInput:
        """The input side of the duplex pipe (``PipeReader`` reads it)."""
        return self._faces()[0]

    @property
    def output(self) -> PipeOutput:
        """The output side of the duplex pipe (``BufferWriter`` writes it)."""
        return self._faces()[1]

    def _faces(self) -> tuple[PipeInput, PipeOutput]:
        rare = self._more()
        faces = rare.faces
        if faces is None:
            faces = rare.faces = (PipeInput(self), PipeOutput(self))
        return faces

    # --------------------------------------------------------------- state
    def discard_input(self) -> None:
        """Stop reading: every received slot goes back now and later input is
        dropped as it arrives, so it cannot tie up the reactor's shared ring.
        Writing still works."""
        if _get_ident() != self._owner:
            self._foreign_thread()
        self._in.discard()

    @property
    def has_data(self) -> bool:
        """Received bytes are waiting to be taken."""
        inp = self._in_pipe
        return inp is not None and inp.head < inp.tail

    @property
    def peername(self) -> tuple[str, int] | tuple[str, int, int, int] | str | None:
        """The peer's address, as ``socket.getpeername()`` gives it: ``(ip, port)``,
        or for a UNIX socket its path (usually ``""``: clients rarely bind one);
        behind a balancer with ``EngineOptions.proxy_protocol``, the client its
        PROXY header named; None once closed."""
        if self._state == CLOSED:
            return None
        proxied = self._host.proxied_peer(self.id)     # EngineOptions.proxy_protocol
        if proxied is not None:
            return proxied
        sock = socket.socket(fileno=self.fd)
        try:
            addr: tuple[str, int] | tuple[str, int, int, int] | str = sock.getpeername()
            return addr
        except OSError:
            return None
        finally:
            sock.detach()

    @property
    def tls(self) -> TlsInfo | None:
        """What the TLS handshake agreed (ALPN protocol, server name, peer
        certificate, version, cipher), or None on a plain TCP connection."""
        return None

    @property
    def error(self) -> OSError | None:
        """The error that ended the stream (e.g. ``ConnectionResetError``), if any."""
        inp = self._in_pipe
        code = 0 if inp is None else inp.error
        if not code:
            return None
        exc_type: type[OSError] = {errno.ECONNRESET: ConnectionResetError,
                                   errno.EPIPE: BrokenPipeError}.get(code, OSError)
        return exc_type(code, os.strerror(code))

    def call_soon_threadsafe(self, fn: Callable[..., object], *args: Any) -> asyncio.Handle:
        """Run ``fn(*args)`` on this connection's reactor thread: the way in
        from other threads (another reactor's handler, a worker thread).
        Everything else on a connection must be called on its reactor thread."""
        return self._loop.call_soon_threadsafe(fn, *args)

    def _foreign_thread(self) -> NoReturn:
        caller = threading.current_thread().name
        owner = next((t.name for t in threading.enumerate() if t.ident == self._owner),
                     f"thread {self._owner}")
        raise RuntimeError(
            f"connection {self.id} belongs to the reactor thread {owner!r} and was used "
            f"from {caller!r}; from other threads use conn.call_soon_threadsafe(fn, *args) "
            "(or ConnectionStream / BufferWriter.flush_sync in a plain def handler)")

    @property
    def stopping(self) -> bool:
        """True once the engine's ``stop()`` began: finish the request in
        progress (writes and flushes still work); a read that would wait
        reports the end instead, so a keep-alive loop ends by itself."""
        return self._stopping

    def request_stop(self) -> None:
        """The reactor is stopping (called by it once).  A reader waiting for
        more bytes is woken and sees the end; a handler busy with a request
        finishes it."""
        if self._state != OPEN:
            return
        self._stopping = True
        inp = self._in_pipe
        if inp is not None:
            inp.wake()

    @property
    def is_closed(self) -> bool:
        """True once the peer ended the stream or the connection is closing."""
        inp = self._in_pipe
        return self._state != OPEN or (inp is not None and inp.ended)

    @property
    def slots_held(self) -> int:
        """Receive slots this connection holds (handed out, not yet returned)."""
        inp = self._in_pipe
        return 0 if inp is None else len(inp.held)

    @property
    def is_receiving_paused(self) -> bool:
        """True while ``max_read_buffer`` holds this connection's receive back."""
        return self._recv in _PAUSED_STATES

    @property
    def bytes_out(self) -> int:
        """Bytes the kernel took from sends."""
        out = self._out_pipe
        return 0 if out is None else out.bytes_out

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The reactor's event loop this connection lives on."""
        return self._loop

    @property
    def on_reactor_thread(self) -> bool:
        """True when called on the thread of this connection's reactor."""
        return self._host.thread_id == threading.get_ident()

    # ------------------------------------------------- receive (transport)
    def _recv_event(self, event: RecvEvent, res: int = 0) -> None:
        """The one place the receive state changes (``res``: the final result
        of the receive, for the END_* events)."""
        self._recv, action = transition(self._recv, event)
        if action is RecvAction.NONE:
            return
        if action is RecvAction.ARM:
            self._sub.recv(self.fd, encode(Op.RECV, self.id))
        elif action is RecvAction.CANCEL:
            self._sub.cancel(encode(Op.RECV, self.id))
        elif action is RecvAction.PARK:
            self._host.slots.park(self)
        elif action is RecvAction.EOF:
            error = -res if res < 0 and res != -errno.ECANCELED else 0
            if self.close_reason is None:
                self.close_reason = "peer_reset" if error else "peer_eof"
            self._on_eof(error)
        elif action is RecvAction.FINISHED:
            self._maybe_finish()
        paused = self._recv in _PAUSED_STATES
        if paused or self._in_pipe is not None:
            self._in.paused = paused        # (made here: no pipe means not paused)

    def on_recv(self, key: int, n: int) -> None:
        """``n`` bytes arrived in slot ``key``."""
        if self._state != OPEN:
            self._host.slots.give_back(key)
            return
        self.bytes_in += n
        self._last_rx = self._host.now
        inp = self._in_pipe or self._in
        if inp.paused:
            # Over max_read_buffer and still receiving what was in flight:
            # keep the bytes, but off the shared ring.
            slots = self._host.slots
            data = slots.view(key, n).tobytes()
            slots.give_back(key)
            inp.push_private(data)
        elif inp.push(key, n):
            self._pause()

    def on_recv_end(self, res: int) -> None:
        """The multishot recv ended (no F_MORE)."""
        self._recv_event(end_event(res, self._recv), res)

    def on_slots_free(self) -> None:
        if self._state == OPEN:
            self._recv_event(RecvEvent.SLOTS)

    def _on_eof(self, error: int) -> None:
        """The stream ended: ``error`` 0 for an orderly shutdown by the peer,
        else the errno that ended it (a reset)."""
        self._in.end(error)

    def _pause(self) -> None:
        """Too many unconsumed bytes: stop receiving until the handler catches up.

        Slots the handler has not taken yet are copied out of the shared ring
        (and given back) so one flooding peer cannot hold the ring that every
        connection of the reactor receives into.  Memory stays bounded: the
        receive is cancelled, so at most what was already in flight follows.
        """
        self._recv_event(RecvEvent.PAUSE)
        self.relieve()

    def _maybe_resume(self) -> None:
        if self._state == OPEN and not self._reading_paused and self._in.below_resume_mark():
            self._recv_event(RecvEvent.RESUME)

    def relieve(self) -> None:
        """Move bytes nobody is looking at off the shared ring (see InputPipe.relieve)."""
        if self._state == OPEN:
            self._in.relieve()

    def idle_since(self) -> float | None:
        return self._last_rx if self._state == OPEN else None

    # ------------------------------------------------------------- write
    def write(self, data: BytesLike | BufferSequence) -> None:
        """Stage ``data`` (any buffer, or a ``BufferSequence``) for sending; one
        copy into the pool.

        A ``BufferSequence`` or a ring item's view of at least 4 KiB
        (``LEND_MIN``) lying in one receive slot of this reactor (an echo, a
        proxy's relay) is not copied: the slot is lent to the send as by
        ``forward``, while the connection has a slot to pin under
        ``max_pinned_slots``.  The difference is not visible: received bytes
        are read-only, and the caller may consume ``data`` (or return the
        ring item) at once either way.

        Raises ``WriteBufferFullError`` (nothing staged) when it would pass
        ``max_write_buffer``; ``ConnectionError`` once the connection is closed
        or a send failed.
        """
        if _get_ident() != self._owner:
            self._foreign_thread()
        out = self._out_pipe or self._out
        if self._state or out.write_exc is not None or out.eof:
            self._check_writable()
        if isinstance(data, bytes):
            out.write(data)
        elif isinstance(data, memoryview):
            flat = data if data.format == "B" and data.ndim == 1 else data.cast("B")
            if not self._lend_view(flat):
                out.write(flat)
        elif isinstance(data, BufferSequence):
            view = single_view(data)          # the common single-slot case
            if view is not None and self._lend(data, view):
                return
            if view is not None:
                out.write(view)
            else:
                n = len(data)
                if out.pending + n > out.max_write_buffer:
                    out.over_cap(n)
                for segment in data:
                    out.write(segment)
        else:
            out.write(memoryview(data).cast("B"))

    def _lend(self, seq: BufferSequence, view: memoryview) -> bool:
        """``write``'s loan of ``seq`` (one segment, its bytes ``view``) when it
        is ``LEND_MIN`` bytes or more and its slot is one of this reactor's
        (``_lend_slot``).  False: nothing changed, the caller copies."""
        lease = seq._slots
        if len(view) < LEND_MIN or lease is None or len(lease.keys) != 1:
            return False
        key = slot_key_of(lease.keys[0])
        if key is None or view.obj is not self._host.slots.recv_view.obj:
            return False
        return self._lend_slot(view, key)

    def _lend_view(self, view: memoryview) -> bool:
        """``write``'s loan of a view of ``LEND_MIN`` bytes or more inside one
        receive slot (level 1's ``RingItem.view``, a slice of one), its slot
        found from the address."""
        slots = self._host.slots
        region = slots.recv_view
        if len(view) < LEND_MIN or view.obj is not region.obj:
            return False
        at = offset_in(view, region)
        size = slots.slot_size
        bid = at // size
        if at < 0 or (bid + 1) * size < at + len(view) or bid >= slots.total:
            return False                            # spans two slots: copied
        return self._lend_slot(view, bid)

    def _lend_slot(self, view: memoryview, key: int) -> bool:
        """Pin ``key``'s slot and stage ``view`` as a loan, as ``forward`` does,
        when the bytes fit ``max_write_buffer`` and one more pin stays under
        ``max_pinned_slots`` (so a loan never pauses a Protocol's writing).
        False: nothing changed, the caller copies."""
        out = self._out_pipe or self._out
        if out.loans >= out.pin_limit - 1 or out.pending + len(view) > out.max_write_buffer:
            return False
        slots = self._host.slots
        slots.pin(key)
        try:
            out.forward([view[:]], [key], slots)    # a view of its own, as pieces() makes
        except BaseException:
            slots.unpin(key)
            raise
        self._traffic.lent += len(view)
        return True

    def forward(self, seq: BufferSequence) -> None:
        """Stage ``seq``'s bytes for sending *without copying them*: the send
        reads the receive slots they arrived in.

        ``seq`` may be any sequence over received bytes -- a ``PipeReader``
        buffer, a level-2 sequence, a ``Protocol``'s ``data_received``
        argument, a slice of one -- from any connection of this reactor
        (e.g. a proxy's other side).  Each slot is pinned: whoever gives it
        back (the reader advancing past it, ``release()``, the other
        connection closing) only marks it done, and it goes back to the
        kernel when this send has taken it.  So the caller may consume
        ``seq`` at once, as after ``write``.  Bytes kept off the ring (private
        memory) are sent from where they are too.  Only what cannot be lent
        safely is copied -- another reactor's slots, or a sequence the
        application built over its own (possibly mutable) buffers -- and
        counted in ``ReactorStats.forward_copied_bytes``.

        Then ``await flush()`` (or, in a Protocol, nothing: it is sent with the
        loop iteration), as after ``write``.  Raises ``ValueError`` for a
        consumed or released sequence, ``WriteBufferFullError`` (nothing staged)
        past ``max_write_buffer``, ``ConnectionError`` once closed.
        """
        if _get_ident() != self._owner:
            self._foreign_thread()
        if not isinstance(seq, BufferSequence):
            raise TypeError(f"forward() takes a BufferSequence, not {type(seq).__name__}; "
                            "use write() for other buffers")
        self._check_writable()
        views, keys = pieces(seq)
        if not views:
            return
        slots = self._host.slots
        region = slots.recv_view.obj        # what every slot view is a view of
        copied = 0
        pinned: list[int] = []
        # Under max_pinned_slots the whole sequence is lent (one read's worth
        # may pass it); at the limit, forwards copy until sends give slots back.
        may_pin = self._out.loans < self._out.pin_limit
        for i, view in enumerate(views):
            key = slot_key_of(keys[i])
            keys[i] = key
            if key is not None and view.obj is region and may_pin:
                slots.pin(key)              # a slot of this reactor: sent from the slot
                pinned.append(key)
            elif type(view.obj) is bytes:   # immutable memory off the ring (moved off
                keys[i] = None              # it, or decrypted): the view keeps it alive
            else:                           # another reactor's slot, memory that may
                data = memoryview(view.tobytes())   # change, or past max_pinned_slots: copied
                copied += len(data)
                views[i] = data
                keys[i] = None
        try:
            self._out.forward(views, keys, slots)
        except BaseException:
            for key in pinned:
                slots.unpin(key)
            raise
        traffic = self._traffic
        traffic.forward_copied += copied
        traffic.forwarded += len(seq) - copied

    def get_buffer(self, size_hint: int = 0) -> memoryview:
        """Writable memory for at least ``max(size_hint, 1)`` bytes (at most one
        write segment); fill it, then ``advance(n)``."""
        if _get_ident() != self._owner:
            self._foreign_thread()
        self._check_writable()
        return self._out.get_memory(size_hint)

    def advance(self, n: int) -> None:
        """Commit ``n`` bytes written into the last ``get_buffer`` memory."""
        if _get_ident() != self._owner:
            self._foreign_thread()
        self._out.advance(n)

    async def flush(self) -> None:
        """Send everything staged, with back-pressure, like asyncio's ``drain()``
        and .NET's ``PipeWriter.FlushAsync``.

        Starts the send at once.  Returns without suspending while staged +
        in-flight bytes are at most the write pause mark (64 KiB); above it,
        waits until they fell to the resume mark (16 KiB).  After a write was
        refused with ``WriteBufferFullError`` it waits until every byte is out,
        so "await flush(), then write again" always makes room.  So a fast
        peer costs no extra task wake-up per message and a slow one slows the
        writer.  Bytes still in flight when the handler returns or the
        connection closes are sent before the fd closes.  To wait until the
        kernel took every byte, ``await wait_sent()``.  Raises the error of a
        failed send.

        With the C extension a flush that need not wait returns a shared
        coroutine that is finished before it starts (no coroutine object and
        frame per message); asyncio takes it like any coroutine
        (``create_task``, ``wait_for``, ``gather``).
        """
        if _get_ident() != self._owner:
            self._foreign_thread()
        out = self._out_pipe or self._out
        if out.write_exc is not None:
            raise out.write_exc
        if self._state != OPEN:
            raise ConnectionError(f"connection {self.id} is closed")
        if out.pending == 0:
            out.refused = False
            if out.over_budget:         # refused by max_write_memory with nothing of
                out.over_budget = False  # its own pending: wait for the pool to drain
                await out.room_waiter(self._loop)
            return
        self._kick_send()
        if out.refused:
            out.refused = False
            out.over_budget = False     # a retry checks the budget again
            await out.flush_waiter(self._loop)
        elif out.pressure:              # bytes over the pause mark, or slots pinned
            await out.drain_waiter(self._loop)

    async def wait_sent(self) -> None:
        """Send everything staged; returns when the kernel took all of it (or
        raises the error that stopped it)."""
        if _get_ident() != self._owner:
            self._foreign_thread()
        out = self._out_pipe or self._out
        if out.write_exc is not None:
            raise out.write_exc
        if out.pending == 0:
            return
        if self._state == CLOSED:
            raise ConnectionError(f"connection {self.id} closed before the data was sent")
        self._kick_send()
        await out.flush_waiter(self._loop)

    def flush_nowait(self) -> None:
        """Start sending everything staged without waiting for it."""
        out = self._out_pipe or self._out
        if out.pending and out.write_exc is None and self._state != CLOSED:
            self._kick_send()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        """asyncio's write flow-control marks: ``flush()`` waits (and a Protocol
        gets ``pause_writing``) once more than ``high`` bytes are pending, until
        they fell to ``low``.  Defaults: 64 KiB and a quarter of ``high``;
        ``high`` may not pass ``max_write_buffer``."""
        if _get_ident() != self._owner:
            self._foreign_thread()
        out = self._out_pipe or self._out
        if high is None:
            high = 65536 if low is None else 4 * low
        if low is None:
            low = high // 4
        if not 0 <= low <= high:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        if high > out.max_write_buffer:
            raise ValueError(f"high ({high}) is over max_write_buffer={out.max_write_buffer}")
        out.pause_at = high
        out.resume_at = low

    def get_write_buffer_limits(self) -> tuple[int, int]:
        """``(low, high)``, as asyncio transports report them."""
        return self._out.resume_at, self._out.pause_at

    def pause_reading(self) -> None:
        """Stop receiving (the multishot recv is cancelled; TCP slows the
        peer) until ``resume_reading()``.  Bytes already received stay readable;
        a Protocol gets no ``data_received`` meanwhile (bytes still in flight
        are kept, off the shared ring)."""
        if _get_ident() != self._owner:
            self._foreign_thread()
        if self._state != OPEN or self._reading_paused:
            return
        self._reading_paused = True
        self._recv_event(RecvEvent.PAUSE)

    def resume_reading(self) -> None:
        """Receive again after ``pause_reading()``."""
        if not self._reading_paused:
            return
        self._reading_paused = False
        self._maybe_resume()

    @property
    def is_reading(self) -> bool:
        """False between ``pause_reading()`` and ``resume_reading()``."""
        return not self._reading_paused

    @property
    def pending_write_bytes(self) -> int:
        """Bytes staged or in flight, not yet taken by the kernel."""
        out = self._out_pipe
        return 0 if out is None else out.pending

    def _check_writable(self) -> None:
        out = self._out_pipe or self._out
        exc = out.write_exc
        if exc is not None:
            raise exc
        if self._state != OPEN:
            raise ConnectionError(f"connection {self.id} is closed")
        if out.eof:
            raise BrokenPipeError(errno.EPIPE, f"connection {self.id}: write_eof() was called; "
                                  "it writes no more")

    def write_eof(self) -> None:
        """Close the write side once the staged bytes are sent (a TCP
        half-close, asyncio's ``write_eof``): the peer reads the end of the
        stream and may go on sending; this side goes on reading.  Later
        writes raise ``BrokenPipeError``.  Idempotent; nothing to do once
        closed."""
        if _get_ident() != self._owner:
            self._foreign_thread()
        out = self._out_pipe or self._out
        if self._state != OPEN or out.eof:
            return
        out.eof = True
        if out.write_exc is not None:
            return
        if not out.pending:
            self._shutdown_write()
            return
        self._kick_send()
        out.flush_waiter(self._loop).add_done_callback(self._eof_due)

    def can_write_eof(self) -> bool:
        """True: a TCP connection can half-close (``write_eof``)."""
        return True

    def _eof_due(self, fut: asyncio.Future[None]) -> None:
        """Every byte staged before ``write_eof`` was sent: shut the write side."""
        if not fut.cancelled() and fut.exception() is None and self._state != CLOSED:
            self._shutdown_write()

    def _shutdown_write(self) -> None:
        sock = socket.socket(fileno=self.fd)
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass            # reset meanwhile: the receive side reports it
        finally:
            sock.detach()

    def _kick_send(self) -> None:
        """Put the next staged bytes in flight (the C extension's common case
        sends one segment itself and calls this for every other)."""
        self._start_send(False)

    def _start_send(self, when_writable: bool) -> None:
        """One send, or one gathered send of the segments waiting behind each
        other (``when_writable``: the last send found the socket's buffer
        full; the kernel waits for room before trying)."""
        out = self._out_pipe or self._out
        seg = out.next_send()
        if seg is None:
            return
        if out.pending > seg.fill - seg.sent:      # more segments wait behind it
            batch = out.gather(_IOV_MAX, _MAX_GATHER)
            if len(batch) > 1:
                self._send_gathered(batch, when_writable)
                return
        sent = seg.sent
        send = self._sub.resend if when_writable else self._send
        base, off = send_base(seg)
        ret = send(self.fd, base, off + sent, seg.fill - sent, encode(Op.SEND, self.id))
        if ret:
            out.sending = None
            self._sub.check(ret, "send")
        self._traffic.sends += 1

    def _send_gathered(self, batch: list[WriteSegment], when_writable: bool) -> None:
        """One send of several segments (sendmsg): a proxy's forwarded slots,
        a reply larger than a segment -- one round trip instead of one each."""
        out = self._out_pipe or self._out
        iov = out.iov
        if iov is None:
            iov = out.iov = IoVec(_IOV_MAX)
        pieces = []
        for s in batch:
            base, off = send_base(s)
            pieces.append((base, off + s.sent, s.fill - s.sent))
        iov.fill(pieces)
        sub = self._sub
        ret = (sub.resendv if when_writable else sub.sendv)(self.fd, iov,
                                                             encode(Op.SEND, self.id))
        iov.clear()
        if ret:
            out.sending = None
            out.sending_batch = None
            sub.check(ret, "send")
        self._traffic.sends += 1

    def send_pending(self) -> None:
        out = self._out_pipe or self._out
        if out.pending and out.write_exc is None:
            self._kick_send()       # io_uring: all of them in this enter

    def on_send(self, res: int) -> None:
        out = self._out_pipe or self._out
        if res == -errno.EAGAIN and out.write_exc is None and out.sending is not None:
            # The socket (non-blocking) had no room and the kernel handed the send
            # back: the same bytes again, once it is writable.
            out.sending = None
            out.sending_batch = None
            self._start_send(True)
            return
        before = out.bytes_out
        again = out.on_sent(res, self.id)
        self._traffic.bytes_out += out.bytes_out - before
        if again:
            self._kick_send()
        elif self._state == CLOSING:
            self._maybe_finish()

    # ------------------------------------------------------------- close
    def close(self) -> None:
        """Close gracefully: staged bytes are still sent, then the fd closes.

        Idempotent.  Pending and later ``read()`` calls report ``is_closed``.
        """
        if _get_ident() != self._owner:
            self._foreign_thread()
        if self._state != OPEN:
            return
        if self.close_reason is None:
            self.close_reason = "closed"
        self._state = CLOSING
        inp = self._in_pipe
        if inp is not None:
            inp.wake()
            inp.release_all()
        out = self._out_pipe
        if out is not None and out.pending and out.write_exc is None:
            self._kick_send()
        self._recv_event(RecvEvent.CLOSE)
        self._maybe_finish()
        timeout = self._host.options.close_timeout_s
        if self._state == CLOSING and timeout is not None:
            # A peer that stops reading must not keep the fd and the send
            # memory for ever.
            self._more().close_timer = self._loop.call_later(timeout, self._close_deadline)

    def _close_deadline(self) -> None:
        self._more().close_timer = None
        if self._state == CLOSING:
            self.close_reason = "limit"     # the peer stopped reading our bytes
            self.abort()

    def abort(self) -> None:
        """Close now, with a reset: staged bytes are dropped, in-flight requests
        cancelled, and the peer gets an RST (``SO_LINGER`` 0), not a FIN --
        it sees ``ECONNRESET`` and none of the staged bytes.  Idempotent."""
        if _get_ident() != self._owner:
            self._foreign_thread()
        if self._state == CLOSED:
            return
        if self.close_reason is None:
            self.close_reason = "abort"
        self._linger_zero()
        out = self._out_pipe or self._out
        if out.write_exc is None:       # first, so the close below sends nothing
            out.fail(ConnectionAbortedError(errno.ECONNABORTED,
                                            f"connection {self.id} was aborted"))
        if self._state == OPEN:
            self.close()
        if out.sending is not None:
            self._sub.cancel(encode(Op.SEND, self.id))
        self._maybe_finish()

    def _linger_zero(self) -> None:
        """Make the coming close of the fd send an RST (``SO_LINGER`` on, 0 s)."""
        try:
            sock = socket.socket(fileno=self.fd)
        except OSError:
            return
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
        except OSError:
            pass        # not a TCP socket any more, or already reset: close as is
        finally:
            sock.detach()

    def _maybe_finish(self) -> None:
        if self._state != CLOSING or self._recv in ARMED_STATES:
            return
        out = self._out_pipe
        if out is not None:
            if out.sending is not None:
                return
            if out.pending and out.write_exc is None:
                self._kick_send()
                if out.sending is not None:
                    return
        self._state = CLOSED
        rare = self._rare
        if rare is not None and rare.close_timer is not None:
            rare.close_timer.cancel()
            rare.close_timer = None
        if out is not None:
            out.drop_all(ConnectionError(
                f"connection {self.id} closed before the data was sent"))
        self._sub.close(self.fd)
        self._host.closed(self)
        self._closed()

    def _closed(self) -> None:
        """Hook: the connection is fully closed (every slot is back)."""

    def fail_callback(self, exc: BaseException) -> None:
        """A callback serving this connection raised: it is logged and the
        connection aborted (``connection_lost`` gets ``exc``)."""
        self._failed(exc)

    def _failed(self, exc: BaseException) -> None:
        self._more().error = exc
        self._host.sink_failed(self, exc)


class _Rare:
    """What most connections never need, made on first use: one slot on the
    connection instead of five (an idle connection is mostly its slots)."""

    __slots__ = ("close_reason", "close_timer", "eof_held", "error", "faces")

    def __init__(self) -> None:
        self.close_reason: str | None = None
        self.close_timer: asyncio.TimerHandle | None = None    # the close deadline
        self.error: BaseException | None = None     # a callback serving it raised this
        self.eof_held = False       # a Protocol's end came while its reading was paused
        self.faces: tuple[PipeInput, PipeOutput] | None = None     # input, output


class PipeInput:
    """The input side of a connection's duplex pipe: .NET ``PipeReader`` semantics.

    ``PipeReader`` is this class under .NET's name; a TLS layer can offer the same face.
    """

    __slots__ = ("_conn", "_in")

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._in = conn._in

    @property
    def connection(self) -> Connection:
        """The connection this pipe reads."""
        return self._conn

    async def read(self) -> ReadResult:
        """Every unconsumed byte; waits only when all of it was examined."""
        conn = self._conn
        inp = self._in
        if inp.backlog:                 # the last read was cut at max_read_chunk:
            inp.backlog = False         # let the loop run once first (fairness)
            await asyncio.sleep(0)
        result = inp.try_read(conn._state != OPEN or conn._stopping)
        while result is None:
            if inp.paused:
                conn._maybe_resume()
            fut = inp.arm_waiter()
            try:
                await fut
            finally:
                inp.waiter = None
            result = inp.try_read(conn._state != OPEN or inp.discarding or conn._stopping)
        return result

    async def read_at_least(self, n: int) -> ReadResult:
        """Like ``read``, but completes only once at least ``n`` unconsumed bytes
        are buffered, or the stream ended (``is_completed``), or the read was
        canceled; nothing is consumed (.NET ``ReadAtLeastAsync``).  ``n`` may
        not pass ``max_read_buffer`` (``ValueError``): the connection stops
        receiving there.  Then ``advance_to`` as after ``read``.

        ``readexactly`` on top of it (``readuntil``: the parsers guide)::

            res = await reader.read_at_least(n)              # readexactly(n)
            data = res.buffer[:n].tobytes()
            reader.advance_to(min(n, len(res.buffer)))
        """
        limit = self._in.opts.max_read_buffer
        if not 0 <= n <= limit:
            raise ValueError(f"read_at_least({n}): n must lie in 0..max_read_buffer={limit}")
        while True:
            result = await self.read()
            if len(result.buffer) >= n or result.is_completed or result.is_canceled:
                return result
            self.advance_to(0, len(result.buffer))     # all examined: wait for more

    def try_read(self) -> ReadResult | None:
        """Like ``read`` but never waits: None when it would have to."""
        conn = self._conn
        result = self._in.try_read(conn._state != OPEN or conn._stopping)
        if result is None and self._in.paused:
            conn._maybe_resume()
        return result

    def advance_to(self, consumed: int, examined: int | None = None) -> None:
        """Consume ``consumed`` bytes of the last buffer; ``examined`` were looked at."""
        self._in.advance_to(consumed, examined)

    def cancel_pending_read(self) -> None:
        """Make the pending ``read()`` (or the next one) return with ``is_canceled``."""
        self._in.cancel_pending_read()

    def complete(self) -> None:
        """Done reading: every slot goes back; later reads raise.  Idempotent."""
        self._in.complete()


class PipeOutput:
    """The output side of a connection's duplex pipe (``IBufferWriter`` + flush)."""

    __slots__ = ("_conn", "_out")

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._out = conn._out

    @property
    def segment_size(self) -> int:
        """Bytes of one write segment (the most ``get_memory`` hands out)."""
        return self._out.segment_size

    @property
    def max_write_buffer(self) -> int:
        """Staged + in-flight bytes past which writes raise ``WriteBufferFullError``."""
        return self._out.max_write_buffer

    @property
    def high_water(self) -> int:
        """Pending bytes past which a blocking writer should wait for the send."""
        return self._conn._host.options.stream_high_water

    @property
    def pending(self) -> int:
        """Bytes staged or in flight."""
        return self._out.pending

    def get_memory(self, size_hint: int = 0) -> memoryview:
        return self._conn.get_buffer(size_hint)

    def advance(self, n: int) -> None:
        self._conn.advance(n)

    def write(self, data: BytesLike | BufferSequence) -> None:
        self._conn.write(data)

    async def flush(self) -> None:
        """``Connection.flush``: send, waiting only above the pause mark."""
        await self._conn.flush()

    async def wait_sent(self) -> None:
        """``Connection.wait_sent``: until the kernel took every byte."""
        await self._conn.wait_sent()

    def flush_nowait(self) -> None:
        self._conn.flush_nowait()

    def lend(self, min_size: int = 0) -> WriteSegment:
        """A private segment of at least ``min_size`` bytes for a writer that
        fills it before ``enqueue``: a pool segment, or past ``segment_size``
        one with a mapping of its own (exactly ``min_size`` bytes, freed once
        sent)."""
        self._conn._check_writable()
        return self._out.lend(min_size)

    def enqueue(self, segs: list[WriteSegment]) -> None:
        """Queue lent, filled segments for sending, in order."""
        conn = self._conn
        writable = conn._state == OPEN and not self._out.eof
        self._out.enqueue(segs, writable)
        if not writable or self._out.write_exc is not None:
            conn._check_writable()


class ProtocolConnection(Connection):
    """The ``zerg.Protocol`` fast path: callbacks straight from completion
    dispatch, no Task, no future; writes are sent with the loop iteration."""

    __slots__ = ("_buf", "_data_received", "_dirty", "_give_back", "_proto",
                 "_slots", "_unread", "_want_send", "_writing_paused")

    # Bytes go from the ring to data_received: the input pipe is made only if
    # receiving pauses (or discard_input, the end of the stream), the output
    # pipe with the first write.  An idle connection holds neither (~560 B).
    _lazy_pipes = True

    def __init__(self, host: ConnectionHost, conn_id: int, fd: int,
                 proto: ProtocolCallbacks,
                 data_received: Callable[[Any, BufferSequence], int | None] | None = None,
                 ) -> None:
        super().__init__(host, conn_id, fd)
        self._proto = proto
        # The hot callback: ``proto.data_received``, bound here unless the
        # caller passes the one it bound for all its connections (a server's
        # Protocol is shared: one bound method, not one per connection).
        self._data_received = proto.data_received if data_received is None else data_received
        # The give-back of every lease handed to the Protocol: the host's, one
        # for all its connections (not a bound method of each).
        self._give_back = host.give_back_keys
        self._slots = host.slots
        self._want_send = host.want_send
        self._buf: BufferSequence | None = None    # unconsumed bytes between callbacks
        self._unread = 0
        self._dirty = False
        self._writing_paused = False

    def write(self, data: BytesLike | BufferSequence) -> None:
        if _get_ident() != self._owner:
            self._foreign_thread()
        out = self._out_pipe or self._out
        try:
            if (type(data) is BufferSequence and not self._state and out.write_exc is None
                    and not out.eof):
                view = single_view(data)        # the echo case: one slot, one copy
                if view is None:
                    Connection.write(self, data)
                elif not self._lend(data, view):
                    out.write(view)
            else:
                Connection.write(self, data)
        except WriteBufferFullError as exc:
            if out.over_budget:
                # The reactor's write budget: pause this protocol until the
                # pool has room again (or its own bytes drained, on_send).
                out.over_budget = False
                if not self._writing_paused:
                    self._pause_writing()
                    out.room_waiter(self._loop).add_done_callback(self._room_again)
            raise WriteBufferFullError(
                f"{exc} -- in a Protocol: stop writing after pause_writing() until "
                "resume_writing()") from None
        self._staged()

    def forward(self, seq: BufferSequence) -> None:
        Connection.forward(self, seq)
        self._staged()

    def advance(self, n: int) -> None:
        Connection.advance(self, n)
        self._staged(bool(n))

    def _staged(self, new_bytes: bool = True) -> None:
        """Bytes were staged: send them with this loop iteration, and pause
        the Protocol's writing past the marks (``OutputPipe.pressure``, as the
        C write and forward decide)."""
        if new_bytes and not self._dirty:
            self._dirty = True
            self._want_send(self)
        if (self._out_pipe or self._out).pressure and not self._writing_paused:
            self._pause_writing()

    def _pause_writing(self) -> None:
        self._writing_paused = True
        try:
            self._proto.pause_writing(self)
        except Exception as exc:
            self._failed(exc)

    def _room_again(self, _: asyncio.Future[None]) -> None:
        """The write budget has room again (see ``write``)."""
        self._maybe_resume_writing()

    def on_send(self, res: int) -> None:
        Connection.on_send(self, res)
        if self._writing_paused:
            self._maybe_resume_writing()

    def _maybe_resume_writing(self) -> None:
        """``resume_writing`` once the pending bytes fell to the resume mark."""
        if self._writing_paused and (self._out_pipe or self._out).relieved:
            self._writing_paused = False
            if self._state == OPEN:
                try:
                    self._proto.resume_writing(self)
                except Exception as exc:
                    self._failed(exc)

    def resume_reading(self) -> None:
        """Receive again; bytes kept while paused are delivered soon after,
        then the end of the stream if it came meanwhile."""
        was = self._reading_paused
        Connection.resume_reading(self)
        if was and (self._buf is not None or (self._rare is not None and self._rare.eof_held)):
            self._loop.call_soon(self._redeliver)

    def _redeliver(self) -> None:
        """Hand bytes kept while reading was paused to ``data_received``, then
        a held end of stream to ``eof_received``: in the order they came."""
        if self._reading_paused or self._state != OPEN:
            return
        seq = self._buf
        if seq is not None:
            self._deliver(seq, None, 0)
            if self._reading_paused or self._state != OPEN:
                return
        rare = self._rare
        if rare is not None and rare.eof_held:
            rare.eof_held = False
            self._report_eof()

    def send_pending(self) -> None:
        self._dirty = False
        out = self._out_pipe
        if out is not None and out.pending and out.write_exc is None:
            self._kick_send()

    def on_recv(self, key: int, n: int) -> None:
        """Hand the bytes to the Protocol, straight from dispatch."""
        slots = self._slots
        inp = self._in_pipe         # a Protocol connection rarely needs one
        if self._state != OPEN or (inp is not None and inp.discarding):
            slots.give_back(key)
            return
        self.bytes_in += n
        view = slots.view(key, n)
        held = self._buf
        if self._reading_paused:
            # In flight when reading paused: kept, off the ring, undelivered.
            data = view.tobytes()
            slots.give_back(key)
            segs, keys = unconsumed(held) if held is not None else ([], [])
            segs.append(memoryview(data))
            keys.append(None)
            self._buf = leased(segs, SlotLease(keys, self._give_back))
            return
        if held is None:
            seq, lease = leased_single(view, key, self._give_back)
        else:
            lease = None
            segs, keys = unconsumed(held)
            segs.append(view)
            keys.append(key)
            seq = leased(segs, SlotLease(keys, self._give_back))
        self._deliver(seq, lease, key)

    def _deliver(self, seq: BufferSequence, lease: SlotLease | None, key: int) -> None:
        """Call ``data_received`` with ``seq`` and settle what it consumed
        (``lease``/``key``: a fresh one-slot sequence, for the cheap release)."""
        self._buf = seq
        try:
            consumed = self._data_received(self, seq)
        except Exception as exc:
            self._failed(exc)
            return
        if self._state != OPEN:
            return                      # closed inside the callback: slots went back
        self._settle(seq, lease, key, consumed)

    def _settle(self, seq: BufferSequence, lease: SlotLease | None, key: int,
                consumed: int | None) -> None:
        """What ``data_received`` returned: release what it consumed, keep the
        rest (the C fast path settles the common case itself, and calls this
        for every other)."""
        if consumed is not None and (type(consumed) is not int or not 0 <= consumed <= len(seq)):
            if type(consumed) is int:
                self._failed(ValueError(
                    f"data_received returned {consumed}, outside the 0..{len(seq)} bytes "
                    f"it was given"))
            else:
                self._failed(TypeError(
                    f"data_received must return None or a byte count, got {consumed!r}"))
            return
        host = self._host
        self._last_rx = host.now
        if consumed is None or consumed >= len(seq):
            self._buf = None
            if lease is not None and lease.held_from == 0:
                drop_single(seq)            # the common case: one fresh slot, all used
                self._slots.give_back(key)
            else:
                seq.release()
            self._unread = 0
            inp = self._in_pipe
            if inp is not None and inp.paused:
                self._maybe_resume_protocol()
        else:
            if consumed:
                seq.advance(consumed)
            if host.options.should_compact(held_slots(seq), len(seq)):
                seq = self._compacted(seq)
            self._buf = seq
            self._unread = len(seq)
            if (self._unread > host.options.max_read_buffer
                    and not self.is_receiving_paused):
                self._recv_event(RecvEvent.PAUSE)
                self.relieve()

    @property
    def slots_held(self) -> int:
        """Receive slots the unconsumed bytes between callbacks hold."""
        buf = self._buf
        return 0 if buf is None else held_slots(buf)

    def _compacted(self, seq: BufferSequence) -> BufferSequence:
        data = seq.tobytes()
        keys = retire(seq)
        new = leased([memoryview(data)] if data else [],
                     SlotLease([None] if data else [], self._give_back))
        self._give_back(keys)
        return new

    def _maybe_resume_protocol(self) -> None:
        """Receive again once the unconsumed bytes fell to the resume mark --
        unless the application paused reading (in ``data_received`` too)."""
        if (self._state == OPEN and not self._reading_paused
                and self._unread <= self._host.options.resume_read_at):
            self._recv_event(RecvEvent.RESUME)

    def relieve(self) -> None:
        buf = self._buf
        if self._state == OPEN and buf is not None and held_slots(buf):
            self._buf = self._compacted(buf)

    def request_stop(self) -> None:
        if self._state != OPEN:
            return
        self._stopping = True
        try:
            self._proto.shutdown_requested(self)
        except Exception as exc:
            self._failed(exc)

    def _on_eof(self, error: int) -> None:
        self._in.end(error)
        if self._reading_paused:
            # Like asyncio's transports: no callback while reading is paused --
            # and never the end before bytes still held back (resume_reading).
            self._more().eof_held = True
            return
        self._report_eof()

    def _report_eof(self) -> None:
        try:
            keep = self._proto.eof_received(self)
        except Exception as exc:
            self._failed(exc)
            return
        if not keep:
            self.close()

    def close(self) -> None:
        if self._state == OPEN:
            buf = self._buf
            if buf is not None:
                self._buf = None
                buf.release()
        Connection.close(self)

    def _closed(self) -> None:
        try:
            rare = self._rare
            self._proto.connection_lost(self, (rare is not None and rare.error) or self.error)
        except Exception as exc:
            # The reactor's rate-limited error log, as for the other callbacks:
            # one that raises for every client must not flood the log.
            self._host.sink_failed(self, exc)


if speedups is not None:
    # The common case of ProtocolConnection's on_recv (with _deliver), write,
    # send_pending and on_send, and of Connection's write, _kick_send, on_send,
    # on_recv (with InputPipe.push), try_get_ring and return_ring, and of
    # InputPipe's try_read, advance_to and arm_waiter (PipeReader), in C
    # (native/connfast.c), working on these classes' __slots__; the methods
    # stay the reference and every rare path's code.
    speedups.bind_connection(Connection, ProtocolConnection, OutputPipe, WriteSegment,
                             SlabPool, Traffic, InputPipe, RingSubmitter, Ring, RingItem,
                             ReadResult, EMPTY_SEQ)
    # forward(): a slot of this reactor, pinned, staged as a LoanSegment.
    speedups.bind_forward(LoanSegment)
    # Level 1's read and PipeReader's: coroutines written in C.
    speedups.bind_reads(PipeInput, RingSnapshot)
