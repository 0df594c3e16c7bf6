"""The C connection fast path (native/connfast.c) against its Python reference.

With the extension, ``ProtocolConnection.on_recv/write/send_pending/on_send``
and ``Connection.write/_kick_send/on_send`` are C methods that handle the
common case and call the Python method they replaced for everything else.
Hypothesis plays the same random script -- receives, a Protocol that
consumes some or all and echoes, writes from outside the callback, partial
and failed send completions, reading paused and resumed, close and abort --
through the sans-IO seam once with the C methods and once with the Python
ones put back, and compares everything a user can see: what
``data_received`` got, the bytes on the wire, pending bytes, slots held,
counters, errors and the close.  A second script does the same for level 1
on a plain ``Connection``: receives, reads and ring items taken, echoed and
returned (twice, too), sends completed, pause, resume and close; a third
for ``PipeReader``: reads, advances in range and out, buffers used after
they were consumed, cancel, complete and close; a fourth for level 2:
owning sequences taken, advanced, released, sliced, echoed, and slices used
after their bytes went back.

With ``ZERG_NO_EXTENSIONS=1`` the classes must carry the Python methods
only, and the comparison runs in a child process with the extension.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
from collections.abc import Iterator
from typing import Any

import pytest
from fastpath_check import agree, assert_methods, run_with_extension, swapped
from hypothesis import given, settings
from hypothesis import strategies as st
from test_core import SLOT, FakeHost, make

from zerg import _native
from zerg._buffers import BufferSequence
from zerg._connection import Connection, ProtocolConnection
from zerg._errors import WriteBufferFullError
from zerg._inputpipe import InputPipe
from zerg._protocol import Protocol

REPLACED = {BufferSequence: ("advance", "release", "__iter__"),
            InputPipe: ("try_read", "advance_to", "arm_waiter"),
            ProtocolConnection: ("on_recv", "write", "send_pending", "on_send"),
            Connection: ("write", "_kick_send", "on_send", "on_recv", "try_get_ring",
                         "return_ring", "get_sequence")}


@contextlib.contextmanager
def reference_methods() -> Iterator[None]:
    """The Python methods back in the classes for the duration."""
    sp = _native.speedups
    assert sp is not None
    with contextlib.ExitStack() as stack:
        for cls, names in REPLACED.items():
            for name in names:
                stack.enter_context(
                    swapped(cls, name, sp.connection_reference(cls.__name__, name)))
        yield


class Scripted(Protocol):
    """Consumes and answers as the script says; records what it was given."""

    def __init__(self, plan: list[tuple[int, str]]) -> None:
        self.plan = plan
        self.trace: list[Any] = []

    def data_received(self, conn: Connection, seq: BufferSequence) -> int | None:
        take, how = self.plan.pop(0) if self.plan else (len(seq), "echo")
        self.trace.append(("got", seq.tobytes()))
        n = min(take, len(seq))
        if how == "raise":
            raise RuntimeError("handler failed")
        try:
            if how == "echo":
                conn.write(seq[:n] if n < len(seq) else seq)
            elif how == "bytes":
                conn.write(b"r" * (n + 1))
            elif how == "big":
                conn.write(b"B" * 700)          # spans write segments
            elif how == "view":
                conn.write(memoryview(bytearray(b"v" * (n + 1))))
            elif how == "strided":
                conn.write(memoryview(b"0123456789")[::2])
            elif how == "bytearray":
                conn.write(bytearray(b"a" * n))
            elif how == "words":
                conn.write(memoryview(b"\x01\x00\x02\x00").cast("H"))
        except (WriteBufferFullError, ConnectionError) as exc:
            self.trace.append(("write-error", type(exc).__name__))
        if how == "none":
            return None
        return n

    def pause_writing(self, conn: Connection) -> None:
        self.trace.append("pause_writing")

    def resume_writing(self, conn: Connection) -> None:
        self.trace.append("resume_writing")

    def connection_lost(self, conn: Connection, exc: BaseException | None) -> None:
        self.trace.append(("lost", type(exc).__name__ if exc else None))


step = st.one_of(
    st.tuples(st.just("recv"), st.binary(min_size=1, max_size=SLOT)),
    st.tuples(st.just("pump"), st.none()),
    st.tuples(st.just("complete"), st.one_of(st.none(), st.integers(1, 300))),
    st.tuples(st.just("fail-send"), st.sampled_from([-errno.ECONNRESET, -errno.EPIPE, 0])),
    st.tuples(st.just("write"), st.binary(max_size=600)),
    st.tuples(st.just("pause"), st.none()),
    st.tuples(st.just("resume"), st.none()),
    st.tuples(st.just("close"), st.none()),
    st.tuples(st.just("abort"), st.none()),
)
plans = st.lists(st.tuples(st.integers(0, 2 * SLOT),
                           st.sampled_from(["echo", "echo", "none", "bytes", "big", "raise",
                                            "quiet", "view", "strided", "bytearray",
                                            "words"])), max_size=20)


def play(script: list[tuple[str, Any]], plan: list[tuple[int, str]]) -> list[Any]:
    host = FakeHost(max_write_buffer=2048)
    proto = Scripted(list(plan))
    conn = make(host, ProtocolConnection, proto)
    conn.set_write_buffer_limits(high=1024)
    trace: list[Any] = []
    wire = bytearray()
    for op, arg in script:
        try:
            if op == "recv":
                if conn.id in host.sinks and len(host.slots.free) > 0:
                    host.deliver(conn, arg)
            elif op == "pump":
                for sink in host.dirty:
                    sink.send_pending()
                host.dirty.clear()
            elif op == "complete":
                if host.submitter.sends:
                    wire += host.complete_send(conn, arg)
            elif op == "fail-send":
                if host.submitter.sends:
                    host.submitter.sends.pop(0)
                    conn.on_send(arg)
            elif op == "write":
                conn.write(arg)
            elif op == "pause":
                conn.pause_reading()
            elif op == "resume":
                conn.resume_reading()
                host.loop.run_until_complete(_tick())
            elif op == "close":
                conn.close()
            elif op == "abort":
                conn.abort()
        except Exception as exc:
            trace.append((op, "raised", type(exc).__name__, str(exc)))
        trace.append((op, conn.pending_write_bytes, conn.slots_held, conn.bytes_in,
                      conn.bytes_out, conn.is_closed, host.traffic.sends,
                      host.traffic.bytes_out, len(host.submitter.sends)))
    trace.append(("wire", bytes(wire)))
    trace.append(("proto", proto.trace))
    trace.append(("failures", [type(e).__name__ for e in host.failures]))
    trace.append(("lent", sorted(host.slots.lent), host.pool.segments_in_use))
    host.close()
    return trace


async def _tick() -> None:
    """Let callbacks scheduled with call_soon (redelivery after resume) run."""


level1_step = st.one_of(
    st.tuples(st.just("recv"), st.binary(min_size=1, max_size=SLOT)),
    st.tuples(st.just("take"), st.none()),
    st.tuples(st.just("wait"), st.binary(min_size=1, max_size=SLOT)),
    st.tuples(st.just("return"), st.integers(0, 20)),
    st.tuples(st.just("return-again"), st.integers(0, 20)),
    st.tuples(st.just("echo"), st.integers(0, 20)),
    st.tuples(st.just("flush"), st.none()),
    st.tuples(st.just("complete"), st.one_of(st.none(), st.integers(1, 300))),
    st.tuples(st.just("pause"), st.none()),
    st.tuples(st.just("resume"), st.none()),
    st.tuples(st.just("close"), st.none()),
)


def play_level1(script: list[tuple[str, Any]]) -> list[Any]:
    """Level 1 (ring items) on a plain Connection, with the same scripted kernel."""
    host = FakeHost(max_write_buffer=2048)
    conn = make(host)
    trace: list[Any] = []
    wire = bytearray()
    taken: list[Any] = []
    returned: list[Any] = []
    for op, arg in script:
        try:
            if op == "recv":
                if conn.id in host.sinks and len(host.slots.free) > 0:
                    host.deliver(conn, arg)
            elif op == "take":
                if conn.has_data or conn.is_closed:
                    snap = host.loop.run_until_complete(conn.read())
                    trace.append(("snap", snap.tail, snap.is_closed))
                    while (item := conn.try_get_ring(snap)) is not None:
                        trace.append(("item", item.buffer_id >= 0, item.view.tobytes()))
                        taken.append(item)
            elif op == "wait" and not conn.has_data and not conn.is_closed:
                # read() waits (arm_waiter); a second read() meanwhile is refused;
                # the bytes arrive and wake it.
                first = host.loop.create_task(conn.read())
                host.loop.run_until_complete(asyncio.sleep(0))
                second = host.loop.create_task(conn.read())
                host.loop.run_until_complete(asyncio.sleep(0))
                trace.append(("second", type(second.exception()).__name__))
                if conn.id in host.sinks and len(host.slots.free) > 0:
                    host.deliver(conn, arg)
                else:
                    conn.close()
                snap = host.loop.run_until_complete(first)
                trace.append(("woken", snap.tail, snap.is_closed))
            elif op == "return" and taken:
                item = taken.pop(arg % len(taken))
                conn.return_ring(item)
                returned.append(item)
            elif op == "return-again" and returned:
                conn.return_ring(returned[arg % len(returned)])
            elif op == "echo" and taken:
                conn.write(taken[arg % len(taken)].view)
            elif op == "flush":
                conn.flush_nowait()
            elif op == "complete":
                if host.submitter.sends:
                    wire += host.complete_send(conn, arg)
            elif op == "pause":
                conn.pause_reading()
            elif op == "resume":
                conn.resume_reading()
            elif op == "close":
                conn.close()
        except Exception as exc:
            trace.append((op, "raised", type(exc).__name__, str(exc)))
        trace.append((op, conn.pending_write_bytes, conn.slots_held, conn.bytes_in,
                      conn.bytes_out, conn.is_closed, conn.has_data, host.traffic.sends,
                      len(host.submitter.sends), sorted(host.slots.lent)))
    trace.append(("wire", bytes(wire)))
    host.close()
    return trace


@settings(max_examples=300, deadline=None)
@given(st.lists(level1_step, max_size=40))
def test_c_level1_agrees_with_the_reference(script: list[tuple[str, Any]]) -> None:
    agree(play_level1, script, reference_methods, REPLACED)


level2_step = st.one_of(
    st.tuples(st.just("recv"), st.binary(min_size=1, max_size=SLOT)),
    st.tuples(st.just("seq"), st.none()),
    st.tuples(st.just("advance"), st.integers(0, 3 * SLOT)),
    st.tuples(st.just("release"), st.none()),
    st.tuples(st.just("slice"), st.integers(0, 3 * SLOT)),
    st.tuples(st.just("old"), st.integers(0, 10)),
    st.tuples(st.just("echo"), st.none()),
    st.tuples(st.just("iter"), st.integers(0, 10)),
    st.tuples(st.just("close"), st.none()),
)


def play_level2(script: list[tuple[str, Any]]) -> list[Any]:
    """Level 2 (owning BufferSequence) on a plain Connection."""
    host = FakeHost()
    conn = make(host)
    trace: list[Any] = []
    seqs: list[Any] = []
    slices: list[Any] = []
    for op, arg in script:
        try:
            if op == "recv":
                if conn.id in host.sinks and len(host.slots.free) > 0:
                    host.deliver(conn, arg)
            elif op == "seq":
                if conn.has_data or conn.is_closed:
                    snap = host.loop.run_until_complete(conn.read())
                    seq = conn.get_sequence(snap)
                    seqs.append(seq)
                    trace.append(("seq", seq.tobytes(), len(seq)))
            elif op == "advance" and seqs:
                seqs[-1].advance(arg)
            elif op == "release" and seqs:
                seqs[-1].release()
            elif op == "slice" and seqs:
                slices.append(seqs[-1][arg:])
            elif op == "old" and slices:
                trace.append(("old", slices[arg % len(slices)].tobytes()))
            elif op == "echo" and seqs:
                conn.write(seqs[-1])
            elif op == "iter" and (seqs or slices):
                pick = (seqs + slices)[arg % len(seqs + slices)]
                trace.append(("iter", [bytes(part) for part in pick]))
            elif op == "close":
                conn.close()
        except Exception as exc:
            trace.append((op, "raised", type(exc).__name__, str(exc)))
        trace.append((op, conn.slots_held, conn.pending_write_bytes, conn.is_closed,
                      sorted(host.slots.lent), [len(q) for q in seqs[-2:]]))
    host.close()
    return trace


@settings(max_examples=300, deadline=None)
@given(st.lists(level2_step, max_size=40))
def test_c_level2_agrees_with_the_reference(script: list[tuple[str, Any]]) -> None:
    agree(play_level2, script, reference_methods, REPLACED)


reader_step = st.one_of(
    st.tuples(st.just("recv"), st.binary(min_size=1, max_size=SLOT)),
    st.tuples(st.just("read"), st.none()),
    st.tuples(st.just("advance"), st.tuples(st.integers(0, 3 * SLOT), st.integers(0, 3 * SLOT))),
    st.tuples(st.just("advance-all"), st.none()),
    st.tuples(st.just("old"), st.integers(0, 10)),
    st.tuples(st.just("cancel"), st.none()),
    st.tuples(st.just("pause"), st.none()),
    st.tuples(st.just("resume"), st.none()),
    st.tuples(st.just("complete"), st.none()),
    st.tuples(st.just("close"), st.none()),
)


def play_reader(script: list[tuple[str, Any]]) -> list[Any]:
    """PipeReader on a plain Connection: reads, advances (in range and out),
    windows used after they were consumed, cancel, complete, close."""
    from zerg.adapters import PipeReader

    host = FakeHost()
    conn = make(host)
    reader = PipeReader(conn)
    trace: list[Any] = []
    results: list[Any] = []
    for op, arg in script:
        try:
            if op == "recv":
                if conn.id in host.sinks and len(host.slots.free) > 0:
                    host.deliver(conn, arg)
            elif op == "read":
                res = reader.try_read()
                if res is not None:
                    results.append(res)
                    trace.append(("result", res.buffer.tobytes(), res.is_completed,
                                  res.is_canceled))
            elif op == "advance":
                reader.advance_to(*arg)
            elif op == "advance-all" and results:
                n = len(results[-1].buffer)
                reader.advance_to(n, n)
            elif op == "old" and results:
                trace.append(("old", results[arg % len(results)].buffer.tobytes()))
            elif op == "cancel":
                reader.cancel_pending_read()
            elif op == "pause":
                conn.pause_reading()
            elif op == "resume":
                conn.resume_reading()
            elif op == "complete":
                reader.complete()
            elif op == "close":
                conn.close()
        except Exception as exc:
            trace.append((op, "raised", type(exc).__name__, str(exc)))
        trace.append((op, conn.slots_held, conn.bytes_in, conn.is_closed,
                      sorted(host.slots.lent)))
    host.close()
    return trace


@settings(max_examples=300, deadline=None)
@given(st.lists(reader_step, max_size=40))
def test_c_pipereader_agrees_with_the_reference(script: list[tuple[str, Any]]) -> None:
    agree(play_reader, script, reference_methods, REPLACED)


@settings(max_examples=300, deadline=None)
@given(st.lists(step, max_size=40), plans)
def test_c_connection_agrees_with_the_reference(script: list[tuple[str, Any]],
                                                plan: list[tuple[int, str]]) -> None:
    agree(lambda s: play(*s), (script, plan), reference_methods, REPLACED)


def test_binding_again_changes_nothing_and_other_classes_are_refused() -> None:
    """bind_connection runs once per process (zerg._connection's import)."""
    assert_methods(REPLACED)
    sp = _native.speedups
    if sp is None:
        return                  # nothing is bound here; the child run checks this
    from zerg._connection import ProtocolConnection as PC
    from zerg._inputpipe import EMPTY_SEQ, ReadResult, RingItem
    from zerg._outputpipe import OutputPipe
    from zerg._ring import Ring, RingSubmitter
    from zerg._seam import Traffic
    from zerg._slab import SlabPool, WriteSegment

    args = [Connection, PC, OutputPipe, WriteSegment, SlabPool, Traffic, InputPipe,
            RingSubmitter, Ring, RingItem, ReadResult, EMPTY_SEQ]
    before = {name: PC.__dict__[name] for name in REPLACED[PC]}
    sp.bind_connection(*args)
    assert {name: PC.__dict__[name] for name in REPLACED[PC]} == before

    class Other(PC):
        __slots__ = ()

    with pytest.raises(RuntimeError, match="already bound"):
        sp.bind_connection(Connection, Other, *args[2:])


def test_the_comparison_runs_with_the_extension() -> None:
    """Under ZERG_NO_EXTENSIONS=1 the comparisons above run in a child with it."""
    assert_methods(REPLACED)
    if _native.speedups is None:
        run_with_extension(__file__, passed=6)
