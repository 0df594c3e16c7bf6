"""Correct, fully typed use of zerg's public API: ``mypy --strict`` must accept it.

Only type-checked (by tests/test_typing.py), never run; importing it has no side
effects.  ``assert_type`` pins the types the API promises, so loosening one (an
``Any`` creeping in, a lost ``| None``) fails the check even when the code still
"works".
"""

from __future__ import annotations

import asyncio
import io
import signal
from collections.abc import Awaitable, Callable
from typing import assert_type

import zerg
from zerg.adapters import BufferWriter, ConnectionStream, PipeReader, ReadResult

# -- configuration -----------------------------------------------------------------


def configure() -> zerg.EngineOptions:
    reactor = zerg.ReactorConfig(
        ring_entries=4096,
        recv_buffer_size=16384,
        buffer_ring_entries=1024,
        batch_cqes=512,
        max_connections=10_000,
        cq_timeout_ns=50_000_000,
        incremental_buffers=False,
        sqpoll=True,
        sq_thread_cpu=3,
        sq_thread_idle_ms=100,
        single_issuer=True,
        defer_taskrun=False,
        write_buffer_size=32768,
        max_write_buffer=16 << 20,
        loop_mode="enter_ext_arg",
        max_read_buffer=4 << 20,
        idle_timeout_s=30.0,
    )
    acceptor = zerg.AcceptorConfig(
        ring_entries=256, batch_sqes=64, cq_timeout_ns=10_000_000, ip_version="dual",
        sqpoll=False, handoff="queue",
    )
    opts = zerg.EngineOptions(
        ip="::", port=0, backlog=4096, reactor_count=2, reactor=reactor, acceptor=acceptor,
        shutdown_timeout_s=2.5, reuse_port=True, workers=4, worker_threads=8,
    )
    assert_type(opts.reactor, zerg.ReactorConfig)
    assert_type(opts.acceptor, zerg.AcceptorConfig)
    assert_type(opts.reactor.sq_thread_cpu, int | None)
    assert_type(opts.port, int)
    assert_type(opts.shutdown_timeout_s, float)
    assert_type(opts.reactor.idle_timeout_s, float | None)
    return opts


# -- level 1: ring items -----------------------------------------------------------


async def echo(conn: zerg.Connection) -> None:
    while True:
        snap = await conn.read()
        assert_type(snap, zerg.RingSnapshot)
        assert_type(snap.tail, int)
        if snap.is_closed:
            return
        while (item := conn.try_get_ring(snap)) is not None:
            assert_type(item, zerg.RingItem)
            assert_type(item.view, memoryview)
            assert_type(item.buffer_id, int)
            assert_type(item.length, int)
            conn.write(item.view)
            conn.return_ring(item)
        conn.reset_read()
        await conn.flush()


def ring_item_may_be_none(conn: zerg.Connection, snap: zerg.RingSnapshot) -> int:
    item = conn.try_get_ring(snap)
    assert_type(item, zerg.RingItem | None)
    return 0 if item is None else item.length


# -- level 2: BufferSequence -------------------------------------------------------


async def lines(conn: zerg.Connection) -> None:
    while not (snap := await conn.read()).is_closed:
        seq = conn.get_sequence(snap)
        assert_type(seq, zerg.BufferSequence)
        pos = 0
        while (nl := seq.find(b"\n", pos)) >= 0:
            line = seq[pos:nl]
            assert_type(line, zerg.BufferSequence)
            conn.write(line)
            conn.write(b"\n")
            pos = nl + 1
        seq.advance(pos)
        seq.release()
        await conn.flush()


def sequence_api(data: bytes) -> bytes:
    seq = zerg.BufferSequence(data)
    chained = zerg.BufferSequence([b"ab", bytearray(b"cd"), memoryview(b"ef")])
    assert_type(len(seq), int)
    assert_type(bool(seq), bool)
    assert_type(seq[0], int)
    assert_type(seq[-1], int)
    assert_type(seq[1:3], zerg.BufferSequence)
    assert_type(seq.find(b"\r\n"), int)
    assert_type(seq.find(10, 1, None), int)
    assert_type(seq.find(memoryview(b"x"), start=0, end=5), int)
    assert_type(seq.index(b"b"), int)
    assert_type(seq.startswith(b"GET "), bool)
    assert_type(seq.startswith((b"GET ", b"HEAD ")), bool)
    assert_type(b"a" in seq, bool)
    assert_type(seq == b"abc", bool)
    assert_type(seq.is_single_segment, bool)
    assert_type(seq.first, memoryview)
    target = bytearray(16)
    assert_type(seq.copy_into(target), int)
    for segment in chained:
        assert_type(segment, memoryview)
    assert_type(bytes(seq), bytes)
    return seq.tobytes() + chained.tobytes()


# -- level 3: adapters -------------------------------------------------------------


async def pipe_reader(conn: zerg.Connection) -> None:
    reader = PipeReader(conn)
    assert_type(reader.connection, zerg.Connection)
    try:
        while True:
            result = await reader.read()
            assert_type(result, ReadResult)
            buf = result.buffer
            assert_type(buf, zerg.BufferSequence)
            assert_type(result.is_completed, bool)
            assert_type(result.is_canceled, bool)
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                reader.advance_to(0, len(buf))
            else:
                conn.write(buf[:end])
                reader.advance_to(end + 4)
                await conn.flush()
            if result.is_completed:
                break
        maybe = reader.try_read()
        assert_type(maybe, ReadResult | None)
        if maybe is not None:
            reader.advance_to(0, examined=len(maybe.buffer))
        reader.cancel_pending_read()
    finally:
        reader.complete()


