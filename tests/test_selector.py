"""UringSelector against the selector contract asyncio relies on, on real zerg loops.

Each asyncio scenario runs inside a handler of a real ``zerg.Engine`` (so on a
``ReactorLoop`` whose selector is the io_uring one); most also run on a stdlib
epoll loop, which is the reference: the zerg loop must behave the same.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import select as select_module
import selectors
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from conftest import recv_exact, serving
from hypothesis import given, settings
from hypothesis import strategies as st

import zerg
from zerg._reactor import ReactorLoop
from zerg._selector import UringSelector

T = TypeVar("T")

LOOPS = ["zerg", "epoll"]


def run_on(where: str, fn: Callable[[], Awaitable[T]], timeout: float = 10.0) -> T:
    """``await fn()`` on a zerg reactor's loop (``where="zerg"``) or on a stdlib
    epoll loop; its result, or its exception re-raised here."""
    if where == "epoll":
        loop = asyncio.SelectorEventLoop(selectors.EpollSelector())
        try:
            return loop.run_until_complete(asyncio.wait_for(fn(), timeout))
        finally:
            loop.close()
    outcome: list[tuple[bool, Any]] = []

    async def handler(conn: zerg.Connection) -> None:
        try:
            loop = asyncio.get_running_loop()
            assert isinstance(loop, ReactorLoop)
            assert isinstance(loop.reactor.selector, UringSelector)
            outcome.append((True, await asyncio.wait_for(fn(), timeout)))
        except BaseException as exc:
            outcome.append((False, exc))
        conn.write(b"!")
        await conn.flush()

    with serving(handler) as srv, srv.connect(timeout=timeout + 5) as s:
        assert recv_exact(s, 1) == b"!"
    ok, value = outcome[0]
    if not ok:
        raise value
    return value  # type: ignore[no-any-return]


async def _iterations(n: int = 3) -> None:
    """Let the loop run ``n`` iterations (polls get submitted, fire, re-arm)."""
    for _ in range(n):
        await asyncio.sleep(0)


# ------------------------------------------------- 1. closed file objects

@pytest.mark.parametrize("where", LOOPS)
def test_remove_reader_after_close_unregisters_and_releases_the_socket(where: str) -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        a, b = socket.socketpair()
        with b:
            a.setblocking(False)
            loop.add_reader(a, lambda: None)
            await _iterations()
            fd = a.fileno()
            a.close()
            assert loop.remove_reader(a) is True
            with pytest.raises(KeyError):
                loop._selector.get_key(fd)  # type: ignore[attr-defined]
            # Nothing holds the socket any more: the peer sees EOF right away.
            b.setblocking(False)
            assert b.recv(1) == b""

    run_on(where, scenario)


@pytest.mark.parametrize("where", LOOPS)
def test_get_key_finds_a_closed_registered_object(where: str) -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        sel: selectors.BaseSelector = loop._selector  # type: ignore[attr-defined]
        a, b = socket.socketpair()
        with a, b:
            loop.add_reader(a, lambda: None)
            await _iterations()
            fd = a.fileno()
            a.close()
            key = sel.get_key(a)
            assert key.fd == fd and key.fileobj is a
            assert a in sel.get_map()
            assert sel.unregister(a) is key
            assert fd not in sel.get_map()

    run_on(where, scenario)


@pytest.mark.parametrize("where", LOOPS)
def test_fd_number_reused_after_close_gets_its_reader_called(where: str) -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        a, b = socket.socketpair()
        with b:
            loop.add_reader(a, lambda: None)
            await _iterations()
            fd = a.fileno()
            a.close()
            loop.remove_reader(a)
            c, d = socket.socketpair()          # the lowest free fd: a's number again
            with c, d:
                new, peer = (c, d) if c.fileno() == fd else (d, c)
                assert new.fileno() == fd
                fired: asyncio.Future[bytes] = loop.create_future()

                def reader() -> None:
                    if not fired.done():
                        fired.set_result(new.recv(10))

                loop.add_reader(new, reader)
                peer.send(b"hello")
                try:
                    assert await asyncio.wait_for(fired, 3.0) == b"hello"
                finally:
                    loop.remove_reader(new)

    run_on(where, scenario)


@pytest.mark.parametrize("where", LOOPS)
def test_remove_writer_after_close_fails_like_epoll_and_unregisters(where: str) -> None:
    """Changing the events of a closed object: EBADF, and the registration is gone
    (epoll's MOD fails on the closed fd; its selector then unregisters)."""
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        a, b = socket.socketpair()
        with b:
            loop.add_reader(a, lambda: None)
            loop.add_writer(a, lambda: None)
            await _iterations()
            fd = a.fileno()
            a.close()
            with pytest.raises(OSError) as info:
                loop.remove_writer(a)
            assert info.value.errno == errno.EBADF
            assert fd not in loop._selector.get_map()  # type: ignore[attr-defined]
            b.setblocking(False)
            assert b.recv(1) == b""

    run_on(where, scenario)


# ------------------------------------------- 2. fds that cannot be polled

@pytest.mark.parametrize("where", LOOPS)
def test_add_reader_on_a_closed_fd_raises_ebadf(where: str) -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        r, w = os.pipe()
        os.close(r)
        try:
            with pytest.raises(OSError) as info:
                loop.add_reader(r, lambda: None)
            assert info.value.errno == errno.EBADF
            assert r not in loop._selector.get_map()  # type: ignore[attr-defined]
        finally:
            os.close(w)

    run_on(where, scenario)


@pytest.mark.parametrize("where", LOOPS)
def test_add_reader_on_a_regular_file_or_directory_raises_eperm(where: str,
                                                                 tmp_path: Path) -> None:
    path = tmp_path / "plain"
    path.write_bytes(b"data")

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        calls: list[str] = []
        with open(path, "rb") as f:
            with pytest.raises(PermissionError) as info:
                loop.add_reader(f, calls.append, "file")
            assert info.value.errno == errno.EPERM
            with pytest.raises(PermissionError):
                loop.add_writer(f.fileno(), calls.append, "file")
        dfd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            with pytest.raises(PermissionError):
                loop.add_reader(dfd, calls.append, "dir")
        finally:
            os.close(dfd)
        await _iterations()
        assert calls == []
        assert len(loop._selector.get_map()) == 1  # type: ignore[attr-defined]  # self-pipe

    run_on(where, scenario)


def test_a_failed_poll_reaches_the_reader_and_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    """The fd goes away before the poll is submitted: the POLL_ADD completes with
    -EBADF.  That is readiness (the reader's own read reports the error), not
    silence.  (On epoll the reader would never run.)"""
    caplog.set_level(logging.DEBUG, logger="zerg")

    async def scenario() -> int:
        loop = asyncio.get_running_loop()
        r, w = os.pipe()
        seen = loop.create_future()

        def reader() -> None:
            try:
                os.read(r, 1)
            except OSError as exc:
                loop.remove_reader(r)
                if not seen.done():
                    seen.set_result(exc.errno)

        loop.add_reader(r, reader)
        os.close(r)                 # before the next select() submits the poll
        try:
            return await asyncio.wait_for(seen, 3.0)
        finally:
            os.close(w)

    assert run_on("zerg", scenario) == errno.EBADF
    assert any(r.levelno == logging.DEBUG and "poll" in r.getMessage()
               and os.strerror(errno.EBADF) in r.getMessage() for r in caplog.records)


# ------------------------------------------------ 3. server.close() is final

@pytest.mark.parametrize("where", LOOPS)
def test_server_close_refuses_the_next_connection(where: str) -> None:
    """CPython's test_events.test_server_close: once ``server.close()`` returns,
    connecting is refused (no loop iteration in between)."""
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        made = asyncio.Event()

        class Proto(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                made.set()
                transport.close()

        server = await loop.create_server(Proto, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as client:
            client.send(b"xxx")
        await asyncio.wait_for(made.wait(), 3.0)        # the listener's poll is live
        server.close()
        with socket.socket() as client, pytest.raises(ConnectionRefusedError):
            client.connect(("127.0.0.1", port))
        await server.wait_closed()

    run_on(where, scenario)


class _Switcher(zerg.Protocol):
    """On b"go", replaces the reader of ``self.a`` -- inside completion dispatch,
    i.e. inside ``select()``, after a's own poll completion was harvested."""

    def __init__(self) -> None:
        self.a: socket.socket | None = None
        self.b: socket.socket | None = None
        self.old_calls = 0
        self.new_calls = 0
        self.switched = threading.Event()
        self.new_fired = threading.Event()
        self.loop: asyncio.AbstractEventLoop | None = None

    def connection_made(self, conn: zerg.Connection) -> None:
        self.loop = loop = asyncio.get_running_loop()
        self.a, self.b = socket.socketpair()
        self.a.setblocking(False)
        loop.add_reader(self.a, self._old)
        conn.write(b"ready")

    def _old(self) -> None:
        self.old_calls += 1

    def _new(self) -> None:
        self.new_calls += 1
        assert self.loop is not None and self.a is not None
        self.a.recv(100)
        self.loop.remove_reader(self.a)
        self.new_fired.set()

    def data_received(self, conn: zerg.Connection, seq: zerg.BufferSequence) -> None:
        assert self.loop is not None and self.a is not None
        data = seq.tobytes()
        if data == b"sleep":
            # Keep the reactor busy so a's poll and the next recv complete
            # while it does not look, and come back in one harvest.
            self.loop.call_soon(time.sleep, 0.3)
        elif data == b"go":
            self.loop.remove_reader(self.a)
            self.loop.add_reader(self.a, self._new)
            self.switched.set()

    def connection_lost(self, conn: zerg.Connection, exc: BaseException | None) -> None:
        assert self.loop is not None and self.a is not None and self.b is not None
        self.loop.remove_reader(self.a)
        self.a.close()
        self.b.close()


def test_a_reader_replaced_inside_select_gets_no_stale_event() -> None:
    """A readiness event harvested for a registration that is then removed in the
    same ``select()`` is not returned: asyncio would treat it as the event of the
    *new* registration (it finds the old handle cancelled and removes whatever
    reader is registered now), and the new reader would never run."""
    proto = _Switcher()
    with serving(proto) as srv, srv.connect() as s:
        assert recv_exact(s, 5) == b"ready"
        assert proto.b is not None
        s.sendall(b"sleep")
        time.sleep(0.1)                 # the reactor is in time.sleep now
        proto.b.send(b"x")              # a is readable: its poll completes first,
        s.sendall(b"go")                # then the recv that switches the reader
        assert proto.switched.wait(5)
        assert proto.new_fired.wait(3), "the new reader never ran"
    assert proto.old_calls == 0


def _selects() -> list[Callable[..., Any]]:
    """UringSelector.select as zerg runs it (C with the extension), and the
    Python reference when the two differ."""
    from zerg._native import speedups

    impls: list[Callable[..., Any]] = [UringSelector.select]
    if speedups is not None:
        impls.append(speedups.selector_reference())
    return impls


def _expected_ns(timeout: float | None, max_ns: int) -> int:
    """select()'s wait, by its contract: None waits up to max_wait_ns, a
    timeout at or under 0 does not wait, any other is capped at max_wait_ns
    (infinity included) and, if shorter than 1 ns, waits 1 ns."""
    if timeout is None:
        return max_ns
    if timeout <= 0:
        return 0
    if timeout * 1e9 > max_ns:
        return max_ns
    return max(int(timeout * 1e9), 1)


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True),
                 st.integers(-5, 10**12), st.sampled_from([1e-12, 0.05, 0.049999999, 1e9])),
       st.integers(0, 10**10))
