"""PipeReader (level 3) and get_sequence (level 2) over real sockets and a real io_uring.

The contract under test is System.IO.Pipelines' reader: unconsumed bytes come back at the
start of the next read, a read after examining everything waits for new bytes, read() and
advance_to() alternate, and bytes go back to the kernel exactly when consumed.

Handlers run on the reactor thread; a failed assertion there is recorded by `pipe_server`
and re-raised in the test, so it is not lost in the reactor's log.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from conftest import RunningServer, recv_exact, recv_until_closed, serving, wait_for
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import zerg
from zerg.adapters import PipeReader, ReadResult

TINY_RING = zerg.ReactorConfig(buffer_ring_entries=8, recv_buffer_size=512)


# ---------------------------------------------------------------------------- helpers
@contextlib.contextmanager
def pipe_server(
    fn: Callable[[zerg.Connection], Awaitable[None]], **options: Any
) -> Iterator[RunningServer]:
    """`serving(fn)`, but an exception raised by the handler fails the test."""
    failures: list[BaseException] = []

    async def handler(conn: zerg.Connection) -> None:
        try:
            await fn(conn)
        except Exception as exc:
            failures.append(exc)
            raise

    with serving(handler, **options) as srv:
        try:
            yield srv
        except BaseException as exc:
            if failures:        # the client saw the symptom; the handler knows the cause
                raise failures[0] from exc
            raise
        srv.stop()
    if failures:
        raise failures[0]


def connect(srv: RunningServer) -> socket.socket:
    s = srv.connect(timeout=10.0)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def slots_in_use() -> int:
    """The slot count of the reactor running the calling handler."""
    loop: Any = asyncio.get_running_loop()
    return int(loop.reactor.stats().slots_in_use)


async def eventually(cond: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    """Poll `cond` on the reactor loop (slot returns reach the kernel one iteration later)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.002)


async def read_at_least(reader: PipeReader, n: int) -> ReadResult:
    """Read until the buffer holds n bytes, consuming nothing (everything examined)."""
    while True:
        res = await asyncio.wait_for(reader.read(), 5.0)
        if len(res.buffer) >= n or res.is_completed:
            return res
        reader.advance_to(0, len(res.buffer))


def chunked(data: bytes, sizes: list[int]) -> list[bytes]:
    """`data` cut into pieces whose sizes cycle through `sizes`."""
    out = []
    pos = 0
    i = 0
    while pos < len(data):
        n = sizes[i % len(sizes)]
        out.append(data[pos:pos + n])
        pos += n
        i += 1
    return out


def send_chunks(sock: socket.socket, chunks: list[bytes], pause: float) -> None:
    for c in chunks:
        sock.sendall(c)
        if pause:
            time.sleep(pause)       # let the pieces reach the server as separate recvs


# ------------------------------------------------------------------ 1. line protocol
def line_reply(n: int, line: bytes) -> bytes:
    return b"%d:" % n + line.upper() + b"\n"


def make_line_handler(
    violations: list[str],
) -> Callable[[zerg.Connection], Awaitable[None]]:
    """Answers every complete line with `line_reply`; never rescans examined bytes."""

    async def handler(conn: zerg.Connection) -> None:
        reader = PipeReader(conn)
        examined = 0        # bytes at the start of the next buffer that were already examined
        n = 0
        while True:
            res = await reader.read()
            buf = res.buffer
            if len(buf) <= examined and not res.is_completed:
                violations.append(f"read returned {len(buf)} bytes, all {examined} examined")
            consumed = 0
            start = examined
            while (i := buf.find(b"\n", start)) >= 0:
                conn.write(line_reply(n, buf[consumed:i].tobytes()))
                n += 1
                consumed = start = i + 1
            reader.advance_to(consumed, len(buf))
            examined = len(buf) - consumed
            await conn.flush()
            if res.is_completed:
                if examined:
                    violations.append(f"{examined} bytes left after the end")
                break
        reader.complete()

    return handler


LINES = st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"\t")), max_size=25)
SIZES = st.lists(st.sampled_from([1, 1, 2, 3, 7, 16, 50, 200]), min_size=1, max_size=12)


def test_line_protocol_random_chunks_hypothesis() -> None:
    violations: list[str] = []
    with pipe_server(make_line_handler(violations)) as srv:

        @settings(max_examples=30, deadline=None,
                  suppress_health_check=[HealthCheck.too_slow])
        @given(lines=LINES, sizes=SIZES)
        def check(lines: list[bytes], sizes: list[int]) -> None:
            data = b"".join(line + b"\n" for line in lines)
            with connect(srv) as s:
                send_chunks(s, chunked(data, sizes), pause=0.0002)
                s.shutdown(socket.SHUT_WR)
                got = recv_until_closed(s)
            assert got == b"".join(line_reply(i, line) for i, line in enumerate(lines))

        check()
    assert not violations


