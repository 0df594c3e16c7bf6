"""A connection belongs to its reactor thread (issue 13): calls from other
threads raise, naming the thread; ``call_soon_threadsafe`` is the way in.
The broadcast example uses it across two reactors."""

from __future__ import annotations

import socket
import threading
import time

from conftest import recv_exact, serving
from examples_loader import load_example

import zerg


def test_a_call_from_another_thread_raises_naming_the_reactor_thread() -> None:
    errors: list[str] = []
    done = threading.Event()

    async def handler(conn: zerg.Connection) -> None:
        def elsewhere() -> None:
            try:
                conn.write(b"from a foreign thread")
            except RuntimeError as exc:
                errors.append(str(exc))
            conn.call_soon_threadsafe(conn.write, b"via call_soon_threadsafe")
            conn.call_soon_threadsafe(conn.flush_nowait)
            done.set()

        threading.Thread(target=elsewhere, name="not-the-reactor").start()
        await conn.read()

    with serving(handler) as srv, srv.connect() as s:
        assert done.wait(5)
        assert recv_exact(s, 24) == b"via call_soon_threadsafe"
    assert len(errors) == 1
    assert "belongs to the reactor thread" in errors[0]
    assert "'not-the-reactor'" in errors[0] and "call_soon_threadsafe" in errors[0]


def test_a_plain_def_handler_must_not_write_directly() -> None:
    """A worker-thread handler is a foreign thread too: a clear error, not a race."""
    seen: list[str] = []

    def handler(conn: zerg.Connection) -> None:
        try:
            conn.write(b"x")
        except RuntimeError as exc:
            seen.append(str(exc))

    with serving(handler) as srv, srv.connect() as s:
        assert s.recv(10) == b""
    assert seen and "ConnectionStream" in seen[0]


def _read_until(sock: socket.socket, want: bytes, timeout: float = 5.0) -> bytes:
    sock.settimeout(timeout)
    buf = b""
    while want not in buf:
        chunk = sock.recv(4096)
        if not chunk:
            break
        buf += chunk
    return buf


def test_broadcast_example_reaches_clients_on_both_reactors() -> None:
    mod = load_example("broadcast")
    with serving(mod.broadcast, reactor_count=2) as srv:
        clients = [srv.connect() for _ in range(6)]
        deadline = time.monotonic() + 5
        while len(mod._clients) < 6 and time.monotonic() < deadline:
            time.sleep(0.01)
        per_reactor = [r.connections for r in srv.engine.stats()]
        assert all(n >= 1 for n in per_reactor), per_reactor   # both reactors serve
        clients[0].sendall(b"hello everyone\n")
        for c in clients:
            assert b"hello everyone\n" in _read_until(c, b"hello everyone\n")
        for c in clients:
            c.close()
