"""Reliability under abuse: floods, resets, hoarding, limits, idle peers, shutdown."""

from __future__ import annotations

import asyncio
import os
import resource
import socket
import struct
import threading
import time
from collections.abc import Iterator

import pytest
from conftest import echo_handler, recv_exact, serving, wait_for

import zerg


@pytest.fixture
def many_fds() -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 20000)
    if want < 8000:
        pytest.fail(f"RLIMIT_NOFILE hard limit {hard} is too low for this test (needs 8000)")
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_3000_concurrent_connections_each_echo_a_unique_message(many_fds: None) -> None:
    cfg = zerg.ReactorConfig(buffer_ring_entries=4096, recv_buffer_size=2048)
    with serving(echo_handler, reactor=cfg, backlog=4096) as srv:
        socks = []
        for _ in range(3000):
            socks.append(srv.connect())
        try:
            for i, s in enumerate(socks):
                s.sendall(b"unique-%05d" % i)
            for i, s in enumerate(socks):
                assert recv_exact(s, 12) == b"unique-%05d" % i
            assert srv.engine.stats()[0].connections == 3000
        finally:
            for s in socks:
                s.close()
        wait_for(lambda: srv.engine.stats()[0].connections == 0, timeout=20, what="closed")
        assert srv.engine.stats()[0].slots_in_use == 0


def test_rst_storm_mid_message() -> None:
    with serving(echo_handler) as srv:
        def storm() -> None:
            for _ in range(100):
                s = srv.connect()
                s.sendall(os.urandom(50_000))
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.close()

        threads = [threading.Thread(target=storm) for _ in range(4)]
        for t in threads:
            t.start()
        with srv.connect() as s:        # served throughout the storm
            for i in range(50):
                s.sendall(b"steady %d" % i)
                assert recv_exact(s, len(b"steady %d" % i)) == b"steady %d" % i
        for t in threads:
            t.join()
        # All 401 connected (from the client's side); the last of the storm may
        # still wait in the accept queue when the others are closed, so wait for
        # the reactor to have taken every one, then for every one to be closed.
        wait_for(lambda: srv.engine.stats()[0].accepted == 401
                 and srv.engine.stats()[0].connections == 0, timeout=10,
                 what="all 401 accepted and closed")
        st = srv.engine.stats()[0]
        assert st.slots_in_use == 0 and st.write_segments_in_use == 0
        assert st.accepted == st.closed == 401


def test_flooding_non_reader_does_not_starve_others() -> None:
    """A client floods and never reads: its echo stalls, its receive pauses at
    max_read_buffer, and another client still gets its echo in under a second."""
    cfg = zerg.ReactorConfig(buffer_ring_entries=64, recv_buffer_size=4096,
                             max_read_buffer=64 * 1024, max_write_buffer=1024 * 1024)
    with serving(echo_handler, reactor=cfg) as srv:
        flood = srv.connect()
        flood.setblocking(False)
        stop = threading.Event()

        def pump() -> None:
            chunk = b"f" * 65536
            while not stop.is_set():
                try:
                    flood.send(chunk)
                except BlockingIOError:
                    time.sleep(0.001)
                except OSError:
                    return

        t = threading.Thread(target=pump)
        t.start()
        try:
            wait_for(lambda: srv.engine.stats()[0].receive_paused == 1, timeout=10,
                     what="the flooder's receive to pause")
            # The flood goes on, but once the kernel's socket buffers are full the
            # server takes no more of it: its memory stays bounded.
            deadline = time.monotonic() + 15
            while True:
                before = srv.engine.stats()[0].bytes_in
                time.sleep(0.3)
                st = srv.engine.stats()[0]
                if st.bytes_in == before:
                    break
                assert time.monotonic() < deadline, "the server kept taking the flood"
            assert st.write_segments_in_use * cfg.write_buffer_size <= 2 * cfg.max_write_buffer
            with srv.connect() as s:
                t0 = time.monotonic()
                s.sendall(b"are you there?")
                assert recv_exact(s, 14) == b"are you there?"
                assert time.monotonic() - t0 < 1.0
        finally:
            stop.set()
            t.join()
            flood.close()