def test_line_protocol_seeded_lines_span_small_slots() -> None:
    """Long lines cross 512-byte slots, so find() crosses segment boundaries.

    A partial line holds every slot it arrived in (a 1-byte recv takes a whole slot), so
    the ring must have room for the most pieces one line arrives in; checked up front.
    """
    rng = random.Random(1234)
    lines = [bytes(rng.choice(b"abcxyz \t.") for _ in range(rng.choice([0, 1, 5, 80, 700, 1500])))
             for _ in range(300)]
    data = b"".join(line + b"\n" for line in lines)
    sizes = [rng.choice([1, 1, 1, 2, 5, 33, 511, 512, 513, 2000]) for _ in range(200)]
    chunks = chunked(data, sizes)
    assert max_pieces_per_line(lines, chunks, 512) <= 48
    violations: list[str] = []
    cfg = zerg.ReactorConfig(buffer_ring_entries=64, recv_buffer_size=512)
    with pipe_server(make_line_handler(violations), reactor=cfg) as srv, connect(srv) as s:
        t = threading.Thread(target=send_chunks, args=(s, chunks, 0.0001))
        t.start()
        expected = b"".join(line_reply(i, line) for i, line in enumerate(lines))
        got = recv_exact(s, len(expected))
        t.join()
        s.shutdown(socket.SHUT_WR)
        assert recv_until_closed(s) == b""
        assert got == expected
        wait_for(lambda: srv.engine.stats()[0].slots_in_use == 0, what="slots back")
    assert not violations


def max_pieces_per_line(lines: list[bytes], chunks: list[bytes], slot: int) -> int:
    """An upper bound on the slots a partial line can hold (chunks, split at `slot`)."""
    ends = []
    pos = 0
    for c in chunks:
        ends.append((pos, pos + len(c)))
        pos += len(c)
    worst = 0
    pos = 0
    for line in lines:
        a, b = pos, pos + len(line) + 1
        worst = max(worst, sum(-(-(min(e, b) - max(s, a)) // slot)
                               for s, e in ends if s < b and e > a))
        pos = b
    return worst


# --------------------------------------------------- 2. unconsumed bytes come back first
def test_unconsumed_bytes_come_back_first_without_waiting() -> None:
    seen: list[tuple[bytes, bool, bool]] = []

    async def handler(conn: zerg.Connection) -> None:
        reader = PipeReader(conn)
        res = await read_at_least(reader, 11)
        assert res.buffer == b"hello world"
        reader.advance_to(6, 8)             # consumed "hello ", looked at "wo"
        # The client sends nothing more until we answer: this read must not wait.
        res = await asyncio.wait_for(reader.read(), 2.0)
        seen.append((res.buffer.tobytes(), res.is_completed, res.is_canceled))
        reader.advance_to(0, 0)             # examined nothing: still no waiting
        again = reader.try_read()
        assert again is not None
        seen.append((again.buffer.tobytes(), again.is_completed, again.is_canceled))
        reader.advance_to(2, 2)
        res = await asyncio.wait_for(reader.read(), 2.0)
        seen.append((res.buffer.tobytes(), res.is_completed, res.is_canceled))
        reader.advance_to(len(res.buffer))
        conn.write(b"ok")
        await conn.flush()

    with pipe_server(handler) as srv, connect(srv) as s:
        s.sendall(b"hello world")
        assert recv_exact(s, 2) == b"ok"
    assert seen == [(b"world", False, False), (b"world", False, False), (b"rld", False, False)]


# ------------------------------------------------------ 3. examined everything -> wait
def test_read_after_examining_everything_waits_for_new_bytes() -> None:
    seen: list[bytes] = []

    async def handler(conn: zerg.Connection) -> None:
        reader = PipeReader(conn)
        res = await read_at_least(reader, 5)
        assert res.buffer == b"part1"
        reader.advance_to(0, len(res.buffer))
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.read(), 0.2)
        assert reader.try_read() is None    # the timed-out read left the reader usable
        conn.write(b"go")
        await conn.flush()
        res = await asyncio.wait_for(reader.read(), 5.0)
        assert len(res.buffer) > 5 and res.buffer.startswith(b"part1")
        while len(res.buffer) < 10:         # "part2" may come in pieces
            reader.advance_to(0, len(res.buffer))
            res = await asyncio.wait_for(reader.read(), 5.0)
        seen.append(res.buffer.tobytes())
        reader.advance_to(len(res.buffer))
        conn.write(b"done")
        await conn.flush()

    with pipe_server(handler) as srv, connect(srv) as s:
        s.sendall(b"part1")
        assert recv_exact(s, 2) == b"go"
        s.sendall(b"part2")
        assert recv_exact(s, 4) == b"done"
    assert seen == [b"part1part2"]


