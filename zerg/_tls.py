"""TLS as a layer over a connection: the stdlib's ``ssl.SSLObject`` between two
``ssl.MemoryBIO``\\ s, no new dependency.

Goals: everything above the connection -- ``PipeReader``, ``ConnectionStream``,
``BufferWriter``, ``zerg.Protocol``, level 2 -- works unchanged over TLS; the
handler (or ``connection_made``) runs only once the handshake finished; a bad
handshake (garbage, plain HTTP, a wrong client certificate, silence) closes
that one connection and is counted (``ReactorStats.tls_failed``); memory stays
bounded by the same ``max_read_buffer``/``max_write_buffer`` as over TCP.

Plan, read side: the reactor delivers ciphertext receive slots to ``on_recv``;
each is copied into the incoming BIO and its slot goes back to the kernel at
once (a TLS connection never holds a slot of the shared ring).  Decrypted
bytes are handed to the plain connection's own ``on_recv`` under keys of
``PlainSlots``: the connection was built over a host (``_TlsHost``) whose
receive slots are these decrypted buffers, so the input pipe, its pause at
``max_read_buffer``, the Protocol fast path and every adapter run their
ordinary code over plaintext, through the seam's interfaces only
(``ConnectionHost``, ``ReceiveSlots``, ``ProtocolCallbacks``).

Plan, write side: ``write``, ``get_buffer``/``advance`` and the output face's
``lend``/``enqueue`` (``BufferWriter``) take plaintext; it is encrypted at once
and the ciphertext is staged with the plain connection's write, so flushing,
back-pressure and the close state machine are the ordinary ones.

Sharing: ``TlsConnection`` (async and thread handlers, ``zerg.connect``) and
``TlsProtocolConnection`` (the Protocol fast path) get their overrides from
one cooperative layer, ``_TlsLayer``, which adds no slots (so it combines
with either base without a layout conflict) and keeps all its state in one
helper object, ``_TlsState``, around a sans-IO ``TlsSession``
(``zerg._tlssession``, with the server context's SNI recording).

Warnings:
- Level 1 (``try_get_ring``/``return_ring``: items over the kernel's receive
  slots) raises ``TypeError``: the kernel received ciphertext.
- ``max_write_buffer`` counts ciphertext; a write is checked against it in
  plaintext bytes, so the record overhead (a few dozen bytes per 16 KiB) may
  pass it slightly.  Once encrypted, bytes are never refused: should the
  plain write refuse them (the reactor's ``max_write_memory``), they wait in
  a small spill list and follow as soon as there is room.
- The end of the stream: the peer's ``close_notify`` ends the input (the
  receive is shut down, ``SHUT_RD``); a TCP FIN without it (a "ragged EOF",
  which HTTP/1.1 clients commonly do) ends it as well.  ``close()`` sends our
  ``close_notify`` without waiting for the peer's; ``abort()`` sends nothing.
- ``EngineOptions.ssl``'s ``sni_callback`` is wrapped (chained to the one set
  before serving) to record the name the client asked for.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import socket
import ssl
import threading
from collections.abc import Callable, Coroutine, Generator
from typing import TYPE_CHECKING, Any, Final, NoReturn, cast

from zerg._buffers import BufferSequence, BytesLike
from zerg._connection import Connection, PipeOutput, ProtocolConnection
from zerg._errors import WriteBufferFullError
from zerg._native import speedups
from zerg._seam import give_back_keys
from zerg._tlsinfo import TlsInfo
from zerg._tlssession import READ_SIZE as _READ_SIZE
from zerg._tlssession import TlsSession

if TYPE_CHECKING:
    from zerg._config import PipeOptions
    from zerg._protocol import Protocol
    from zerg._seam import CompletionSink, ConnectionHost, ReceiveSlots, Submitter, Traffic
    from zerg._slab import SlabPool, WriteSegment

__all__ = ["LEVEL1_ERROR", "PlainSlots", "TlsConnection", "TlsProtocolConnection"]

log = logging.getLogger("zerg")

_ENCRYPT_CHUNK: Final = 256 * 1024  # plaintext encrypted at a time (bounds temporaries)
_SPILL_RETRY_S: Final = 0.005
_get_ident: Final = threading.get_ident
_EMPTY_VIEW: Final = memoryview(b"")
# Connection.pending_write_bytes's getter: the plain connection's staged + in-flight bytes.
_base_pending: Final = cast(Callable[[Connection], int],
                            Connection.__dict__["pending_write_bytes"].__get__)

OPEN: Final = 0
CLOSING: Final = 1
CLOSED: Final = 2

LEVEL1_ERROR: Final = (
    "level 1 (try_get_ring/return_ring: RingItems over the kernel's receive slots) is not "
    "available on a TLS connection: the kernel received ciphertext, and the handler gets "
    "decrypted copies. Use level 2 (snap = await conn.read(); seq = conn.get_sequence(snap)), "
    "zerg.adapters.PipeReader, ConnectionStream, BufferWriter, or a zerg.Protocol")


# --------------------------------------------------- the plain connection's host
class PlainSlots:
    """Decrypted bytes as ``ReceiveSlots``: the receive slots the plain
    connection under a TLS layer reads.  Each ``put`` is one "slot" (private
    memory, never the kernel's); ``park`` passes through to the real ring."""

    __slots__ = ("_bufs", "_next", "_ring", "out", "total")

    def __init__(self, ring: ReceiveSlots) -> None:
        self._ring = ring
        self._bufs: dict[int, bytes] = {}
        self._next = 0
        # Plain attributes (read on hot paths): none of the ring's slots is held
        # here, so nothing is ever worth moving off it.
        self.out = 0
        self.total = ring.total

    def put(self, data: bytes) -> int:
        """Keep ``data``; returns its key."""
        key = self._next
        self._next = key + 1
        self._bufs[key] = data
        return key

    def view(self, key: int, n: int) -> memoryview:
        data = self._bufs[key]
        return memoryview(data) if n == len(data) else memoryview(data)[:n]

    @property
    def slot_size(self) -> int:
        """The ring's (a decrypted "slot" is as long as its record)."""
        return self._ring.slot_size

    @property
    def recv_view(self) -> memoryview:
        """Empty: no decrypted byte lives in the ring's memory (so ``forward``
        of them copies)."""
        return _EMPTY_VIEW

    def slot_of(self, key: int) -> int:
        return key                      # a key of its own (level 1, which shows it, is refused)

    @property
    def keys_are_slots(self) -> bool:
        """True: so the plain connection's own receive path (C or not) takes them."""
        return True

    def give_back(self, key: int) -> None:
        self._bufs.pop(key, None)

    def pin(self, key: int) -> None:
        """Nothing to hold: the bytes are immutable, and a view keeps them alive."""

    def unpin(self, key: int) -> None:
        """See ``pin``."""

    def park(self, sink: CompletionSink) -> None:
        self._ring.park(sink)

    @property
    def held(self) -> int:
        """Buffers not given back yet."""
        return len(self._bufs)


class _TlsHost:
    """The reactor, as the plain connection under a TLS layer sees it: all of
    it passes through, except ``slots``, which are the decrypted bytes."""

    __slots__ = ("_host", "slots")

    def __init__(self, host: ConnectionHost, slots: PlainSlots) -> None:
        self._host = host
        self.slots = slots

    @property
    def give_back_keys(self) -> Callable[[list[int | None]], None]:
        # Read once, by the connection it serves: its own slots.
        return functools.partial(give_back_keys, self.slots)

    @property
    def submitter(self) -> Submitter:
        return self._host.submitter

    @property
    def pool(self) -> SlabPool:
        return self._host.pool

    @property
    def options(self) -> PipeOptions:
        return self._host.options

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._host.loop

    @property
    def now(self) -> float:
        return self._host.now

    @property
    def thread_id(self) -> int:
        return self._host.thread_id

    @property
    def traffic(self) -> Traffic:
        return self._host.traffic

    def opened(self, sink: CompletionSink) -> None:
        self._host.opened(sink)

    def want_send(self, sink: CompletionSink) -> None:
        self._host.want_send(sink)

    def closed(self, sink: CompletionSink) -> None:
        self._host.closed(sink)

    def handshake_failed(self, sink: CompletionSink) -> None:
        self._host.handshake_failed(sink)

    def sink_failed(self, sink: CompletionSink, exc: BaseException) -> None:
        self._host.sink_failed(sink, exc)

    def proxied_peer(self, conn_id: int) -> tuple[str, int] | tuple[str, int, int, int] | None:
        return self._host.proxied_peer(conn_id)


# ------------------------------------------------------------ the TLS layer
class _TlsState:
    """Everything a TLS connection adds to a plain one (one slot of it)."""

    __slots__ = ("cap", "close_pending", "early", "early_bytes", "fast", "feed", "granted",
                 "handshake", "host", "incoming", "info", "out_pending", "out_read", "output",
                 "owner", "pause_at", "plain", "plain_on_recv", "plain_write", "refused",
                 "ring", "scratch", "scratch_pos", "session", "spill", "spill_bytes",
                 "spill_timer", "ssl_pending", "ssl_read", "ssl_write", "state", "timeout",
                 "timer")

    def __init__(self, host: ConnectionHost, plain: PlainSlots, session: TlsSession,
                 handshake_timeout: float | None) -> None:
        self.host = host                # the real reactor
        self.ring = host.slots          # the real receive slots (ciphertext)
        self.plain = plain
        self.session = session
        self.owner = host.thread_id
        self.handshake: asyncio.Future[None] = host.loop.create_future()
        self.timeout = handshake_timeout
        self.timer: asyncio.TimerHandle | None = None
        self.state = OPEN
        self.info: TlsInfo | None = None
        self.spill: list[memoryview] = []   # encrypted, refused by the plain write: next
        self.spill_bytes = 0
        self.spill_timer: asyncio.TimerHandle | None = None
        self.close_pending = False      # close() waits for the spill to go out
        self.early: list[bytes] = []    # written before the handshake finished
        self.early_bytes = 0
        self.scratch: bytearray | None = None   # get_buffer's plaintext memory
        self.scratch_pos = 0
        self.granted = 0
        self.output: _TlsPipeOutput | None = None
        opts = host.options
        self.cap = opts.max_write_buffer
        self.pause_at = opts.write_pause_at     # set_write_buffer_limits keeps it current
        self.refused = False            # a write was refused: the next flush takes its time
        # The hot paths, bound once: established, open, nothing spilled or early.
        self.fast = False
        sslobj = session.sslobj
        self.incoming = session.incoming
        self.feed = session.incoming.write
        # ssl.SSLObject's read, write and pending are one-line Python wrappers
        # of the C object it keeps (3.11-3.13): called directly, a request
        # costs three Python frames less.  Same arguments, results, errors.
        raw = getattr(sslobj, "_sslobj", sslobj)
        self.ssl_read: Callable[[int], bytes] = raw.read
        self.ssl_write: Callable[[bytes], int] = raw.write
        self.ssl_pending: Callable[[], int] = raw.pending
        self.out_read = session.outgoing.read
        self.out_pending = session.outgoing
        # The plain connection's receive and write (bound by the connection).
        self.plain_on_recv: Callable[[int, int], None] = _unbound
        self.plain_write: Callable[[bytes], None] = _unbound

    def update_fast(self) -> None:
        session = self.session
        self.fast = (self.state == OPEN and session.established and not session.peer_closed
                     and not session.close_sent and not self.spill and not self.early)


def _unbound(*args: Any) -> None:
    raise RuntimeError("zerg bug: a TLS connection used before its setup finished")


class _Done(Coroutine[Any, None, None]):
    """A finished awaitable asyncio takes for a coroutine: what ``flush()``
    returns when it need not wait (as the C flush returns), so a fast peer
    costs no coroutine per message."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        return iter(())         # type: ignore[return-value]

    def send(self, value: None) -> Any:
        raise StopIteration

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        raise typ if val is None else val

    def close(self) -> None:
        """Nothing to close."""


# With the extension, the C flush's own finished coroutine: awaiting it costs
# no Python frame (``_Done.__await__`` is one per flush).
_DONE: Final[Coroutine[Any, None, None]] = (
    _Done() if speedups is None else speedups.finished_coroutine)


def _views(data: BytesLike | BufferSequence) -> list[memoryview]:
    """``data`` as flat byte views (a sequence's segments, not copied)."""
    if isinstance(data, BufferSequence):
        return [seg for seg in data if len(seg)]
    view = memoryview(data)
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    return [view] if len(view) else []


def _fail(handshake: asyncio.Future[None], exc: BaseException) -> None:
    """Fail the handshake's future and mark its exception retrieved.

    The end is already reported where it belongs: the connection closes
    (``close_reason``), a failed handshake is counted in
    ``ReactorStats.tls_failed`` and logged at debug level, and whoever awaits
    the future (a handler's start, ``zerg.connect``) still gets the
    exception.  Without the mark, a server
    nobody awaits a handshake for -- a ``zerg.Protocol`` -- would have asyncio
    log "Future exception was never retrieved", with a traceback, at error
    level for every client that sends garbage or resets mid-handshake."""
    handshake.set_exception(exc)
    handshake.exception()


class _TlsLayer(Connection):
    """The overrides both TLS connection classes share (cooperative: ``super()``
    is ``Connection`` or ``ProtocolConnection``).  No slots of its own: the
    concrete classes hold ``_tls``."""

    __slots__ = ()
    _tls: _TlsState

    @staticmethod
    def _new_state(host: ConnectionHost, plain: PlainSlots, context: ssl.SSLContext,
                   server_side: bool, server_hostname: str | None,
                   handshake_timeout: float | None) -> _TlsState:
        if handshake_timeout is not None and not handshake_timeout > 0:
            raise ValueError(f"handshake_timeout must be None or > 0, got {handshake_timeout!r}")
        session = TlsSession(context, server_side=server_side, server_hostname=server_hostname)
        return _TlsState(host, plain, session, handshake_timeout)

    def __repr__(self) -> str:
        return super().__repr__().replace("<zerg.Connection", "<zerg.TlsConnection", 1)

    # ----------------------------------------------------------- lifecycle
    @property
    def handshake(self) -> asyncio.Future[None]:
        """Done once the handshake finished; or holds why it did not
        (``ssl.SSLError``, ``TimeoutError``, ``ConnectionError``) -- then the
        connection is already closing."""
        return self._tls.handshake

    def start(self) -> None:
        """Register, arm the receive (as a plain connection), and begin the
        handshake: its timer starts, and a client sends its ClientHello now."""
        super().start()
        st = self._tls
        if st.timeout is not None and st.state == OPEN:
            st.timer = st.host.loop.call_later(st.timeout, self._handshake_timed_out)
        if not st.session.server_side:
            self._pump()

    @property
    def tls(self) -> TlsInfo | None:
        """What the handshake agreed (None until it finished)."""
        return self._tls.info

    def request_stop(self) -> None:
        if not self._tls.session.established:
            self.close()                # no request can be in progress yet
            return
        super().request_stop()

    # ---------------------------------------------------------- receiving
    def on_recv(self, key: int, n: int) -> None:
        """Ciphertext arrived: into the BIO, the slot straight back."""
        st = self._tls
        ring = st.ring
        if st.state != OPEN or st.session.peer_closed:
            ring.give_back(key)
            return
        try:
            st.feed(ring.view(key, n))
        finally:
            ring.give_back(key)
        if st.fast:
            # The common case: one whole record of application data.
            try:
                data = st.ssl_read(_READ_SIZE)
            except ssl.SSLWantReadError:
                return                  # the rest of a record is still on its way
            except ssl.SSLError as exc:
                self._tls_error(exc)
                return
            self._decrypted(data)
            return
        self._pump()

    def _decrypted(self, data: bytes) -> None:
        """``on_recv``'s fast case read ``data`` (the C ``on_recv`` calls
        this for anything but one whole record with nothing left behind)."""
        st = self._tls
        if data and not st.incoming.pending and not st.ssl_pending():
            if st.out_pending.pending:
                self._send_output()
            st.plain_on_recv(st.plain.put(data), len(data))
            return
        if data:                    # more records: the general path takes the rest
            st.plain_on_recv(st.plain.put(data), len(data))
            if st.state != OPEN:
                return
        elif not st.session.peer_closed:
            st.session.peer_closed = True       # b"": the peer's close_notify
            st.update_fast()
            if st.out_pending.pending:
                self._send_output()
            self._end_input()
            return
        self._pump()

    def _tls_error(self, exc: ssl.SSLError) -> None:
        """A bad record after the handshake: abort (no alert, no close_notify)."""
        log.debug("zerg: TLS error on %r: %s; aborting it", self, exc)
        if self.close_reason is None:
            self.close_reason = "tls_error"
        self.abort()

    def on_recv_end(self, res: int) -> None:
        st = self._tls
        if (not st.session.established and st.state == OPEN
                and (res == 0 or (res < 0 and res != -errno.ENOBUFS))):
            why = "closed the connection" if res == 0 else f"reset it ({errno.errorcode.get(-res)})"
            self._handshake_failed(ConnectionResetError(
                errno.ECONNRESET, f"the peer {why} during the TLS handshake"))
        super().on_recv_end(res)

    def _pump(self) -> None:
        """Run the session on what was fed: the handshake, then records."""
        st = self._tls
        session = st.session
        if not session.established:
            try:
                done = session.handshake()
            except ssl.SSLError as exc:
                self._handshake_failed(exc)
                return
            if not done:
                self._send_output()
                return
            self._handshake_done()
            if st.state != OPEN:
                return
        try:
            data = session.read()
        except ssl.SSLError as exc:
            self._tls_error(exc)
            return
        if session.outgoing.pending:
            self._send_output()         # tickets, key updates
        if data:
            st.plain_on_recv(st.plain.put(data), len(data))
        if session.peer_closed and st.state == OPEN:
            st.update_fast()
            self._end_input()

    def _end_input(self) -> None:
        """The peer's close_notify: end the input the way a FIN does, by
        shutting the receive down (the kernel then ends it with 0)."""
        try:
            sock = socket.socket(fileno=self.fd)
        except OSError:
            return
        try:
            sock.shutdown(socket.SHUT_RD)
        except OSError:
            pass                        # already shut down or reset: the end comes anyway
        finally:
            sock.detach()

    def relieve(self) -> None:
        """Nothing to do: decrypted bytes are private memory, never ring slots."""

    @property
    def slots_held(self) -> int:
        """Always 0: ciphertext slots go back as they arrive."""
        return 0

    # ----------------------------------------------------------- handshake
    def _handshake_done(self) -> None:
        st = self._tls
        if st.timer is not None:
            st.timer.cancel()
            st.timer = None
        st.info = st.session.info()
        self._send_output()
        if not st.handshake.done():
            st.handshake.set_result(None)
        if st.early:
            early, st.early, st.early_bytes = st.early, [], 0
            for data in early:
                self._stage(st.session.encrypt(data))
            self.flush_nowait()
        st.update_fast()
        self._established()

    def _established(self) -> None:
        """Hook: the handshake finished (the Protocol variant calls
        ``connection_made`` here, before any byte is delivered)."""

    def _handshake_failed(self, exc: BaseException) -> None:
        """Count it, send the alert (if any), fail the future, close."""
        st = self._tls
        if st.state != OPEN or st.handshake.done():
            return
        log.debug("zerg: TLS handshake failed on %r: %s", self, exc)
        if self.close_reason is None:
            self.close_reason = "tls_handshake"
        st.host.handshake_failed(self)
        self._send_output()
        _fail(st.handshake, exc)
        self.close()

    def _handshake_timed_out(self) -> None:
        self._tls.timer = None
        self._handshake_failed(TimeoutError(
            f"the TLS handshake did not finish within {self._tls.timeout}s"))

    def _end_handshake(self, exc: BaseException) -> None:
        """The connection ends before the handshake finished (not counted)."""
        st = self._tls
        if st.timer is not None:
            st.timer.cancel()
            st.timer = None
        if not st.handshake.done():
            _fail(st.handshake, exc)

    # ------------------------------------------------------------- writing
    def _check_open(self) -> None:
        st = self._tls
        if threading.get_ident() != st.owner:
            raise RuntimeError(
                f"connection {self.id} belongs to its reactor's thread and was used from "
                f"{threading.current_thread().name!r}; from other threads use "
                "conn.call_soon_threadsafe(fn, *args) (or ConnectionStream / "
                "BufferWriter.flush_sync in a plain def handler)")
        if st.state != OPEN:
            raise ConnectionError(f"connection {self.id} is closed")
        if st.session.close_sent:
            raise BrokenPipeError(f"connection {self.id}: write after write_eof() (its "
                                  "close_notify was sent)")

    def write(self, data: BytesLike | BufferSequence) -> None:
        """Encrypt ``data`` and stage the records (see ``Connection.write``).
        Before the handshake finished, the plaintext waits and goes first
        after it."""
        st = self._tls
        if (st.fast and type(data) is bytes and _get_ident() == st.owner
                and len(data) <= _ENCRYPT_CHUNK and _base_pending(self) + len(data) <= st.cap):
            # The common case: a reply, once encrypted, staged with the plain write.
            if data:
                st.ssl_write(data)
                cipher = st.out_read()
                try:
                    st.plain_write(cipher)
                except WriteBufferFullError:
                    self._spill(cipher)
            return
        self._check_open()
        self._write_views(_views(data))

    def _write_views(self, views: list[memoryview]) -> None:
        n = 0
        for v in views:
            n += len(v)
        if not n:
            return
        limit = self._tls.cap
        pending = self.pending_write_bytes
        if pending + n > limit:
            self._tls.refused = True
            raise WriteBufferFullError(
                f"writing {n} bytes would stage {pending + n} bytes, over "
                f"max_write_buffer={limit}; await conn.flush() first")
        st = self._tls
        session = st.session
        if not session.established:
            for v in views:
                st.early.append(v.tobytes())
            st.early_bytes += n
            return
        for v in views:
            for pos in range(0, len(v), _ENCRYPT_CHUNK):
                self._stage(session.encrypt(v[pos:pos + _ENCRYPT_CHUNK]))

    def _stage(self, cipher: bytes) -> None:
        """Stage records with the plain connection's write.  Once encrypted they
        must go out, so what the plain write refuses (``max_write_buffer``:
        the record overhead; ``max_write_memory``) is not an error: as much as
        fits is staged, the rest spills and follows as soon as there is room."""
        if not cipher:
            return
        st = self._tls
        if not st.spill:
            try:
                st.plain_write(cipher)
                return
            except WriteBufferFullError:
                pass
        self._spill(cipher)

    def _spill(self, cipher: bytes) -> None:
        st = self._tls
        st.spill.append(memoryview(cipher))
        st.spill_bytes += len(cipher)
        st.fast = False
        self._drain_spill()

    def _take_some(self, data: memoryview) -> int:
        """Stage as much of ``data`` as the plain write takes now; how much."""
        st = self._tls
        n = min(len(data), st.cap - _base_pending(self))
        if n <= 0:
            return 0
        try:
            st.plain_write(bytes(data if n == len(data) else data[:n]))
        except WriteBufferFullError:
            return 0                    # the reactor's write memory: later
        return n

    def _drain_spill(self) -> None:
        """Stage spilled records while the plain write takes them; retry soon
        (and on ``flush``/``wait_sent``) while it does not."""
        st = self._tls
        if st.spill_timer is not None:
            st.spill_timer.cancel()
            st.spill_timer = None
        spill = st.spill
        try:
            while spill and st.state != CLOSED:
                head = spill[0]
                n = self._take_some(head)
                st.spill_bytes -= n
                if n < len(head):
                    spill[0] = head[n:]
                    self.flush_nowait()
                    st.spill_timer = st.host.loop.call_later(_SPILL_RETRY_S, self._drain_spill)
                    return
                spill.pop(0)
        except OSError:
            pass                        # the connection died: nothing more goes out
        spill.clear()
        st.spill_bytes = 0
        st.update_fast()
        self.flush_nowait()
        if st.close_pending and st.state == CLOSING:
            st.close_pending = False
            super().close()

    def _send_output(self) -> None:
        """Send what the session wants sent (handshake, tickets, alerts)."""
        st = self._tls
        data = st.session.output()
        if not data or st.state == CLOSED:
            return
        try:
            self._stage(data)
            self.flush_nowait()
        except OSError:
            pass                        # the connection died: its end is on its way

    @property
    def pending_write_bytes(self) -> int:
        """Bytes staged or in flight (ciphertext), plus any waiting for the
        handshake or for room."""
        st = self._tls
        return _base_pending(self) + st.spill_bytes + st.early_bytes

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        super().set_write_buffer_limits(high, low)
        self._tls.pause_at = self.get_write_buffer_limits()[1]

    def get_buffer(self, size_hint: int = 0) -> memoryview:
        """Plaintext memory for at least ``max(size_hint, 1)`` bytes (at most one
        write segment); fill it, then ``advance(n)`` encrypts those bytes."""
        self._check_open()
        st = self._tls
        out = self.output
        size = out.segment_size
        if size_hint > size:
            raise ValueError(
                f"size_hint {size_hint} exceeds write_buffer_size={size}; use write() "
                f"or BufferWriter for larger pieces")
        want = size_hint if size_hint > 0 else 1
        pending = self.pending_write_bytes
        if pending + want > out.max_write_buffer:
            raise WriteBufferFullError(
                f"{pending} bytes already staged (max_write_buffer="
                f"{out.max_write_buffer}); await conn.flush() first")
        if st.scratch is None:
            st.scratch = bytearray(size)
        st.scratch_pos = 0
        st.granted = size
        return memoryview(st.scratch)

    def advance(self, n: int) -> None:
        """Encrypt and stage ``n`` bytes written into the last ``get_buffer``."""
        st = self._tls
        if not 0 <= n <= st.granted:
            raise ValueError(
                f"advance({n}) outside the {st.granted} bytes of the last get_buffer()")
        if not n:
            return
        self._check_open()
        assert st.scratch is not None
        pos = st.scratch_pos
        self._write_views([memoryview(st.scratch)[pos:pos + n]])
        st.scratch_pos = pos + n
        st.granted -= n

    @property
    def output(self) -> PipeOutput:
        """The output face; its ``lend``/``enqueue`` (``BufferWriter``) encrypt."""
        st = self._tls
        if st.output is None:
            st.output = _TlsPipeOutput(self)
        return st.output

    def flush(self) -> Coroutine[Any, Any, None]:
        """``Connection.flush``; records spilled for lack of room go first.

        When it need not wait (at most the pause mark pending, no write was
        refused since the last flush) the send starts and a finished awaitable
        comes back, as from the C flush of a plain connection; a failed send
        is then reported by the next write rather than by this flush."""
        st = self._tls
        if st.fast and not st.refused and _get_ident() == st.owner:
            pending = _base_pending(self)
            if pending <= st.pause_at:
                if pending:
                    self.flush_nowait()
                return _DONE
        return self._flush()

    async def _flush(self) -> None:
        await self._unspill()
        self._tls.refused = False
        await super().flush()

    async def wait_sent(self) -> None:
        """``Connection.wait_sent``, spilled records included."""
        await self._unspill()
        await super().wait_sent()

    async def _unspill(self) -> None:
        st = self._tls
        while st.spill and st.state != CLOSED:
            self._drain_spill()
            if st.spill:
                if super().pending_write_bytes:
                    await super().wait_sent()
                else:                   # refused for the reactor's write memory
                    await asyncio.sleep(_SPILL_RETRY_S)

    def forward(self, seq: BufferSequence) -> None:
        """Over TLS the bytes must be encrypted: ``write`` (one copy), never
        the received slots themselves."""
        if not isinstance(seq, BufferSequence):
            raise TypeError(f"forward() takes a BufferSequence, not {type(seq).__name__}; "
                            "use write() for other buffers")
        self.write(seq)

    # ------------------------------------------------------------ level 1
    def try_get_ring(self, snapshot: Any) -> NoReturn:
        """Level 1 does not exist over TLS (``TypeError`` naming what does)."""
        raise TypeError(LEVEL1_ERROR)

    def return_ring(self, item: Any) -> NoReturn:
        """Level 1 does not exist over TLS (``TypeError`` naming what does)."""
        raise TypeError(LEVEL1_ERROR)

    # ------------------------------------------------------------- closing
    def write_eof(self) -> None:
        """Half-close over TLS: our close_notify, then (once the staged bytes
        are sent) the TCP half-close; reading goes on until the peer's end.
        Later writes raise ``BrokenPipeError``.  Before the handshake
        finished there is no session to end: only the TCP half-close."""
        st = self._tls
        if st.state != OPEN:
            return
        if _get_ident() != st.owner:
            self._check_open()          # raises the thread error
        session = st.session
        if session.established and not session.close_sent:
            st.fast = False
            try:
                self._stage(session.close_notify())
            except OSError:
                pass                    # a failed send: the base reports it
            if st.spill:
                self._drain_spill()
        super().write_eof()

    def close(self) -> None:
        """Close gracefully: our close_notify, staged bytes, then the FIN.
        Before the handshake finished: no close_notify, ``handshake`` fails
        with ``ConnectionError``."""
        st = self._tls
        if st.state == OPEN:
            if threading.get_ident() != st.owner:
                self._check_open()      # raises the thread error
            st.state = CLOSING
            st.fast = False
            if st.session.established:
                try:
                    self._stage(st.session.close_notify())
                except OSError:
                    pass                # a failed send: nothing more goes out
                if st.spill:
                    # Records wait for room: close once they are staged (or the
                    # close deadline aborts).
                    st.close_pending = True
                    timeout = st.host.options.close_timeout_s
                    if timeout is not None:
                        st.host.loop.call_later(timeout, self._close_overdue)
                    return
            else:
                self._end_handshake(ConnectionError(
                    f"connection {self.id} closed before the TLS handshake finished"))
        elif st.close_pending:
            return
        super().close()

    def _close_overdue(self) -> None:
        if self._tls.close_pending:
            self.close_reason = self.close_reason or "limit"
            self.abort()

    def abort(self) -> None:
        """Close now with a reset (no close_notify)."""
        st = self._tls
        if st.state != CLOSED:
            st.state = CLOSED
            st.fast = False
            st.close_pending = False
            st.spill.clear()
            st.spill_bytes = 0
            st.early.clear()
            st.early_bytes = 0
            if st.spill_timer is not None:
                st.spill_timer.cancel()
                st.spill_timer = None
            self._end_handshake(ConnectionAbortedError(
                errno.ECONNABORTED, f"connection {self.id} was aborted"))
        super().abort()

    def _closed(self) -> None:
        """Fully closed: the state lets go of the plain connection's bound
        methods (a cycle through the connection), so reference counting
        frees it as it does a plain one."""
        st = self._tls
        st.plain_on_recv = st.plain_write = _unbound
        super()._closed()


class _TlsPipeOutput(PipeOutput):
    """The output face of a TLS connection: what a ``BufferWriter`` fills in
    lent segments is plaintext, encrypted at ``enqueue``; the segments go
    straight back to the pool."""

    __slots__ = ("_tls_conn",)

    def __init__(self, conn: _TlsLayer) -> None:
        super().__init__(conn)
        self._tls_conn = conn

    @property
    def pending(self) -> int:
        return self._tls_conn.pending_write_bytes

    def enqueue(self, segs: list[WriteSegment]) -> None:
        conn = self._tls_conn
        views = [seg.view[:seg.fill] for seg in segs if seg.fill]
        try:
            conn._check_open()
            conn._write_views(views)
        finally:
            for v in views:
                v.release()
            for seg in segs:
                seg.fill = 0
            super().enqueue(segs)       # nothing in them now: back to the pool


class TlsConnection(_TlsLayer):
    """A TLS connection for handlers (``async def``/``def``) and ``zerg.connect``.

    ``start()`` begins the handshake; ``handshake`` is done once it finished.
    """

    __slots__ = ("_tls",)

    def __init__(self, host: ConnectionHost, conn_id: int, fd: int, context: ssl.SSLContext,
                 *, server_side: bool, server_hostname: str | None = None,
                 handshake_timeout: float | None) -> None:
        plain = PlainSlots(host.slots)
        Connection.__init__(self, _TlsHost(host, plain), conn_id, fd)
        self._tls = st = self._new_state(host, plain, context, server_side, server_hostname,
                                         handshake_timeout)
        st.plain_on_recv = super(_TlsLayer, self).on_recv
        st.plain_write = super(_TlsLayer, self).write


class _ProtocolGate:
    """The application's ``zerg.Protocol`` as ``ProtocolConnection`` calls it:
    nothing reaches it before ``connection_made`` (the handshake finished);
    ``data_received`` is its own bound method (no extra frame)."""

    __slots__ = ("data_received", "made", "proto")

    def __init__(self, proto: Protocol) -> None:
        self.proto = proto
        self.data_received: Callable[[Any, Any], int | None] = proto.data_received
        self.made = False

    def eof_received(self, conn: Any, /) -> bool:
        return self.proto.eof_received(conn) if self.made else False

    def pause_writing(self, conn: Any, /) -> None:
        if self.made:
            self.proto.pause_writing(conn)

    def resume_writing(self, conn: Any, /) -> None:
        if self.made:
            self.proto.resume_writing(conn)

    def shutdown_requested(self, conn: Any, /) -> None:
        if self.made:
            self.proto.shutdown_requested(conn)
        else:
            conn.close()

    def connection_lost(self, conn: Any, exc: BaseException | None, /) -> None:
        if self.made:
            self.proto.connection_lost(conn, exc)


class TlsProtocolConnection(_TlsLayer, ProtocolConnection):
    """The ``zerg.Protocol`` fast path over TLS: ``connection_made`` once the
    handshake finished, then callbacks with decrypted bytes."""

    __slots__ = ("_gate", "_tls")

    def __init__(self, host: ConnectionHost, conn_id: int, fd: int, proto: Protocol,
                 context: ssl.SSLContext, *, server_side: bool,
                 server_hostname: str | None = None,
                 handshake_timeout: float | None) -> None:
        plain = PlainSlots(host.slots)
        gate = _ProtocolGate(proto)
        ProtocolConnection.__init__(self, _TlsHost(host, plain), conn_id, fd, gate)
        self._gate = gate
        self._tls = st = self._new_state(host, plain, context, server_side, server_hostname,
                                         handshake_timeout)
        st.plain_on_recv = super(_TlsLayer, self).on_recv
        st.plain_write = super(_TlsLayer, self).write

    def _established(self) -> None:
        gate = self._gate
        gate.made = True
        try:
            gate.proto.connection_made(self)
        except Exception as exc:
            self.fail_callback(exc)


if speedups is not None:
    # The common case of _TlsLayer's on_recv, write and flush in C
    # (native/tlsfast.c); the methods above stay the reference and every
    # rare path's code.
    speedups.bind_tls(_TlsLayer, TlsConnection, TlsProtocolConnection, _TlsState, TlsSession,
                      PlainSlots, ssl.SSLWantReadError, ssl.SSLError, WriteBufferFullError,
                      _READ_SIZE, _ENCRYPT_CHUNK)
