"""ConnectionStream (io.RawIOBase) and blocking handlers on worker threads."""

from __future__ import annotations

import io
import json
import queue
import socket
import threading
import time
from typing import Any

import pytest
from conftest import recv_exact, recv_until_closed, serving, wait_for
from hypothesis import given, settings
from hypothesis import strategies as st

import zerg
from zerg.adapters import ConnectionStream

# ---------------------------------------------------------------- property test
# Each op is (name, arg).  Results from BufferedReader(ConnectionStream) must be
# exactly those from BufferedReader(BytesIO(data)).
ops_strategy = st.lists(
    st.one_of(
        st.tuples(st.just("read"), st.integers(-1, 3000)),
        st.tuples(st.just("read1"), st.integers(-1, 3000)),
        st.tuples(st.just("readline"), st.integers(-1, 300)),
        st.tuples(st.just("peek"), st.integers(0, 3000)),
        st.tuples(st.just("readinto"), st.integers(0, 3000)),
    ),
    max_size=25,
)


def apply_ops(f: io.BufferedReader[Any], ops: list[tuple[str, int]]) -> list[bytes]:
    out: list[bytes] = []
    for name, arg in ops:
        if name == "read":
            out.append(f.read(arg))
        elif name == "read1":
            out.append(f.read1(arg))
        elif name == "readline":
            out.append(f.readline(arg))
        elif name == "peek":
            out.append(f.peek(arg)[:arg])
        else:
            b = bytearray(arg)
            n = f.readinto(b)
            out.append(bytes(b[:n]))
    out.append(f.read())            # and whatever is left
    return out


class OpsServer:
    """One server; each connection runs the ops the test queued for it."""

    def __init__(self, wait_for_eof: bool) -> None:
        self.jobs: queue.Queue[list[tuple[str, int]]] = queue.Queue()
        self.results: queue.Queue[Any] = queue.Queue()
        self.wait_for_eof = wait_for_eof

    def handler(self, conn: zerg.Connection) -> None:
        ops = self.jobs.get(timeout=10)
        try:
            if self.wait_for_eof:
                deadline = time.monotonic() + 10
                while not conn.is_closed and time.monotonic() < deadline:
                    time.sleep(0.001)
            f = io.BufferedReader(ConnectionStream(conn, timeout=10), buffer_size=512)
            self.results.put(apply_ops(f, ops))
        except BaseException as exc:
            self.results.put(exc)


def _send_chunks(port: int, data: bytes, cuts: list[int]) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        pos = 0
        for cut in [*sorted(set(cuts)), len(data)]:
            if cut > pos:
                s.sendall(data[pos:cut])
                pos = cut
        s.shutdown(socket.SHUT_WR)
        s.recv(1)


def _run_property(wait_for_eof: bool, deterministic_only: bool) -> None:
    srv_ops = OpsServer(wait_for_eof)
    with serving(srv_ops.handler) as srv:

        @settings(max_examples=60, deadline=None)
        @given(st.binary(max_size=6000), st.lists(st.integers(0, 6000), max_size=12),
               ops_strategy)
        def check(data: bytes, cuts: list[int], ops: list[tuple[str, int]]) -> None:
            if deterministic_only:
                ops = [(n, a) for n, a in ops if n in ("read", "readline")]
            srv_ops.jobs.put(ops)
            _send_chunks(srv.port, data, [c for c in cuts if c < len(data)])
            got = srv_ops.results.get(timeout=20)
            if isinstance(got, BaseException):
                raise got
            model = apply_ops(io.BufferedReader(io.BytesIO(data), buffer_size=512), ops)
            assert got == model

        check()


def test_buffered_reader_matches_bytesio_exactly() -> None:
    """All bytes arrived before the calls: every call equals BytesIO's."""
    _run_property(wait_for_eof=True, deterministic_only=False)


def test_buffered_reader_matches_bytesio_while_bytes_trickle_in() -> None:
    """Bytes arrive in random chunks while read(n)/readline run: same results."""
    _run_property(wait_for_eof=False, deterministic_only=True)


# ------------------------------------------------------------------ behaviour
def test_text_wrapper_json_round_trip_non_ascii() -> None:
    def handler(conn: zerg.Connection) -> None:
        raw = ConnectionStream(conn)
        # typeshed's TextIOWrapper does not accept BufferedRWPair (it lacks .name),
        # though the stdlib does; the ignore is about that stub, not zerg.
        f = io.TextIOWrapper(io.BufferedRWPair(raw, raw),  # type: ignore[type-var]
                             encoding="utf-8", newline="\n")
        obj = json.loads(f.readline())
        obj["reply"] = "grüße, 世界 ✓"
        f.write(json.dumps(obj, ensure_ascii=False) + "\n")
        f.flush()

    msg = {"text": "naïve café — Ελληνικά 🚀", "n": 42}
    with serving(handler) as srv, srv.connect() as s:
        s.sendall(json.dumps(msg, ensure_ascii=False).encode() + b"\n")
        line = recv_until_closed(s).decode("utf-8")
    back = json.loads(line)
    assert back["text"] == msg["text"] and back["reply"] == "grüße, 世界 ✓"


def test_readinto_seven_byte_buffer_loses_nothing() -> None:
    def handler(conn: zerg.Connection) -> None:
        stream = ConnectionStream(conn)
        got = bytearray()
        b = bytearray(7)
        while n := stream.readinto(b):
            assert 1 <= n <= 7
            got += b[:n]
        stream.write(bytes(got))
        stream.flush()

    data = bytes(range(256)) * 300
    with serving(handler) as srv, srv.connect() as s:
        for i in range(0, len(data), 999):
            s.sendall(data[i:i + 999])
        s.shutdown(socket.SHUT_WR)
        assert recv_exact(s, len(data)) == data
        wait_for(lambda: srv.engine.stats()[0].slots_in_use == 0, what="slots back")