def test_examined_wait_timing() -> None:
    """The client's second part comes 0.2 s later; the read returns only then, longer."""
    seen: list[tuple[float, bytes]] = []

    async def handler(conn: zerg.Connection) -> None:
        reader = PipeReader(conn)
        res = await read_at_least(reader, 4)
        reader.advance_to(0, len(res.buffer))
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        res = await asyncio.wait_for(reader.read(), 5.0)
        seen.append((loop.time() - t0, res.buffer.tobytes()))
        reader.advance_to(len(res.buffer))
        conn.write(b"k")
        await conn.flush()

    with pipe_server(handler) as srv, connect(srv) as s:
        s.sendall(b"head")
        time.sleep(0.2)
        s.sendall(b"tail")
        assert recv_exact(s, 1) == b"k"
    elapsed, data = seen[0]
    assert data == b"headtail"
    assert elapsed >= 0.1


# ----------------------------------------------------------- 4. misuse is an error
def test_advance_to_validation_and_call_order() -> None:
    messages: list[str] = []

    async def handler(conn: zerg.Connection) -> None:
        reader = PipeReader(conn)
        assert reader.connection is conn
        with pytest.raises(RuntimeError, match="without a preceding read"):
            reader.advance_to(0)
        res = await read_at_least(reader, 6)
        n = len(res.buffer)
        assert res.buffer == b"abcdef"
        with pytest.raises(RuntimeError, match="advance_to"):
            await reader.read()             # read twice without advance_to
        with pytest.raises(RuntimeError, match="advance_to"):
            reader.try_read()
        for consumed, examined in [(3, 2), (-1, None), (n + 1, None), (0, n + 1), (0, -1),
                                   (-1, 0), (n + 1, n + 1)]:
            with pytest.raises(ValueError) as info:
                reader.advance_to(consumed, examined)
            messages.append(str(info.value))
        reader.advance_to(2, 4)             # still allowed after the rejected calls
        with pytest.raises(RuntimeError, match="without a preceding read"):
            reader.advance_to(0)            # advance twice
        res = await asyncio.wait_for(reader.read(), 2.0)
        assert res.buffer == b"cdef"
        reader.advance_to(0)
        reader.complete()
        reader.complete()                   # idempotent
        with pytest.raises(RuntimeError, match="complete"):
            await reader.read()
        with pytest.raises(RuntimeError, match="complete"):
            reader.try_read()
        conn.write(b"ok")                   # the connection stays open for writing
        await conn.flush()

    with pipe_server(handler) as srv, connect(srv) as s:
        s.sendall(b"abcdef")
        assert recv_exact(s, 2) == b"ok"
    assert len(messages) == 7
    assert "examined=2" in messages[0] and "consumed=-1" in messages[1]


# ---------------------------------------------------------- 5. cancel_pending_read
def test_cancel_pending_read_from_another_task() -> None:
    seen: list[tuple[bytes, bool, bool]] = []

    async def handler(conn: zerg.Connection) -> None:
        reader = PipeReader(conn)
        res = await read_at_least(reader, 3)
        reader.advance_to(0, len(res.buffer))   # everything examined: the next read waits
        pending = asyncio.ensure_future(reader.read())
        await asyncio.sleep(0.05)
        assert not pending.done()
        asyncio.get_running_loop().call_soon(reader.cancel_pending_read)
        res = await asyncio.wait_for(pending, 2.0)
        seen.append((res.buffer.tobytes(), res.is_completed, res.is_canceled))
        reader.advance_to(0, len(res.buffer))
        conn.write(b"1")
        await conn.flush()
        res = await asyncio.wait_for(reader.read(), 5.0)  # normal again: waits for "def"
        seen.append((res.buffer.tobytes(), res.is_completed, res.is_canceled))
        reader.advance_to(0, len(res.buffer))
        reader.cancel_pending_read()        # before the read: it returns at once
        res = await asyncio.wait_for(reader.read(), 2.0)
        seen.append((res.buffer.tobytes(), res.is_completed, res.is_canceled))
        reader.advance_to(0, len(res.buffer))
        reader.cancel_pending_read()
        res2 = reader.try_read()            # try_read honours a pending cancel too
        assert res2 is not None and res2.is_canceled
        reader.advance_to(1, len(res2.buffer))
        assert reader.try_read() is None    # the cancel was used up
        conn.write(b"2")
        await conn.flush()

    with pipe_server(handler) as srv, connect(srv) as s:
        s.sendall(b"abc")
        assert recv_exact(s, 1) == b"1"
        s.sendall(b"def")
        assert recv_exact(s, 1) == b"2"
    assert seen == [(b"abc", False, True), (b"abcdef", False, False), (b"abcdef", False, True)]


