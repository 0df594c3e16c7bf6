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
for ``PipeReader`` (``PipeInput.read`` and ``advance_to``): reads, advances
in range and out, buffers used after they were consumed, cancel, complete
and close; a fourth for level 2: owning sequences taken, advanced,
released, sliced, echoed, and slices used after their bytes went back.

With ``ZERG_NO_EXTENSIONS=1`` the classes must carry the Python methods
only, and the comparison runs in a child process with the extension.
"""

from __future__ import annotations

import asyncio
import collections.abc
import contextlib
import errno
import inspect
from collections.abc import Iterator
from typing import Any

import pytest
from fastpath_check import agree, assert_methods, run_with_extension, swapped
from hypothesis import given, settings
from hypothesis import strategies as st
from test_core import SLOT, FakeHost, finish, make

from zerg import _native
from zerg._buffers import BufferSequence
from zerg._connection import Connection, PipeInput, ProtocolConnection
from zerg._errors import WriteBufferFullError
from zerg._inputpipe import InputPipe, ReadResult, RingSnapshot
from zerg._protocol import Protocol

REPLACED = {BufferSequence: ("advance", "release", "__iter__"),
            PipeInput: ("read", "advance_to"),
            InputPipe: ("try_read", "advance_to", "arm_waiter"),
            ProtocolConnection: ("on_recv", "write", "send_pending", "on_send", "forward"),
            Connection: ("write", "_kick_send", "on_send", "on_recv", "try_get_ring",
                         "return_ring", "get_sequence", "flush", "read", "forward",
                         "reset_read")}

# Properties whose getter is C (a getset descriptor) with the extension.
REPLACED_GETTERS = {Connection: ("pending_write_bytes",)}


def test_getters_are_c_with_the_extension_and_properties_without() -> None:
    for cls, names in REPLACED_GETTERS.items():
        for name in names:
            got = type(inspect.getattr_static(cls, name)).__name__
            assert got == ("property" if _native.speedups is None else "getset_descriptor"), got


def test_read_results_fields_are_slots_with_the_extension() -> None:
    """A NamedTuple's fields are _tuplegetters, whose attribute loads 3.11
    cannot specialise; with the extension the read results' fields are
    read-only members of the tuple's items, loaded as slots.  Either way
    they behave as a NamedTuple's."""
    kind = "_tuplegetter" if _native.speedups is None else "member_descriptor"
    for cls in (RingSnapshot, ReadResult):
        for name in cls._fields:
            assert type(inspect.getattr_static(cls, name)).__name__ == kind
            assert f"field number {cls._fields.index(name)}" in (getattr(cls, name).__doc__ or "")
    snap = RingSnapshot(7, True)
    assert (snap.tail, snap.is_closed) == (7, True) == tuple(snap)
    assert snap._replace(tail=9) == RingSnapshot._make([9, True])
    assert snap._asdict() == {"tail": 7, "is_closed": True}
    assert repr(snap) == "RingSnapshot(tail=7, is_closed=True)"
    with pytest.raises(AttributeError):
        snap.tail = 1      # type: ignore[misc]
    # A shorter tuple of the class (only tuple.__new__ makes one) is refused,
    # never read past its end.
    short = tuple.__new__(RingSnapshot, (1,))
    assert short.tail == 1
    with pytest.raises((AttributeError, IndexError)):
        _ = short.is_closed
    with pytest.raises((AttributeError, IndexError)):
        _ = tuple.__new__(ReadResult, ()).buffer


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
        for cls, names in REPLACED_GETTERS.items():
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
            elif how == "forward":
                conn.forward(seq[:n] if n < len(seq) else seq)
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
                                            "words", "forward"])), max_size=20)


