"""Connection.forward: received bytes sent from their receive slots, no copy.

Every test runs through real sockets on a real io_uring.  The ring is tiny
(8 slots) so pinned slots are the scarce resource: a forward that gave a
slot back before its send completed would let the kernel overwrite bytes in
flight, and the byte-for-byte checks below would see it.
"""

from __future__ import annotations

import functools
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, Final

import pytest
from conftest import echo_handler, reader_echo, serving

import zerg
from zerg import _native
from zerg.adapters import PipeReader

TINY = zerg.ReactorConfig(buffer_ring_entries=8, recv_buffer_size=4096)


def _echo_through(srv: Any, data: bytes, *, slow: bool = False) -> bytes:
    """Send ``data`` and read back as many bytes (slowly: a peer that lags)."""
    s = srv.connect()
    if slow:    # a small window: the echo backs up into the server's pinned slots
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)
    got = bytearray()

    def reader() -> None:
        while len(got) < len(data):
            chunk = s.recv(65536 if not slow else 4096)
            if not chunk:
                return
            got.extend(chunk)
            if slow:
                time.sleep(0.0005)

    t = threading.Thread(target=reader)
    t.start()
    s.sendall(data)
    t.join(30)
    s.close()
    return bytes(got)


def _stats_when(srv: Any, cond: Callable[[Any], bool]) -> Any:
    """The reactor's stats once ``cond`` holds for them, or as they are after
    5 s (the caller asserts).  Read from the test's thread, a count can land
    mid-harvest, before the batch's slots went back: what must hold is that
    it gets there."""
    deadline = time.monotonic() + 5
    while True:
        st = srv.engine.stats()[0]
        if cond(st) or time.monotonic() > deadline:
            return st
        time.sleep(0.01)


def _settled(srv: Any) -> Any:
    """The reactor's stats once every connection closed and slots went back."""
    return _stats_when(srv, lambda st: st.connections == 0 and st.slots_in_use == 0)


class ForwardEcho(zerg.Protocol):
    """Echo by forwarding: data_received's slots go straight to the send; a
    send queue past its marks (bytes, or slots pinned) pauses the reading."""

    def data_received(self, conn: zerg.Connection, seq: zerg.BufferSequence) -> None:
        conn.forward(seq)

    def pause_writing(self, conn: zerg.Connection) -> None:
        conn.pause_reading()

    def resume_writing(self, conn: zerg.Connection) -> None:
        conn.resume_reading()


async def forward_echo_reader(conn: zerg.Connection) -> None:
    """Echo by forwarding a PipeReader's buffer, consuming it at once: the
    slots must stay pinned until the send took them."""
    await reader_echo(conn, conn.forward)


async def sequence_echo(conn: zerg.Connection, send: str = "forward") -> None:
    """Level 2: ``forward`` (or ``write``) the sequence, then release it before
    the send completes."""
    while True:
        snap = await conn.read()
        if snap.is_closed:
            return
        seq = conn.get_sequence(snap)
        getattr(conn, send)(seq)
        seq.release()
        await conn.flush()


forward_echo_sequence: Final = sequence_echo


class WriteEcho(ForwardEcho):
    """Echo with ``write``: a sequence of a whole slot (4 KiB here, ``LEND_MIN``)
    is lent to the send like a forward, a shorter one is copied."""

    def data_received(self, conn: zerg.Connection, seq: zerg.BufferSequence) -> None:
        conn.write(seq)


WRITE_ECHO: Final = WriteEcho()


async def write_echo_reader(conn: zerg.Connection) -> None:
    """Echo with ``write`` of a PipeReader's buffer, consumed at once."""
    await reader_echo(conn, conn.write)


write_echo_sequence: Final = functools.partial(sequence_echo, send="write")


@pytest.mark.parametrize("handler", [ForwardEcho(), forward_echo_reader, forward_echo_sequence],
                         ids=["protocol", "pipereader", "level2"])
@pytest.mark.parametrize("slow", [False, True], ids=["fast-peer", "slow-peer"])
def test_forward_through_an_8_slot_ring_keeps_every_byte(handler: Any, slow: bool) -> None:
    data = os.urandom((512 << 10) if slow else (4 << 20))
    with serving(handler, reactor=TINY) as srv:
        assert _echo_through(srv, data, slow=slow) == data
        st = _settled(srv)
        assert st.slots_in_use == 0, "a pinned slot never went back"
        assert st.forwarded_bytes == len(data)
        assert st.forward_copied_bytes == 0