# --------------------------------------------------------------------- 6. try_read
def test_try_read_never_waits() -> None:
    seen: list[object] = []

    async def handler(conn: zerg.Connection) -> None:
        reader = PipeReader(conn)
        seen.append(reader.try_read())      # nothing sent yet
        conn.write(b"ready")
        await conn.flush()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5.0
        while (res := reader.try_read()) is None:
            assert loop.time() < deadline, "try_read never saw the data"
            await asyncio.sleep(0.002)
        while len(res.buffer) < 8:
            reader.advance_to(0, len(res.buffer))
            res = await read_at_least(reader, 8)
        seen.append(res.buffer.tobytes())
        reader.advance_to(0, len(res.buffer))
        seen.append(reader.try_read())      # all examined, nothing new
        conn.write(b"more")
        await conn.flush()
        res = await read_at_least(reader, 12)
        reader.advance_to(3, 5)             # partial consumption: the rest is there at once
        again = reader.try_read()
        assert again is not None
        seen.append(again.buffer.tobytes())
        reader.advance_to(len(again.buffer))
        conn.write(b"done")
        await conn.flush()

    with pipe_server(handler) as srv, connect(srv) as s:
        assert recv_exact(s, 5) == b"ready"
        s.sendall(b"12345678")
        assert recv_exact(s, 4) == b"more"
        s.sendall(b"9abc")
        assert recv_exact(s, 4) == b"done"
    assert seen == [None, b"12345678", None, b"456789abc"]


# -------------------------------------------------------- 7. disconnect completes
@pytest.mark.parametrize("how", ["close", "shutdown"])
def test_disconnect_completes_the_reader_and_loses_nothing(how: str) -> None:
    payload = random.Random(7).randbytes(200_000)
    got: list[bytes] = []
    ends: list[tuple[bool, int]] = []

    async def handler(conn: zerg.Connection) -> None:
        reader = PipeReader(conn)
        data = bytearray()
        while True:
            res = await asyncio.wait_for(reader.read(), 10.0)
            buf = res.buffer
            keep = 0 if res.is_completed else min(100, len(buf))   # hold a tail back
            data += buf[:len(buf) - keep].tobytes()
            reader.advance_to(len(buf) - keep, len(buf))
            if res.is_completed:
                break
        got.append(bytes(data))
        res = await asyncio.wait_for(reader.read(), 2.0)   # the end is sticky
        ends.append((res.is_completed, len(res.buffer)))
        reader.advance_to(0)
        reader.complete()

    with pipe_server(handler, reactor=TINY_RING) as srv:
        s = connect(srv)
        s.sendall(payload)
        if how == "close":
            s.close()
        else:
            s.shutdown(socket.SHUT_WR)
            assert recv_until_closed(s) == b""
            s.close()
        wait_for(lambda: bool(got), what="the handler to see the end")
        wait_for(lambda: srv.engine.stats()[0].slots_in_use == 0, what="slots back")
    assert hashlib.sha256(got[0]).hexdigest() == hashlib.sha256(payload).hexdigest()
    assert ends == [(True, 0)]


def test_last_bytes_arrive_with_or_before_completion() -> None:
    results: list[tuple[bytes, bool]] = []

    async def handler(conn: zerg.Connection) -> None:
        reader = PipeReader(conn)
        while True:
            res = await asyncio.wait_for(reader.read(), 5.0)
            results.append((res.buffer.tobytes(), res.is_completed))
            reader.advance_to(len(res.buffer))
            if res.is_completed:
                return

    with pipe_server(handler) as srv:
        s = connect(srv)
        s.sendall(b"last words")
        s.close()
        wait_for(lambda: bool(results) and results[-1][1], what="completion")
    assert b"".join(data for data, _ in results) == b"last words"
    assert [done for _, done in results[:-1]] == [False] * (len(results) - 1)


