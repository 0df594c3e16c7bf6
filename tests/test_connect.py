"""zerg.connect: outbound connections on the reactor's own ring.

Real sockets, a real io_uring: the connect is one IORING_OP_CONNECT, then the
connection receives through the same multishot recv and buffer ring as an
accepted one, and every read level works on it.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest
from conftest import serving, socket_echo, socket_server

import zerg
from zerg.adapters import PipeReader


@pytest.fixture
def echo_server() -> Iterator[tuple[str, int]]:
    """A plain stdlib echo server on a thread (IPv4 loopback)."""
    with socket_server(socket_echo) as port:
        yield "127.0.0.1", port


def run_standalone(main: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    loop = zerg.new_event_loop()
    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def _roundtrip(conn: zerg.Connection, payload: bytes) -> bytes:
    conn.write(payload)
    await conn.flush()
    reader = PipeReader(conn)
    got = bytearray()
    while len(got) < len(payload):
        result = await reader.read()
        got.extend(result.buffer.tobytes())
        reader.advance_to(len(result.buffer))
        if result.is_completed:
            break
    return bytes(got)


def test_connect_from_a_standalone_loop_reads_with_every_level(
        echo_server: tuple[str, int]) -> None:
    host, port = echo_server
    payload = os.urandom(300_000)

    async def main() -> None:
        conn = await zerg.connect(host, port)
        assert not conn.is_closed and conn.tls is None
        assert conn.peername == (host, port)
        assert await _roundtrip(conn, payload) == payload         # level 3
        conn.write(b"level one")
        await conn.flush()
        got = b""
        while len(got) < 9:                                        # level 1
            snap = await conn.read()
            while (item := conn.try_get_ring(snap)) is not None:
                got += item.view.tobytes()
                conn.return_ring(item)
        assert got == b"level one"
        conn.write(b"level two")
        await conn.flush()
        got = b""
        while len(got) < 9:                                        # level 2
            seq = conn.get_sequence(await conn.read())
            got += seq.tobytes()
            seq.release()
        assert got == b"level two"
        conn.close()
        assert asyncio.get_running_loop().reactor.stats().connected == 1  # type: ignore[attr-defined]

    run_standalone(main)


def test_connect_from_a_handler_to_another_zerg_server() -> None:
    """A zerg handler calls a zerg upstream over the same kind of ring: the
    server side's reply comes back through the client's receive slots."""

    async def upstream(conn: zerg.Connection) -> None:
        reader = PipeReader(conn)
        while True:
            result = await reader.read()
            if result.buffer:
                conn.write(result.buffer.tobytes().upper())
            reader.advance_to(len(result.buffer))
            await conn.flush()
            if result.is_completed:
                return

    with serving(upstream) as up:
        async def front(conn: zerg.Connection) -> None:
            reader = PipeReader(conn)
            result = await reader.read_at_least(5)
            ask = result.buffer.tobytes()
            reader.advance_to(len(result.buffer))
            other = await zerg.connect("127.0.0.1", up.port, timeout=5)
            try:
                answer = await _roundtrip(other, ask)
            finally:
                other.close()
            conn.write(answer)
            await conn.flush()

        with serving(front) as srv:
            s = srv.connect()
            s.sendall(b"hello")
            assert s.recv(100) == b"HELLO"
            s.close()


def test_connect_over_ipv6() -> None:
    try:
        srv = socket.create_server(("::1", 0), family=socket.AF_INET6)
    except OSError:
        pytest.fail("this machine has no IPv6 loopback; the suite expects one")
    port = srv.getsockname()[1]
    t = threading.Thread(target=lambda: socket_echo(srv.accept()[0]), daemon=True)
    t.start()

    async def main() -> bytes:
        conn = await zerg.connect("::1", port)
        try:
            assert conn.peername is not None and conn.peername[0] == "::1"
            return await _roundtrip(conn, b"over six")
        finally:
            conn.close()

    try:
        assert run_standalone(main) == b"over six"
    finally:
        t.join(5)
        srv.close()


def test_connect_with_a_protocol() -> None:
    events: list[Any] = []

    class Client(zerg.Protocol):
        def __init__(self) -> None:
            self.finished: asyncio.Future[bytes] | None = None
            self.got = b""

        def connection_made(self, conn: zerg.Connection) -> None:
            events.append("made")
            conn.write(b"ping")

        def data_received(self, conn: zerg.Connection, seq: zerg.BufferSequence) -> None:
            self.got += seq.tobytes()
            if self.got == b"ping" and self.finished is not None:
                self.finished.set_result(self.got)

        def connection_lost(self, conn: zerg.Connection, exc: BaseException | None) -> None:
            events.append("lost")

    srv = socket.create_server(("127.0.0.1", 0))
    t = threading.Thread(target=lambda: socket_echo(srv.accept()[0]), daemon=True)
    t.start()
    client = Client()

    async def main() -> bytes:
        client.finished = asyncio.get_running_loop().create_future()
        conn = await zerg.connect("127.0.0.1", srv.getsockname()[1], protocol=client)
        assert events == ["made"]
        got = await asyncio.wait_for(client.finished, 5)
        conn.close()
        for _ in range(100):
            if "lost" in events:
                break
            await asyncio.sleep(0.01)
        return got

    try:
        assert run_standalone(main) == b"ping"
        assert events == ["made", "lost"]
    finally:
        t.join(5)
        srv.close()


def test_connect_failures_raise_the_usual_errors_and_leak_nothing() -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    refused_port = closed.getsockname()[1]
    closed.close()                  # nobody listens there now
    # A listener that never accepts, with its backlog full: SYNs are dropped,
    # so a connect hangs until its timeout.
    jam = socket.socket()
    jam.bind(("127.0.0.1", 0))
    jam.listen(0)
    fillers = []
    for _ in range(4):
        f = socket.socket()
        f.setblocking(False)
        try:
            f.connect(("127.0.0.1", jam.getsockname()[1]))
        except BlockingIOError:
            pass
        fillers.append(f)

    async def main() -> None:
        before = _open_fds()
        with pytest.raises(ConnectionRefusedError):
            await zerg.connect("127.0.0.1", refused_port)
        with pytest.raises(socket.gaierror):
            await zerg.connect("no-such-host.invalid", 80)
        with pytest.raises(TimeoutError):
            await zerg.connect("127.0.0.1", jam.getsockname()[1], timeout=0.3)
        task = asyncio.ensure_future(zerg.connect("127.0.0.1", jam.getsockname()[1]))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(100):            # the canceled connects' completions close their fds
            if _open_fds() == before:
                break
            await asyncio.sleep(0.01)
        assert _open_fds() == before, "a failed connect leaked its socket"
        with pytest.raises(ValueError, match="port"):
            await zerg.connect("127.0.0.1", 0)
        with pytest.raises(ValueError, match="timeout"):
            await zerg.connect("127.0.0.1", 80, timeout=-1)
        with pytest.raises(TypeError, match="SSLContext"):
            await zerg.connect("127.0.0.1", 80, ssl=True)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="server_hostname"):
            await zerg.connect("127.0.0.1", 80, server_hostname="x")
        with pytest.raises(TypeError, match=r"zerg\.Protocol"):
            await zerg.connect("127.0.0.1", 80, protocol=object())  # type: ignore[arg-type]

    try:
        run_standalone(main)
    finally:
        for f in fillers:
            f.close()
        jam.close()


def test_connect_off_a_zerg_loop_says_where_it_must_run() -> None:
    with pytest.raises(RuntimeError, match="zerg reactor loop"):
        asyncio.run(zerg.connect("127.0.0.1", 80))


def test_closing_a_standalone_loop_closes_its_connections() -> None:
    """A connection left open when its standalone loop closes: its socket is
    closed with the loop (the peer reads the end), nothing leaks."""
    srv = socket.create_server(("127.0.0.1", 0))
    peer_saw_end = threading.Event()

    def serve() -> None:
        c, _ = srv.accept()
        with c:
            c.settimeout(10)
            if c.recv(100) == b"":
                peer_saw_end.set()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    loop = zerg.new_event_loop()

    async def main() -> None:
        await zerg.connect("127.0.0.1", srv.getsockname()[1])

    loop.run_until_complete(main())
    loop.close()
    try:
        assert peer_saw_end.wait(10), "the connection's socket stayed open"
    finally:
        t.join(5)
        srv.close()
