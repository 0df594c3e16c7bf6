"""A read's task resumed where its bytes are dispatched (native/wake.c).

With the extension, a receive completion that finishes a waiting read runs the
reading task's next step right there, in the dispatcher, instead of queueing
it for the loop's next pass.  What a handler relies on must not change:
its context variables, ``asyncio.current_task()``, wait_for/cancel around a
read, the loop's exception handling, debug mode, and fairness (one step per
harvest; ``test_hostile`` floods a connection).  These tests run in both
modes; the in-place counts are checked only where the extension is loaded.
"""

from __future__ import annotations

import asyncio
import contextvars
import socket
import time

from conftest import echo_handler, recv_exact, serving

import zerg
from zerg import _native
from zerg.adapters import PipeReader

ROUND_TRIPS = 200
tag: contextvars.ContextVar[str] = contextvars.ContextVar("tag", default="unset")


def counts() -> tuple[int, int]:
    if _native.speedups is None:
        return (0, 0)
    in_place, queued = _native.speedups.wake_counts()
    return int(in_place), int(queued)


def ping_pong(sock: socket.socket, n: int) -> None:
    for i in range(n):
        msg = b"%08d" % i
        sock.sendall(msg)
        assert recv_exact(sock, 8) == msg


def test_a_woken_read_keeps_its_task_and_context() -> None:
    """Every wake-up resumes the handler's own task in the handler's context;
    with the extension, (nearly) every one ran in place."""
    seen: list[tuple[str, bool]] = []
    debug: list[bool] = []

    async def handler(conn: zerg.Connection) -> None:
        debug.append(asyncio.get_running_loop().get_debug())    # python -X dev: True
        me = asyncio.current_task()
        tag.set(f"conn-{conn.id}")
        await echo_handler(conn, lambda: seen.append((tag.get(), asyncio.current_task() is me)))

    before = counts()
    with serving(handler) as srv, srv.connect() as sock:
        ping_pong(sock, ROUND_TRIPS)
    in_place = counts()[0] - before[0]
    assert len(seen) >= ROUND_TRIPS
    assert all(t.startswith("conn-") and same for t, same in seen), seen[:5]
    if _native.speedups is not None:
        if debug[0]:
            assert in_place == 0        # debug mode queues every wake-up (next test)
        else:
            assert in_place >= ROUND_TRIPS * 0.9, in_place


def test_debug_mode_queues_every_wake_up() -> None:
    """In asyncio's debug mode nothing runs in place: the loop's checks and
    slow-callback warnings see every step."""

    async def handler(conn: zerg.Connection) -> None:
        asyncio.get_running_loop().set_debug(True)
        reader = PipeReader(conn)
        while True:
            result = await reader.read()
            for segment in result.buffer:
                conn.write(segment)
            reader.advance_to(len(result.buffer))
            await conn.flush()
            if result.is_completed:
                return

    with serving(handler) as srv, srv.connect() as sock:
        ping_pong(sock, 5)                  # the first wake-ups set debug mode
        before = counts()
        ping_pong(sock, 50)
        assert counts()[0] == before[0]


def test_wait_for_and_cancel_around_a_read() -> None:
    """A read inside wait_for times out and the next read still works; a read
    cancelled from outside raises CancelledError in the handler."""
    events: list[str] = []

    async def handler(conn: zerg.Connection) -> None:
        try:
            await asyncio.wait_for(conn.read(), 0.05)
        except TimeoutError:
            events.append("timeout")
        snap = await asyncio.wait_for(conn.read(), 5)       # woken by bytes
        while (item := conn.try_get_ring(snap)) is not None:
            conn.write(item.view)
            conn.return_ring(item)
        await conn.flush()
        reading = asyncio.ensure_future(conn.read())
        asyncio.get_running_loop().call_later(0.05, reading.cancel)
        try:
            await reading
        except asyncio.CancelledError:
            events.append("cancelled")
        conn.write(b"done")
        await conn.flush()

    with serving(handler) as srv, srv.connect() as sock:
        sock.settimeout(5)
        time.sleep(0.2)                     # the first read times out
        sock.sendall(b"hello")
        assert recv_exact(sock, 5) == b"hello"
        assert recv_exact(sock, 4) == b"done"
    assert events == ["timeout", "cancelled"]


def test_a_handler_that_raises_after_a_wake_up_fails_only_its_connection() -> None:
    """The step that runs in place raises: the task takes the exception (the
    engine logs it and closes that connection), and the loop goes on serving
    the others."""

    async def take(conn: zerg.Connection) -> bytes | None:
        snap = await conn.read()
        if snap.is_closed:
            return None
        items = list(iter(lambda: conn.try_get_ring(snap), None))
        data = b"".join(bytes(item.view) for item in items)
        for item in items:
            conn.return_ring(item)
        return data

    async def handler(conn: zerg.Connection) -> None:
        while (data := await take(conn)) is not None:
            if data.startswith(b"boom"):
                raise ValueError("boom after a wake-up")
            conn.write(data)
            await conn.flush()

    with serving(handler) as srv:
        with srv.connect() as bad:
            bad.sendall(b"boom")
            bad.settimeout(5)
            assert bad.recv(16) == b""          # closed by the engine
        with srv.connect() as good:
            ping_pong(good, 20)
