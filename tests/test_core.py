"""The connection core through the sans-IO seam: synthetic completions, no kernel.

A ``FakeHost`` stands in for the reactor (``zerg._seam.ConnectionHost``): its
submitter records the requests a connection makes, its slots are a model of
``RecvSlots`` that fails on a slot given back twice or never taken, and the
test plays the kernel by calling the sink methods (``on_recv``,
``on_recv_end``, ``on_send``) the way the reactor's dispatch would.
Hypothesis drives random sequences of receives, ends, sends, consumption
and closes, and checks that every slot comes back exactly once and every
byte is delivered once, in order -- at level 1, with ``PipeReader`` and on
the Protocol fast path.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import threading
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import zerg
from zerg._buffers import BufferSequence
from zerg._config import PipeOptions
from zerg._connection import Connection, ProtocolConnection
from zerg._protocol import Protocol
from zerg._recvstate import RecvAction, RecvEvent, RecvState, end_event, transition
from zerg._ring import IoVec, Op, decode
from zerg._seam import CompletionSink, Traffic, give_back_keys
from zerg._slab import SlabPool
from zerg._uring import ffi

SLOT = 64
SLOTS = 32
SEGMENT = 512


class FakeSubmitter:
    """Records requests instead of preparing SQEs."""

    def __init__(self) -> None:
        self.recvs = 0
        self.cancels: list[int] = []
        # One entry per send in flight: its pieces (base, offset, length) --
        # several for a gathered send (sendv).
        self.sends: list[list[tuple[Any, int, int]]] = []
        self.gathered = 0                             # gathered sends (sendv)
        self.resends = 0                              # sends after -EAGAIN
        self.closed_fds: list[int] = []

    def recv(self, fd: int, user_data: int) -> None:
        assert decode(user_data)[0] is Op.RECV
        self.recvs += 1

    def send(self, fd: int, base: object, offset: int, length: int, user_data: int) -> int:
        assert decode(user_data)[0] is Op.SEND and length > 0
        self.sends.append([(base, offset, length)])
        return 0

    def sendv(self, fd: int, iov: IoVec, user_data: int) -> int:
        """A gathered send: recorded as one send per piece, in order."""
        assert decode(user_data)[0] is Op.SEND and len(iov.pieces) > 1
        assert all(length > 0 for _, _, length in iov.pieces)
        self.sends.append(list(iov.pieces))
        self.gathered += 1
        return 0

    def resend(self, fd: int, base: object, offset: int, length: int, user_data: int) -> int:
        self.resends += 1
        return self.send(fd, base, offset, length, user_data)

    def resendv(self, fd: int, iov: IoVec, user_data: int) -> int:
        self.resends += 1
        return self.sendv(fd, iov, user_data)

    def check(self, ret: int, what: str) -> None:
        raise AssertionError(f"{what} failed: {ret}")

    def cancel(self, target: int) -> None:
        self.cancels.append(target)

    def close(self, fd: int) -> None:
        self.closed_fds.append(fd)


class FakeSlots:
    """A model of RecvSlots: keys are slot ids; each must come back exactly once."""

    keys_are_slots = True
    total = SLOTS
    slot_size = SLOT

    def __init__(self) -> None:
        self.mem = bytearray(SLOT * SLOTS)
        self._view = memoryview(self.mem).toreadonly()
        self.recv_view = self._view
        self.free = list(range(SLOTS))
        self.lent: set[int] = set()
        self.parked: list[CompletionSink] = []
        self.pins: dict[int, int] = {}
        self.deferred: set[int] = set()

    def pin(self, key: int) -> None:
        assert key in self.lent and key not in self.deferred, f"pinning a free slot {key}"
        self.pins[key] = self.pins.get(key, 0) + 1

    def unpin(self, key: int) -> None:
        left = self.pins.pop(key) - 1
        if left:
            self.pins[key] = left
        elif key in self.deferred:
            self.deferred.remove(key)
            self.give_back(key)

    def fill(self, data: bytes) -> int:
        key = self.free.pop(0)
        self.mem[key * SLOT:key * SLOT + len(data)] = data
        self.lent.add(key)
        return key

    def view(self, key: int, n: int) -> memoryview:
        return self._view[key * SLOT:key * SLOT + n]

    def slot_of(self, key: int) -> int:
        return key

    def give_back(self, key: int) -> None:
        assert key in self.lent, f"slot {key} given back twice (or never handed out)"
        if self.pins.get(key):
            assert key not in self.deferred, f"slot {key} given back twice while pinned"
            self.deferred.add(key)      # a send still reads it: back at the last unpin
            return
        self.lent.remove(key)
        self.mem[key * SLOT:(key + 1) * SLOT] = b"\xee" * SLOT    # poison: stale reads show
        self.free.append(key)

    def park(self, sink: CompletionSink) -> None:
        self.parked.append(sink)

    @property
    def out(self) -> int:
        return len(self.lent)


class FakeHost:
    def __init__(self, max_read_buffer: int = 1 << 20, max_write_buffer: int = 1 << 16) -> None:
        self.submitter = FakeSubmitter()
        self.slots = FakeSlots()
        self.give_back_keys = functools.partial(give_back_keys, self.slots)
        self.pool = SlabPool(SLOT, 1, SEGMENT)
        self.options = PipeOptions(
            slot_size=SLOT, segment_size=SEGMENT, max_read_buffer=max_read_buffer,
            resume_read_at=max_read_buffer // 2, max_write_buffer=max_write_buffer,
            stream_high_water=4 * SEGMENT,
        )
        self.loop = asyncio.new_event_loop()
        self.now = 0.0
        self.thread_id = threading.get_ident()
        self.traffic = Traffic()
        self.sinks: dict[int, CompletionSink] = {}
        self.dirty: list[CompletionSink] = []
        self.finished: list[int] = []
        self.failures: list[BaseException] = []

    def opened(self, sink: CompletionSink) -> None:
        self.sinks[sink.id] = sink

    def want_send(self, sink: CompletionSink) -> None:
        self.dirty.append(sink)

    def closed(self, sink: CompletionSink) -> None:
        self.finished.append(sink.id)
        del self.sinks[sink.id]

    def handshake_failed(self, sink: CompletionSink) -> None:
        pass

    def sink_failed(self, sink: CompletionSink, exc: BaseException) -> None:
        self.failures.append(exc)
        sink.abort()

    def proxied_peer(self, conn_id: int) -> tuple[str, int] | None:
        return None                                 # no PROXY protocol here

    # -- playing the kernel ------------------------------------------------
    def deliver(self, sink: CompletionSink, data: bytes) -> None:
        sink.on_recv(self.slots.fill(data), len(data))

    def complete_send(self, sink: CompletionSink, take: int | None = None) -> bytes:
        """Complete the oldest send in flight (``take`` bytes of it); the bytes sent."""
        pieces = self.submitter.sends.pop(0)
        length = sum(n for _, _, n in pieces)
        n = length if take is None else min(take, length)
        data = b"".join(bytes(ffi.buffer(base + off, size)) for base, off, size in pieces)[:n]
        sink.on_send(n)
        return data

    def close(self) -> None:
        self.loop.close()


def make(host: FakeHost, cls: type[Connection] = Connection, *args: Any) -> Connection:
    conn = cls(host, 1, 99, *args)
    conn.start()
    assert host.submitter.recvs == 1
    return conn


def finish(host: FakeHost, conn: Connection) -> None:
    """Close and let the kernel answer everything still in flight."""
    conn.close()
    if conn.id in host.sinks:                  # the recv (or a send) is still ours
        while host.submitter.sends:
            host.complete_send(conn)
        if conn.id in host.sinks and host.submitter.cancels:
            conn.on_recv_end(-errno.ECANCELED)
    assert conn.id in host.finished
    assert host.submitter.closed_fds == [99]
    assert not host.slots.lent, f"slots never given back: {sorted(host.slots.lent)}"
    assert host.pool.segments_in_use == 0


chunks = st.lists(st.binary(min_size=1, max_size=SLOT), min_size=1, max_size=12)


# ---------------------------------------------------------------- level 1


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["recv", "take", "return"]), st.binary(min_size=1,
                                                                                max_size=SLOT)),
                max_size=40))
def test_level1_every_byte_once_in_order_every_slot_back_once(
        ops: list[tuple[str, bytes]]) -> None:
    host = FakeHost()
    conn = make(host)
    sent = bytearray()
    got = bytearray()
    taken: list[Any] = []
    for op, data in ops:
        if op == "recv" and len(host.slots.free) > 0:
            host.deliver(conn, data)
            sent += data
        elif op == "take" and conn.has_data:
            snap = host.loop.run_until_complete(conn.read())     # data waits: no suspension
            while (item := conn.try_get_ring(snap)) is not None:
                got += item.view
                taken.append(item)
        elif op == "return" and taken:
            conn.return_ring(taken.pop(0))
    if conn.has_data:
        last = host.loop.run_until_complete(conn.read())
        while (item := conn.try_get_ring(last)) is not None:
            got += item.view
            taken.append(item)
    assert bytes(got) == bytes(sent)
    assert conn.slots_held == sum(1 for item in taken if item.buffer_id >= 0)
    assert host.slots.out <= SLOTS - SLOTS // 4       # past that, handed-out items are copies
    if taken:
        conn.return_ring(taken[0])
        with pytest.raises(ValueError, match="already returned"):
            conn.return_ring(taken[0])
    finish(host, conn)
    host.close()


def test_level1_hands_out_copies_once_three_quarters_of_the_ring_are_held() -> None:
    """A handler that keeps every item: the first 24 of 32 slots are lent, the
    rest arrive as copies whose slots went back at once (so the ring never
    runs dry because of keepers); bytes are the same either way."""
    host = FakeHost()
    conn = make(host)
    taken = []
    for i in range(SLOTS + 8):
        data = bytes([i]) * (i + 1)
        host.deliver(conn, data)
        snap = host.loop.run_until_complete(conn.read())
        item = conn.try_get_ring(snap)
        assert item is not None and bytes(item.view) == data
        taken.append(item)
    mark = SLOTS - SLOTS // 4
    assert [item.buffer_id >= 0 for item in taken] == [True] * mark + [False] * (SLOTS + 8 - mark)
    assert host.slots.out == mark and conn.slots_held == mark
    for item in taken:
        conn.return_ring(item)
    assert host.slots.out == 0
    finish(host, conn)
    host.close()


def test_level1_eof_after_every_byte() -> None:
    host = FakeHost()
    conn = make(host)
    host.deliver(conn, b"last words")
    conn.on_recv_end(0)
    snap = host.loop.run_until_complete(conn.read())
    assert not snap.is_closed
    item = conn.try_get_ring(snap)
    assert item is not None and bytes(item.view) == b"last words"
    conn.return_ring(item)
    assert host.loop.run_until_complete(conn.read()).is_closed
    assert conn.error is None
    finish(host, conn)
    host.close()


def test_reset_reports_the_error() -> None:
    host = FakeHost()
    conn = make(host)
    conn.on_recv_end(-errno.ECONNRESET)
    assert conn.is_closed and isinstance(conn.error, ConnectionResetError)
    finish(host, conn)
    host.close()


# ------------------------------------------------------------- PipeReader


@settings(max_examples=150, deadline=None)
@given(chunks, st.lists(st.tuples(st.booleans(), st.integers(0, 3 * SLOT),
                                  st.integers(0, 3 * SLOT)), max_size=30))
def test_pipe_input_every_byte_once_in_order(
        parts: list[bytes], steps: list[tuple[bool, int, int]]) -> None:
    host = FakeHost()
    conn = make(host)
    pipe = conn.input
    model = b"".join(parts)
    consumed = bytearray()
    pending = list(parts)

    def read_step(consume: int, extra: int) -> bool:
        result = pipe.try_read()
        if result is None:
            return False
        buf = result.buffer
        assert buf.tobytes() == model[len(consumed):len(consumed) + len(buf)]
        n = min(consume, len(buf))
        examined = min(n + extra, len(buf))
        consumed.extend(buf[:n].tobytes())
        pipe.advance_to(n, examined)
        return True

    for deliver, consume, extra in steps:
        if deliver and pending:
            host.deliver(conn, pending.pop(0))
        elif not read_step(consume, extra):
            # Everything was examined: the next read waits for new bytes.
            assert pipe.try_read() is None
    while pending:
        host.deliver(conn, pending.pop(0))
    while len(consumed) < len(model):
        if not read_step(len(model), 0):
            # All of it examined: only new bytes wake the reader (.NET semantics).
            host.deliver(conn, b"+")
            model += b"+"
    assert bytes(consumed) == model
    assert pipe.try_read() is None
    finish(host, conn)
    host.close()


def test_pipe_input_compacts_a_trickle() -> None:
    host = FakeHost()
    conn = make(host)
    pipe = conn.input
    for i in range(20):                     # a peer trickling one byte per recv
        host.deliver(conn, bytes([65 + i]))
        result = pipe.try_read()
        assert result is not None
        pipe.advance_to(0, len(result.buffer))
    # Many mostly empty slots were copied off the ring: few stay held.
    assert host.slots.out <= host.options.compact_min_slots + 1
    result = pipe.try_read()
    assert result is None
    host.deliver(conn, b"!")
    result = pipe.try_read()
    assert result is not None and result.buffer.tobytes() == bytes(range(65, 85)) + b"!"
    pipe.advance_to(len(result.buffer))
    finish(host, conn)
    host.close()


# ----------------------------------------------------------- back-pressure


def test_pause_cancels_the_receive_and_resume_rearms_it() -> None:
    host = FakeHost(max_read_buffer=4 * SLOT)
    conn = make(host)
    for _ in range(5):
        host.deliver(conn, b"x" * SLOT)
    assert conn.is_receiving_paused
    assert host.submitter.cancels, "pausing cancels the multishot recv"
    # Untaken items were moved off the shared ring.
    assert not host.slots.lent
    host.deliver(conn, b"y" * 10)                       # in flight before the cancel landed
    conn.on_recv_end(-errno.ECANCELED)                  # the cancel lands
    assert conn.is_receiving_paused and host.submitter.recvs == 1
    snap = host.loop.run_until_complete(conn.read())
    got = b""
    while (item := conn.try_get_ring(snap)) is not None:
        got += bytes(item.view)
        conn.return_ring(item)
    assert got == b"x" * 5 * SLOT + b"y" * 10
    assert not conn.is_receiving_paused and host.submitter.recvs == 2   # re-armed
    finish(host, conn)
    host.close()


def test_nobufs_parks_until_slots_are_back() -> None:
    host = FakeHost()
    conn = make(host)
    conn.on_recv_end(-errno.ENOBUFS)
    assert host.slots.parked == [conn] and host.submitter.recvs == 1
    conn.on_slots_free()
    assert host.submitter.recvs == 2
    finish(host, conn)
    host.close()


# ------------------------------------------------------------ output pipe


@settings(max_examples=150, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=3 * SEGMENT), min_size=1, max_size=8),
       st.lists(st.integers(1, 2 * SEGMENT), max_size=30))
def test_sends_carry_every_byte_once_in_order(writes: list[bytes], takes: list[int]) -> None:
    host = FakeHost()
    conn = make(host)
    wire = bytearray()
    for data in writes:
        conn.write(data)
    conn.flush_nowait()
    takes_left = list(takes)
    while host.submitter.sends:
        wire += host.complete_send(conn, takes_left.pop(0) if takes_left else None)
    assert bytes(wire) == b"".join(writes)
    assert conn.pending_write_bytes == 0 and conn.bytes_out == len(wire)
    finish(host, conn)
    host.close()


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(st.tuples(st.just("write"), st.lists(st.binary(min_size=1,
                                                                         max_size=2 * SEGMENT),
                                                               min_size=1, max_size=2)),
                          st.tuples(st.just("forward"), chunks),
                          st.tuples(st.just("again"), st.just([])),
                          st.tuples(st.just("send"), st.lists(st.integers(1, 3 * SEGMENT),
                                                              max_size=1))),
                max_size=25))
def test_forwarded_slots_and_writes_leave_in_order_and_every_slot_comes_back(
        ops: list[tuple[str, list[Any]]]) -> None:
    """forward() stages received slots for sending without a copy, between
    ordinary writes; partial and gathered sends in any pattern, and sends the
    kernel hands back with -EAGAIN (a full non-blocking socket).  The bytes
    leave in the order they were staged, and a slot given back while a send
    reads it (the sequence is released at once) goes back only after that
    send: FakeSlots poisons a slot the moment it really goes back, so any
    early return shows as wrong bytes on the wire."""
    host = FakeHost(max_write_buffer=1 << 20)
    conn = make(host)
    expect = bytearray()
    wire = bytearray()
    for op, arg in ops:
        if op == "write":
            for data in arg:
                conn.write(data)
                expect += data
        elif op == "forward":
            if len(host.slots.free) < len(arg):
                while host.submitter.sends:     # the ring is held by sends: let them finish
                    wire += host.complete_send(conn)
            for data in arg:
                host.deliver(conn, data)
            seq = conn.get_sequence(host.loop.run_until_complete(conn.read()))
            conn.forward(seq)
            seq.release()                       # at once: the send must keep the slots
            expect += b"".join(arg)
        elif op == "again" and host.submitter.sends:
            resends = host.submitter.resends
            host.submitter.sends.pop(0)         # the kernel: no room, nothing taken
            conn.on_send(-errno.EAGAIN)
            assert host.submitter.resends == resends + 1     # the same bytes, when writable
        elif host.submitter.sends:
            wire += host.complete_send(conn, arg[0] if arg else None)
        conn.flush_nowait()
    conn.flush_nowait()
    while host.submitter.sends:
        wire += host.complete_send(conn)
    assert bytes(wire) == bytes(expect)
    assert not host.slots.pins and not host.slots.deferred
    finish(host, conn)
    host.close()


def test_segments_waiting_behind_one_another_leave_in_one_gathered_send() -> None:
    """Three segments staged at once: one send (sendmsg) takes all three; a
    short completion resumes mid-segment."""
    host = FakeHost(max_write_buffer=1 << 20)
    conn = make(host)
    data = bytes(range(256)) * 6                # 1536 bytes: three 512-byte segments
    conn.write(data)
    conn.flush_nowait()
    assert host.submitter.gathered == 1 and len(host.submitter.sends) == 1
    assert [n for _, _, n in host.submitter.sends[0]] == [512, 512, 512]
    wire = host.complete_send(conn, 700)        # a short send: 1.37 segments
    while host.submitter.sends:
        wire += host.complete_send(conn)
    assert wire == data and conn.pending_write_bytes == 0
    finish(host, conn)
    host.close()


def test_failed_send_fails_later_writes_and_flushes() -> None:
    host = FakeHost()
    conn = make(host)
    conn.write(b"hello")
    fut = host.loop.create_task(conn.wait_sent())
    host.loop.run_until_complete(asyncio.sleep(0))
    host.submitter.sends.pop(0)
    conn.on_send(-errno.EPIPE)
    with pytest.raises(BrokenPipeError):
        host.loop.run_until_complete(fut)
    with pytest.raises(BrokenPipeError):
        host.loop.run_until_complete(conn.flush())
    with pytest.raises(BrokenPipeError):
        conn.write(b"more")
    finish(host, conn)
    host.close()


def test_flush_waits_only_above_the_pause_mark() -> None:
    """flush() is asyncio's drain(): no suspension under the pause mark (64 KiB);
    above it, back-pressure until pending bytes fell to the resume mark (16 KiB)."""
    host = FakeHost(max_write_buffer=1 << 20)
    conn = make(host)
    conn.write(b"x" * 1000)
    coro = conn.flush()
    with pytest.raises(StopIteration):       # completed without suspending
        coro.send(None)
    assert len(host.submitter.sends) == 1     # but the send started
    wire = host.complete_send(conn)
    conn.write(b"y" * 100_000)
    task = host.loop.create_task(conn.flush())
    host.loop.run_until_complete(asyncio.sleep(0))
    assert not task.done()
    while conn.pending_write_bytes > 16384:
        assert not task.done()
        wire += host.complete_send(conn)
        host.loop.run_until_complete(asyncio.sleep(0))
    assert task.done() and task.exception() is None
    done = host.loop.create_task(conn.wait_sent())   # wait_sent: every byte taken
    while host.submitter.sends:
        host.loop.run_until_complete(asyncio.sleep(0))
        wire += host.complete_send(conn)
    host.loop.run_until_complete(done)
    assert wire == b"x" * 1000 + b"y" * 100_000 and conn.pending_write_bytes == 0
    finish(host, conn)
    host.close()


def test_refused_write_then_flush_makes_room() -> None:
    """After WriteBufferFullError, ``await flush()`` waits until every byte is out,
    so retrying the write succeeds (even when the cap is under the pause mark)."""
    host = FakeHost(max_write_buffer=1024)
    conn = make(host)
    conn.write(b"a" * 1000)
    with pytest.raises(zerg.WriteBufferFullError, match="max_write_buffer=1024"):
        conn.write(b"b" * 100)
    assert conn.pending_write_bytes == 1000         # nothing of the refused write staged
    task = host.loop.create_task(conn.flush())
    host.loop.run_until_complete(asyncio.sleep(0))
    assert not task.done()                          # 1000 <= 64 KiB, but a write was refused
    wire = b""
    while host.submitter.sends:                     # two segments: two sends
        assert not task.done()
        wire += host.complete_send(conn)
        host.loop.run_until_complete(asyncio.sleep(0))
    assert task.done()
    conn.write(b"b" * 100)
    conn.flush_nowait()
    wire += host.complete_send(conn)
    assert wire == b"a" * 1000 + b"b" * 100
    finish(host, conn)
    host.close()


def test_close_sends_staged_bytes_first_abort_drops_them() -> None:
    host = FakeHost()
    conn = make(host)
    conn.write(b"bye")
    conn.close()
    assert conn.id in host.sinks            # recv and send still in the kernel
    assert host.complete_send(conn) == b"bye"
    conn.on_recv_end(-errno.ECANCELED)
    assert host.finished == [1]

    host2 = FakeHost()
    conn2 = make(host2)
    conn2.write(b"never")
    conn2.abort()
    assert not host2.submitter.sends and conn2.pending_write_bytes == 0
    conn2.on_recv_end(-errno.ECANCELED)
    assert host2.finished == [1] and host2.pool.segments_in_use == 0
    host.close()
    host2.close()


# --------------------------------------------------------- Protocol sink


class Recorder(Protocol):
    def __init__(self, consume: list[int]) -> None:
        self.consume = consume
        self.got = bytearray()
        self.eof = False
        self.lost: list[BaseException | None] = []

    def data_received(self, conn: Connection, seq: BufferSequence) -> int | None:
        n = min(self.consume.pop(0) if self.consume else len(seq), len(seq))
        self.got += seq[:n].tobytes()
        conn.write(seq[:n])
        return n

    def eof_received(self, conn: Connection) -> bool:
        self.eof = True
        return False

    def connection_lost(self, conn: Connection, exc: BaseException | None) -> None:
        self.lost.append(exc)


@settings(max_examples=150, deadline=None)
@given(chunks, st.lists(st.integers(0, 3 * SLOT), max_size=20))
def test_protocol_sink_delivers_every_byte_once(parts: list[bytes], consume: list[int]) -> None:
    host = FakeHost()
    proto = Recorder(list(consume))
    conn = make(host, ProtocolConnection, proto)
    wire = bytearray()
    for part in parts:
        host.deliver(conn, part)
        for sink in host.dirty:
            sink.send_pending()
        host.dirty.clear()
        while host.submitter.sends:
            wire += host.complete_send(conn)
    model = b"".join(parts)
    assert model.startswith(bytes(proto.got))
    assert bytes(wire) == bytes(proto.got)          # echoed exactly what was consumed
    conn.on_recv_end(0)
    assert proto.eof and host.finished == [1] and proto.lost == [None]
    assert not host.slots.lent and host.pool.segments_in_use == 0
    host.close()


def test_protocol_bad_return_value_aborts_that_connection() -> None:
    class Bad(Protocol):
        def data_received(self, conn: Connection, seq: BufferSequence) -> int | None:
            return "all"  # type: ignore[return-value]

    host = FakeHost()
    conn = make(host, ProtocolConnection, Bad())
    host.deliver(conn, b"abc")
    assert isinstance(host.failures[0], TypeError)
    conn.on_recv_end(-errno.ECANCELED)
    assert host.finished == [1] and not host.slots.out
    host.close()


# ---------------------------------------------------------- receive table


def test_receive_table_covers_every_reachable_pair() -> None:
    """Walk every event from every state reached from IDLE: no pair raises."""
    seen = {RecvState.IDLE}
    todo = [RecvState.IDLE]
    armed_events = [RecvEvent.END_RETRY, RecvEvent.END_NOBUFS, RecvEvent.END_EOF]
    while todo:
        state = todo.pop()
        events = [RecvEvent.START] if state is RecvState.IDLE else [
            RecvEvent.PAUSE, RecvEvent.RESUME, RecvEvent.SLOTS, RecvEvent.CLOSE]
        if state in (RecvState.ARMED, RecvState.CANCELLING, RecvState.REARMING,
                     RecvState.STOPPING):
            events += armed_events
        for event in events:
            nxt, _ = transition(state, event)
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    assert seen == set(RecvState) - set()


def test_receive_table_rows() -> None:
    assert transition(RecvState.ARMED, RecvEvent.PAUSE) == (RecvState.CANCELLING,
                                                            RecvAction.CANCEL)
    assert transition(RecvState.CANCELLING, RecvEvent.RESUME)[0] is RecvState.REARMING
    assert transition(RecvState.REARMING, RecvEvent.END_RETRY) == (RecvState.ARMED,
                                                                   RecvAction.ARM)
    assert transition(RecvState.PARKED, RecvEvent.SLOTS) == (RecvState.ARMED, RecvAction.ARM)
    assert end_event(-errno.ECANCELED, RecvState.CANCELLING) is RecvEvent.END_RETRY
    assert end_event(-errno.ECANCELED, RecvState.ARMED) is RecvEvent.END_EOF
    with pytest.raises(RuntimeError, match="zerg bug"):
        transition(RecvState.IDLE, RecvEvent.END_EOF)
