"""Lifecycle and misuse (issue 13): abort is a reset, contracts are enforced,
every kind of handler runs, and a stopped engine says so."""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
import struct
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from conftest import echo_handler, recv_exact, serving, wait_for

import zerg


def _echo_once(handler: Any) -> None:
    with serving(handler) as srv, srv.connect() as s:
        s.sendall(b"ping")
        assert recv_exact(s, 4) == b"ping"


# ------------------------------------------------------------------- abort


def test_abort_resets_and_drops_staged_bytes() -> None:
    """abort(): the peer sees ECONNRESET and none of the 200 staged bytes."""
    async def handler(conn: zerg.Connection) -> None:
        snap = await conn.read()
        while (item := conn.try_get_ring(snap)) is not None:
            conn.return_ring(item)
        conn.write(b"x" * 200)          # staged, never flushed
        conn.abort()

    with serving(handler) as srv, srv.connect() as s:
        s.sendall(b"go")
        with pytest.raises(ConnectionResetError):
            data = s.recv(1000)
            assert data == b"", f"staged bytes arrived: {data!r}"
            s.recv(1000)                # the reset shows on the next call at the latest


def test_close_is_graceful_staged_bytes_arrive_then_eof() -> None:
    async def handler(conn: zerg.Connection) -> None:
        await conn.read()
        conn.write(b"y" * 200)
        conn.close()

    with serving(handler) as srv, srv.connect() as s:
        s.sendall(b"go")
        assert recv_exact(s, 200) == b"y" * 200
        assert s.recv(10) == b""


# --------------------------------------------------------------- contracts


def test_data_received_returning_more_than_it_got_aborts_that_connection(
        caplog: pytest.LogCaptureFixture) -> None:
    class Greedy(zerg.Protocol):
        def data_received(self, conn: zerg.Connection, seq: zerg.BufferSequence) -> int | None:
            if seq.startswith(b"bad"):
                return len(seq) + 10
            conn.write(seq)
            return None

    with serving(Greedy()) as srv, srv.connect() as bad, srv.connect() as good:
        bad.sendall(b"bad!")
        with pytest.raises(ConnectionResetError):   # aborted: a reset
            bad.recv(10)
        good.sendall(b"fine")
        assert recv_exact(good, 4) == b"fine"       # the reactor goes on
    errors = [str(r.exc_info[1]) for r in caplog.records if r.exc_info]
    assert "data_received returned 14, outside the 0..4 bytes it was given" in errors


def test_flush_after_close_raises_like_write() -> None:
    seen: list[str] = []

    async def handler(conn: zerg.Connection) -> None:
        await conn.read()
        conn.close()
        try:
            conn.write(b"late")
        except ConnectionError as exc:
            seen.append(f"write: {exc}")
        try:
            await conn.flush()
        except ConnectionError as exc:
            seen.append(f"flush: {exc}")

    with serving(handler) as srv, srv.connect() as s:
        s.sendall(b"go")
        assert s.recv(10) == b""
    assert [m.split(":")[0] for m in seen] == ["write", "flush"]
    assert all("is closed" in m for m in seen)


def test_serve_after_stop_raises() -> None:
    engine = zerg.Engine(zerg.EngineOptions(ip="127.0.0.1", port=0))
    engine.listen()
    engine.stop()
    with pytest.raises(RuntimeError, match=r"serve\(\) after stop\(\)"):
        engine.serve(echo_handler)
    engine.close()


# ----------------------------------------------------------- handler kinds


def test_partial_of_an_async_handler_runs_on_the_reactor() -> None:
    async def handler(conn: zerg.Connection, greeting: bytes) -> None:
        await echo_handler(conn)

    _echo_once(functools.partial(handler, greeting=b"hi"))


def test_wraps_decorated_async_handler_runs_on_the_reactor() -> None:
    def logged(fn: Callable[[zerg.Connection], Awaitable[None]]
               ) -> Callable[[zerg.Connection], Awaitable[None]]:
        @functools.wraps(fn)
        def wrapper(conn: zerg.Connection) -> Awaitable[None]:
            return fn(conn)
        return wrapper

    _echo_once(logged(echo_handler))


def test_undeclared_wrapper_returning_a_coroutine_still_runs_with_a_warning(
        caplog: pytest.LogCaptureFixture) -> None:
    """A plain def that returns a coroutine (a decorator without functools.wraps)
    is never silent: its coroutine runs on the reactor, and zerg says why."""
    def wrapper(conn: zerg.Connection) -> Awaitable[None]:
        return echo_handler(conn)

    caplog.set_level(logging.WARNING, logger="zerg")
    _echo_once(wrapper)
    assert any("returned an awaitable" in r.getMessage() for r in caplog.records)


