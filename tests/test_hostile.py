"""Hostile clients (issue 17): logs that cannot be used as a weapon, and a
deadline for connections that close while the peer does not read."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable

import pytest
from conftest import serving, wait_for

import zerg


def test_handler_errors_are_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    """50 connections whose handler raises: a handful of tracebacks, not 50."""
    async def handler(conn: zerg.Connection) -> None:
        await conn.read()
        raise ValueError("boom from a hostile request")

    caplog.set_level(logging.DEBUG, logger="zerg")
    with serving(handler) as srv:
        for _ in range(50):
            with srv.connect() as s:
                s.sendall(b"x")
                assert s.recv(10) == b""
    tracebacks = [r for r in caplog.records if r.exc_info and r.levelno >= logging.ERROR]
    assert 1 <= len(tracebacks) <= 10


@pytest.mark.parametrize("callback", ["data_received", "connection_lost"])
def test_protocol_callback_errors_are_rate_limited(caplog: pytest.LogCaptureFixture,
                                                   callback: str) -> None:
    """50 connections whose Protocol callback raises -- while serving, or in
    ``connection_lost`` after the close -- log a handful of tracebacks, not 50,
    and the server serves on."""
    class Raising(zerg.Protocol):
        def data_received(self, conn: zerg.Connection, seq: zerg.BufferSequence) -> None:
            if callback == "data_received" and bytes(seq) == b"x":
                raise ValueError("boom from a hostile request")
            conn.write(seq)
            if bytes(seq) == b"x":
                conn.close()

        def connection_lost(self, conn: zerg.Connection, exc: BaseException | None) -> None:
            if callback == "connection_lost":
                raise ValueError("boom at the end")

    caplog.set_level(logging.DEBUG, logger="zerg")
    with serving(Raising()) as srv:
        for _ in range(50):
            with srv.connect() as s:
                s.sendall(b"x")
                try:
                    while s.recv(10):
                        pass
                except ConnectionResetError:
                    pass                # data_received raised: the connection is aborted
        with srv.connect() as s:
            s.sendall(b"still here")
            assert s.recv(100) == b"still here"
    tracebacks = [r for r in caplog.records if r.exc_info and r.levelno >= logging.ERROR]
    assert 1 <= len(tracebacks) <= 10


def test_peer_resets_are_logged_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    async def handler(conn: zerg.Connection) -> None:
        await conn.read()
        raise ConnectionResetError(104, "Connection reset by peer")

    caplog.set_level(logging.DEBUG, logger="zerg")
    with serving(handler) as srv, srv.connect() as s:
        s.sendall(b"x")
        assert s.recv(10) == b""
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("the peer went away" in r.getMessage() for r in caplog.records)


def test_a_closing_connection_whose_peer_does_not_read_is_aborted() -> None:
    """close_timeout_s: the reply the peer never reads does not keep the fd and
    the send memory for ever."""
    async def handler(conn: zerg.Connection) -> None:
        await conn.read()
        for _ in range(256):                    # 8 MiB the peer will never read
            conn.write(b"z" * 32768)
        conn.close()

    cfg = zerg.ReactorConfig(close_timeout_s=0.5)
    with serving(handler, reactor=cfg) as srv:
        s = socket.create_connection(("127.0.0.1", srv.port))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(b"x")
        time.sleep(0.2)
        assert srv.engine.stats()[0].write_segments_in_use > 0     # stuck sending
        t0 = time.monotonic()
        wait_for(lambda: srv.engine.stats()[0].connections == 0, timeout=5,
                 what="the closing deadline")
        assert time.monotonic() - t0 < 3.0
        assert srv.engine.stats()[0].write_segments_in_use == 0
        s.close()


def test_close_timeout_is_validated() -> None:
    with pytest.raises(ValueError, match="close_timeout_s"):
        zerg.ReactorConfig(close_timeout_s=0)
    assert zerg.ReactorConfig(close_timeout_s=None).close_timeout_s is None


def test_one_flooding_client_cannot_hold_the_reactor() -> None:
    """max_read_chunk: a handler gets at most one chunk a read and the loop runs
    between chunks, so while one client's 4 MiB are worked through slowly,
    another client is answered within 250 ms."""
    import threading

    from conftest import recv_exact

    async def handler(conn: zerg.Connection) -> None:
        while True:
            snap = await conn.read()
            if snap.is_closed:
                return
            while (item := conn.try_get_ring(snap)) is not None:
                if item.length > 100:
                    time.sleep(item.length / 16384 * 0.004)     # 4 ms of work a slot
                else:
                    conn.write(item.view)                      # a probe: echo it
                conn.return_ring(item)
            await conn.flush()

    cfg = zerg.ReactorConfig(max_read_chunk=64 * 1024)
    with serving(handler, reactor=cfg) as srv:
        hog = srv.connect()
        flood = threading.Thread(target=hog.sendall, args=(b"F" * (4 << 20),))
        flood.start()
        time.sleep(0.3)                                  # the hog's backlog builds up
        worst = 0.0
        with srv.connect() as probe:
            for _ in range(5):
                t0 = time.monotonic()
                probe.sendall(b"ping")
                assert recv_exact(probe, 4) == b"ping"
                worst = max(worst, time.monotonic() - t0)
                time.sleep(0.05)
        hog.close()
        flood.join(10)
    assert worst < 0.25, f"a probe waited {worst * 1000:.0f} ms behind the flood"


def test_max_read_chunk_is_validated() -> None:
    with pytest.raises(ValueError, match="max_read_chunk"):
        zerg.ReactorConfig(max_read_chunk=100)         # below one receive slot


def test_handlers_that_keep_their_items_cannot_take_the_whole_ring(
        caplog: pytest.LogCaptureFixture) -> None:
    """Slots a handler keeps count against max_read_buffer, in whole slots: the
    connection stops receiving (what still arrives is kept off the ring), so
    three hoarders on a 64-slot ring hold at most 16 slots each and a probe
    is served."""
    from conftest import recv_exact

    kept: list[zerg.RingItem] = []

    async def handler(conn: zerg.Connection) -> None:
        while True:
            snap = await conn.read()
            if snap.is_closed:
                return
            while (item := conn.try_get_ring(snap)) is not None:
                if bytes(item.view[:4]) == b"ping":
                    conn.write(item.view)
                    conn.return_ring(item)
                else:
                    kept.append(item)                       # a hoarder: never returned
            await conn.flush()

    cfg = zerg.ReactorConfig(buffer_ring_entries=64, recv_buffer_size=4096,
                             max_read_buffer=16 * 4096)
    with serving(handler, reactor=cfg) as srv:
        hoarders = [srv.connect() for _ in range(3)]
        for h in hoarders:
            h.setblocking(False)
            try:
                h.send(b"H" * (1 << 20))
            except BlockingIOError:
                pass
        # Each hoarder passes max_read_buffer with the items it keeps and stops receiving.
        wait_for(lambda: srv.engine.stats()[0].receive_paused == 3, what="the hoard")
        time.sleep(0.2)
        assert srv.engine.stats()[0].slots_held <= 3 * (64 // 4 + 1)
        with srv.connect() as probe:
            probe.settimeout(2)
            probe.sendall(b"ping")
            assert recv_exact(probe, 4) == b"ping"          # the ring still serves others
        for s in hoarders:
            s.close()
    kept.clear()


def _holder(block_s: float = 0.0) -> Callable[[zerg.Connection], Awaitable[None]]:
    """A level-1 handler that echoes ``ping``, sleeps on the reactor thread
    for ``block_s`` on ``block`` (then echoes it), and keeps anything else
    until its peer closes."""

    async def handler(conn: zerg.Connection) -> None:
        kept = []
        while True:
            snap = await conn.read()
            if snap.is_closed:
                return
            while (item := conn.try_get_ring(snap)) is not None:
                word = bytes(item.view)
                if word == b"block":
                    time.sleep(block_s)         # the reactor is busy: the kernel goes on
                if word in (b"ping", b"block"):
                    conn.write(item.view)
                    conn.return_ring(item)
                else:
                    kept.append(item)           # kept across the await, never returned
            await conn.flush()

    return handler


def _reader_holder(conn: zerg.Connection) -> Awaitable[None]:
    """A PipeReader handler that echoes ``ping`` and otherwise holds the
    buffer it read across a 1 s await (a slow backend) before consuming it."""
    from zerg.adapters import PipeReader

    async def run() -> None:
        reader = PipeReader(conn)
        while True:
            res = await reader.read()
            if res.buffer == b"ping":
                conn.write(b"ping")
            elif len(res.buffer):
                await asyncio.sleep(1.0)            # holds res.buffer meanwhile
            reader.advance_to(len(res.buffer))
            await conn.flush()
            if res.is_completed:
                return

    return run()


@pytest.mark.parametrize("kind", ["level1", "pipereader"])
def test_more_handlers_keeping_a_slot_than_the_ring_has_do_not_starve_it(kind: str) -> None:
    """Ten handlers each keep what they read, on an 8-slot ring: once three
    quarters of the ring are held, what is handed out is a copy (its slot goes
    back at once), so a probe is served at once and every keeper still sees
    its peer's FIN (before, level 1 kept the ring dry until stop)."""
    from conftest import recv_exact

    handler = _holder() if kind == "level1" else _reader_holder
    cfg = zerg.ReactorConfig(buffer_ring_entries=8, recv_buffer_size=4096)
    with serving(handler, reactor=cfg) as srv:
        holders = [srv.connect() for _ in range(10)]
        for h in holders:
            h.sendall(b"H")
        wait_for(lambda: srv.engine.stats()[0].bytes_in >= 10, what="ten kept items")
        time.sleep(0.1)
        stats = srv.engine.stats()[0]
        assert stats.slots_held <= 6                        # 8 - 8 // 4: the rest are copies
        with srv.connect() as probe:
            probe.settimeout(0.5)
            probe.sendall(b"ping")
            assert recv_exact(probe, 4) == b"ping"
        for h in holders:
            h.close()
        wait_for(lambda: srv.engine.stats()[0].connections == 0,
                 what="every keeper to see its peer's FIN")
        assert srv.engine.stats()[0].slots_held == 0