class Player:
    """One scripted run through the sans-IO seam: each ``(op, arg)`` goes to
    the method ``op_<op>`` (dashes as underscores); what it raises is
    recorded, then the state a user can see (``state``)."""

    def __init__(self, host: FakeHost, conn: Connection) -> None:
        self.host = host
        self.conn = conn
        self.trace: list[Any] = []
        self.wire = bytearray()

    def run(self, script: list[tuple[str, Any]]) -> list[Any]:
        for op, arg in script:
            step = getattr(self, "op_" + op.replace("-", "_"))    # an unknown op fails here
            try:
                step(arg)
            except Exception as exc:
                self.trace.append((op, "raised", type(exc).__name__, str(exc)))
            self.trace.append((op, *self.state()))
        self.trace.append(("wire", bytes(self.wire)))
        self.trace.extend(self.final())
        self.host.close()
        return self.trace

    def state(self) -> tuple[Any, ...]:
        conn, host = self.conn, self.host
        # The input pipe's held list: each item knows its index (InputPipe._unhold).
        inp = conn._in
        assert inp is None or all(item._held_at == i for i, item in enumerate(inp.held))
        return (conn.pending_write_bytes, conn.slots_held, conn.bytes_in, conn.bytes_out,
                conn.is_closed, host.traffic.sends, host.traffic.bytes_out,
                len(host.submitter.sends), sorted(host.slots.lent))

    def final(self) -> list[Any]:
        return []

    # -- the kernel and the peer
    def op_recv(self, data: bytes) -> None:
        if self.conn.id in self.host.sinks and len(self.host.slots.free) > 0:
            self.host.deliver(self.conn, data)

    def op_complete(self, take: int | None) -> None:
        if self.host.submitter.sends:
            self.wire += self.host.complete_send(self.conn, take)

    # -- the application
    def op_pause(self, _: None) -> None:
        self.conn.pause_reading()

    def op_resume(self, _: None) -> None:
        self.conn.resume_reading()
        self.host.loop.run_until_complete(_tick())

    def op_close(self, _: None) -> None:
        self.conn.close()


class ProtocolPlayer(Player):
    """The Protocol path: ``Scripted`` consumes and answers as its plan says."""

    def __init__(self, plan: list[tuple[int, str]]) -> None:
        host = FakeHost(max_write_buffer=2048)
        self.proto = Scripted(list(plan))
        super().__init__(host, make(host, ProtocolConnection, self.proto))
        self.conn.set_write_buffer_limits(high=1024)

    def final(self) -> list[Any]:
        host = self.host
        return [("proto", self.proto.trace),
                ("failures", [type(e).__name__ for e in host.failures]),
                ("pool", host.pool.segments_in_use)]

    def op_pump(self, _: None) -> None:
        for sink in self.host.dirty:
            sink.send_pending()
        self.host.dirty.clear()

    def op_fail_send(self, res: int) -> None:
        if self.host.submitter.sends:
            self.host.submitter.sends.pop(0)
            self.conn.on_send(res)

    def op_write(self, data: bytes) -> None:
        self.conn.write(data)

    def op_abort(self, _: None) -> None:
        self.conn.abort()


def play(script: list[tuple[str, Any]], plan: list[tuple[int, str]]) -> list[Any]:
    return ProtocolPlayer(plan).run(script)


async def _tick() -> None:
    """Let callbacks scheduled with call_soon (redelivery after resume) run."""


level1_step = st.one_of(
    st.tuples(st.just("recv"), st.binary(min_size=1, max_size=SLOT)),
    st.tuples(st.just("take"), st.none()),
    st.tuples(st.just("wait"), st.binary(min_size=1, max_size=SLOT)),
    st.tuples(st.just("return"), st.integers(0, 20)),
    st.tuples(st.just("return-again"), st.integers(0, 20)),
    st.tuples(st.just("forget"), st.none()),
    st.tuples(st.just("reset-read"), st.none()),
    st.tuples(st.just("echo"), st.integers(0, 20)),
    st.tuples(st.just("flush"), st.none()),
    st.tuples(st.just("await-flush"), st.none()),
    st.tuples(st.just("give-up"), st.none()),
    st.tuples(st.just("complete"), st.one_of(st.none(), st.integers(1, 300))),
    st.tuples(st.just("pause"), st.none()),
    st.tuples(st.just("resume"), st.none()),
    st.tuples(st.just("close"), st.none()),
)


