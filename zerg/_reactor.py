"""Reactor: one io_uring, one buffer ring, one slab pool — and one asyncio loop.

A reactor *is* an asyncio event loop: a ``SelectorEventLoop`` whose selector
(``UringSelector``) does one ``io_uring_enter`` per loop iteration.  That one
call submits everything prepared since the last iteration (sends, re-armed
recvs, polls) and waits; the completions are then harvested in batches of
``batch_cqes`` through the shim's flat arrays and dispatched here, straight
to connections, before asyncio runs the callbacks they made ready.  Handlers
are ordinary coroutines, and every asyncio library works beside them on the
same thread, with no epoll anywhere.

What the reactor owns: the ring, the slab pool, ``RecvSlots`` (every receive
slot and its return), the connection map and the dispatch table.  What it
knows of a connection is ``CompletionSink`` (``zerg._seam``); what a
connection knows of it is ``ConnectionHost``.  How a connection is served
(task, worker thread, Protocol) is the ``StartStrategy`` the engine chose.

Threading: everything here runs on the reactor's thread.  Other threads talk
to it only through ``loop.call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import inspect
import logging
import os
import socket
import threading
import time
from asyncio import base_events as _base_events
from asyncio import format_helpers
from asyncio.log import logger as _asyncio_logger
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from zerg import _acceptwatch as acceptwatch
from zerg._acceptwatch import AcceptWatch
from zerg._config import PipeOptions, ReactorConfig
from zerg._native import speedups
from zerg._proxyproto import MAX_HEADER as MAX_PROXY_HEADER
from zerg._proxyproto import Address, ProxyHeaderError
from zerg._proxyproto import parse as parse_proxy_header
from zerg._ratelog import ErrorLog
from zerg._recvslots import RecvSlots
from zerg._ring import CQE_F_BUFFER, CQE_F_MORE, Op, Ring, RingSubmitter, encode
from zerg._seam import CompletionSink, StartStrategy, Traffic, give_back_keys
from zerg._selector import UringSelector
from zerg._slab import SlabPool
from zerg._uring import ffi, lib

if TYPE_CHECKING:
    import zerg._speedups as _speedups  # the module, not the package (no cycle)

log = logging.getLogger("zerg")
# How asyncio names a slow callback in debug mode (ReactorLoop._run_debug).
_format_handle: Callable[[asyncio.Handle], str] = getattr(_base_events, "_format_handle", str)
# How asyncio.Handle._run names a callback that raised; since 3.13 it takes the
# loop's debug flag (arguments are shown in debug mode only).
_format_callback_source: Callable[..., str] = format_helpers._format_callback_source
_SOURCE_TAKES_DEBUG: bool = "debug" in inspect.signature(_format_callback_source).parameters

_UD_ACCEPT = encode(Op.ACCEPT)
_UD_CANCEL = encode(Op.CANCEL)
_RECV, _SEND, _POLL, _ACCEPT, _MSG = Op.RECV, Op.SEND, Op.POLL, Op.ACCEPT, Op.MSG
_CONNECT = Op.CONNECT

_ACCEPT_BACKOFF_S = 0.05
_FRESH_S = 0.5      # stopping: how long a just-accepted connection may take to speak
_TRIM_EVERY_S = 1.0
_TRIM_RESERVE_BYTES = 2 << 20      # free write memory kept resident for the next burst
_monotonic = time.monotonic


class _PendingConnect:
    """An outbound connect in the kernel: its socket, the address the kernel
    reads (kept alive until the completion), and who waits for it."""

    __slots__ = ("addr", "fd", "fut")

    def __init__(self, fd: int, addr: object, fut: asyncio.Future[int]) -> None:
        self.fd = fd
        self.addr = addr
        self.fut = fut


class _HeaderWait:
    """An accepted connection waiting for its PROXY header."""

    __slots__ = ("buf", "sock", "timer")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""                  # header bytes taken so far
        self.timer: asyncio.TimerHandle | None = None


@dataclass(frozen=True, slots=True)
class ReactorStats:
    """A snapshot of one reactor's counters (read with ``Engine.stats()``)."""

    index: int
    """Which reactor (0 runs on the thread that called ``serve``)."""
    connections: int
    """Connections open now."""
    accepted: int
    """Connections accepted since start."""
    rejected: int
    """Connections closed at once because of ``max_connections`` (or stopping)."""
    closed: int
    """Connections fully closed (every request done, fd closed)."""
    slots_total: int
    """Receive slots in the provided buffer ring."""
    slots_in_use: int
    """Slots held by the application or waiting to go back to the kernel."""
    write_segments_in_use: int
    """Write segments of the slab pool staged, in flight or lent to writers."""
    cqes: int
    """Completions harvested."""
    sqes: int
    """Submission queue entries prepared."""
    sends: int
    """Send requests submitted."""
    bytes_in: int
    """Bytes received."""
    bytes_out: int
    """Bytes the kernel took from sends."""
    setup_flags: int
    """``IORING_SETUP_*`` flags as the kernel kept them."""
    idle_closed: int = 0
    """Connections closed by ``idle_timeout_s``."""
    receive_paused: int = 0
    """Connections whose receive ``max_read_buffer`` holds back right now."""
    shared_slot_cqes: int = 0
    """Receives that landed in a slot the kernel still uses (incremental mode)."""
    waits: int = 0
    """``io_uring_enter`` calls made to submit-and-wait (about one per loop iteration)."""
    slots_held: int = 0
    """Receive slots connections hold right now (taken by handlers or waiting for them)."""
    closed_by: dict[str, int] = field(default_factory=dict)
    """Connections closed, by ``Connection.close_reason`` (``peer_eof``,
    ``peer_reset``, ``idle_timeout``, ``stop``, ``abort``, ``limit``, ``closed``)."""
    proxy_rejected: int = 0
    """Connections closed because their PROXY protocol header was missing, malformed
    or late (``EngineOptions.proxy_protocol``)."""
    worker: int = 0
    """The worker process (``workers > 1``: its index; else 0)."""
    tls_failed: int = 0
    """TLS handshakes that failed or timed out (``EngineOptions.ssl``); only
    that connection was closed."""
    connected: int = 0
    """Outbound connections opened by ``zerg.connect`` on this reactor."""
    forwarded_bytes: int = 0
    """Bytes sent by ``Connection.forward`` straight from receive slots."""
    forward_copied_bytes: int = 0
    """Bytes ``Connection.forward`` had to copy (0 on the zero-copy path)."""
    lent_bytes: int = 0
    """Bytes ``Connection.write`` sent straight from receive slots instead of
    copying them (a sequence or a ring item's view of at least 4 KiB in one
    slot: an echo, a relay)."""
    accept_rearms: int = 0
    """Times the multishot accept was found silent with connections waiting on
    the listening socket and was canceled or armed anew (each one is logged)."""