def test_a_dry_ring_names_the_connections_that_hold_it(
        caplog: pytest.LogCaptureFixture) -> None:
    """Six keepers hold three quarters of an 8-slot ring; while the reactor
    thread is blocked, three clients send at once and the kernel runs out of
    slots.  The warning names the keepers (the operator's lead: a ring must be
    larger than the number of handlers that keep a slot across an await), and
    the three are served once the reactor runs again."""
    from conftest import recv_exact

    cfg = zerg.ReactorConfig(buffer_ring_entries=8, recv_buffer_size=4096)
    caplog.set_level(logging.WARNING, logger="zerg")
    with serving(_holder(block_s=0.5), reactor=cfg) as srv:
        holders = [srv.connect() for _ in range(6)]
        for h in holders:
            h.sendall(b"H")
        wait_for(lambda: srv.engine.stats()[0].slots_held >= 6, what="six kept slots")
        late = [srv.connect() for _ in range(3)]
        blocker = srv.connect()
        time.sleep(0.05)                                    # all accepted and receiving
        blocker.sendall(b"block")
        time.sleep(0.1)                                     # its handler now sleeps
        for c in late:
            c.sendall(b"ping")
        for c in [blocker, *late]:
            c.settimeout(3)
        assert recv_exact(blocker, 5) == b"block"
        for c in late:
            assert recv_exact(c, 4) == b"ping"
        wait_for(lambda: any("ring ran dry" in r.getMessage() for r in caplog.records),
                 what="the ring-dry warning")
        for c in [*holders, *late, blocker]:
            c.close()
    warning = next(r.getMessage() for r in caplog.records if "ring ran dry" in r.getMessage())
    assert "holds 1" in warning and "zerg.Connection id=" in warning


