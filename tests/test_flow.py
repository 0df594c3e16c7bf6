"""Flow control with asyncio's names (issue 13): write limits, pause_writing /
resume_writing for Protocols, pause_reading / resume_reading."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time

import pytest
from conftest import recv_exact, serving

import zerg


class Bulk(zerg.Protocol):
    """On any input, sends TOTAL bytes in chunks, honouring pause_writing."""

    TOTAL = 1_000_000
    CHUNK = 8192

    def __init__(self) -> None:
        self.payload = os.urandom(self.TOTAL)
        self.pos = 0
        self.paused = False
        self.pauses = 0
        self.resumes = 0

    def _pump(self, conn: zerg.Connection) -> None:
        while not self.paused and self.pos < self.TOTAL:
            conn.write(self.payload[self.pos:self.pos + self.CHUNK])
            self.pos += self.CHUNK

    def data_received(self, conn: zerg.Connection, seq: zerg.BufferSequence) -> None:
        self._pump(conn)

    def pause_writing(self, conn: zerg.Connection) -> None:
        self.paused = True
        self.pauses += 1

    def resume_writing(self, conn: zerg.Connection) -> None:
        self.paused = False
        self.resumes += 1
        self._pump(conn)


def test_protocol_pause_and_resume_writing_carry_a_large_reply() -> None:
    proto = Bulk()
    with serving(proto) as srv, srv.connect() as s:
        s.sendall(b"go")
        got = recv_exact(s, Bulk.TOTAL)
    assert hashlib.sha256(got).digest() == hashlib.sha256(proto.payload).digest()
    assert proto.pauses >= 1 and proto.resumes >= 1


def test_a_full_write_buffer_raises_to_the_protocol_which_may_catch_it() -> None:
    caught: list[str] = []

    class Greedy(zerg.Protocol):
        def data_received(self, conn: zerg.Connection, seq: zerg.BufferSequence) -> None:
            try:
                for _ in range(100):
                    conn.write(b"z" * 4096)           # 400 KiB > max_write_buffer
            except zerg.WriteBufferFullError as exc:
                caught.append(str(exc))


    cfg = zerg.ReactorConfig(max_write_buffer=65536)
    with serving(Greedy(), reactor=cfg) as srv, srv.connect() as s:
        s.sendall(b"go")
        # Everything staged before the refusal arrives; the connection was not aborted.
        data = recv_exact(s, 65536)
        assert data == b"z" * 65536
    assert caught and "pause_writing" in caught[0] and "max_write_buffer=65536" in caught[0]


def test_write_buffer_limits_are_validated_and_reported() -> None:
    seen: list[object] = []

    async def handler(conn: zerg.Connection) -> None:
        seen.append(conn.get_write_buffer_limits())
        conn.set_write_buffer_limits(high=1000)
        seen.append(conn.get_write_buffer_limits())
        for bad in ({"high": 10, "low": 20}, {"high": 1 << 40}, {"low": -1}):
            try:
                conn.set_write_buffer_limits(**bad)
            except ValueError as exc:
                seen.append(type(exc).__name__)
        await conn.read()

    with serving(handler) as srv, srv.connect() as s:
        s.sendall(b"x")
        time.sleep(0.2)
    assert seen == [(16384, 65536), (250, 1000), "ValueError", "ValueError", "ValueError"]


def test_protocol_pause_reading_holds_data_received_until_resume() -> None:
    events: list[tuple[str, bytes]] = []

    class Slow(zerg.Protocol):
        def data_received(self, conn: zerg.Connection, seq: zerg.BufferSequence) -> None:
            events.append(("data", seq.tobytes()))
            if seq.tobytes().startswith(b"first"):
                conn.pause_reading()
                assert not conn.is_reading
                asyncio.get_running_loop().call_later(0.3, self.resume, conn)
            conn.write(seq)

        def resume(self, conn: zerg.Connection) -> None:
            events.append(("resume", b""))
            conn.resume_reading()

    with serving(Slow()) as srv, srv.connect() as s:
        s.sendall(b"first")
        assert recv_exact(s, 5) == b"first"
        s.sendall(b"second")
        time.sleep(0.1)
        s.sendall(b"third")
        assert recv_exact(s, 11) == b"secondthird"
    kinds = [k for k, _ in events]
    assert kinds[:2] == ["data", "resume"]            # nothing delivered while paused
    assert b"".join(d for k, d in events if k == "data") == b"firstsecondthird"


def test_async_handler_pause_reading_stops_receiving() -> None:
    states: list[bool] = []

    async def handler(conn: zerg.Connection) -> None:
        conn.pause_reading()
        states.append(conn.is_reading)
        await asyncio.sleep(0.2)
        conn.resume_reading()
        states.append(conn.is_reading)
        snap = await conn.read()
        while (item := conn.try_get_ring(snap)) is not None:
            conn.write(item.view)
            conn.return_ring(item)
        await conn.flush()

    with serving(handler) as srv, srv.connect() as s:
        s.sendall(b"held")
        assert recv_exact(s, 4) == b"held"
    assert states == [False, True]


@pytest.mark.parametrize("high", [0, 1])
def test_tiny_high_water_still_delivers_everything(high: int) -> None:
    class Echo(zerg.Protocol):
        def connection_made(self, conn: zerg.Connection) -> None:
            conn.set_write_buffer_limits(high=high)

        def data_received(self, conn: zerg.Connection, seq: zerg.BufferSequence) -> None:
            conn.write(seq)

    with serving(Echo()) as srv, srv.connect() as s:
        for i in range(20):
            s.sendall(b"m%02d" % i)
            assert recv_exact(s, 3) == b"m%02d" % i