def test_unconsumed_examined_bytes_come_back_with_the_end() -> None:
    """A parser that examined an incomplete message gets it again, completed, at EOF."""
    seen: list[tuple[bytes, bool]] = []

    async def handler(conn: zerg.Connection) -> None:
        reader = PipeReader(conn)
        while True:
            res = await asyncio.wait_for(reader.read(), 5.0)
            seen.append((res.buffer.tobytes(), res.is_completed))
            consumed = res.buffer.find(b"\n") + 1
            reader.advance_to(consumed, len(res.buffer))
            if res.is_completed and not consumed:
                break
        conn.write(b"%d" % len(seen))
        await conn.flush()

    with pipe_server(handler) as srv, connect(srv) as s:
        s.sendall(b"one\ntwo-without-newline")
        s.shutdown(socket.SHUT_WR)
        recv_until_closed(s)
    assert seen[-1] == (b"two-without-newline", True)
    assert b"".join(data for data, _ in seen).startswith(b"one\n")


# ------------------------------------------------------- 8. concurrent large echo
async def pipe_echo(conn: zerg.Connection) -> None:
    reader = PipeReader(conn)
    while True:
        res = await reader.read()
        buf = res.buffer
        for seg in buf:
            conn.write(seg)
        reader.advance_to(len(buf))
        await conn.flush()
        if res.is_completed:
            break
    reader.complete()


async def pipe_echo_holding_tails(conn: zerg.Connection) -> None:
    """Echoes all but a short tail each time; the tail comes back at the next read."""
    reader = PipeReader(conn)
    rng = random.Random(conn.id)
    while True:
        res = await reader.read()
        buf = res.buffer
        n = len(buf) if res.is_completed else max(0, len(buf) - rng.randrange(200))
        for seg in buf[:n]:
            conn.write(seg)
        reader.advance_to(n, len(buf))
        await conn.flush()
        if res.is_completed:
            break
    reader.complete()


@pytest.mark.parametrize(("echo", "entries"), [(pipe_echo, 16), (pipe_echo_holding_tails, 32)],
                         ids=["consume-all", "hold-tails"])
def test_concurrent_large_echo_small_ring(
    echo: Callable[[zerg.Connection], Awaitable[None]], entries: int,
) -> None:
    # A held tail may span two slots: 8 clients x 2 < 32, so the ring never fills with
    # tails alone (if it did, every reader would wait for bytes no slot can take).
    cfg = zerg.ReactorConfig(buffer_ring_entries=entries, recv_buffer_size=4096)
    rng = random.Random(99)
    payloads = [rng.randbytes(1 << 20) for _ in range(8)]
    digests: list[str | None] = [None] * 8

    with pipe_server(echo, reactor=cfg) as srv:

        def client(i: int) -> None:
            with connect(srv) as s:
                sender = threading.Thread(target=s.sendall, args=(payloads[i],))
                sender.start()
                got = recv_exact(s, len(payloads[i]) - 1000)
                sender.join()
                s.shutdown(socket.SHUT_WR)      # the held tail comes with the end
                got += recv_until_closed(s)
                digests[i] = hashlib.sha256(got).hexdigest()

        threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        # 9. slot accounting returns to zero once every client is gone
        wait_for(lambda: srv.engine.stats()[0].connections == 0, what="connections closed")
        wait_for(lambda: srv.engine.stats()[0].slots_in_use == 0, what="slots back")
    assert digests == [hashlib.sha256(p).hexdigest() for p in payloads]


# --------------------------------------------------------------- 9. slot accounting
@pytest.mark.parametrize("ending", ["return", "raise", "complete"])
def test_slots_come_back_however_the_handler_ends(ending: str) -> None:
    held: list[int] = []
    done = threading.Event()

    async def handler(conn: zerg.Connection) -> None:
        try:
            reader = PipeReader(conn)
            res = await read_at_least(reader, 3000)
            reader.advance_to(10, len(res.buffer))      # hold the unconsumed rest
            held.append(conn.slots_held)
            if ending == "complete":
                reader.complete()
                await eventually(lambda: slots_in_use() == 0, "complete() to give back")
                conn.write(b"ok")       # still writable after complete()
                await conn.flush()
                await asyncio.sleep(0.05)
            if ending == "raise":
                raise KeyError("deliberate")
        finally:
            done.set()

    with serving(handler, reactor=TINY_RING) as srv:
        for _ in range(2):      # the second connection shows the reactor survived
            done.clear()
            with connect(srv) as s:
                s.sendall(bytes(3000))
                assert done.wait(5)
                if ending == "complete":
                    assert recv_exact(s, 2) == b"ok"
                else:
                    assert recv_until_closed(s) == b""      # closed by the reactor
            wait_for(lambda: srv.engine.stats()[0].connections == 0, what="closed")
            wait_for(lambda: srv.engine.stats()[0].slots_in_use == 0, what="slots back")
    assert len(held) == 2 and min(held) >= 6     # 3000 bytes in 512-byte slots