def _slow_readers(port: int, n: int, request: bytes) -> list[socket.socket]:
    """``n`` clients with a 4 KiB receive window that each sent ``request``."""
    clients = []
    for _ in range(n):
        c = socket.socket()
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        c.connect(("127.0.0.1", port))
        c.sendall(request)
        clients.append(c)
    return clients


def _small_send_buffer(conn: zerg.Connection) -> None:
    """Cap the kernel's send buffer of ``conn``: a gathered send hands the kernel
    every staged segment at once, and loopback TCP would otherwise take a whole
    MiB into its own memory, leaving nothing staged for the test to watch."""
    sock = socket.socket(fileno=conn.fd)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
    finally:
        sock.detach()


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_send_memory_goes_back_to_the_os_after_a_burst() -> None:
    """48 clients each get a 1 MiB reply at once: 48 MiB of write segments.
    Afterwards they go back to the pool and, within about a second, their pages
    back to the operating system: RSS falls back near where it was."""
    from conftest import recv_exact

    async def handler(conn: zerg.Connection) -> None:
        await conn.read()
        _small_send_buffer(conn)
        conn.write(b"r" * (1 << 20))
        await conn.wait_sent()

    def small_window_client(port: int) -> socket.socket:
        c = socket.socket()
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)     # replies stay staged
        c.connect(("127.0.0.1", port))
        return c

    with serving(handler) as srv:
        before = _rss()
        clients = [small_window_client(srv.port) for _ in range(48)]
        for c in clients:
            c.sendall(b"go")
        wait_for(lambda: srv.engine.stats()[0].write_segments_in_use >= 48 * 24,
                 what="the replies staged")
        peak = _rss()
        for c in clients:
            assert recv_exact(c, 1 << 20) == b"r" * (1 << 20)
            c.close()
        wait_for(lambda: srv.engine.stats()[0].write_segments_in_use == 0, what="segments back")
        wait_for(lambda: _rss() < before + (peak - before) // 4, timeout=5,
                 what=f"RSS back near {before >> 20} MiB (peak {peak >> 20} MiB)")