class Handle(asyncio.Handle):
    """The handle ``call_soon`` returns on a reactor loop: asyncio's own, to
    every caller (same ``__slots__``, ``cancel``, repr).

    With the extension the loop's ``call_soon`` makes these in C and their
    ``_run`` is C (native/loopfast.c): a task wake-up then runs no Python
    frame of asyncio's scheduling.  asyncio's methods stay the reference.
    """

    __slots__ = ()
    _callback: Callable[..., object] | None
    _loop: asyncio.AbstractEventLoop
    _source_traceback: object

    def _failed(self, exc: BaseException) -> None:
        """What ``asyncio.Handle._run`` does when the callback raised."""
        if _SOURCE_TAKES_DEBUG:     # 3.13+: the arguments are shown in debug mode only
            source = _format_callback_source(self._callback, self._args,
                                             debug=self._loop.get_debug())
        else:
            source = _format_callback_source(self._callback, self._args)
        context: dict[str, object] = {
            "message": f"Exception in callback {source}", "exception": exc, "handle": self}
        if self._source_traceback:
            context["source_traceback"] = self._source_traceback
        self._loop.call_exception_handler(context)


class ReactorLoop(asyncio.SelectorEventLoop):
    """The asyncio loop of a reactor (``asyncio.get_running_loop()`` in handlers)."""

    # Slots for what asyncio's loop keeps in its instance dict and the C loop
    # (native/loopfast.c) reads per callback and per iteration: asyncio's own
    # code stores into them as before (a slot is a data descriptor, found
    # before the dict), and the C code reads them in place instead of by name.
    __slots__ = ("_clock_resolution", "_closed", "_debug", "_future_kw", "_ready",
                 "_scheduled", "_selector", "_stopping")

    def __init__(self, reactor: Reactor, selector: UringSelector) -> None:
        super().__init__(selector)
        self.reactor = reactor
        self.standalone = False     # made by zerg.new_event_loop: closing frees the ring
        # One bound call_soon for the loop's life: asyncio's C futures look the
        # method up on every callback they schedule (a read's wake-up), which
        # otherwise makes a bound-method object each time.
        vars(self)["call_soon"] = self.call_soon
        # Future(loop=self)'s keywords, made once: with the extension,
        # create_future passes them to the type itself (native/loopfast.c)
        # instead of building a dict per future (one per waiting read).
        self._future_kw = {"loop": self}

    if not TYPE_CHECKING:
        # asyncio's loop.time() is time.monotonic() through a Python frame;
        # the loop iteration and every call_later ask it.  The builtin itself.
        time = staticmethod(_monotonic)

    def _run_debug(self, handle: asyncio.Handle) -> None:
        """One ready handle as asyncio's ``_run_once`` runs it in debug mode
        (timed, slow callbacks logged).  The C ``_run_once`` (native/loopfast.c)
        calls it for the handles of an iteration in which a callback turned
        debug mode on; an iteration that starts in debug mode is asyncio's."""
        try:
            self._current_handle = handle
            t0 = self.time()
            handle._run()
            dt = self.time() - t0
            if dt >= self.slow_callback_duration:
                _asyncio_logger.warning("Executing %s took %.3f seconds",
                                        _format_handle(handle), dt)
        finally:
            self._current_handle = None     # type: ignore[assignment]  # as asyncio

    def close(self) -> None:
        """Close the loop; a standalone loop also closes the sockets of its
        connections and frees its reactor's ring."""
        super().close()
        if self.standalone and not self.reactor.ring.closed:
            self.reactor.release_fds()
            self.reactor.ring.close()