def test_completed_reader_does_not_hoard_slots_while_peer_keeps_sending() -> None:
    """complete(): "every slot goes back".  Bytes that arrive afterwards must not pile
    up in the reactor's shared buffer ring, or one connection starves all others."""
    first = threading.Event()
    seen: list[int] = []

    async def handler(conn: zerg.Connection) -> None:
        if not first.is_set():              # connection A: stops reading, keeps writing
            first.set()
            reader = PipeReader(conn)
            res = await read_at_least(reader, 1)
            reader.advance_to(len(res.buffer))
            reader.complete()
            conn.write(b"completed")
            await conn.flush()
            await asyncio.sleep(1.5)        # still open, still writable
            seen.append(slots_in_use())
            conn.write(b"bye")
            await conn.flush()
            return
        await pipe_echo(conn)               # connection B: plain echo

    with pipe_server(handler, reactor=TINY_RING) as srv, connect(srv) as a:
        a.sendall(b"x")
        assert recv_exact(a, 9) == b"completed"
        a.sendall(bytes(20_000))            # more than the whole ring (8 x 512)
        time.sleep(0.2)
        with connect(srv) as b:
            b.settimeout(1.0)
            b.sendall(b"ping")
            try:
                echoed = recv_exact(b, 4)
            except TimeoutError:
                echoed = b"<starved>"
        assert recv_exact(a, 3) == b"bye"
    assert (echoed, seen) == (b"ping", [0]), "slots received after complete() were kept"


# ------------------------------------------------------------ 10. use after advance
def test_consumed_buffer_raises_and_never_shows_recycled_bytes() -> None:
    cfg = zerg.ReactorConfig(buffer_ring_entries=2, recv_buffer_size=64)
    outcomes: list[str] = []

    async def handler(conn: zerg.Connection) -> None:
        reader = PipeReader(conn)
        res = await read_at_least(reader, 10)
        old = res.buffer
        piece = old[2:5]
        assert old == b"A" * 10 and piece == b"AAA"
        reader.advance_to(len(old))         # every byte consumed: slots go back
        for use in (old.tobytes, piece.tobytes, lambda: old.find(b"A"), lambda: old[0],
                    lambda: old[1:3].tobytes(), lambda: old == b"A" * 10):
            with pytest.raises(ValueError, match=r"consumed|release"):
                use()
        conn.write(b"1")
        await conn.flush()
        # New bytes land in the recycled slots (only two exist); the old view stays dead.
        for _ in range(4):
            res = await read_at_least(reader, 10)
            assert res.buffer == b"B" * 10
            reader.advance_to(len(res.buffer))
            with pytest.raises(ValueError):
                old.tobytes()
            conn.write(b"2")
            await conn.flush()
        # Partial consumption inside one slot, then more bytes: the old buffer raises
        # or still shows its own bytes, never someone else's.
        res = await read_at_least(reader, 10)
        old = res.buffer
        reader.advance_to(4, len(old))
        try:
            outcomes.append("same" if old.tobytes() == b"C" * 10 else "RECYCLED")
        except ValueError:
            outcomes.append("raised")
        conn.write(b"3")
        await conn.flush()
        res = await read_at_least(reader, 16)
        assert res.buffer == b"C" * 6 + b"D" * 10
        try:
            outcomes.append("same" if old.tobytes() == b"C" * 10 else "RECYCLED")
        except ValueError:
            outcomes.append("raised")
        reader.advance_to(len(res.buffer))
        conn.write(b"4")
        await conn.flush()

    with pipe_server(handler, reactor=cfg) as srv, connect(srv) as s:
        s.sendall(b"A" * 10)
        assert recv_exact(s, 1) == b"1"
        for _ in range(4):
            s.sendall(b"B" * 10)
            assert recv_exact(s, 1) == b"2"
        s.sendall(b"C" * 10)
        assert recv_exact(s, 1) == b"3"
        s.sendall(b"D" * 10)
        assert recv_exact(s, 1) == b"4"
    assert "RECYCLED" not in outcomes
    assert outcomes[1] == "raised"          # the read moved the slots to a new buffer


