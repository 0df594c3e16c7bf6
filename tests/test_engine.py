"""Engine behaviour through real sockets: echo, concurrency, lifecycle, leaks."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import socket
import struct
import threading
import time
from pathlib import Path

import pytest
from conftest import RunningServer, echo_handler, recv_exact, serving, wait_for

import zerg


def test_echo_one_message(echo_server: RunningServer) -> None:
    with echo_server.connect() as s:
        s.sendall(b"hello zerg")
        assert recv_exact(s, 10) == b"hello zerg"


def test_echo_200_messages_one_connection(echo_server: RunningServer) -> None:
    with echo_server.connect() as s:
        for i in range(200):
            msg = f"message {i:04d} ".encode() * (1 + i % 7)
            s.sendall(msg)
            assert recv_exact(s, len(msg)) == msg


def test_64_concurrent_connections(echo_server: RunningServer) -> None:
    socks = [echo_server.connect() for _ in range(64)]
    try:
        for i, s in enumerate(socks):
            s.sendall(f"conn-{i}".encode())
        for i, s in enumerate(socks):
            want = f"conn-{i}".encode()
            assert recv_exact(s, len(want)) == want
        wait_for(lambda: echo_server.engine.stats()[0].connections == 64, what="64 connections")
    finally:
        for s in socks:
            s.close()


def test_4mib_payload_by_hash(echo_server: RunningServer) -> None:
    payload = os.urandom(4 * 1024 * 1024)
    with echo_server.connect() as s:
        sender = threading.Thread(target=s.sendall, args=(payload,))
        sender.start()
        got = recv_exact(s, len(payload))
        sender.join()
    assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()


def test_5000_pipelined_messages_in_order(echo_server: RunningServer) -> None:
    msgs = b"".join(struct.pack("!I", i) + b"x" * (i % 13) for i in range(5000))
    with echo_server.connect() as s:
        s.sendall(msgs)
        got = recv_exact(s, len(msgs))
    assert got == msgs


def test_clients_close_and_reset_mid_stream(echo_server: RunningServer) -> None:
    for i in range(20):
        s = echo_server.connect()
        s.sendall(os.urandom(100_000))
        if i % 2:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()       # with SO_LINGER 0 this sends RST
    with echo_server.connect() as s:
        s.sendall(b"still serving")
        assert recv_exact(s, 13) == b"still serving"
    wait_for(lambda: echo_server.engine.stats()[0].connections == 0, what="all closed")
    wait_for(lambda: echo_server.engine.stats()[0].slots_in_use == 0, what="slots back")


def test_half_close_reply_still_arrives() -> None:
    async def handler(conn: zerg.Connection) -> None:
        data = bytearray()
        while True:
            snap = await conn.read()
            if snap.is_closed:
                break
            while (item := conn.try_get_ring(snap)) is not None:
                data += item.view
                conn.return_ring(item)
        conn.write(b"got %d bytes" % len(data))
        await conn.flush()

    with serving(handler) as srv, srv.connect() as s:
        s.sendall(b"a" * 5000)
        s.shutdown(socket.SHUT_WR)
        assert s.recv(100) == b"got 5000 bytes"
        assert s.recv(100) == b""       # the server closed after the handler returned


def test_handler_that_raises_is_logged_and_closed(caplog: pytest.LogCaptureFixture) -> None:
    async def handler(conn: zerg.Connection) -> None:
        snap = await conn.read()
        item = conn.try_get_ring(snap)
        assert item is not None
        if bytes(item.view) == b"boom":
            raise RuntimeError("handler exploded")
        conn.write(item.view)
        conn.return_ring(item)
        await conn.flush()

    caplog.set_level(logging.ERROR, logger="zerg")
    with serving(handler) as srv:
        with srv.connect() as s:
            s.sendall(b"boom")
            assert s.recv(10) == b""          # closed by the server
        with srv.connect() as s:
            s.sendall(b"fine")
            assert recv_exact(s, 4) == b"fine"
        wait_for(lambda: srv.engine.stats()[0].slots_in_use == 0, what="slots back")
    assert any("handler exploded" in (r.exc_text or "") or
               (r.exc_info and "handler exploded" in str(r.exc_info[1]))
               for r in caplog.records)


def test_stop_with_50_open_connections() -> None:
    with serving(echo_handler) as srv:
        socks = [srv.connect() for _ in range(50)]
        for s in socks:
            s.sendall(b"ping")
        for s in socks:
            assert recv_exact(s, 4) == b"ping"
        t0 = time.monotonic()
        srv.stop()
        assert time.monotonic() - t0 < 3.0
        for s in socks:
            s.settimeout(5)
            assert s.recv(10) == b""          # every connection was closed
            s.close()
        st = srv.engine.stats()[0]
        assert st.connections == 0 and st.slots_in_use == 0 and st.closed == 50


def _fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_no_fd_leak_over_10_start_stop_cycles() -> None:
    # Warm-up cycle: first use creates lazily-initialised process resources.
    with serving(echo_handler) as srv, srv.connect() as s:
        s.sendall(b"x")
        recv_exact(s, 1)
    before = _fd_count()
    for _ in range(10):
        with serving(echo_handler) as srv:
            with srv.connect() as s:
                s.sendall(b"cycle")
                assert recv_exact(s, 5) == b"cycle"
            srv.stop()
    assert _fd_count() == before


def test_every_slot_back_after_connections_close() -> None:
    async def hoarder(conn: zerg.Connection) -> None:
        # Takes items and never returns them: the close must give them back.
        held = []
        while True:
            snap = await conn.read()
            if snap.is_closed:
                return
            while (item := conn.try_get_ring(snap)) is not None:
                held.append(item)
            conn.write(b"k")
            await conn.flush()

    with serving(hoarder) as srv:
        for _ in range(5):
            with srv.connect() as s:
                for _ in range(10):
                    s.sendall(b"data")
                    recv_exact(s, 1)
        wait_for(lambda: srv.engine.stats()[0].connections == 0, what="closed")
        st = srv.engine.stats()[0]
        assert st.slots_in_use == 0
        assert st.write_segments_in_use == 0


def test_port_in_use_names_the_port() -> None:
    with serving(echo_handler) as srv:
        other = zerg.Engine(zerg.EngineOptions(ip="127.0.0.1", port=srv.port))
        with pytest.raises(OSError, match=f"port {srv.port} .*already in use"):
            other.listen()


def test_ephemeral_port_and_context_manager() -> None:
    with zerg.Engine(zerg.EngineOptions(ip="127.0.0.1", port=0)) as engine:
        engine.listen()
        assert 0 < engine.port < 65536
        with pytest.raises(RuntimeError, match="after listen"):
            zerg.Engine().port  # noqa: B018


def test_non_callable_handler_rejected_clearly() -> None:
    engine = zerg.Engine(zerg.EngineOptions(ip="127.0.0.1", port=0))
    with pytest.raises(TypeError, match="handler must be"):
        engine.serve("not a function")  # type: ignore[arg-type]
    engine.close()


def test_stop_before_serve_makes_serve_refuse_promptly() -> None:
    """A stopped engine does not serve (issue 13: it used to return silently)."""
    engine = zerg.Engine(zerg.EngineOptions(ip="127.0.0.1", port=0))
    engine.stop()
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match="stopped"):
        engine.serve(echo_handler)
    assert time.monotonic() - t0 < 2.0


def test_multiple_reactors_spread_connections() -> None:
    with serving(echo_handler, reactor_count=3) as srv:
        socks = [srv.connect() for _ in range(12)]
        for i, s in enumerate(socks):
            s.sendall(b"r%d" % i)
        for i, s in enumerate(socks):
            want = b"r%d" % i
            assert recv_exact(s, len(want)) == want
        stats = srv.engine.stats()
        assert len(stats) == 3
        assert [st.accepted for st in stats] == [4, 4, 4]
        for s in socks:
            s.close()
        wait_for(lambda: sum(st.connections for st in srv.engine.stats()) == 0, what="closed")


def test_sigint_stops_serve_on_main_thread(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    script = tmp_path / "srv.py"
    script.write_text(
        "import sys, zerg\n"
        "async def h(conn):\n"
        "    await conn.read()\n"
        "e = zerg.Engine(zerg.EngineOptions(ip='127.0.0.1', port=0))\n"
        "e.listen()\n"
        "print(e.port, flush=True)\n"
        "e.serve(h)\n"
        "print('stopped', flush=True)\n"
    )
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            time.sleep(0.1)
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=10) == 0
        assert proc.stdout.read().strip() == "stopped"
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_asyncio_works_inside_handlers() -> None:
    """sleep, wait_for, Queue, and a real asyncio socket client in a handler."""
    upstream = socket.socket()
    upstream.bind(("127.0.0.1", 0))
    upstream.listen()

    def upstream_serve() -> None:
        c, _ = upstream.accept()
        with c:
            data = c.recv(100)
            c.sendall(data.upper())

    threading.Thread(target=upstream_serve, daemon=True).start()
    up_port = upstream.getsockname()[1]

    async def handler(conn: zerg.Connection) -> None:
        q: asyncio.Queue[bytes] = asyncio.Queue()

        async def producer() -> None:
            await asyncio.sleep(0.01)
            await q.put(b"queued")

        asyncio.get_running_loop().create_task(producer())
        got = await asyncio.wait_for(q.get(), timeout=2)
        try:
            await asyncio.wait_for(asyncio.sleep(10), timeout=0.05)
            timed_out = b"no"
        except TimeoutError:
            timed_out = b"yes"
        reader, writer = await asyncio.open_connection("127.0.0.1", up_port)
        writer.write(b"via asyncio")
        await writer.drain()
        upper = await reader.read(100)
        writer.close()
        await writer.wait_closed()
        conn.write(b"|".join([got, timed_out, upper]))
        await conn.flush()

    with serving(handler) as srv, srv.connect() as s:
        assert recv_exact(s, 22) == b"queued|yes|VIA ASYNCIO"
    upstream.close()