def test_object_with_async_call_runs_on_the_reactor() -> None:
    class Handler:
        async def __call__(self, conn: zerg.Connection) -> None:
            await echo_handler(conn)

    _echo_once(Handler())


def test_a_blocking_handler_still_runs_on_a_worker_thread() -> None:
    def handler(conn: zerg.Connection) -> None:
        from zerg.adapters import ConnectionStream
        with ConnectionStream(conn) as stream:
            data = b""
            while len(data) < 4:
                data += stream.read(4 - len(data))
            stream.write(data)

    _echo_once(handler)


# ----------------------------------------------------------- graceful drain


def _stop_in_thread(srv: Any) -> tuple[threading.Thread, list[float]]:
    took: list[float] = []

    def run() -> None:
        t0 = time.monotonic()
        srv.stop()
        took.append(time.monotonic() - t0)

    t = threading.Thread(target=run)
    t.start()
    return t, took


def test_stop_lets_a_request_in_flight_finish_and_closes_idle_connections() -> None:
    """A slow request in flight during stop() gets its whole reply; an idle
    keep-alive connection closes at once; stop() returns well within
    shutdown_timeout_s + 1 s; new connections are refused at once."""
    got_request = threading.Event()
    seen_stopping: list[bool] = []

    async def handler(conn: zerg.Connection) -> None:
        while True:
            snap = await conn.read()
            if snap.is_closed:
                return
            while (item := conn.try_get_ring(snap)) is not None:
                conn.return_ring(item)
            got_request.set()
            await asyncio.sleep(0.5)                    # the work of a slow request
            seen_stopping.append(conn.stopping)
            conn.write(b"r" * 300_000)                  # larger than the pause mark
            await conn.flush()

    with serving(handler, shutdown_timeout_s=3.0) as srv:
        idle = srv.connect()
        busy = srv.connect()
        busy.sendall(b"slow request")
        assert got_request.wait(5)
        port = srv.port
        t, took = _stop_in_thread(srv)
        assert idle.recv(10) == b""                    # idle: closed at once
        with pytest.raises(OSError):                    # the listener is gone
            socket.create_connection(("127.0.0.1", port), timeout=2).recv(1)
        assert recv_exact(busy, 300_000) == b"r" * 300_000     # the whole reply
        assert busy.recv(10) == b""                    # then the end
        t.join(10)
        idle.close()
        busy.close()
    assert seen_stopping == [True]
    assert took and took[0] < 3.0 + 1.0


def test_stop_aborts_what_outlives_the_grace_period() -> None:
    async def handler(conn: zerg.Connection) -> None:
        await conn.read()
        await asyncio.sleep(60)                         # never finishes

    with serving(handler, shutdown_timeout_s=0.3) as srv:
        s = srv.connect()
        s.sendall(b"x")
        time.sleep(0.1)
        t, took = _stop_in_thread(srv)
        t.join(10)
        assert took and took[0] < 0.3 + 1.0 + 1.0       # grace + cancellation wait
        try:
            data = s.recv(10)                           # cancelled handler: closed ...
        except ConnectionResetError:
            data = b""                                  # ... or, past the grace, reset
        assert data == b""
        s.close()


def test_protocol_is_told_and_may_finish_first() -> None:
    class Finisher(zerg.Protocol):
        def __init__(self) -> None:
            self.told: list[bool] = []

        def data_received(self, conn: zerg.Connection, seq: zerg.BufferSequence) -> None:
            conn.context = seq.tobytes()

        def shutdown_requested(self, conn: zerg.Connection) -> None:
            self.told.append(conn.stopping)
            conn.write(b"bye " + conn.context)         # finish, then close
            conn.close()

    proto = Finisher()
    with serving(proto) as srv:
        s = srv.connect()
        s.sendall(b"half a request")
        time.sleep(0.1)
        t, _ = _stop_in_thread(srv)
        assert recv_exact(s, 18) == b"bye half a request"
        assert s.recv(10) == b""
        t.join(10)
        s.close()
    assert proto.told == [True]


# ------------------------------------------------------- standalone loops