# --------------------------------------------------- local close while read() waits
@pytest.mark.parametrize("closer", ["conn.close", "engine.stop"])
def test_local_close_completes_a_waiting_read(closer: str) -> None:
    """DESIGN: pending read() calls report the end when the connection closes.

    A PipeReader that already pulled bytes keeps an (empty) owning buffer; the close
    releases it, and the waiting read() must still return is_completed, not raise.
    """
    outcomes: list[object] = []
    waiting = threading.Event()

    async def handler(conn: zerg.Connection) -> None:
        reader = PipeReader(conn)
        res = await read_at_least(reader, 1)
        reader.advance_to(len(res.buffer))          # consumed everything
        if closer == "conn.close":
            asyncio.get_running_loop().call_later(0.05, conn.close)
        waiting.set()
        try:
            res = await asyncio.wait_for(reader.read(), 5.0)
            outcomes.append((res.is_completed, res.is_canceled, res.buffer.tobytes()))
        except Exception as exc:
            outcomes.append(exc)

    with serving(handler) as srv, connect(srv) as s:
        s.sendall(b"x")
        assert waiting.wait(5)
        if closer == "engine.stop":
            time.sleep(0.05)
            srv.stop()
        wait_for(lambda: bool(outcomes), what="the read to end")
    assert outcomes == [(True, False, b"")]


# ----------------------------------------------------- 11. level 2: get_sequence
def test_get_sequence_advance_and_release_return_slots() -> None:
    cfg = zerg.ReactorConfig(buffer_ring_entries=16, recv_buffer_size=512)
    payload = random.Random(3).randbytes(3000)
    report: dict[str, Any] = {}

    async def handler(conn: zerg.Connection) -> None:
        await eventually(lambda: conn.bytes_in >= len(payload), "all bytes in")
        snap = await conn.read()
        assert not snap.is_closed
        seq = conn.get_sequence(snap)
        assert seq.tobytes() == payload and len(seq) == len(payload)
        segs = [len(mv) for mv in seq]
        report["segs"] = segs
        assert conn.slots_held == len(segs) >= 6
        await eventually(lambda: slots_in_use() == len(segs), "slots counted")
        for i in range(0, len(payload) - 8, 97):    # searches across segment boundaries
            sub = payload[i:i + 8]
            assert seq.find(sub, i) == payload.find(sub, i)
        tail = seq[segs[0] - 3:segs[0] + 3]         # a slice across the first boundary
        assert tail == payload[segs[0] - 3:segs[0] + 3]
        seq.advance(1)                              # inside the first slot: nothing back
        await asyncio.sleep(0.01)
        assert slots_in_use() == len(segs)
        seq.advance(segs[0])                        # first slot done (and 1 byte more)
        await eventually(lambda: slots_in_use() == len(segs) - 1, "one slot back")
        assert seq.tobytes() == payload[segs[0] + 1:]
        with pytest.raises(ValueError):
            tail.tobytes()                          # its first bytes went back
        seq.release()
        await eventually(lambda: slots_in_use() == 0, "all slots back")
        with pytest.raises(ValueError, match="release"):
            seq.tobytes()
        seq.release()                               # idempotent
        conn.write(b"ok")
        await conn.flush()

    with pipe_server(handler, reactor=cfg) as srv, connect(srv) as s:
        s.sendall(payload)
        assert recv_exact(s, 2) == b"ok"
    assert sum(report["segs"]) == len(payload)


@pytest.mark.parametrize("how", ["handler returns", "conn.close"])
def test_sequence_alive_at_close_is_released(how: str) -> None:
    kept: list[zerg.BufferSequence] = []
    after_close: list[BaseException] = []

    async def handler(conn: zerg.Connection) -> None:
        snap = await conn.read()
        seq = conn.get_sequence(snap)
        assert seq.startswith(b"keep")
        kept.append(seq)
        kept.append(seq[1:3])
        if how == "conn.close":
            conn.close()
            for s in kept:
                try:
                    s.tobytes()
                except ValueError as exc:
                    after_close.append(exc)
            seq.release()                   # harmless now: no slot goes back twice
            await eventually(lambda: slots_in_use() == 0, "slots back")
            await asyncio.sleep(0.01)
            assert slots_in_use() == 0

    with pipe_server(handler) as srv, connect(srv) as s:
        s.sendall(b"keep")
        assert recv_until_closed(s) == b""
        wait_for(lambda: srv.engine.stats()[0].connections == 0, what="closed")
        wait_for(lambda: srv.engine.stats()[0].slots_in_use == 0, what="slots back")
    for seq in kept:
        with pytest.raises(ValueError, match="release"):
            seq.tobytes()
    if how == "conn.close":
        assert len(after_close) == 2


