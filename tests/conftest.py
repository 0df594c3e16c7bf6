"""Shared fixtures: a real Engine on a real io_uring, served from a thread."""

from __future__ import annotations

import contextlib
import logging
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import zerg
from zerg.adapters import PipeReader


class ErrorLog(logging.Handler):
    """Collects zerg's error log records: a handler that raised is logged there."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class RunningServer:
    def __init__(self, engine: zerg.Engine, thread: threading.Thread,
                 errors: list[BaseException]) -> None:
        self.engine = engine
        self.thread = thread
        self.errors = errors

    @property
    def port(self) -> int:
        return self.engine.port

    def connect(self, timeout: float = 10.0) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.engine.port), timeout=timeout)

    def stop(self, timeout: float = 15.0) -> None:
        self.engine.stop()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "serve() did not return after stop()"
        if self.errors:
            raise self.errors[0]


@contextlib.contextmanager
def serving(handler: zerg.Handler, **options: Any) -> Iterator[RunningServer]:
    options.setdefault("shutdown_timeout_s", 2.0)
    if options.get("reactor") is None:
        options.pop("reactor", None)
    opts = zerg.EngineOptions(ip="127.0.0.1", port=0, **options)
    engine = zerg.Engine(opts)
    engine.listen()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            engine.serve(handler)
        except BaseException as exc:  # surfaced by stop()
            errors.append(exc)

    t = threading.Thread(target=run, name="test-serve", daemon=True)
    t.start()
    deadline = time.monotonic() + 10
    while (not engine.stats() and not engine.worker_pids()
           and time.monotonic() < deadline and t.is_alive()):
        time.sleep(0.005)
    srv = RunningServer(engine, t, errors)
    try:
        yield srv
    finally:
        if t.is_alive():
            srv.stop()


def recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            raise ConnectionError(f"peer closed after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def recv_until_closed(sock: socket.socket) -> bytes:
    buf = bytearray()
    while chunk := sock.recv(1 << 20):
        buf += chunk
    return bytes(buf)


def wait_for(cond: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


async def echo_handler(conn: zerg.Connection,
                       after_read: Callable[[], None] | None = None) -> None:
    """Level-1 echo: every slot is written back, then returned (``after_read``
    runs after each read, for tests that look at the task there)."""
    while True:
        snap = await conn.read()
        if after_read is not None:
            after_read()
        if snap.is_closed:
            return
        while (item := conn.try_get_ring(snap)) is not None:
            conn.write(item.view)
            conn.return_ring(item)
        conn.reset_read()
        await conn.flush()


@contextlib.contextmanager
def socket_server(handle: Callable[[socket.socket], None]) -> Iterator[int]:
    """A plain stdlib socket server on a thread (IPv4 loopback), its port;
    ``handle`` gets each connection (10 s timeout) on a thread of its own."""
    srv = socket.create_server(("127.0.0.1", 0))
    srv.settimeout(0.1)
    stop = threading.Event()
    threads: list[threading.Thread] = []

    def accept() -> None:
        while not stop.is_set():
            try:
                c, _ = srv.accept()
            except TimeoutError:
                continue
            c.settimeout(10)
            t = threading.Thread(target=handle, args=(c,), daemon=True)
            t.start()
            threads.append(t)

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        yield srv.getsockname()[1]
    finally:
        stop.set()
        acceptor.join(5)
        for t in threads:
            t.join(10)
        srv.close()


def socket_echo(c: socket.socket) -> None:
    """Echo until the peer ends (a handler for ``socket_server``)."""
    with c:
        while data := c.recv(65536):
            c.sendall(data)


async def reader_echo(conn: zerg.Connection,
                      send: Callable[[zerg.BufferSequence], None] | None = None) -> None:
    """PipeReader echo until the peer ends the stream: each buffer goes to
    ``send`` (``conn.write`` when None), is consumed at once, then flushed."""
    send = conn.write if send is None else send
    reader = PipeReader(conn)
    while True:
        res = await reader.read()
        buf = res.buffer
        if buf:
            send(buf)
        reader.advance_to(len(buf))
        await conn.flush()
        if res.is_completed:
            return


async def read_to_end(reader: PipeReader) -> bytes:
    """Every byte until the peer ends the stream, consumed as it comes."""
    data = b""
    while True:
        res = await reader.read()
        data += res.buffer.tobytes()
        reader.advance_to(len(res.buffer))
        if res.is_completed:
            return data


@pytest.fixture
def echo_server() -> Iterator[RunningServer]:
    with serving(echo_handler) as srv:
        yield srv


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    """A directory for UNIX socket files with a short path: a socket path has at
    most 107 bytes, and pytest's tmp_path under a long TMPDIR (nox sets one) can
    pass that on its own."""
    path = Path(tempfile.mkdtemp(prefix="zs", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