class Level1Player(Player):
    """Level 1 (ring items) on a plain Connection."""

    def __init__(self) -> None:
        host = FakeHost(max_write_buffer=2048)
        super().__init__(host, make(host))
        self.taken: list[Any] = []
        self.returned: list[Any] = []

    def state(self) -> tuple[Any, ...]:
        return (*super().state(), self.conn.has_data)

    def op_take(self, _: None) -> None:
        conn = self.conn
        if conn.has_data or conn.is_closed:
            snap = self.host.loop.run_until_complete(conn.read())
            self.trace.append(("snap", snap.tail, snap.is_closed))
            while (item := conn.try_get_ring(snap)) is not None:
                self.trace.append(("item", item.buffer_id >= 0, item.view.tobytes()))
                self.taken.append(item)

    def op_wait(self, data: bytes) -> None:
        """read() waits (arm_waiter); a second read() meanwhile is refused;
        the bytes arrive and wake it."""
        conn, loop = self.conn, self.host.loop
        if conn.has_data or conn.is_closed:
            return
        first = loop.create_task(conn.read())
        loop.run_until_complete(asyncio.sleep(0))
        second = loop.create_task(conn.read())
        loop.run_until_complete(asyncio.sleep(0))
        self.trace.append(("second", type(second.exception()).__name__))
        if conn.id in self.host.sinks and len(self.host.slots.free) > 0:
            self.host.deliver(conn, data)
        else:
            conn.close()
        snap = loop.run_until_complete(first)
        self.trace.append(("woken", snap.tail, snap.is_closed))

    def op_return(self, k: int) -> None:
        if self.taken:
            item = self.taken.pop(k % len(self.taken))
            self.conn.return_ring(item)
            self.returned.append(item)

    def op_return_again(self, k: int) -> None:
        if self.returned:
            self.conn.return_ring(self.returned[k % len(self.returned)])

    def op_forget(self, _: None) -> None:
        """Let go of the returned items: the C path may reuse them for the
        next receives (connfast.c's item pool), which must not show."""
        self.returned.clear()

    def op_reset_read(self, _: None) -> None:
        self.conn.reset_read()

    def op_echo(self, k: int) -> None:
        if self.taken:
            self.conn.write(self.taken[k % len(self.taken)].view)

    def op_flush(self, _: None) -> None:
        self.conn.flush_nowait()

    def op_give_up(self, _: None) -> None:
        """A level-1 read that waits is canceled: its waiter goes, so the next
        read may wait again; one that need not wait gives its snapshot."""
        loop = self.host.loop
        task = loop.create_task(self.conn.read())
        loop.run_until_complete(asyncio.sleep(0))
        if not task.done():
            task.cancel()
            loop.run_until_complete(asyncio.wait([task]))
            self.trace.append(("gave up", task.cancelled(), self.conn._in.waiter is None))
        elif task.exception() is None:
            self.trace.append(("snapshot", tuple(task.result())))

    def op_await_flush(self, _: None) -> None:
        """``await conn.flush()`` as a task: whether it ended at its first step,
        and how (a wait is canceled, as a handler that gives up would)."""
        loop = self.host.loop
        task = loop.create_task(self.conn.flush())
        loop.run_until_complete(asyncio.sleep(0))
        if not task.done():
            task.cancel()
            loop.run_until_complete(asyncio.sleep(0))
            self.trace.append(("flush", "waited", task.cancelled()))
        else:
            exc = task.exception()
            self.trace.append(("flush", "done", None if exc is None else repr(exc)))


def play_level1(script: list[tuple[str, Any]]) -> list[Any]:
    return Level1Player().run(script)


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


class Level2Player(Player):
    """Level 2 (owning BufferSequence) on a plain Connection."""

    def __init__(self) -> None:
        host = FakeHost()
        super().__init__(host, make(host))
        self.seqs: list[Any] = []
        self.slices: list[Any] = []

    def state(self) -> tuple[Any, ...]:
        return (*super().state(), [len(q) for q in self.seqs[-2:]])

    def op_seq(self, _: None) -> None:
        conn = self.conn
        if conn.has_data or conn.is_closed:
            snap = self.host.loop.run_until_complete(conn.read())
            seq = conn.get_sequence(snap)
            self.seqs.append(seq)
            self.trace.append(("seq", seq.tobytes(), len(seq)))

    def op_advance(self, n: int) -> None:
        if self.seqs:
            self.seqs[-1].advance(n)

    def op_release(self, _: None) -> None:
        if self.seqs:
            self.seqs[-1].release()

    def op_slice(self, start: int) -> None:
        if self.seqs:
            self.slices.append(self.seqs[-1][start:])

    def op_old(self, k: int) -> None:
        if self.slices:
            self.trace.append(("old", self.slices[k % len(self.slices)].tobytes()))

    def op_echo(self, _: None) -> None:
        if self.seqs:
            self.conn.write(self.seqs[-1])

    def op_iter(self, k: int) -> None:
        both = self.seqs + self.slices
        if both:
            self.trace.append(("iter", [bytes(part) for part in both[k % len(both)]]))


def play_level2(script: list[tuple[str, Any]]) -> list[Any]:
    return Level2Player().run(script)


@settings(max_examples=300, deadline=None)
@given(st.lists(level2_step, max_size=40))
def test_c_level2_agrees_with_the_reference(script: list[tuple[str, Any]]) -> None:
    agree(play_level2, script, reference_methods, REPLACED)