@pytest.mark.parametrize("writer", ["write", "BufferWriter"])
def test_a_reactor_wide_write_budget_slows_the_big_writers_and_loses_nothing(
        writer: str) -> None:
    """max_write_memory: 16 clients that read slowly each ask for a 1 MiB reply
    (16 MiB) under a 4 MiB budget.  Writers over the pause mark are refused
    while the pool is full (``conn.write`` and a ``BufferWriter``'s
    ``get_memory`` alike), flush and retry; every reply arrives whole and the
    staged memory stays near the budget.  A small reply still goes through."""
    import threading

    from conftest import recv_exact

    from zerg.adapters import BufferWriter

    reply = bytes(range(256)) * 4096                     # 1 MiB
    refusals: list[int] = []

    async def handler(conn: zerg.Connection) -> None:
        request = await conn.read()
        item = conn.try_get_ring(request)
        assert item is not None
        small = bytes(item.view) == b"small"
        conn.return_ring(item)
        if small:
            conn.write(b"tiny reply")
            await conn.flush()
            return
        view = memoryview(reply)
        if writer == "BufferWriter":
            out = BufferWriter(conn)
            while view:
                try:
                    mem = out.get_memory(min(len(view), 32768))
                except zerg.WriteBufferFullError:
                    refusals.append(1)
                    await out.flush()                    # waits until its bytes are out
                    continue
                k = min(len(mem), len(view))
                mem[:k] = view[:k]
                out.advance(k)
                view = view[k:]
            await out.wait_sent()
            return
        while view:
            try:
                conn.write(view[:256 * 1024])
            except zerg.WriteBufferFullError:
                refusals.append(1)
                await conn.flush()                       # waits until its bytes are out
                continue
            view = view[256 * 1024:]
        await conn.wait_sent()

    cfg = zerg.ReactorConfig(max_write_memory=4 << 20)
    peak = [0]
    with serving(handler, reactor=cfg) as srv:
        clients = _slow_readers(srv.port, 16, b"big")
        stop = threading.Event()

        def watch() -> None:
            while not stop.is_set():
                peak[0] = max(peak[0], srv.engine.stats()[0].write_segments_in_use)
                time.sleep(0.005)

        watcher = threading.Thread(target=watch)
        watcher.start()
        time.sleep(0.3)
        with srv.connect() as small:
            small.sendall(b"small")
            assert recv_exact(small, 10) == b"tiny reply"   # not starved by the big ones
        for c in clients:
            assert recv_exact(c, len(reply)) == reply
            c.close()
        stop.set()
        watcher.join(5)
    assert refusals, "the budget never pushed back"
    assert len(refusals) < 1000, "a refused writer spun instead of waiting in flush()"
    # 4 MiB budget + what writers under the pause mark and one write each may add.
    assert peak[0] * 32768 <= (4 << 20) + 16 * (256 * 1024 + 65536), peak[0]


def test_the_write_budget_pauses_a_protocol_and_resumes_it_when_there_is_room() -> None:
    """A Protocol writing 1 MiB replies in 256 KiB pieces to 24 slow readers
    under a 4 MiB budget: a refused write (even the first of a reply, with
    nothing of its own pending) pauses the protocol, ``resume_writing`` comes
    once the pool has room, and every reply arrives whole."""
    import threading

    from conftest import recv_exact

    reply = os.urandom(1 << 20)
    piece = 256 * 1024

    class Big(zerg.Protocol):
        def __init__(self) -> None:
            self.pos: dict[int, int] = {}
            self.paused: set[int] = set()
            self.refusals = 0
            self.resumes = 0

        def _pump(self, conn: zerg.Connection) -> None:
            pos = self.pos[conn.id]
            while conn.id not in self.paused and pos < len(reply):
                try:
                    conn.write(reply[pos:pos + piece])
                except zerg.WriteBufferFullError:
                    self.refusals += 1
                    break                       # pause_writing came with the refusal
                pos += piece
            self.pos[conn.id] = pos

        def data_received(self, conn: zerg.Connection, seq: zerg.BufferSequence) -> None:
            self.pos.setdefault(conn.id, 0)
            self._pump(conn)

        def pause_writing(self, conn: zerg.Connection) -> None:
            self.paused.add(conn.id)

        def resume_writing(self, conn: zerg.Connection) -> None:
            self.paused.discard(conn.id)
            self.resumes += 1
            self._pump(conn)

    proto = Big()
    cfg = zerg.ReactorConfig(max_write_memory=4 << 20)
    with serving(proto, reactor=cfg) as srv:
        clients = _slow_readers(srv.port, 24, b"go")
        time.sleep(0.3)
        got: dict[int, bytes] = {}

        def read(i: int, c: socket.socket) -> None:
            c.settimeout(20)
            got[i] = recv_exact(c, len(reply))

        readers = [threading.Thread(target=read, args=(i, c)) for i, c in enumerate(clients)]
        for t in readers:
            t.start()
        for t in readers:
            t.join(30)
        for c in clients:
            c.close()
    assert proto.refusals, "the budget never pushed back"
    assert len(got) == 24 and all(data == reply for data in got.values())