def test_eof_after_half_close_then_reply() -> None:
    def handler(conn: zerg.Connection) -> None:
        stream = ConnectionStream(conn)
        data = stream.readall()
        assert stream.read(10) == b""       # EOF stays EOF
        stream.write(b"len=%d" % len(data))

    with serving(handler) as srv, srv.connect() as s:
        s.sendall(b"x" * 12345)
        s.shutdown(socket.SHUT_WR)
        assert recv_until_closed(s) == b"len=12345"


def test_timeout_raises_timeout_error() -> None:
    def handler(conn: zerg.Connection) -> None:
        stream = ConnectionStream(conn, timeout=0.2)
        t0 = time.monotonic()
        try:
            stream.read(10)
            stream.write(b"no timeout")
        except TimeoutError as exc:
            assert 0.15 < time.monotonic() - t0 < 2
            stream.write(b"timeout: " + str(exc).encode())
        # the stream still works after a timeout
        stream.write(b"|" + stream.read(5))

    with serving(handler) as srv, srv.connect() as s:
        assert recv_exact(s, 9) == b"timeout: "
        s.sendall(b"later")
        assert recv_until_closed(s).endswith(b"|later")


def test_blocking_calls_on_reactor_thread_raise() -> None:
    errors: list[str] = []

    async def handler(conn: zerg.Connection) -> None:
        stream = ConnectionStream(conn)
        for call in (lambda: stream.read(1), lambda: stream.write(b"x")):
            try:
                call()
            except RuntimeError as exc:
                errors.append(str(exc))
        stream.close()              # close never blocks, even here

    with serving(handler) as srv, srv.connect() as s:
        assert s.recv(10) == b""
    assert len(errors) == 2
    assert all("reactor thread" in e and "def handler" in e for e in errors)


def test_stream_properties_and_close_idempotent() -> None:
    seen: list[Any] = []

    def handler(conn: zerg.Connection) -> None:
        stream = ConnectionStream(conn)
        seen.extend([stream.readable(), stream.writable(), stream.seekable()])
        with pytest.raises(OSError):
            stream.seek(0)
        stream.write(b"bye")
        stream.close()
        stream.close()
        with pytest.raises(ValueError):
            stream.read(1)
        seen.append(stream.closed)

    with serving(handler) as srv, srv.connect() as s:
        assert recv_until_closed(s) == b"bye"
    wait_for(lambda: len(seen) == 4, what="handler finished")
    assert seen == [True, True, False, True]


def test_many_blocking_handlers_concurrently() -> None:
    def handler(conn: zerg.Connection) -> None:
        f = io.BufferedReader(ConnectionStream(conn))
        w = ConnectionStream(conn)
        for line in iter(f.readline, b""):
            w.write(line.upper())

    with serving(handler, worker_threads=16) as srv:
        socks = [srv.connect() for _ in range(16)]
        for i, s in enumerate(socks):
            s.sendall(b"hello %d\nworld %d\n" % (i, i))
        for i, s in enumerate(socks):
            want = b"HELLO %d\nWORLD %d\n" % (i, i)
            assert recv_exact(s, len(want)) == want
            s.close()


def test_blocking_handler_that_raises_closes_only_its_connection() -> None:
    def handler(conn: zerg.Connection) -> None:
        stream = ConnectionStream(conn)
        data = stream.read(4)
        if data == b"boom":
            raise ValueError("blocking handler exploded")
        stream.write(data)

    with serving(handler) as srv:
        with srv.connect() as s:
            s.sendall(b"boom")
            assert s.recv(10) == b""
        with srv.connect() as s:
            s.sendall(b"fine")
            assert recv_exact(s, 4) == b"fine"


def test_stop_while_blocking_handlers_wait_in_readinto() -> None:
    started = threading.Event()

    def handler(conn: zerg.Connection) -> None:
        started.set()
        ConnectionStream(conn).read(10)     # blocks until the stop closes it

    with serving(handler) as srv:
        socks = [srv.connect() for _ in range(5)]
        assert started.wait(5)
        t0 = time.monotonic()
        srv.stop()
        assert time.monotonic() - t0 < 3
        for s in socks:
            s.close()


def test_a_close_from_the_reactor_between_reads_is_a_clean_end() -> None:
    """The reactor closes the connection (stop, past the grace period) while the
    worker is between two reads: the stream copies on the reactor thread, so
    nothing can be pulled away under a copy; the next read reports the end, the
    bytes read before are intact, and every slot is back."""
    took = threading.Event()
    closed = threading.Event()
    finished = threading.Event()
    out: list[bytes] = []

    def handler(conn: zerg.Connection) -> None:
        stream = ConnectionStream(conn)
        first = stream.read(1)
        took.set()
        closed.wait(5)
        rest = bytearray()
        b = bytearray(1000)
        while n := stream.readinto(b):
            rest += b[:n]
        out.append(first + bytes(rest))
        finished.set()

    data = bytes(range(256)) * 40
    with serving(handler, shutdown_timeout_s=0.2) as srv:
        s = srv.connect()
        s.sendall(data)
        assert took.wait(5)
        stopper = threading.Thread(target=srv.stop)
        stopper.start()
        wait_for(lambda: srv.engine.stats()[0].closed == 1, what="the close")
        closed.set()
        assert finished.wait(5)
        stopper.join(10)
        s.close()
    assert out and data.startswith(out[0]) and len(out[0]) >= 1
    assert srv.engine.stats()[0].slots_in_use == 0