if speedups is not None:
    # call_soon, create_future and get_debug of the loop, and Handle._run, in C.
    speedups.bind_loop(ReactorLoop, Handle, asyncio.Future)


class SinkTable(Protocol):
    """What the reactor needs of its table of connections by id: a dict is the
    reference, ``zerg._speedups.ConnTable`` the table the C dispatcher reads."""

    def __setitem__(self, key: int, value: CompletionSink, /) -> None: ...
    def get(self, key: int, /) -> CompletionSink | None: ...
    def pop(self, key: int, default: None, /) -> CompletionSink | None: ...
    def values(self) -> Collection[CompletionSink]: ...
    def clear(self) -> None: ...
    def __len__(self) -> int: ...


class Reactor:
    """Serves connections on the thread that created it (``run`` blocks).

    Implements ``ConnectionHost`` for its connections.
    """

    def __init__(
        self,
        index: int,
        cfg: ReactorConfig,
        start: StartStrategy,
        *,
        listen_fd: int | None,
        shutdown_timeout_s: float,
        proxy_timeout_s: float | None = None,
        watch_accept: bool = True,
    ) -> None:
        self.index = index
        self.cfg = cfg
        # PROXY protocol (proxy_timeout_s not None): accepted fds waiting for their
        # header, and the client address of each connection that had one.
        self._proxy_timeout = proxy_timeout_s
        self._header_waits: dict[int, _HeaderWait] = {}
        self._peers: dict[int, Address] = {}
        self.proxy_rejected = 0
        self.tls_failed = 0
        self.connected = 0
        self.closed_by: dict[str, int] = {}
        self.thread_id = threading.get_ident()
        self._start = start
        self._listen_fd = listen_fd
        self._grace = shutdown_timeout_s
        flags = 0
        if cfg.single_issuer:
            flags |= lib.IORING_SETUP_SINGLE_ISSUER
        if cfg.defer_taskrun:
            flags |= lib.IORING_SETUP_DEFER_TASKRUN
        if cfg.sqpoll:
            flags |= lib.IORING_SETUP_SQPOLL
            if cfg.sq_thread_cpu is not None:
                flags |= lib.IORING_SETUP_SQ_AFF
        cq = min(max(2 * cfg.ring_entries, 2 * cfg.buffer_ring_entries), 65536)
        self.ring = ring = Ring(
            cfg.ring_entries, setup_flags=flags, sq_thread_cpu=cfg.sq_thread_cpu,
            sq_thread_idle_ms=cfg.sq_thread_idle_ms, cq_entries=cq, batch=cfg.batch_cqes,
        )
        try:
            self.pool = SlabPool(cfg.recv_buffer_size, cfg.buffer_ring_entries,
                                 cfg.write_buffer_size)
            self.slots = RecvSlots.create(ring, self.pool, incremental=cfg.incremental_buffers)
            self.selector = UringSelector(ring, self._on_select)
            self.selector.max_wait_ns = cfg.cq_timeout_ns
            self.loop = ReactorLoop(self, self.selector)
        except BaseException:
            ring.close()
            raise
        self.options = PipeOptions.from_config(cfg)
        self.submitter = RingSubmitter(ring)
        self.traffic = Traffic()
        self._errors = ErrorLog()
        self._next_dry_warning = 0.0
        self._ptr = ring.ptr
        self._wait = (lib.zu_enter_ext if cfg.loop_mode == "enter_ext_arg"
                      else lib.zu_submit_and_wait)
        self.now = time.monotonic()
        self.idle_closed = 0
        # Connections by id.  With the extension a ConnTable, which the C
        # dispatcher reads on the id's C integer (no int object per completion).
        self.conns: SinkTable = speedups.ConnTable() if speedups is not None else {}
        self._connects: dict[int, _PendingConnect] = {}    # outbound, in the kernel
        self._dirty: list[CompletionSink] = []
        # ConnectionHost.want_send: the list's own append (no Python frame).
        self.want_send: Callable[[CompletionSink], None] = self._dirty.append
        self.give_back_keys: Callable[[list[int | None]], None] = functools.partial(
            give_back_keys, self.slots)
        self._next_id = 1
        self._stop_requested = False
        self._stopping = False
        self._stop_event: asyncio.Event | None = None
        self._drained: asyncio.Event | None = None
        self._accept_armed = False
        self._accept_closed = False     # stopping: accept no more (the armed one is canceled)
        # A silent accept is re-armed (_check_accept, zerg._acceptwatch) -- not
        # on a socket other processes accept on too (watch_accept False): there
        # a readable queue is theirs to drain as much as ours.
        self._accept_watch = (AcceptWatch(listen_fd)
                              if listen_fd is not None and watch_accept else None)
        self.running = False
        # counters
        self.accepted = 0
        self.rejected = 0
        self.closed_count = 0
        self.cqes = 0
        self._final_stats: ReactorStats | None = None
        self._dispatcher: _speedups.Dispatcher | None = None
        if speedups is not None:
            # The loop iteration's I/O in C (zerg._speedups.Dispatcher.step): the
            # sends of the sinks written to, the submit-and-wait, the harvest and
            # the dispatch table; ``_on_select``, ``_send_dirty`` and
            # ``_dispatch`` are its reference.  It counts the completions itself.
            self._dispatcher = speedups.Dispatcher(
                ring_address=ring.address, owner=ring, batch=cfg.batch_cqes,
                slots=self.slots, conns=self.conns, poll_fired=self.selector.poll_fired,
                on_accept=self._on_accept, new_connection=self._new_connection,
                failed=self._completion_failed, on_connect=self._on_connect)
            self._dispatcher.bind_step(self, self._dirty, cfg.loop_mode == "enter_ext_arg")
            self.selector.hook(self._dispatcher.step)

    # ------------------------------------------------------ ConnectionHost
    def opened(self, sink: CompletionSink) -> None:
        self.conns[sink.id] = sink


    def closed(self, sink: CompletionSink) -> None:
        if self.conns.pop(sink.id, None) is not None:
            self.closed_count += 1
            reason = sink.close_reason or "closed"
            self.closed_by[reason] = self.closed_by.get(reason, 0) + 1
        if self._peers:
            self._peers.pop(sink.id, None)
        if self._stopping and not self.conns and self._drained is not None:
            self._drained.set()

    def handshake_failed(self, sink: CompletionSink) -> None:
        self.tls_failed += 1

    def sink_failed(self, sink: CompletionSink, exc: BaseException) -> None:
        self._errors.error("zerg: a protocol callback raised for %r; it is aborted if still "
                           "open", sink, exc=exc)
        sink.abort()

    # ------------------------------------------------------------ lifecycle
    def run(self) -> None:
        """Serve until ``request_stop``; then shut down and free everything."""
        loop = self.loop
        self.thread_id = threading.get_ident()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._main())
        finally:
            try:
                self._close_loop()
            finally:
                asyncio.set_event_loop(None)
                self._final_stats = self.stats()
                self.ring.close()

    def request_stop(self) -> None:
        """Thread- and signal-safe."""
        self._stop_requested = True
        try:
            self.loop.call_soon_threadsafe(self._set_stop)
        except RuntimeError:
            pass        # loop already closed

    def _set_stop(self) -> None:
        if self._stop_event is not None:
            self._stop_event.set()

    def hand_off(self, fd: int) -> None:
        """Thread-safe fallback hand-off of an accepted fd (queue + wake-up)."""
        try:
            self.loop.call_soon_threadsafe(self._new_connection, fd)
        except RuntimeError:
            os.close(fd)

    async def _main(self) -> None:
        self._stop_event = asyncio.Event()
        self._drained = asyncio.Event()
        self.running = True
        if self._stop_requested:
            self._stop_event.set()
        if self._listen_fd is not None:
            self._arm_accept()
            self.loop.call_later(acceptwatch.CHECK_S, self._check_accept)
        if self.cfg.idle_timeout_s is not None:
            self._schedule_idle_sweep()
        self.loop.call_later(_TRIM_EVERY_S, self._trim_pool)
        await self._stop_event.wait()
        await self._shutdown()

    async def _shutdown(self) -> None:
        """Graceful drain: no new connections; every connection is told
        (``request_stop``: idle ones close, handlers in the middle of a request
        finish it); running handlers get ``shutdown_timeout_s``; then what is
        left closes (staged bytes still sent) and, failing that, is aborted."""
        deadline = self.loop.time() + self._grace
        self._accept_closed = True
        if self._accept_armed:
            self.ring.check(lib.zu_prep_cancel(self._ptr, _UD_ACCEPT, _UD_CANCEL),
                            "cancel accept")
        told: set[int] = set()
        self._tell_stop(told, spoken_only=True)
        await self._await_first_bytes(deadline)
        self._stopping = True
        for fd in list(self._header_waits):   # no PROXY header yet: nothing to drain
            self._end_header_wait(fd).close()
        self._tell_stop(told, spoken_only=False)
        await self._start.drain(self._grace)
        for conn in list(self.conns.values()):
            conn.close()
        if self.conns:
            assert self._drained is not None
            try:
                await asyncio.wait_for(self._drained.wait(),
                                       timeout=max(deadline - self.loop.time(), 0.05))
            except TimeoutError:
                pass
        for conn in list(self.conns.values()):
            conn.abort()
        if self.conns:
            assert self._drained is not None
            try:
                await asyncio.wait_for(self._drained.wait(), timeout=2.0)
            except TimeoutError:
                log.error("zerg reactor %d: %d connection(s) did not drain",
                          self.index, len(self.conns))
        self._flush_returns()

    def _tell_stop(self, told: set[int], spoken_only: bool) -> None:
        """``request_stop`` to each connection not told yet (with ``spoken_only``,
        only those that received something)."""
        for conn in list(self.conns.values()):
            if conn.id in told or (spoken_only and conn.bytes_in == 0):
                continue
            told.add(conn.id)
            if conn.close_reason is None:
                conn.close_reason = "stop"
            try:
                conn.request_stop()
            except Exception as exc:
                self._completion_failed(_RECV, conn.id, exc)

    async def _await_first_bytes(self, deadline: float) -> None:
        """Before idle connections are told to close: a connection accepted in the
        last _FRESH_S that has not sent a byte yet is a request on its way (clients
        send right after connecting; a rolling restart stops a worker while
        connections still come in), and so is one whose accept completes now.  Wait
        until each of them sent something, at most _FRESH_S, so none is taken for an
        idle keep-alive connection and closed unanswered (the others were told to
        stop already: a handler in the middle of a request sees ``stopping``)."""
        end = min(deadline, self.loop.time() + _FRESH_S)
        while self.loop.time() < end:
            recent = self.now - _FRESH_S
            if not self._accept_armed and not any(
                    c.bytes_in == 0 and (since := c.idle_since()) is not None and since > recent
                    for c in self.conns.values()):
                return
            await asyncio.sleep(0.005)

    def _close_loop(self) -> None:
        loop = self.loop
        try:
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for t in pending:
                t.cancel()
            if pending:
                loop.run_until_complete(asyncio.wait(pending, timeout=1.0))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()
        # Let cancellations prepared during close reach the kernel.
        ret = lib.zu_submit_and_wait(self._ptr, 0, 0)
        if ret < 0:
            log.error("zerg reactor %d: final submit failed: %s", self.index, os.strerror(-ret))
        self.release_fds()

    def release_fds(self) -> None:
        """The loop is closed: close what did not drain (the ring closes next)."""
        for conn in list(self.conns.values()):
            try:
                os.close(conn.fd)
            except OSError:
                pass
        self.conns.clear()
        for pending in self._connects.values():
            try:
                os.close(pending.fd)
            except OSError:
                pass
            if not pending.fut.done():
                pending.fut.cancel()
        self._connects.clear()

    # ------------------------------------------------------------- connects
    async def connect_fd(self, fd: int, sockaddr: bytes) -> int:
        """Connect the socket ``fd`` to ``sockaddr`` (a ``struct sockaddr``)
        with one io_uring request; returns the connection id its completions
        will carry.  The fd stays the caller's until this returns; on error
        (raised as the ``OSError`` subclass of the errno) or cancellation the
        fd is closed here -- after the kernel let go of it."""
        if self._stopping or self.ring.closed:
            os.close(fd)
            raise ConnectionAbortedError(errno.ECONNABORTED, "the reactor is stopping")
        cid = self._next_id
        self._next_id += 1
        addr = ffi.new("char[]", sockaddr)
        fut: asyncio.Future[int] = self.loop.create_future()
        ud = encode(Op.CONNECT, cid)
        try:
            self.ring.check(lib.zu_prep_connect(self._ptr, fd, addr, len(sockaddr), ud),
                            "connect")
        except BaseException:
            os.close(fd)
            raise
        self._connects[cid] = _PendingConnect(fd, addr, fut)
        try:
            res = await fut
        except asyncio.CancelledError:
            if cid in self._connects:       # still in the kernel: the completion closes it
                self.submitter.cancel(ud)
            raise
        if res < 0:
            os.close(fd)
            raise OSError(-res, os.strerror(-res))
        self.connected += 1
        return cid

    def _on_connect(self, key: int, res: int) -> None:
        pending = self._connects.pop(key, None)
        if pending is None:
            return
        if pending.fut.done():              # given up (timeout, cancel): not ours to serve
            try:
                os.close(pending.fd)
            except OSError:
                pass
            return
        pending.fut.set_result(res)

    # -------------------------------------------------------------- accepts
    def _arm_accept(self) -> None:
        if self._stopping or self._accept_closed or self._listen_fd is None:
            return
        self.ring.check(lib.zu_prep_accept_multishot(self._ptr, self._listen_fd, _UD_ACCEPT),
                        "accept")
        self._accept_armed = True

    def _check_accept(self) -> None:
        """Every ``CHECK_S``: cancel, or arm anew, an accept that stays silent
        while connections wait (``zerg._acceptwatch``).  Logged as a warning,
        counted in ``ReactorStats.accept_rearms``."""
        watch = self._accept_watch
        if self._stopping or self._accept_closed or watch is None:
            return
        self.loop.call_later(acceptwatch.CHECK_S, self._check_accept)
        action = watch.check(self._accept_armed)
        acceptwatch.warn(f"zerg reactor {self.index}", action)
        if action == "cancel":
            self.ring.check(lib.zu_prep_cancel(self._ptr, _UD_ACCEPT, _UD_CANCEL),
                            "cancel accept")
        elif action == "arm":       # the cancel found nothing: no accept is in the kernel
            self._accept_armed = False
            self._arm_accept()

    def _on_accept(self, res: int, flags: int) -> None:
        if self._accept_watch is not None:
            self._accept_watch.events += 1
        try:
            if res >= 0:
                self._new_connection(res)
            elif res not in (-errno.ECANCELED, -errno.EAGAIN):
                if res in (-errno.EMFILE, -errno.ENFILE, -errno.ENOBUFS, -errno.ENOMEM):
                    log.warning("zerg reactor %d: accept failed (%s); backing off",
                                self.index, os.strerror(-res))
                else:
                    log.debug("zerg reactor %d: accept error %s", self.index,
                              os.strerror(-res))
        finally:
            if not flags & CQE_F_MORE:      # re-armed even if the connection's set-up raised
                self._accept_ended(res)

    def _accept_ended(self, res: int) -> None:
        """The multishot accept ended with ``res``: arm the next one."""
        self._accept_armed = False
        if self._stopping or self._accept_closed:
            return
        if self._accept_watch is not None and self._accept_watch.ended():
            self._arm_accept()          # the watch canceled it (_check_accept)
        elif res < 0 and res != -errno.EAGAIN:
            self.loop.call_later(_ACCEPT_BACKOFF_S, self._arm_accept)
        else:
            self._arm_accept()

    def _new_connection(self, fd: int) -> None:
        if (self._stopping
                or len(self.conns) + len(self._header_waits) >= self.cfg.max_connections):
            os.close(fd)
            self.rejected += 1
            return
        if self._proxy_timeout is not None:
            self._await_proxy_header(fd)
        else:
            self._open(fd, None)

    # ------------------------------------------------------ PROXY protocol
    def _await_proxy_header(self, fd: int) -> None:
        """Read the PROXY header of a new connection before it starts: the loop
        watches the fd; the header is peeked, and only its own bytes are consumed,
        so the connection's receives start right after it."""
        assert self._proxy_timeout is not None
        wait = _HeaderWait(socket.socket(fileno=fd))
        self._header_waits[fd] = wait
        wait.timer = self.loop.call_later(self._proxy_timeout, self._proxy_failed, fd,
                                          f"no PROXY header within {self._proxy_timeout}s")
        self.loop.add_reader(fd, self._on_header_bytes, fd)

    def _on_header_bytes(self, fd: int) -> None:
        wait = self._header_waits.get(fd)
        if wait is None:
            return
        try:
            peek = wait.sock.recv(MAX_PROXY_HEADER - len(wait.buf),
                                  socket.MSG_PEEK | socket.MSG_DONTWAIT)
            if not peek:
                raise ProxyHeaderError("closed before its PROXY header")
            got = parse_proxy_header(wait.buf + peek)
            if got is None:             # all of it belongs to the header: take it
                wait.buf += wait.sock.recv(len(peek), socket.MSG_DONTWAIT)
                return
            length, peer = got
            rest = length - len(wait.buf)
            if rest and len(wait.sock.recv(rest, socket.MSG_DONTWAIT)) != rest:
                raise ProxyHeaderError("the PROXY header vanished while being read")
        except BlockingIOError:
            return
        except (OSError, ProxyHeaderError) as exc:
            self._proxy_failed(fd, str(exc))
            return
        self._end_header_wait(fd).detach()
        self._open(fd, peer)

    def _end_header_wait(self, fd: int) -> socket.socket:
        wait = self._header_waits.pop(fd)
        self.loop.remove_reader(fd)
        if wait.timer is not None:
            wait.timer.cancel()
        return wait.sock

    def _proxy_failed(self, fd: int, why: str) -> None:
        if fd not in self._header_waits:
            return
        self.proxy_rejected += 1
        log.debug("zerg reactor %d: closing fd %d: %s", self.index, fd, why)
        self._end_header_wait(fd).close()

    def proxied_peer(self, conn_id: int) -> Address | None:
        """The client a PROXY header named for this connection, if any."""
        return self._peers.get(conn_id)

    def _open(self, fd: int, peer: Address | None) -> None:
        cid = self._next_id
        self._next_id += 1
        self.accepted += 1
        if peer is not None:
            self._peers[cid] = peer
        try:
            self._start.start(self, cid, fd)
        except Exception as exc:
            conn = self.conns.get(cid)
            if conn is None:        # never registered: the fd is still ours
                log.exception("zerg reactor %d: could not start connection %d",
                              self.index, cid)
                try:
                    os.close(fd)
                except OSError:
                    pass
            else:
                self._completion_failed(_RECV, cid, exc)

    # ------------------------------------------------------------- memory
    def _trim_pool(self) -> None:
        """Every second: free write segments beyond a small reserve give their
        pages back to the OS, so RSS falls back after a burst."""
        if self._stopping:
            return
        reserve = max(8, _TRIM_RESERVE_BYTES // self.pool.segment_size)
        self.pool.trim(reserve)
        self.loop.call_later(_TRIM_EVERY_S, self._trim_pool)

    # ---------------------------------------------------------- idle timeout
    def _schedule_idle_sweep(self) -> None:
        timeout = self.cfg.idle_timeout_s
        assert timeout is not None
        self.loop.call_later(min(max(timeout / 4, 0.005), 1.0), self._idle_sweep)

    def _idle_sweep(self) -> None:
        if self._stopping:
            return
        timeout = self.cfg.idle_timeout_s
        assert timeout is not None
        limit = time.monotonic() - timeout
        idle = [c for c in self.conns.values()
                if (since := c.idle_since()) is not None and since < limit]
        for conn in idle:
            self.idle_closed += 1
            if conn.close_reason is None:
                conn.close_reason = "idle_timeout"
            log.debug("zerg reactor %d: closing %r, idle for %.1fs", self.index, conn, timeout)
            conn.close()
        self._schedule_idle_sweep()

    # ------------------------------------------------------- slots, re-arms
    def _flush_returns(self) -> None:
        slots = self.slots
        if slots.take_relief():
            # The ring ran dry: bytes that wait for their handler are moved off
            # it (copied), so slots flow again and no connection starves for
            # good because others wait for the rest of a message.
            for conn in list(self.conns.values()):
                conn.relieve()
            self._warn_ring_dry()
        parked = slots.flush()
        if not parked:
            return                  # the common case: no iterator made for nobody
        for sink in parked:
            try:
                sink.on_slots_free()
            except Exception as exc:
                self._completion_failed(_RECV, sink.id, exc)

    def _warn_ring_dry(self) -> None:
        """Name the connections that hold the most slots (at most every 10 s):
        slots handlers keep cannot be moved off the ring."""
        now = self.now
        if now < self._next_dry_warning:
            return
        self._next_dry_warning = now + 10.0
        holders = sorted(((c.slots_held, c) for c in self.conns.values() if c.slots_held),
                         key=lambda pair: -pair[0])[:5]
        if holders:
            log.warning("zerg reactor %d: the receive ring ran dry (%d slots); the "
                        "connections holding the most: %s", self.index, self.slots.total,
                        ", ".join(f"{c!r} holds {n}" for n, c in holders))

    # ------------------------------------------------------------- the loop
    def _on_select(self, timeout_ns: int) -> None:
        """One loop iteration's I/O: sends, slot returns, submit+wait, dispatch
        (with the extension, ``Dispatcher.step`` in C does this instead)."""
        dirty = self._dirty
        if dirty:
            self._send_dirty(dirty)
        if self.slots.returns_pending:
            self._flush_returns()
        if self.ring.closed:
            return
        ret = self._wait(self._ptr, 1 if timeout_ns else 0, timeout_ns)
        if ret < 0:     # a real error (the shim maps timeouts and signals to 0)
            self._enter_failed(ret)
        self.now = _monotonic()
        self._dispatch()

    def _enter_failed(self, ret: int) -> None:
        """``io_uring_enter`` failed for real: raise it, naming this reactor."""
        self.ring.enter_result(ret, f"reactor {self.index}")

    def _send_dirty(self, dirty: list[CompletionSink]) -> None:
        """Start the sends of the sinks written to since the last iteration
        (sinks added meanwhile too), then forget them; one that raises is
        aborted, the others still send.  Dispatcher.send_dirty is this in C."""
        for sink in dirty:
            try:
                sink.send_pending()
            except Exception as exc:
                self._completion_failed(_SEND, sink.id, exc)
        dirty.clear()

    def _dispatch(self) -> None:
        ring = self.ring
        ptr = ring.ptr
        batch = ring.batch
        opa, keya, resa = ring.op_arr, ring.key_arr, ring.res_arr
        fla, bida = ring.flags, ring.bid_arr
        harvest = lib.zu_harvest
        unpack = ffi.unpack
        on_cqe = self.slots.on_cqe
        give_back = self.slots.give_back
        conns = self.conns
        while True:
            n = harvest(ptr, batch, opa, keya, resa, fla, bida)
            if not n:
                return
            self.cqes += n
            ops = unpack(opa, n)
            keys = unpack(keya, n)
            ress = unpack(resa, n)
            fls = unpack(fla, n)
            bids = unpack(bida, n)
            for i in range(n):
                op = ops[i]
                try:
                    if op == _RECV:
                        res = ress[i]
                        f = fls[i]
                        conn = conns.get(keys[i])
                        if f & CQE_F_BUFFER:
                            key = on_cqe(res, f, bids[i])
                            if key is not None:
                                if conn is None:
                                    give_back(key)
                                else:
                                    conn.on_recv(key, res)
                        if not f & CQE_F_MORE and conn is not None:
                            conn.on_recv_end(res)
                    elif op == _SEND:
                        conn = conns.get(keys[i])
                        if conn is not None:
                            conn.on_send(ress[i])
                    elif op == _POLL:
                        self.selector.poll_fired(keys[i], ress[i])
                    elif op == _ACCEPT:
                        self._on_accept(ress[i], fls[i])
                    elif op == _MSG and ress[i] >= 0:
                        self._new_connection(ress[i])
                    elif op == _CONNECT:
                        self._on_connect(keys[i], ress[i])
                    # Op.CANCEL / Op.POLL_REMOVE need nothing.
                except Exception as exc:    # zero-cost unless raised (3.11+)
                    self._completion_failed(op, keys[i], exc)
            if n < batch:
                return

    def _completion_failed(self, op: int, key: int, exc: Exception) -> None:
        """A completion could not be handled (e.g. the SQ stayed full when
        re-arming): the reactor goes on; the connection concerned is aborted."""
        log.error("zerg reactor %d: error handling a %s completion (key %d); "
                  "aborting its connection", self.index, Op(op).name, key, exc_info=exc)
        conn = self.conns.get(key) if op in (_RECV, _SEND) else None
        if conn is not None:
            try:
                conn.abort()
            except Exception:
                log.exception("zerg reactor %d: aborting %r failed", self.index, conn)

    # ---------------------------------------------------------------- stats
    def stats(self) -> ReactorStats:
        if self._final_stats is not None:
            return self._final_stats
        sqes = 0 if self.ring.closed else self.ring.sqes_prepared
        slots = self.slots
        return ReactorStats(
            index=self.index,
            connections=len(self.conns),
            accepted=self.accepted,
            rejected=self.rejected,
            closed=self.closed_count,
            slots_total=slots.total,
            slots_in_use=slots.in_use,
            slots_held=sum(c.slots_held for c in list(self.conns.values())),
            write_segments_in_use=self.pool.segments_in_use,
            cqes=self.cqes + (0 if self._dispatcher is None else self._dispatcher.cqes),
            sqes=sqes,
            sends=self.traffic.sends,
            bytes_in=slots.bytes_in,
            bytes_out=self.traffic.bytes_out,
            setup_flags=self.ring.setup_flags,
            idle_closed=self.idle_closed,
            receive_paused=sum(1 for c in list(self.conns.values()) if c.is_receiving_paused),
            shared_slot_cqes=slots.shared_cqes,
            waits=0 if self.ring.closed else lib.zu_enter_calls(self.ring.ptr),
            proxy_rejected=self.proxy_rejected,
            tls_failed=self.tls_failed,
            connected=self.connected,
            forwarded_bytes=self.traffic.forwarded,
            forward_copied_bytes=self.traffic.forward_copied,
            lent_bytes=self.traffic.lent,
            closed_by=dict(self.closed_by),
            accept_rearms=0 if self._accept_watch is None else self._accept_watch.rearms,
        )