def test_new_event_loop_runs_asyncio_code_and_frees_its_ring_on_close() -> None:
    """zerg.new_event_loop: a reactor loop with no listener, usable with
    asyncio.Runner(loop_factory=...); outbound connections work on it."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def peer() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.sendall(conn.recv(100).upper())

        t = threading.Thread(target=peer)
        t.start()

        async def main() -> tuple[str, bytes]:
            loop = asyncio.get_running_loop()
            await asyncio.sleep(0.01)
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"over io_uring")
            await writer.drain()
            data = await reader.readexactly(13)
            writer.close()
            await writer.wait_closed()
            return type(loop).__name__, data

        loops: list[asyncio.AbstractEventLoop] = []

        def factory() -> asyncio.AbstractEventLoop:
            loops.append(zerg.new_event_loop())
            return loops[-1]

        with asyncio.Runner(loop_factory=factory) as runner:
            name, data = runner.run(main())
        t.join(5)
    assert (name, data) == ("ReactorLoop", b"OVER IO_URING")
    assert loops[0].is_closed()
    assert loops[0].reactor.ring.closed       # type: ignore[attr-defined]


def test_new_event_loop_validates_its_configuration() -> None:
    with pytest.raises(TypeError, match="ReactorConfig"):
        zerg.new_event_loop(reactor={"ring_entries": 8})  # type: ignore[arg-type]
    loop = zerg.new_event_loop(zerg.ReactorConfig(ring_entries=64))
    try:
        assert loop.run_until_complete(asyncio.sleep(0, "ok")) == "ok"
    finally:
        loop.close()


def test_a_loop_run_on_another_thread_fails_loudly() -> None:
    """A ring is bound to the thread that made it (SINGLE_ISSUER): driving the
    loop from another thread gets EEXIST from io_uring_enter, which is raised
    -- not ignored in a 100% CPU spin."""
    loop = zerg.new_event_loop()
    errors: list[BaseException] = []

    def elsewhere() -> None:
        coro = asyncio.sleep(0.05)
        try:
            loop.run_until_complete(coro)
        except BaseException as exc:
            errors.append(exc)
            coro.close()

    t = threading.Thread(target=elsewhere)
    t.start()
    t.join(10)
    loop.close()
    assert errors and isinstance(errors[0], OSError)
    assert "File exists" in str(errors[0]) and "io_uring_enter" in str(errors[0])


def test_every_close_is_counted_by_its_reason() -> None:
    """ReactorStats.closed_by: peer EOF, peer reset, handler done, abort, idle
    timeout, and the connections the stop closed."""
    async def handler(conn: zerg.Connection) -> None:
        snap = await conn.read()
        if snap.is_closed:
            return                              # peer EOF / reset / stop: the end
        data = b""
        while (item := conn.try_get_ring(snap)) is not None:
            data += item.view.tobytes()
            conn.return_ring(item)
        if data == b"abort":
            conn.abort()
        elif data == b"done":
            conn.write(b"bye")
            await conn.flush()
            return                              # the handler returns: "closed"
        await asyncio.sleep(60)                 # "idle": the idle timeout ends it

    reactor = zerg.ReactorConfig(idle_timeout_s=0.3)
    with serving(handler, reactor=reactor, shutdown_timeout_s=1.0) as srv:
        eof = srv.connect()
        eof.shutdown(socket.SHUT_WR)
        reset = srv.connect()
        reset.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        reset.close()                           # an RST
        done = srv.connect()
        done.sendall(b"done")
        aborted = srv.connect()
        aborted.sendall(b"abort")
        idle = srv.connect()
        idle.sendall(b"sleep")
        wait_for(lambda: sum(s.closed for s in srv.engine.stats()) == 5, timeout=5,
                 what="five closes")
        stopped = srv.connect()
        stopped.sendall(b"sleep")
        time.sleep(0.1)
        srv.stop()
        for s in (eof, done, aborted, idle, stopped):
            s.close()
    by: dict[str, int] = {}
    for st in srv.engine.stats():
        for reason, n in st.closed_by.items():
            by[reason] = by.get(reason, 0) + n
    assert by == {"peer_eof": 1, "peer_reset": 1, "closed": 1, "abort": 1, "idle_timeout": 1,
                  "stop": 1}, by


def test_a_peer_that_stops_reading_is_closed_for_a_limit() -> None:
    async def handler(conn: zerg.Connection) -> None:
        conn.write(b"x" * (8 << 20))            # far more than the socket buffers hold
        conn.close()                            # the peer never reads: close_timeout_s

    reactor = zerg.ReactorConfig(close_timeout_s=0.3, max_write_buffer=16 << 20)
    with serving(handler, reactor=reactor) as srv:
        s = srv.connect()
        wait_for(lambda: sum(st.closed for st in srv.engine.stats()) == 1, timeout=5,
                 what="the close deadline")
        assert srv.engine.stats()[0].closed_by == {"limit": 1}
        s.close()
