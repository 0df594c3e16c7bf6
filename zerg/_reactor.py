"""Reactor: one io_uring, one buffer ring, one slab pool — and one asyncio loop.

A reactor *is* an asyncio event loop: a ``SelectorEventLoop`` whose selector
(``UringSelector``) does one ``io_uring_enter`` per loop iteration.  That one
call submits everything prepared since the last iteration (sends, re-armed
recvs, polls) and waits; the completions are then harvested in batches of
``batch_cqes`` through the shim's flat arrays and dispatched here, straight
to connections, before asyncio runs the callbacks they made ready.  Handlers
are ordinary coroutines, and every asyncio library works beside them on the
same thread, with no epoll anywhere.

Slots (provided receive buffers) travel: kernel -> CQE -> ``RingItem`` held
by a connection -> ``give_back`` -> batched return at the start of the next
iteration (many ``buf_ring_add``, one tail store).  A multishot recv that
ended for lack of slots (``ENOBUFS``) is back-pressure: the connection waits
in ``_starved`` and is re-armed as soon as slots are free again.

Threading: everything here runs on the reactor's thread.  Other threads talk
to it only through ``loop.call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import cast

from zerg._config import ReactorConfig
from zerg._connection import OPEN, Connection
from zerg._protocol import Protocol
from zerg._ring import CQE_F_BUF_MORE, CQE_F_BUFFER, CQE_F_MORE, Op, Ring, encode
from zerg._selector import UringSelector
from zerg._slab import SlabPool
from zerg._uring import ffi, lib

log = logging.getLogger("zerg")

OP_ACCEPT = Op.ACCEPT
OP_RECV = Op.RECV
OP_SEND = Op.SEND
OP_POLL = Op.POLL
OP_MSG = Op.MSG
_UD_ACCEPT = encode(Op.ACCEPT)
_UD_CANCEL = encode(Op.CANCEL)

AsyncHandler = Callable[[Connection], Awaitable[None]]
SyncHandler = Callable[[Connection], None]
Handler = AsyncHandler | SyncHandler | Protocol

_ACCEPT_BACKOFF_S = 0.05
_monotonic = time.monotonic


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
    """``io_uring_enter`` calls made to submit-and-wait (one per loop iteration)."""


class ReactorLoop(asyncio.SelectorEventLoop):
    """The asyncio loop of a reactor (``asyncio.get_running_loop()`` in handlers)."""

    def __init__(self, reactor: Reactor, selector: UringSelector) -> None:
        super().__init__(selector)
        self.reactor = reactor


class Reactor:
    """Serves connections on the thread that created it (``run`` blocks)."""

    def __init__(
        self,
        index: int,
        cfg: ReactorConfig,
        handler: Handler,
        *,
        listen_fd: int | None,
        shutdown_timeout_s: float,
        executor: concurrent.futures.Executor | None = None,
    ) -> None:
        self.index = index
        self.protocol: Protocol | None = handler if isinstance(handler, Protocol) else None
        self.dirty: list[Connection] = []
        self.thread_id = threading.get_ident()
        self._executor = executor
        self.cfg = cfg
        self._handler = handler
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
            ring.setup_buffer_ring(0, cfg.buffer_ring_entries, self.pool.recv_base,
                                   cfg.recv_buffer_size, incremental=cfg.incremental_buffers)
            self.selector = UringSelector(ring, self._on_select)
            self.selector.max_wait_ns = cfg.cq_timeout_ns
            self.loop = ReactorLoop(self, self.selector)
        except BaseException:
            ring.close()
            raise
        self._ptr = ring.ptr
        self._wait = (lib.zu_enter_ext if cfg.loop_mode == "enter_ext_arg"
                      else lib.zu_submit_and_wait)
        self._inc = cfg.incremental_buffers
        n_slots = cfg.buffer_ring_entries
        self._inc_off = [0] * n_slots if self._inc else []
        self._inc_parts = [0] * n_slots if self._inc else []
        self._inc_done = [False] * n_slots if self._inc else []
        self.inc_shared_cqes = 0
        self.max_write_buffer = cfg.max_write_buffer
        self.max_read_buffer = cfg.max_read_buffer
        self.now = time.monotonic()
        self.idle_closed = 0
        self.conns: dict[int, Connection] = {}
        self._tasks: set[asyncio.Future[None]] = set()
        self._next_id = 1
        self._returns: list[int] = []
        self._ret_arr = ffi.new("unsigned short[]", cfg.buffer_ring_entries)
        self._starved: list[Connection] = []
        self._need_relief = False
        self._stop_requested = False
        self._stopping = False
        self._stop_event: asyncio.Event | None = None
        self._drained: asyncio.Event | None = None
        self._accept_armed = False
        self.running = False
        # counters
        self.accepted = 0
        self.rejected = 0
        self.closed_count = 0
        self.slots_out = 0
        self.cqes = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.sends = 0
        self._final_stats: ReactorStats | None = None

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
        if self.cfg.idle_timeout_s is not None:
            self._schedule_idle_sweep()
        await self._stop_event.wait()
        await self._shutdown()

    async def _shutdown(self) -> None:
        self._stopping = True
        if self._accept_armed:
            lib.zu_prep_cancel(self._ptr, _UD_ACCEPT, _UD_CANCEL)
        for conn in list(self.conns.values()):
            conn.close()
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=self._grace)
            for t in pending:
                t.cancel()
            if pending:
                log.warning("zerg reactor %d: %d handler(s) still running after %.1fs; "
                            "cancelled", self.index, len(pending), self._grace)
                await asyncio.wait(pending, timeout=1.0)
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
        lib.zu_submit_and_wait(self._ptr, 0, 0)
        for fd in [c.fd for c in self.conns.values()]:
            try:
                os.close(fd)
            except OSError:
                pass
        self.conns.clear()

    # -------------------------------------------------------------- accepts
    def _arm_accept(self) -> None:
        if self._stopping or self._listen_fd is None:
            return
        self.ring.check(lib.zu_prep_accept_multishot(self._ptr, self._listen_fd, _UD_ACCEPT),
                        "accept")
        self._accept_armed = True

    def _on_accept(self, res: int, flags: int) -> None:
        if res >= 0:
            self._new_connection(res)
        elif res not in (-errno.ECANCELED, -errno.EAGAIN):
            if res in (-errno.EMFILE, -errno.ENFILE, -errno.ENOBUFS, -errno.ENOMEM):
                log.warning("zerg reactor %d: accept failed (%s); backing off",
                            self.index, os.strerror(-res))
            else:
                log.debug("zerg reactor %d: accept error %s", self.index, os.strerror(-res))
        if not flags & CQE_F_MORE:
            self._accept_armed = False
            if self._stopping:
                return
            if res < 0 and res != -errno.EAGAIN:
                self.loop.call_later(_ACCEPT_BACKOFF_S, self._arm_accept)
            else:
                self._arm_accept()

    def _new_connection(self, fd: int) -> None:
        if self._stopping or len(self.conns) >= self.cfg.max_connections:
            os.close(fd)
            self.rejected += 1
            return
        cid = self._next_id
        self._next_id += 1
        conn = Connection(self, cid, fd)
        self.conns[cid] = conn
        self.accepted += 1
        conn._arm_recv()
        proto = self.protocol
        if proto is not None:
            try:
                proto.connection_made(conn)
            except Exception as exc:
                self.protocol_failed(conn, exc)
            return
        task: asyncio.Future[None]
        try:
            if self._executor is not None:      # a plain def handler: worker thread
                task = self.loop.run_in_executor(self._executor, cast(SyncHandler, self._handler),
                                                 conn)
            else:
                coro = cast(AsyncHandler, self._handler)(conn)
                task = self.loop.create_task(coro)  # type: ignore[arg-type]
        except Exception:
            log.exception("zerg: handler could not be started for %r", conn)
            conn.close()
            return
        self._tasks.add(task)
        task.add_done_callback(conn._handler_done)

    def _handler_done(self, conn: Connection, task: asyncio.Future[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            exc = task.exception()
            if exc is not None:
                log.error("zerg: handler for %r raised; closing it", conn, exc_info=exc)
        conn.close()

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
        for conn in [c for c in self.conns.values() if c._last_rx < limit and c._state == OPEN]:
            self.idle_closed += 1
            log.debug("zerg reactor %d: closing %r, idle for %.1fs", self.index, conn, timeout)
            conn.close()
        self._schedule_idle_sweep()

    # ------------------------------------------------------- protocol path
    def protocol_failed(self, conn: Connection, exc: BaseException) -> None:
        log.error("zerg: protocol callback raised for %r; aborting it", conn, exc_info=exc)
        conn._error_exc = exc
        conn.abort()

    def protocol_eof(self, conn: Connection) -> None:
        proto = self.protocol
        assert proto is not None
        try:
            keep = proto.eof_received(conn)
        except Exception as exc:
            self.protocol_failed(conn, exc)
            return
        if not keep:
            conn.close()

    # ------------------------------------------------------- slots, re-arms
    def give_back(self, key: int) -> None:
        """The application is done with slot part ``key`` (see ``_on_data``)."""
        if self._inc:
            self._inc_give_back(key)
            return
        self._returns.append(key)
        self.slots_out -= 1

    def give_back_ids(self, ids: list[int]) -> None:
        """``give_back`` for a list; ids < 0 (private copies) are skipped."""
        for key in ids:
            if key >= 0:
                self.give_back(key)

    # Incremental buffer consumption (IOU_PBUF_RING_INC, Linux 6.12): the kernel
    # fills one slot with several receives at successive offsets and says so
    # with IORING_CQE_F_BUF_MORE.  A slot goes back only when the kernel is
    # done with it *and* every part handed out was given back.
    def _inc_recv(self, conn: Connection | None, res: int, f: int, bid: int) -> None:
        off = self._inc_off[bid]
        if f & CQE_F_BUF_MORE:
            self.inc_shared_cqes += 1
        else:
            self._inc_done[bid] = True
        if res > 0:
            self._inc_off[bid] = off + res
            if conn is not None:
                if not self._inc_parts[bid]:
                    self.slots_out += 1     # the application holds part of this slot
                self._inc_parts[bid] += 1
                self.bytes_in += res
                conn._on_data(bid | (off << 16), res)
                return
        if self._inc_done[bid] and not self._inc_parts[bid]:
            self._inc_return(bid)

    def _inc_give_back(self, key: int) -> None:
        bid = key & 0xFFFF
        parts = self._inc_parts[bid] - 1
        self._inc_parts[bid] = parts
        if not parts:
            self.slots_out -= 1
            if self._inc_done[bid]:
                self._inc_return(bid)

    def _inc_return(self, bid: int) -> None:
        self._inc_off[bid] = 0
        self._inc_done[bid] = False
        self._returns.append(bid)

    def starved(self, conn: Connection) -> None:
        self._starved.append(conn)
        self._need_relief = True

    def forget(self, conn: Connection) -> None:
        if self.conns.pop(conn.id, None) is not None:
            self.closed_count += 1
            proto = self.protocol
            if proto is not None:
                try:
                    proto.connection_lost(conn, conn._error_exc or conn.error)
                except Exception:
                    log.exception("zerg: connection_lost raised for %r", conn)
        if self._stopping and not self.conns and self._drained is not None:
            self._drained.set()

    def _flush_returns(self) -> None:
        if self._need_relief:
            # The ring ran dry: bytes that wait for their handler are moved off
            # it (copied), so slots flow again and no connection starves for
            # good because others wait for the rest of a message.
            self._need_relief = False
            for conn in list(self.conns.values()):
                if conn._state == OPEN:
                    conn._relieve()
        rets = self._returns
        if rets:
            arr = self._ret_arr
            cap = len(arr)
            for i in range(0, len(rets), cap):
                chunk = rets[i:i + cap]
                arr[0:len(chunk)] = chunk
                lib.zu_bufring_return(self._ptr, arr, len(chunk))
            rets.clear()
        if self._starved and self.slots_out < self.cfg.buffer_ring_entries:
            starved = self._starved
            self._starved = []
            for conn in starved:
                if conn._state == OPEN:
                    try:
                        conn._arm_recv()
                    except Exception as exc:
                        self._completion_failed(OP_RECV, conn.id, exc)

    # ------------------------------------------------------------- the loop
    def _on_select(self, timeout_ns: int) -> None:
        """One loop iteration's I/O: return slots, submit+wait, dispatch."""
        dirty = self.dirty
        if dirty:
            for conn in dirty:
                conn._dirty = False
                try:
                    if conn._pending and conn._write_exc is None:
                        conn._kick_send()       # io_uring: all of them in this enter
                except Exception as exc:
                    self._completion_failed(OP_SEND, conn.id, exc)
            dirty.clear()
        if self._returns or self._starved:
            self._flush_returns()
        if self.ring._closed:
            return
        self._wait(self._ptr, 1 if timeout_ns else 0, timeout_ns)
        self.now = _monotonic()
        self._dispatch()

    def _dispatch(self) -> None:
        ring = self.ring
        ptr = self._ptr
        batch = ring.batch
        opa, keya, resa = ring.op_arr, ring.key_arr, ring.res_arr
        fla, bida = ring.flags, ring.bid_arr
        harvest = lib.zu_harvest
        unpack = ffi.unpack
        inc = self._inc
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
            for i in range(n):
                op = ops[i]
                try:
                    if op == OP_RECV:
                        res = ress[i]
                        f = fls[i]
                        conn = conns.get(keys[i])
                        if inc and f & CQE_F_BUFFER:
                            self._inc_recv(conn, res, f, bida[i])
                        elif f & CQE_F_BUFFER:
                            self.slots_out += 1
                            if conn is None or res <= 0:
                                self.give_back(bida[i])
                            else:
                                self.bytes_in += res
                                conn._on_data(bida[i], res)
                        if not f & CQE_F_MORE and conn is not None:
                            conn._on_recv_end(res)
                    elif op == OP_SEND:
                        conn = conns.get(keys[i])
                        if conn is not None:
                            conn._on_send(ress[i])
                    elif op == OP_POLL:
                        self.selector.poll_fired(keys[i], ress[i])
                    elif op == OP_ACCEPT:
                        self._on_accept(ress[i], fls[i])
                    elif op == OP_MSG and ress[i] >= 0:
                        self._new_connection(ress[i])
                    # OP_CANCEL / OP_POLL_REMOVE / OP_NOP need nothing.
                except Exception as exc:    # zero-cost unless raised (3.11+)
                    self._completion_failed(op, keys[i], exc)
            if n < batch:
                return

    def _completion_failed(self, op: int, key: int, exc: Exception) -> None:
        """A completion could not be handled (e.g. the SQ stayed full when
        re-arming): the reactor goes on; the connection concerned is aborted."""
        log.error("zerg reactor %d: error handling a %s completion (key %d); "
                  "aborting its connection", self.index, Op(op).name, key, exc_info=exc)
        conn = self.conns.get(key) if op in (OP_RECV, OP_SEND) else None
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
        return ReactorStats(
            index=self.index,
            connections=len(self.conns),
            accepted=self.accepted,
            rejected=self.rejected,
            closed=self.closed_count,
            slots_total=self.cfg.buffer_ring_entries,
            slots_in_use=self.slots_out + len(self._returns),
            write_segments_in_use=self.pool.segments_in_use,
            cqes=self.cqes,
            sqes=sqes,
            sends=self.sends,
            bytes_in=self.bytes_in,
            bytes_out=self.bytes_out,
            setup_flags=self.ring.setup_flags,
            idle_closed=self.idle_closed,
            receive_paused=sum(1 for c in list(self.conns.values()) if c._paused),
            shared_slot_cqes=self.inc_shared_cqes,
            waits=0 if self.ring.closed else lib.zu_enter_calls(self.ring.ptr),
        )