reader_step = st.one_of(
    st.tuples(st.just("recv"), st.binary(min_size=1, max_size=SLOT)),
    st.tuples(st.just("read"), st.none()),
    st.tuples(st.just("await-read"), st.binary(min_size=1, max_size=SLOT)),
    st.tuples(st.just("give-up"), st.none()),
    st.tuples(st.just("advance"), st.tuples(st.integers(0, 3 * SLOT), st.integers(0, 3 * SLOT))),
    st.tuples(st.just("advance-all"), st.none()),
    st.tuples(st.just("old"), st.integers(0, 10)),
    st.tuples(st.just("cancel"), st.none()),
    st.tuples(st.just("pause"), st.none()),
    st.tuples(st.just("resume"), st.none()),
    st.tuples(st.just("reader-complete"), st.none()),
    st.tuples(st.just("close"), st.none()),
)


class ReaderPlayer(Player):
    """PipeReader on a plain Connection: reads, advances (in range and out),
    buffers used after they were consumed, cancel, complete, close."""

    def __init__(self) -> None:
        from zerg.adapters import PipeReader

        host = FakeHost()
        super().__init__(host, make(host))
        self.reader = PipeReader(self.conn)
        self.results: list[Any] = []

    def op_read(self, _: None) -> None:
        res = self.reader.try_read()
        if res is not None:
            self._record(res)

    def _record(self, res: Any) -> None:
        self.results.append(res)
        self.trace.append(("result", res.buffer.tobytes(), res.is_completed, res.is_canceled))

    def op_await_read(self, data: bytes) -> None:
        """``await reader.read()`` as a task: it ends at once when bytes are
        unexamined, else it waits and these bytes (or a close) wake it."""
        loop, conn = self.host.loop, self.conn
        task = loop.create_task(self.reader.read())
        loop.run_until_complete(asyncio.sleep(0))
        if not task.done():
            self.trace.append("waits")
            if conn.id in self.host.sinks and len(self.host.slots.free) > 0:
                self.host.deliver(conn, data)
            else:
                conn.close()
            loop.run_until_complete(asyncio.wait([task]))
        if task.exception() is not None:
            self.trace.append(("raised", repr(task.exception())))
        else:
            self._record(task.result())

    def op_give_up(self, _: None) -> None:
        """A read that waits is canceled (a handler's timeout): its waiter goes,
        so the next read may wait again."""
        loop = self.host.loop
        task = loop.create_task(self.reader.read())
        loop.run_until_complete(asyncio.sleep(0))
        if task.done():
            if task.exception() is None:
                self._record(task.result())
            return
        task.cancel()
        loop.run_until_complete(asyncio.wait([task]))
        self.trace.append(("gave up", task.cancelled(), self.conn._in.waiter is None))

    def op_advance(self, arg: tuple[int, int]) -> None:
        self.reader.advance_to(*arg)

    def op_advance_all(self, _: None) -> None:
        if self.results:
            n = len(self.results[-1].buffer)
            self.reader.advance_to(n, examined=n)       # (the keyword form)

    def op_old(self, k: int) -> None:
        if self.results:
            self.trace.append(("old", self.results[k % len(self.results)].buffer.tobytes()))

    def op_cancel(self, _: None) -> None:
        self.reader.cancel_pending_read()

    def op_reader_complete(self, _: None) -> None:
        self.reader.complete()


def play_reader(script: list[tuple[str, Any]]) -> list[Any]:
    return ReaderPlayer().run(script)


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


def test_a_flush_that_need_not_wait_is_a_finished_coroutine() -> None:
    """What the C flush returns is a coroutine to asyncio (create_task, wait_for,
    gather take it), ends at its first step with None, and raises what is thrown
    into it; one instance serves every call."""
    host = FakeHost()
    conn = make(host)
    conn.write(b"hello")
    coro = conn.flush()
    assert asyncio.iscoroutine(coro) and isinstance(coro, collections.abc.Coroutine)
    with pytest.raises(StopIteration) as stop:
        coro.send(None)
    assert stop.value.value is None
    assert len(host.submitter.sends) == 1                   # but the send started
    loop = host.loop
    assert loop.run_until_complete(loop.create_task(conn.flush())) is None
    assert loop.run_until_complete(asyncio.wait_for(conn.flush(), 1)) is None

    async def both() -> list[None]:
        return list(await asyncio.gather(conn.flush(), conn.flush()))

    assert loop.run_until_complete(both()) == [None, None]
    with pytest.raises(KeyError, match="thrown"):
        conn.flush().throw(KeyError("thrown"))
    with pytest.raises(TypeError):
        coro = conn.flush()
        try:
            coro.throw(KeyError("x"), "a separate value")  # type: ignore[call-overload]
        finally:
            coro.close()
    conn.flush().close()
    if _native.speedups is not None:
        assert conn.flush() is conn.flush() is _native.speedups.finished_coroutine
    finish(host, conn)
    host.close()