def test_trickling_peer_cannot_tie_up_the_shared_ring() -> None:
    """A slowloris-style peer sends a huge line 1 byte per recv: its reader compacts
    the tail, so a second connection on the same 16-slot ring still gets answers."""
    cfg = zerg.ReactorConfig(buffer_ring_entries=16, recv_buffer_size=1024)

    async def line_echo(conn: zerg.Connection) -> None:
        reader = PipeReader(conn)
        while True:
            result = await reader.read()
            buf = result.buffer
            end = buf.find(b"\n")
            if end >= 0:
                conn.write(b"len=%d\n" % end)
                await conn.flush()
                reader.advance_to(end + 1, end + 1)
            else:
                reader.advance_to(0, len(buf))
            if result.is_completed:
                break
        reader.complete()

    with serving(line_echo, reactor=cfg) as srv:
        slow = srv.connect()
        slow.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(200):
            slow.send(b"x")
            time.sleep(0.0005)
        with srv.connect() as s:
            s.sendall(b"ping\n")
            assert recv_exact(s, 6) == b"len=4\n"
        slow.sendall(b"\n")
        assert recv_exact(slow, 8) == b"len=200\n"
        assert srv.engine.stats()[0].slots_in_use <= 8
        slow.close()


# -- read_at_least (issue 14) -------------------------------------------------------------


def test_read_at_least_waits_for_n_bytes_across_reads_and_consumes_nothing() -> None:
    """A length-prefixed frame arriving a few bytes at a time: read_at_least(4)
    then read_at_least(4 + length) complete only once those bytes are buffered;
    readexactly in three lines on top of it."""
    frames: list[bytes] = []

    async def handler(conn: zerg.Connection) -> None:
        reader = PipeReader(conn)
        while True:
            res = await reader.read_at_least(4)
            if len(res.buffer) < 4:                       # the peer finished
                reader.advance_to(0)
                return
            size = int.from_bytes(res.buffer[:4].tobytes(), "big")
            reader.advance_to(0)                          # nothing consumed yet
            res = await reader.read_at_least(4 + size)
            frames.append(res.buffer[4:4 + size].tobytes())
            reader.advance_to(4 + size)
            conn.write(b"ok")
            await conn.flush()

    payloads = [b"", b"x", b"hello world" * 50, bytes(range(256)) * 40]
    wire = b"".join(len(p).to_bytes(4, "big") + p for p in payloads)
    with serving(handler) as srv, srv.connect() as s:
        for i in range(0, len(wire), 7):
            s.sendall(wire[i:i + 7])
            time.sleep(0.0005)
        assert recv_exact(s, 2 * len(payloads)) == b"ok" * len(payloads)
    assert frames == payloads


def test_read_at_least_returns_short_on_cancel_or_when_the_peer_finishes() -> None:
    got: list[tuple[bytes, bool, bool]] = []

    async def handler(conn: zerg.Connection) -> None:
        reader = PipeReader(conn)
        conn.loop.call_later(0.2, reader.cancel_pending_read)
        res = await reader.read_at_least(100)             # 10 bytes come, then a cancel
        got.append((res.buffer.tobytes(), res.is_completed, res.is_canceled))
        reader.advance_to(0, len(res.buffer))
        conn.write(b"canceled")
        await conn.flush()
        res = await reader.read_at_least(100)             # then the peer finishes
        got.append((res.buffer.tobytes(), res.is_completed, res.is_canceled))
        reader.advance_to(len(res.buffer))

    with serving(handler) as srv, srv.connect() as s:
        s.sendall(b"only ten b")
        assert recv_exact(s, 8) == b"canceled"
        s.shutdown(socket.SHUT_WR)
        recv_until_closed(s)
    assert got == [(b"only ten b", False, True), (b"only ten b", True, False)]


def test_read_at_least_refuses_more_than_max_read_buffer() -> None:
    errors: list[str] = []

    async def handler(conn: zerg.Connection) -> None:
        reader = PipeReader(conn)
        try:
            await reader.read_at_least(10 ** 9)
        except ValueError as exc:
            errors.append(str(exc))

    with serving(handler) as srv, srv.connect() as s:
        s.sendall(b"x")
        recv_until_closed(s)
    assert errors and "max_read_buffer" in errors[0]
