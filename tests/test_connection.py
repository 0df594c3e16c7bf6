"""The level-1 connection API: read cycle, slots, writes, caps, misuse."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import time

import pytest
from conftest import echo_handler, recv_exact, serving, wait_for

import zerg


def test_read_snapshot_cycle_and_close_carries_no_items() -> None:
    seen: list[tuple[int, bool, int]] = []

    async def handler(conn: zerg.Connection) -> None:
        total = bytearray()
        while True:
            snap = await conn.read()
            count = 0
            while (item := conn.try_get_ring(snap)) is not None:
                assert item.length == len(item.view)
                total += item.view
                conn.return_ring(item)
                count += 1
            seen.append((snap.tail, snap.is_closed, count))
            conn.reset_read()
            if snap.is_closed:
                break
        conn.write(bytes(total))    # after is_closed: nothing was lost
        await conn.flush()

    with serving(handler) as srv, srv.connect() as s:
        s.sendall(b"abc" * 1000)
        s.shutdown(1)
        assert recv_exact(s, 3000) == b"abc" * 1000
    assert seen[-1][1] is True and seen[-1][2] == 0
    assert all(not closed and n > 0 for _, closed, n in seen[:-1])


def test_second_concurrent_read_raises() -> None:
    result: list[str] = []

    async def handler(conn: zerg.Connection) -> None:
        conn.write(b"r")
        await conn.flush()
        first = asyncio.ensure_future(conn.read())
        await asyncio.sleep(0)
        try:
            await conn.read()
        except RuntimeError as exc:
            result.append(str(exc))
        snap = await first
        while (item := conn.try_get_ring(snap)) is not None:
            conn.return_ring(item)
        conn.write(b"done")
        await conn.flush()

    with serving(handler) as srv, srv.connect() as s:
        assert recv_exact(s, 1) == b"r"
        time.sleep(0.2)         # let both reads start waiting first
        s.sendall(b"x")
        assert recv_exact(s, 4) == b"done"
    assert result and "another read()" in result[0]


def test_double_return_is_an_error_and_stale_view_is_released() -> None:
    errors: list[str] = []

    async def handler(conn: zerg.Connection) -> None:
        snap = await conn.read()
        item = conn.try_get_ring(snap)
        assert item is not None
        conn.return_ring(item)
        try:
            conn.return_ring(item)
        except ValueError as exc:
            errors.append(str(exc))
        try:
            bytes(item.view)
        except ValueError as exc:
            errors.append(str(exc))
        conn.write(b"ok")
        await conn.flush()

    with serving(handler) as srv, srv.connect() as s:
        s.sendall(b"data")
        assert recv_exact(s, 2) == b"ok"
    assert "already returned" in errors[0]
    assert "released" in errors[1]


def test_items_kept_after_return_stay_dead_while_later_items_arrive() -> None:
    """Returned items are reused for later receives only once nothing refers
    to them (the C path's item pool): one a handler keeps stays returned,
    its view dead, while the echo goes on with fresh items."""
    kept: list[zerg.RingItem] = []
    seen: list[tuple[bool, bool]] = []

    async def handler(conn: zerg.Connection) -> None:
        while True:
            snap = await conn.read()
            if snap.is_closed:
                return
            while (item := conn.try_get_ring(snap)) is not None:
                seen.append((all(item is not k for k in kept), bytes(item.view) != b""))
                conn.write(item.view)
                conn.return_ring(item)
                if len(kept) < 3:
                    kept.append(item)
            conn.reset_read()
            await conn.flush()

    with serving(handler) as srv, srv.connect() as s:
        for i in range(40):
            msg = b"m%02d" % i
            s.sendall(msg)
            assert recv_exact(s, 3) == msg
    assert seen and all(fresh and nonempty for fresh, nonempty in seen)
    for item in kept:
        with pytest.raises(ValueError):
            bytes(item.view)


def test_level1_views_a_handler_can_still_reach_are_never_handed_out_again() -> None:
    """A returned item's view that nothing else refers to serves its slot's
    next message (so level 1 makes no view per message), the item itself
    left with a released one; on a 4-slot ring, a view the handler keeps,
    hashes, weakly references or holds an export of is released as before and
    never handed out again, and every view reads right as sizes change."""
    import pickle
    import weakref

    kept: list[memoryview] = []
    items: list[zerg.RingItem] = []
    refs: list[weakref.ref[memoryview]] = []
    exports: list[pickle.PickleBuffer] = []
    errors: list[str] = []
    mode = ["."]

    async def handler(conn: zerg.Connection) -> None:
        while True:
            snap = await conn.read()
            if snap.is_closed:
                return
            while (item := conn.try_get_ring(snap)) is not None:
                view = item.view
                data = bytes(view)
                if any(view is k for k in kept) or any(r() is view for r in refs):
                    errors.append(f"{data[:8]!r}: a view still reachable came again")
                conn.write(data)
                m = mode[0]
                if m == "K":
                    kept.append(view)
                elif m == "H":
                    hash(view)
                elif m == "W":
                    refs.append(weakref.ref(view))
                elif m == "E":
                    exports.append(pickle.PickleBuffer(view))
                elif m == "I":
                    items.append(item)
                del view
                conn.return_ring(item)
            conn.reset_read()
            await conn.flush()

    cfg = zerg.ReactorConfig(buffer_ring_entries=4, recv_buffer_size=4096)
    with serving(handler, reactor=cfg) as srv, srv.connect() as s:
        for m in ".KHWEI.":
            mode[0] = m
            for i in range(60):
                size = 64 if m == "." else (1, 64, 64, 700, 4096)[i % 5]
                msg = (b"%s%d:" % (m.encode(), i)).ljust(size, b"x")[:size]
                s.sendall(msg)
                assert recv_exact(s, len(msg)) == msg, (m, i)
        assert srv.engine.stats()[0].slots_in_use == 0
    assert errors == []
    for view in kept:               # released when their items went back
        with pytest.raises(ValueError):
            bytes(view)
    for ref in refs:
        alive = ref()
        if alive is not None:
            with pytest.raises(ValueError):
                bytes(alive)
    for item in items:              # a kept item's view is a released one
        with pytest.raises(ValueError):
            bytes(item.view)
    for buf in exports:             # an export outlives the release: it still reads
        assert len(buf.raw()) > 0


def test_get_buffer_advance_and_write_any_buffer() -> None:
    async def handler(conn: zerg.Connection) -> None:
        mem = conn.get_buffer(5)
        mem[:5] = b"hello"
        conn.advance(5)
        conn.write(bytearray(b" "))
        conn.write(memoryview(b"xxworld")[2:])
        import array

        conn.write(array.array("B", b"!"))
        with pytest.raises(ValueError, match="advance"):
            conn.advance(1)             # nothing granted now
        with pytest.raises(ValueError, match="write_buffer_size"):
            conn.get_buffer(10**7)
        await conn.flush()

    with serving(handler) as srv, srv.connect() as s:
        assert recv_exact(s, 12) == b"hello world!"


def test_large_write_chains_segments_and_cap_raises() -> None:
    payload = os.urandom(3 * 1024 * 1024 + 17)
    outcome: list[str] = []
    cfg = zerg.ReactorConfig(write_buffer_size=65536, max_write_buffer=4 * 1024 * 1024)

    async def handler(conn: zerg.Connection) -> None:
        conn.write(payload)                         # ~48 segments chained
        try:
            conn.write(b"z" * (2 * 1024 * 1024))    # over the 4 MiB cap
        except zerg.WriteBufferFullError as exc:
            outcome.append(str(exc))
        await conn.flush()
        conn.write(b"tail")                         # fine after the flush
        await conn.flush()

    with serving(handler, reactor=cfg) as srv, srv.connect() as s:
        got = recv_exact(s, len(payload) + 4)
        assert hashlib.sha256(got[:-4]).digest() == hashlib.sha256(payload).digest()
        assert got[-4:] == b"tail"
        wait_for(lambda: srv.engine.stats()[0].write_segments_in_use == 0, what="segments back")
    assert "await conn.flush()" in outcome[0]


def test_write_after_close_raises() -> None:
    outcome: list[BaseException] = []

    async def handler(conn: zerg.Connection) -> None:
        conn.close()
        conn.close()            # idempotent
        try:
            conn.write(b"late")
        except ConnectionError as exc:
            outcome.append(exc)
        snap = await conn.read()
        assert snap.is_closed

    with serving(handler) as srv, srv.connect() as s:
        assert s.recv(10) == b""
    assert outcome


def test_flush_to_reset_peer_raises_connection_error() -> None:
    outcome: list[BaseException] = []
    gone = threading.Event()

    async def handler(conn: zerg.Connection) -> None:
        await conn.read()
        while not gone.is_set():
            await asyncio.sleep(0.01)
        try:
            for _ in range(200):
                conn.write(b"x" * 65536)
                await conn.flush()
        except ConnectionError as exc:
            outcome.append(exc)

    with serving(handler) as srv:
        s = srv.connect()
        s.sendall(b"hi")
        import socket
        import struct

        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
        gone.set()
        wait_for(lambda: bool(outcome), what="send failure")
        wait_for(lambda: srv.engine.stats()[0].connections == 0, what="closed")
    assert isinstance(outcome[0], ConnectionError)


def test_dry_buffer_ring_is_back_pressure_not_loss() -> None:
    """8 slots of 512 bytes: the ring runs dry constantly; every byte arrives in order."""
    cfg = zerg.ReactorConfig(buffer_ring_entries=8, recv_buffer_size=512)
    payload = os.urandom(600_000)

    async def slow_echo(conn: zerg.Connection) -> None:
        while True:
            snap = await conn.read()
            if snap.is_closed:
                return
            items = []
            while (item := conn.try_get_ring(snap)) is not None:
                items.append(item)
            await asyncio.sleep(0.001)      # hold the slots a while
            for item in items:
                conn.write(item.view)
                conn.return_ring(item)
            await conn.flush()

    with serving(slow_echo, reactor=cfg) as srv, srv.connect() as s:
        t = threading.Thread(target=s.sendall, args=(payload,))
        t.start()
        got = recv_exact(s, len(payload))
        t.join()
        assert got == payload
        wait_for(lambda: srv.engine.stats()[0].slots_in_use == 0, what="slots back")


def test_two_clients_share_a_tiny_ring() -> None:
    cfg = zerg.ReactorConfig(buffer_ring_entries=4, recv_buffer_size=256)
    payloads = [os.urandom(200_000), os.urandom(200_000)]

    with serving(echo_handler, reactor=cfg) as srv:
        socks = [srv.connect(), srv.connect()]
        results: list[bytes] = [b"", b""]

        def run(i: int) -> None:
            threading.Thread(target=socks[i].sendall, args=(payloads[i],)).start()
            results[i] = recv_exact(socks[i], len(payloads[i]))

        threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert results == payloads
        for s in socks:
            s.close()