def test_a_read_is_a_coroutine_that_lets_go_of_its_waiter() -> None:
    """PipeReader.read() (C or Python) is a coroutine to asyncio; closed, thrown
    into or dropped while it waits, it clears the waiter, so the next read may
    wait; sent into after it ended, it refuses."""
    from zerg.adapters import PipeReader

    host = FakeHost()
    conn = make(host)
    reader = PipeReader(conn)
    for end in ("close", "throw", "drop"):
        coro = reader.read()
        assert asyncio.iscoroutine(coro)
        fut = coro.send(None)                       # nothing received: it waits
        assert asyncio.isfuture(fut) and conn._in.waiter is fut
        if end == "close":
            coro.close()
        elif end == "throw":
            with pytest.raises(TimeoutError):
                coro.throw(TimeoutError())
        else:
            del coro
        assert conn._in.waiter is None, end
    host.deliver(conn, b"ping")
    coro = reader.read()
    with pytest.raises(StopIteration) as stop:
        coro.send(None)                             # bytes there: ends at once
    assert stop.value.value.buffer.tobytes() == b"ping"
    with pytest.raises(RuntimeError, match="cannot reuse already awaited coroutine"):
        coro.send(None)
    reader.advance_to(4)
    reader.complete()
    finish(host, conn)
    host.close()


def test_a_closed_connections_input_pipe_is_freed_without_the_cycle_collector() -> None:
    """A Protocol connection, level 2 and PipeReader reads (C or Python) leave
    no reference cycle behind once the connection closes: the connection, its
    pipe, its items and their views go when the last reference does, not at
    the next gc pass."""
    import gc

    from zerg.adapters import PipeReader

    def pipes() -> int:
        return sum(isinstance(o, (InputPipe, Connection)) for o in gc.get_objects())

    gc.collect()
    gc.disable()
    try:
        for level in (0, 2, 3):
            host = FakeHost()
            before = pipes()
            proto = Scripted([(2, "")])          # the Protocol path: consumes 2 bytes
            conn = make(host, ProtocolConnection, proto) if level == 0 else make(host)
            host.deliver(conn, b"ping")
            if level == 0:
                assert proto.trace and conn.slots_held == 1    # "ng" is kept
            elif level == 2:
                snap = host.loop.run_until_complete(conn.read())
                seq = conn.get_sequence(snap)
                assert seq.tobytes() == b"ping"
                seq.advance(2)                  # half kept: the lease stays
                del seq, snap
            else:
                reader = PipeReader(conn)
                res = host.loop.run_until_complete(reader.read())
                assert res.buffer.tobytes() == b"ping"
                reader.advance_to(2)
                del reader, res
            # (a Protocol connection makes no input pipe for bytes it delivers)
            assert pipes() == before + (1 if level == 0 else 2)
            conn.close()
            finish(host, conn)
            del conn
            if level == 0:
                del proto
            assert pipes() == before, f"level {level}: the pipe outlived its connection"
            host.close()
    finally:
        gc.enable()


def test_the_loop_iteration_is_c_with_the_extension_and_python_without() -> None:
    """The reactor's per-iteration hook is the C ``Dispatcher.step`` (the
    Python ``_on_select`` is its reference) and ``loop.time`` is
    ``time.monotonic`` itself; both loops keep asyncio's clock."""
    import time

    import zerg
    loop = zerg.new_event_loop()
    try:
        reactor = loop.reactor      # type: ignore[attr-defined]
        hook = reactor.selector._on_select
        if _native.speedups is None:
            assert hook == reactor._on_select
        else:
            assert hook == reactor._dispatcher.step
        before = time.monotonic()
        assert before <= loop.time() <= time.monotonic()
        assert loop.run_until_complete(asyncio.sleep(0.01, "slept")) == "slept"
    finally:
        loop.close()


def test_the_comparison_runs_with_the_extension() -> None:
    """Under ZERG_NO_EXTENSIONS=1 the comparisons above run in a child with it."""
    assert_methods(REPLACED)
    if _native.speedups is None:
        run_with_extension(__file__, passed=12)