def blocking(conn: zerg.Connection) -> None:
    stream = ConnectionStream(conn, timeout=30.0)
    assert_type(stream.connection, zerg.Connection)
    assert_type(stream.readable(), bool)
    assert_type(stream.writable(), bool)
    assert_type(stream.seekable(), bool)
    rfile = io.BufferedReader(stream, 65536)
    wfile = io.BufferedWriter(stream)
    text = io.TextIOWrapper(io.BufferedWriter(stream), encoding="utf-8")
    pair = io.BufferedRWPair(stream, stream)
    pair.write(pair.read1(100))
    for line in iter(rfile.readline, b""):
        wfile.write(line.upper())
    wfile.flush()
    text.write("bye\n")
    buf = bytearray(4096)
    got = stream.readinto(buf)
    if got:
        stream.write(memoryview(buf)[:got])
    stream.flush()
    writer = BufferWriter(conn)
    writer.write(b"done\n")
    writer.flush_sync()
    stream.close()


async def buffer_writer(conn: zerg.Connection) -> None:
    writer = BufferWriter(conn)
    mem = writer.get_memory(5)
    assert_type(mem, memoryview)
    mem[:5] = b"hello"
    writer.advance(5)
    writer.write(b" world" * 10_000)
    assert_type(writer.written, int)
    await writer.flush()
    out = conn.get_buffer(64)
    assert_type(out, memoryview)
    out[:2] = b"\r\n"
    conn.advance(2)
    conn.flush_nowait()
    await conn.flush()


# -- the Protocol fast path --------------------------------------------------------


class Echo(zerg.Protocol):
    def __init__(self) -> None:
        self.open = 0

    def connection_made(self, conn: zerg.Connection) -> None:
        self.open += 1
        conn.context = {"requests": 0}

    def data_received(self, conn: zerg.Connection, seq: zerg.BufferSequence) -> int | None:
        nl = seq.find(b"\n")
        if nl < 0:
            return 0                # keep everything for the next call
        conn.write(seq[:nl + 1])
        return nl + 1

    def eof_received(self, conn: zerg.Connection) -> bool:
        return False

    def connection_lost(self, conn: zerg.Connection, exc: BaseException | None) -> None:
        self.open -= 1


class Discard(zerg.Protocol):
    def data_received(self, conn: zerg.Connection, seq: zerg.BufferSequence) -> None:
        return None                 # a narrower return type is a valid override


# -- connections -------------------------------------------------------------------


async def connection_api(conn: zerg.Connection) -> None:
    assert_type(conn.id, int)
    assert_type(conn.fd, int)
    assert_type(conn.bytes_in, int)
    assert_type(conn.bytes_out, int)
    assert_type(conn.has_data, bool)
    assert_type(conn.is_closed, bool)
    assert_type(conn.error, OSError | None)
    assert_type(conn.slots_held, int)
    assert_type(conn.pending_write_bytes, int)
    assert_type(conn.is_receiving_paused, bool)
    try:
        conn.write(b"x" * 1024)
        conn.write(bytearray(b"y"))
        conn.write(memoryview(b"z"))
        conn.write(zerg.BufferSequence(b"seq"))
    except zerg.WriteBufferFullError:
        await conn.flush()
    loop = asyncio.get_running_loop()
    await asyncio.wait_for(conn.flush(), timeout=5.0)
    loop.call_later(1.0, conn.close)
    conn.discard_input()
    conn.abort()


# -- engine ------------------------------------------------------------------------


def handlers() -> list[zerg.Handler]:
    async_handler: zerg.AsyncHandler = echo
    sync_handler: zerg.SyncHandler = blocking
    also_async: Callable[[zerg.Connection], Awaitable[None]] = lines
    return [async_handler, sync_handler, also_async, Echo(), pipe_reader, buffer_writer]


def serve_forever() -> list[zerg.ReactorStats]:
    opts = configure()
    with zerg.Engine(opts) as engine:
        assert_type(engine, zerg.Engine)
        engine.listen()
        assert_type(engine.port, int)
        assert_type(engine.is_serving, bool)
        signal.signal(signal.SIGUSR1, lambda signum, frame: engine.stop())
        engine.serve(echo)
    engine.close()
    stats = engine.stats()
    assert_type(stats, list[zerg.ReactorStats])
    for s in stats:
        assert_type(s.index, int)
        assert_type(s.connections, int)
        assert_type(s.slots_in_use, int)
        assert_type(s.bytes_in, int)
        assert_type(s.waits, int)
    acceptor = engine.acceptor_stats()
    assert_type(acceptor, zerg.AcceptorStats | None)
    if acceptor is not None:
        assert_type(acceptor.accepted, int)
        assert_type(acceptor.handed_by_msg_ring + acceptor.handed_by_queue, int)
    assert_type(engine.worker_pids(), list[int])
    return stats


def one_liners() -> None:
    zerg.run(echo)
    zerg.run(blocking, zerg.EngineOptions(port=8081))
    zerg.run(Echo(), options=zerg.EngineOptions(ip="127.0.0.1", port=0))
    zerg.Engine().serve(lines)


def kernel() -> str:
    feats = zerg.probe()
    assert_type(feats, zerg.KernelFeatures)
    assert_type(feats.release, tuple[int, int])
    assert_type(feats.opcodes, frozenset[str])
    assert_type(feats.error, int)
    assert_type(feats.io_uring_disabled, int)
    try:
        zerg.Engine().serve(echo)
    except zerg.UnsupportedKernelError as exc:
        assert_type(exc.feature, str)
        assert_type(exc.needs, str)
        return f"{exc.feature}: {exc.needs}"
    return "ok" if feats.release >= (6, 1) else "old"
