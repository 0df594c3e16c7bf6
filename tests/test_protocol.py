"""zerg.Protocol: the callback fast path, straight from completion dispatch."""

from __future__ import annotations

import os
import socket
import threading

import pytest
from conftest import recv_exact, recv_until_closed, serving, wait_for

import zerg


class Echo(zerg.Protocol):
    def data_received(self, conn: zerg.Connection, seq: zerg.BufferSequence) -> None:
        conn.write(seq)


class Lines(zerg.Protocol):
    """Answers each complete line; keeps a partial line (zero-copy) for later."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def connection_made(self, conn: zerg.Connection) -> None:
        self.events.append("made")
        conn.write(b"hello\n")

    def data_received(self, conn: zerg.Connection, seq: zerg.BufferSequence) -> int:
        pos = 0
        while (nl := seq.find(b"\n", pos)) >= 0:
            conn.write(b"<" + seq[pos:nl].tobytes() + b">\n")
            pos = nl + 1
        return pos

    def eof_received(self, conn: zerg.Connection) -> bool:
        self.events.append("eof")
        conn.write(b"bye\n")
        return False

    def connection_lost(self, conn: zerg.Connection, exc: BaseException | None) -> None:
        self.events.append(f"lost:{exc!r}")


def test_protocol_echo_many_connections_and_big_payload() -> None:
    payload = os.urandom(2 * 1024 * 1024)
    with serving(Echo()) as srv:
        socks = [srv.connect() for _ in range(20)]
        for i, s in enumerate(socks):
            s.sendall(b"msg %d" % i)
        for i, s in enumerate(socks):
            want = b"msg %d" % i
            assert recv_exact(s, len(want)) == want
        s = socks[0]
        t = threading.Thread(target=s.sendall, args=(payload,))
        t.start()
        assert recv_exact(s, len(payload)) == payload
        t.join()
        for s in socks:
            s.close()
        wait_for(lambda: srv.engine.stats()[0].connections == 0, what="closed")
        assert srv.engine.stats()[0].slots_in_use == 0


def test_protocol_partial_consumption_eof_and_lost() -> None:
    proto = Lines()
    with serving(proto) as srv, srv.connect() as s:
        assert recv_exact(s, 6) == b"hello\n"
        for chunk in (b"ab", b"c\nde", b"f", b"\ng", b"h\n"):
            s.sendall(chunk)
        assert recv_exact(s, 17) == b"<abc>\n<def>\n<gh>\n"
        s.shutdown(socket.SHUT_WR)
        assert recv_until_closed(s) == b"bye\n"
        wait_for(lambda: len(proto.events) == 3, what="connection_lost")
        assert srv.engine.stats()[0].slots_in_use == 0
    assert proto.events == ["made", "eof", "lost:None"]


def test_protocol_trickle_does_not_hoard_slots() -> None:
    cfg = zerg.ReactorConfig(buffer_ring_entries=16, recv_buffer_size=1024)
    with serving(Lines(), reactor=cfg) as srv:
        slow = srv.connect()
        slow.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        assert recv_exact(slow, 6) == b"hello\n"
        for _ in range(100):
            slow.send(b"x")
        with srv.connect() as s:
            assert recv_exact(s, 6) == b"hello\n"
            s.sendall(b"ping\n")
            assert recv_exact(s, 7) == b"<ping>\n"
        slow.sendall(b"\n")
        assert recv_exact(slow, 103) == b"<" + b"x" * 100 + b">\n"
        slow.close()


def test_protocol_exception_aborts_only_that_connection(caplog: pytest.LogCaptureFixture) -> None:
    class Fragile(zerg.Protocol):
        def __init__(self) -> None:
            self.lost: list[BaseException | None] = []

        def data_received(self, conn: zerg.Connection, seq: zerg.BufferSequence) -> None:
            if seq.startswith(b"boom"):
                raise RuntimeError("protocol exploded")
            conn.write(seq)

        def connection_lost(self, conn: zerg.Connection, exc: BaseException | None) -> None:
            self.lost.append(exc)

    proto = Fragile()
    with serving(proto) as srv:
        with srv.connect() as s:
            s.sendall(b"boom")
            with pytest.raises(ConnectionResetError):   # aborted: a reset
                s.recv(10)
        with srv.connect() as s:
            s.sendall(b"fine")
            assert recv_exact(s, 4) == b"fine"
        wait_for(lambda: len(proto.lost) == 2, what="both lost")
    assert isinstance(proto.lost[0], RuntimeError)
    assert any("protocol exploded" in str(r.exc_info[1]) for r in caplog.records if r.exc_info)


def test_protocol_class_instead_of_instance_is_rejected() -> None:
    engine = zerg.Engine(zerg.EngineOptions(ip="127.0.0.1", port=0))
    with pytest.raises(TypeError, match="instance of Echo"):
        engine.serve(Echo)  # type: ignore[arg-type]
    engine.close()


def test_bad_return_value_from_data_received_aborts_only_that_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Bad(zerg.Protocol):
        def data_received(self, conn: zerg.Connection, seq: zerg.BufferSequence) -> int:
            if seq.startswith(b"bad"):
                return -5
            conn.write(seq)
            return len(seq)

    with serving(Bad()) as srv:
        with srv.connect() as s:
            s.sendall(b"bad")
            with pytest.raises(ConnectionResetError):   # aborted: a reset
                s.recv(10)
        with srv.connect() as s:
            s.sendall(b"good")
            assert recv_exact(s, 4) == b"good"
    assert any("data_received returned -5, outside the 0..3 bytes" in str(r.exc_info[1])
               for r in caplog.records if r.exc_info)


class Keeper(zerg.Protocol):
    """Echoes, doing to the view a delivery is made of (the one object its
    sequence holds) what ``mode`` says: keep it (K), hash it (H),
    weak-reference it (W), hold a buffer export of it (E), release it (R), or
    nothing (.).  Each delivery is checked against what was done before: its
    view is never one still held or weakly referenced, never has a stale
    hash, and reads right.  ``lend``: the echo writes the sequence (a whole
    slot is lent to the send, whose view of the slot goes round too) instead
    of a copy."""

    def __init__(self, lend: bool = False) -> None:
        import weakref

        self.lend = lend
        self.mode = "."
        self.kept: list[memoryview] = []
        self.refs: list[weakref.ref[memoryview]] = []
        self.exports: list[object] = []
        self.ids: list[int] = []
        self.errors: list[str] = []

    def data_received(self, conn: zerg.Connection, seq: zerg.BufferSequence) -> None:
        import pickle
        import weakref

        stored = seq._segs[0]           # what the slot's next delivery may reuse
        n = len(self.ids)
        self.ids.append(id(stored))
        try:
            data = stored.tobytes()
        except ValueError:
            self.errors.append(f"message {n}: a released view came again")
            return
        if data != seq.tobytes() or not stored.readonly:
            self.errors.append(f"message {n}: the view does not show the delivery")
        if any(stored is k for k in self.kept) or any(r() is stored for r in self.refs):
            self.errors.append(f"message {n}: a view still held came again")
        conn.write(seq if self.lend else data)
        if self.mode == "K":
            self.kept.append(stored)
        elif self.mode == "H" and hash(stored) != hash(data):
            self.errors.append(f"message {n}: a view with a stale hash came again")
        elif self.mode == "W":
            self.refs.append(weakref.ref(stored))
        elif self.mode == "E":
            self.exports.append(pickle.PickleBuffer(stored))
        elif self.mode == "R":
            stored.release()


@pytest.mark.parametrize("lend", [False, True], ids=["copy", "lend"])
def test_protocol_views_a_handler_can_still_see_are_never_handed_out_again(lend: bool) -> None:
    """The view of a delivery nothing refers to any more serves its slot's
    next delivery of the same size (so an echo allocates no view per message:
    benchmarks/allocations.py counts it), and so does the view a loan sent a
    whole slot from, once the send is over; on a 4-slot ring, a view that is
    kept, hashed, weakly referenced, exported or released is never handed out
    again, and every view reads right as sizes change."""
    proto = Keeper(lend)
    cfg = zerg.ReactorConfig(buffer_ring_entries=4, recv_buffer_size=4096)
    with serving(proto, reactor=cfg) as srv, srv.connect() as s:
        for mode in ".KHWER.":
            proto.mode = mode
            for i in range(100):
                size = 64 if mode == "." else (1, 64, 64, 700, 4096)[i % 5]
                msg = (b"%s%d:" % (mode.encode(), i)).ljust(size, b"x")[:size]
                s.sendall(msg)
                assert recv_exact(s, len(msg)) == msg, (mode, i)
        assert srv.engine.stats()[0].slots_in_use <= 4
        assert (srv.engine.stats()[0].lent_bytes > 0) == lend
    assert proto.errors == []
    assert len(proto.ids) == 700


class Watched(zerg.Protocol):
    """Echo, keeping each connection to look at its pipes from the test."""

    def __init__(self) -> None:
        self.conns: list[zerg.Connection] = []

    def connection_made(self, conn: zerg.Connection) -> None:
        self.conns.append(conn)

    def data_received(self, conn: zerg.Connection, seq: zerg.BufferSequence) -> None:
        conn.write(seq)


def pipes(conn: zerg.Connection) -> tuple[bool, bool]:
    """Whether the connection has made its input and its output pipe."""
    return (conn._in_pipe is not None,
            conn._out_pipe is not None)


def test_protocol_connections_make_no_input_pipe_and_their_output_pipe_on_first_write() -> None:
    """Idle memory (C1): an accepted ``Protocol`` connection holds neither
    pipe; echoing makes the output pipe only (the bytes go from the ring to
    ``data_received``), and nothing a ``Protocol`` commonly reads makes the
    input pipe (receiving paused would: the pause lives there)."""
    proto = Watched()
    with serving(proto) as srv:
        idle, busy = srv.connect(), srv.connect()
        wait_for(lambda: len(proto.conns) == 2, what="both connections")
        assert [pipes(c) for c in proto.conns] == [(False, False), (False, False)]
        busy.sendall(b"ping")
        assert recv_exact(busy, 4) == b"ping"
        conn = next(c for c in proto.conns if c.bytes_in)
        other = next(c for c in proto.conns if c is not conn)
        assert pipes(conn) == (False, True) and pipes(other) == (False, False)
        # What a Protocol reads of its connection makes no pipe either.
        assert (conn.is_closed, conn.slots_held, conn.has_data, conn.error,
                conn.is_receiving_paused) == (False, 0, False, None, False)
        assert (other.bytes_out, other.pending_write_bytes) == (0, 0)
        assert pipes(conn) == (False, True) and pipes(other) == (False, False)
        # The idle one ends without an output pipe (its input pipe records
        # the end of the stream: ``error``, ``is_closed``).
        idle.close()
        wait_for(lambda: other.is_closed, what="the idle connection's end")
        assert pipes(other) == (True, False)
        busy.close()
        wait_for(lambda: srv.engine.stats()[0].connections == 0, what="closed")
        assert srv.engine.stats()[0].slots_in_use == 0