@pytest.mark.parametrize("handler", [WRITE_ECHO, write_echo_reader, write_echo_sequence,
                                     echo_handler],
                         ids=["protocol", "pipereader", "level2", "level1"])
@pytest.mark.parametrize("slow", [False, True], ids=["fast-peer", "slow-peer"])
def test_write_lending_slots_through_an_8_slot_ring_keeps_every_byte(handler: Any,
                                                                      slow: bool) -> None:
    """``write`` of a whole received slot sends from the slot (pinned until
    the send took it) -- with a 4 KiB slot that is most of them: the bytes are
    still exact, whether the sequence was consumed or released at once, and
    every slot goes back."""
    data = os.urandom((512 << 10) if slow else (4 << 20))
    with serving(handler, reactor=TINY) as srv:
        assert _echo_through(srv, data, slow=slow) == data
        st = _settled(srv)
        assert st.slots_in_use == 0, "a lent slot never went back"
        assert st.forwarded_bytes == 0 and st.forward_copied_bytes == 0
        assert st.lent_bytes <= len(data)
        if handler in (WRITE_ECHO, echo_handler):   # one slot per call: most are lent
            assert st.lent_bytes > 0


def _exchange(s: socket.socket, data: bytes) -> bytes:
    s.sendall(data)
    got = bytearray()
    while len(got) < len(data):
        chunk = s.recv(65536)
        if not chunk:
            break
        got.extend(chunk)
    return bytes(got)


class Mixed(zerg.Protocol):
    """Echoes with ``write``; a message starting with b"own" from the
    application's own memory (always copied)."""

    def data_received(self, conn: zerg.Connection, seq: zerg.BufferSequence) -> None:
        if seq.startswith(b"own"):
            conn.write(zerg.BufferSequence(bytearray(bytes(seq))))
        else:
            conn.write(seq)


async def mixed_ring(conn: zerg.Connection) -> None:
    """Level 1 ``Mixed``: ring items' views, or the application's memory."""
    while True:
        snap = await conn.read()
        if snap.is_closed:
            return
        while (item := conn.try_get_ring(snap)) is not None:
            if bytes(item.view[:3]) == b"own":
                conn.write(memoryview(bytearray(item.view)))
            else:
                conn.write(item.view)
            conn.return_ring(item)
        conn.reset_read()
        await conn.flush()


@pytest.mark.parametrize("handler", [Mixed(), mixed_ring], ids=["protocol", "level1"])
def test_write_lends_4_kib_or_more_of_a_slot_and_copies_less(handler: Any) -> None:
    """``LEND_MIN`` is 4 KiB in both implementations; bytes, application
    memory and received bytes under it are copied (``ReactorStats.lent_bytes``)."""
    from zerg._outputpipe import LEND_MIN
    if _native.speedups is not None:
        assert _native.speedups.LEND_MIN == LEND_MIN == 4096

    ring = zerg.ReactorConfig(buffer_ring_entries=64, recv_buffer_size=16384)
    with serving(handler, reactor=ring) as srv:
        s = srv.connect()
        for size in (100, 8192, LEND_MIN - 1, LEND_MIN):
            data = b"x" + os.urandom(size - 1)
            assert _exchange(s, data) == data
        own = b"own" + os.urandom(9000)
        assert _exchange(s, own) == own
        s.close()
        st = _settled(srv)
        assert st.lent_bytes == 8192 + LEND_MIN
        assert st.forwarded_bytes == 0 and st.slots_in_use == 0


def test_forward_between_two_connections_of_one_reactor() -> None:
    """A relay: what one client sends, the other receives, from the same slots."""
    waiting: list[zerg.Connection] = []
    paired = threading.Event()

    async def relay(conn: zerg.Connection) -> None:
        if not waiting:
            waiting.append(conn)
            reader = PipeReader(conn)
            while not (await reader.read()).is_completed:
                pass                    # the first one only receives
            return
        dest = waiting.pop()
        paired.set()
        reader = PipeReader(conn)
        while True:
            result = await reader.read()
            if result.buffer:
                dest.forward(result.buffer)
            reader.advance_to(len(result.buffer))
            await dest.flush()
            if result.is_completed:
                dest.close()
                return

    data = os.urandom(2 << 20)
    with serving(relay, reactor=TINY) as srv:
        sink = srv.connect()
        time.sleep(0.05)
        src = srv.connect()
        assert paired.wait(5)
        got = bytearray()

        def read_all() -> None:
            while chunk := sink.recv(65536):
                got.extend(chunk)

        t = threading.Thread(target=read_all)
        t.start()
        src.sendall(data)
        src.shutdown(socket.SHUT_WR)
        t.join(30)
        assert bytes(got) == data
        src.close()
        sink.close()
        st = _settled(srv)
        assert st.slots_in_use == 0
        assert st.forwarded_bytes == len(data) and st.forward_copied_bytes == 0