def test_select_waits_as_asked(timeout: float | None, max_ns: int) -> None:
    """The wait select() asks of the ring, for any timeout asyncio may pass
    and beyond (infinity waits the most, NaN is refused): the C select and
    the reference agree with each other and with the contract."""
    from zerg._ring import Ring

    ring = Ring(8)
    try:
        for select in _selects():
            waits: list[int] = []
            sel = UringSelector(ring, waits.append)
            sel.max_wait_ns = max_ns
            if timeout is not None and timeout != timeout:
                with pytest.raises(ValueError):      # NaN: as int(nan)
                    select(sel, timeout)
                continue
            assert select(sel, timeout) == []
            assert select(sel, timeout=timeout) == []       # as a keyword too
            assert waits == [_expected_ns(timeout, max_ns)] * 2
            assert type(waits[0]) is int
    finally:
        ring.close()


class _Harvest:
    """A stand-in for the reactor's step: reports the polls in ``fire``."""

    sel: UringSelector

    def __init__(self, fire: list[tuple[int, int]]) -> None:
        self.fire = fire

    def __call__(self, ns: int) -> None:
        for token, res in self.fire:
            self.sel.poll_fired(token, res)


def test_select_reports_fired_polls_and_rearms_them() -> None:
    """A poll that fires during select() comes back as (key, events) of the
    registration alive at the end, is re-armed at the next select() (the C
    select leaves that to the reference), and a poll of a registration
    removed meanwhile is dropped -- both implementations."""
    from zerg._ring import Ring

    ring = Ring(16)
    a, b = socket.socketpair()
    try:
        for select in _selects():
            fire: list[tuple[int, int]] = []        # what the next select() harvests
            on_select = _Harvest(fire)
            sel = on_select.sel = UringSelector(ring, on_select)
            key = sel.register(a, selectors.EVENT_READ, "data")
            token = sel._token_of[a.fileno()]
            fire[:] = [(token, int(select_module.POLLIN)), (token + 999, 1)]
            assert select(sel, 0) == [(key, selectors.EVENT_READ)]
            assert sel._rearm == [token]
            fire[:] = []
            assert select(sel, 0) == []             # re-armed on the way
            assert sel._rearm == []
            fire[:] = [(token, int(select_module.POLLOUT))]      # not asked for
            assert select(sel, None) == []
            sel.unregister(a)
            fire[:] = [(token, int(select_module.POLLIN))]       # a late CQE
            assert select(sel, 0) == []
            sel.close()
    finally:
        a.close()
        b.close()
        ring.close()