def test_hoarding_handler_with_tiny_ring_every_byte_in_order() -> None:
    """One handler hoards its slots; on an 8-slot ring 600 KB still stream through
    another connection, in order (max_read_buffer bounds the hoarder)."""
    cfg = zerg.ReactorConfig(buffer_ring_entries=8, recv_buffer_size=4096,
                             max_read_buffer=4096)
    hoarded: list[zerg.RingItem] = []

    async def handler(conn: zerg.Connection) -> None:
        first = await conn.read()
        item = conn.try_get_ring(first)
        assert item is not None
        if bytes(item.view[:5]) == b"HOARD":
            hoarded.append(item)
            while not (snap := await conn.read()).is_closed:
                while (it := conn.try_get_ring(snap)) is not None:
                    hoarded.append(it)          # never returned while open
            return
        conn.write(item.view)
        conn.return_ring(item)
        await conn.flush()
        await echo_handler(conn)

    payload = os.urandom(600_000)
    with serving(handler, reactor=cfg) as srv:
        hoarder = srv.connect()
        hoarder.sendall(b"HOARD" + b"h" * 200_000)
        wait_for(lambda: srv.engine.stats()[0].receive_paused == 1, what="hoarder paused")
        with srv.connect() as s:
            t = threading.Thread(target=s.sendall, args=(payload,))
            t.start()
            assert recv_exact(s, len(payload)) == payload
            t.join()
        hoarder.close()
        srv.stop()          # the hoarder gives its slots back only when it ends
        assert srv.engine.stats()[0].slots_in_use == 0


def test_max_connections_closes_extra_at_once_and_counts() -> None:
    cfg = zerg.ReactorConfig(max_connections=5)
    with serving(echo_handler, reactor=cfg) as srv:
        socks = [srv.connect() for _ in range(5)]
        for s in socks:
            s.sendall(b"x")
            assert recv_exact(s, 1) == b"x"
        extra = srv.connect()
        extra.settimeout(5)
        try:
            assert extra.recv(10) == b""        # closed at once
        except ConnectionResetError:
            pass
        wait_for(lambda: srv.engine.stats()[0].rejected == 1, what="rejection counted")
        socks[0].close()
        wait_for(lambda: srv.engine.stats()[0].connections == 4, what="a free place")
        with srv.connect() as s:
            s.sendall(b"y")
            assert recv_exact(s, 1) == b"y"
        for s in socks[1:]:
            s.close()
        extra.close()


def test_emfile_on_accept_backs_off_and_recovers() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with serving(echo_handler) as srv:
        held = srv.connect()
        held.sendall(b"a")
        assert recv_exact(held, 1) == b"a"
        used = len(os.listdir("/proc/self/fd"))
        resource.setrlimit(resource.RLIMIT_NOFILE, (used + 2, hard))
        try:
            # The client fds need room too: open them before the limit bites.
            waiting = [socket.socket() for _ in range(3)]
        except OSError:
            waiting = []
        finally:
            pass
        try:
            for s in waiting:
                s.settimeout(10)
                s.connect(("127.0.0.1", srv.port))   # the kernel queues them
            for s in waiting:
                s.sendall(b"b")
            time.sleep(0.3)                         # the server hits EMFILE meanwhile
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        for s in waiting:
            assert recv_exact(s, 1) == b"b"         # accepted and served after recovery
            s.close()
        held.sendall(b"c")
        assert recv_exact(held, 1) == b"c"
        held.close()