def test_forward_refuses_what_it_cannot_send_and_pins_nothing() -> None:
    outcomes: dict[str, str] = {}

    async def handler(conn: zerg.Connection) -> None:
        snap = await conn.read()
        seq = conn.get_sequence(snap)
        try:
            conn.forward(b"not a sequence")  # type: ignore[arg-type]
        except TypeError as exc:
            outcomes["type"] = str(exc)
        conn.set_write_buffer_limits(high=16, low=0)
        conn.write(b"x" * 1000)
        big = zerg.BufferSequence(b"y" * conn.output.max_write_buffer)
        try:
            conn.forward(big)
        except zerg.WriteBufferFullError as exc:
            outcomes["full"] = str(exc)
        await conn.wait_sent()
        copy = zerg.BufferSequence(bytearray(b"own buffer\n"))
        conn.forward(copy)                  # the application's own memory: copied
        conn.forward(seq)
        seq.release()
        try:
            conn.forward(seq)
        except ValueError as exc:
            outcomes["released"] = str(exc)
        await conn.flush()
        conn.close()
        try:
            conn.forward(zerg.BufferSequence(b"late"))
        except ConnectionError as exc:
            outcomes["closed"] = str(exc)

    with serving(handler, reactor=TINY) as srv:
        s = srv.connect()
        s.sendall(b"hello")
        got = bytearray()
        while chunk := s.recv(65536):
            got.extend(chunk)
        s.close()
        assert bytes(got) == b"x" * 1000 + b"own buffer\nhello"
        st = _settled(srv)
        assert st.slots_in_use == 0
        assert st.forward_copied_bytes == len(b"own buffer\n")
        assert st.forwarded_bytes == len(b"hello")
    assert "BufferSequence" in outcomes["type"] and "write()" in outcomes["type"]
    assert "max_write_buffer" in outcomes["full"]
    assert "release()" in outcomes["released"]
    assert "closed" in outcomes["closed"]


def test_slots_pinned_by_an_aborted_send_go_back() -> None:
    """A peer that resets while forwarded bytes are in flight: the send fails
    or is dropped, and every pinned slot still goes back."""

    with serving(ForwardEcho(), reactor=TINY) as srv:
        for _ in range(5):
            s = srv.connect()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            try:
                s.sendall(os.urandom(256 << 10))    # nobody reads the echo
            except OSError:
                pass
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            s.close()                               # RST
        st = _settled(srv)
        assert st.connections == 0 and st.slots_in_use == 0


def test_a_destination_that_stops_reading_pins_at_most_its_share_of_the_ring() -> None:
    """A Protocol that forwards without heeding pause_writing, to a peer that
    reads nothing: past ``max_pinned_slots`` (an eighth of the ring, at least
    4) forwards are copied, so the ring stays free for everyone else; every
    byte still arrives once the peer reads."""
    ring = zerg.ReactorConfig(buffer_ring_entries=64, recv_buffer_size=4096)

    class Stubborn(ForwardEcho):
        def pause_writing(self, conn: zerg.Connection) -> None:
            pass                            # heeds nothing

        def resume_writing(self, conn: zerg.Connection) -> None:
            pass

        def connection_made(self, conn: zerg.Connection) -> None:
            sock = socket.socket(fileno=conn.fd)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            finally:
                sock.detach()

    data = os.urandom(160 << 10)
    with serving(Stubborn(), reactor=ring) as srv:
        s = srv.connect()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sender = threading.Thread(target=s.sendall, args=(data,))
        sender.start()
        deadline = time.monotonic() + 5
        while srv.engine.stats()[0].forward_copied_bytes == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        st = srv.engine.stats()[0]
        assert st.forward_copied_bytes > 0, "nothing was copied past the pin limit"
        st = _stats_when(srv, lambda st: st.slots_in_use <= 8 + 8)
        assert st.slots_in_use <= 8 + 8, st       # 8 pinned, a few in flight
        got = bytearray()
        while len(got) < len(data):
            chunk = s.recv(65536)
            assert chunk
            got.extend(chunk)
        sender.join(10)
        assert bytes(got) == data
        s.close()
        st = _settled(srv)
        assert st.slots_in_use == 0
        assert st.forwarded_bytes + st.forward_copied_bytes == len(data)