def test_idle_timeout_closes_silent_connections_only() -> None:
    cfg = zerg.ReactorConfig(idle_timeout_s=0.3)
    with serving(echo_handler, reactor=cfg) as srv:
        silent = srv.connect()
        chatty = srv.connect()
        t0 = time.monotonic()
        while time.monotonic() - t0 < 0.8:
            chatty.sendall(b"k")
            assert recv_exact(chatty, 1) == b"k"
            time.sleep(0.05)
        silent.settimeout(2)
        assert silent.recv(10) == b""               # closed for idling
        chatty.sendall(b"still")
        assert recv_exact(chatty, 5) == b"still"
        assert srv.engine.stats()[0].idle_closed == 1
        silent.close()
        chatty.close()


def test_handler_that_never_returns_does_not_block_shutdown() -> None:
    async def stuck(conn: zerg.Connection) -> None:
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                raise

    with serving(stuck, shutdown_timeout_s=0.3) as srv:
        socks = [srv.connect() for _ in range(10)]
        time.sleep(0.1)
        t0 = time.monotonic()
        srv.stop()
        assert time.monotonic() - t0 < 2.0
        for s in socks:
            s.close()


def test_stop_under_load_with_thousands_of_connections(many_fds: None) -> None:
    with serving(echo_handler) as srv:
        socks = [srv.connect() for _ in range(2000)]
        stop_load = threading.Event()

        def load() -> None:
            with srv.connect() as s:
                try:
                    while not stop_load.is_set():
                        s.sendall(b"load")
                        recv_exact(s, 4)
                except OSError:
                    pass

        loaders = [threading.Thread(target=load) for _ in range(4)]
        for t in loaders:
            t.start()
        time.sleep(0.2)
        t0 = time.monotonic()
        srv.stop()
        took = time.monotonic() - t0
        stop_load.set()
        for t in loaders:
            t.join()
        for s in socks:
            s.close()
        assert took < 1.0, f"stop() took {took:.2f}s"


def test_30_start_stop_cycles_leak_nothing() -> None:
    with serving(echo_handler) as srv, srv.connect() as s:
        s.sendall(b"w")
        recv_exact(s, 1)
    fds_before = len(os.listdir("/proc/self/fd"))
    threads_before = threading.active_count()
    for i in range(30):
        with serving(echo_handler) as srv:
            with srv.connect() as s:
                s.sendall(b"cycle %d" % i)
                assert recv_exact(s, len(b"cycle %d" % i)) == b"cycle %d" % i
            srv.stop()
            st = srv.engine.stats()[0]
            assert st.slots_in_use == 0 and st.connections == 0
    assert len(os.listdir("/proc/self/fd")) == fds_before
    assert threading.active_count() <= threads_before


def test_readers_waiting_for_the_rest_of_a_message_cannot_starve_the_reactor() -> None:
    """20 clients each send 1 MiB of an unfinished line (more than the 16 MiB
    ring): their PipeReaders wait for the newline holding full slots.  When the
    ring runs dry those bytes move off it, so a new client is still answered and
    the hogs' disconnects are still noticed."""
    from zerg.adapters import PipeReader

    async def line_echo(conn: zerg.Connection) -> None:
        reader = PipeReader(conn)
        try:
            while True:
                res = await reader.read()
                buf = res.buffer
                nl = buf.find(b"\n")
                if nl >= 0:
                    conn.write(buf[:nl + 1])
                    reader.advance_to(nl + 1)
                    await conn.flush()
                else:
                    reader.advance_to(0, len(buf))
                if res.is_completed:
                    return
        finally:
            reader.complete()

    with serving(line_echo) as srv:
        hogs = [srv.connect() for _ in range(20)]
        senders = [threading.Thread(target=s.sendall, args=(b"x" * (1 << 20),)) for s in hogs]
        for t in senders:
            t.start()
        for t in senders:
            t.join(20)
        with srv.connect(timeout=5) as s:
            s.sendall(b"ping\n")
            assert recv_exact(s, 5) == b"ping\n"
        for s in hogs:
            s.close()
        wait_for(lambda: srv.engine.stats()[0].connections == 0, timeout=10,
                 what="the hogs' disconnects to be noticed")
        assert srv.engine.stats()[0].slots_in_use == 0
