"""io_uring features: each one on, doing real work, and proven in effect."""

from __future__ import annotations

import os
import socket
import threading
import time

import pytest
from conftest import echo_handler, recv_exact, serving, wait_for

import zerg
from zerg._probe import probe
from zerg._uring import lib
from zerg.adapters import PipeReader

FEATS = probe()


def _echo_roundtrips(srv, n: int = 200) -> None:  # type: ignore[no-untyped-def]
    with srv.connect() as s:
        for i in range(n):
            msg = b"m%05d-" % i + b"z" * (i % 50)
            s.sendall(msg)
            assert recv_exact(s, len(msg)) == msg


class _PipeEcho(zerg.Protocol):
    def data_received(self, conn: zerg.Connection, seq: zerg.BufferSequence) -> None:
        conn.write(seq)


async def _pipereader_echo(conn: zerg.Connection) -> None:
    reader = PipeReader(conn)
    while True:
        result = await reader.read()
        conn.write(result.buffer)
        reader.advance_to(len(result.buffer))
        await conn.flush()
        if result.is_completed:
            break
    reader.complete()


@pytest.mark.skipif(FEATS.release < (6, 12),
                    reason="incremental buffer consumption (IOU_PBUF_RING_INC) needs Linux 6.12")
@pytest.mark.parametrize("handler", [echo_handler, _pipereader_echo, _PipeEcho()],
                         ids=["level1", "pipereader", "protocol"])
def test_incremental_buffers_share_slots_and_lose_nothing(handler: zerg.Handler) -> None:
    cfg = zerg.ReactorConfig(incremental_buffers=True, recv_buffer_size=65536,
                             buffer_ring_entries=16)
    with serving(handler, reactor=cfg) as srv:
        _echo_roundtrips(srv)
        payload = os.urandom(3 * 1024 * 1024)
        with srv.connect() as s:
            t = threading.Thread(target=s.sendall, args=(payload,))
            t.start()
            assert recv_exact(s, len(payload)) == payload
            t.join()
        wait_for(lambda: srv.engine.stats()[0].connections == 0, what="closed")
        st = srv.engine.stats()[0]
        # Proof: several receives landed in one slot at successive offsets.
        assert st.shared_slot_cqes > 100
        assert st.slots_in_use == 0


def test_default_ring_flags_read_back() -> None:
    with serving(echo_handler) as srv:
        _echo_roundtrips(srv, 5)
        flags = srv.engine.stats()[0].setup_flags
    assert flags & lib.IORING_SETUP_SINGLE_ISSUER
    assert flags & lib.IORING_SETUP_DEFER_TASKRUN


def test_single_issuer_and_defer_taskrun_can_be_turned_off() -> None:
    cfg = zerg.ReactorConfig(single_issuer=False, defer_taskrun=False)
    with serving(echo_handler, reactor=cfg) as srv:
        _echo_roundtrips(srv, 20)
        flags = srv.engine.stats()[0].setup_flags
    assert not flags & lib.IORING_SETUP_SINGLE_ISSUER
    assert not flags & lib.IORING_SETUP_DEFER_TASKRUN


@pytest.mark.parametrize("batch", [1, 7, 4096])
def test_batch_cqes_sizes(batch: int) -> None:
    cfg = zerg.ReactorConfig(batch_cqes=batch)
    with serving(echo_handler, reactor=cfg) as srv:
        socks = [srv.connect() for _ in range(20)]
        for i, s in enumerate(socks):
            s.sendall(b"b%d" % i)
        for i, s in enumerate(socks):
            assert recv_exact(s, len(b"b%d" % i)) == b"b%d" % i
            s.close()


def test_multishot_accept_one_sqe_serves_many_accepts() -> None:
    with serving(echo_handler) as srv:
        before = srv.engine.stats()[0].sqes
        socks = [srv.connect() for _ in range(50)]
        for s in socks:
            s.sendall(b"a")
        for s in socks:
            assert recv_exact(s, 1) == b"a"
        st = srv.engine.stats()[0]
        # 50 connections cost 50 recv arms + 50 sends, not 50 more accepts.
        assert st.sqes - before <= 50 + 50 + 5
        assert st.accepted == 50
        for s in socks:
            s.close()


def test_multishot_recv_one_sqe_per_connection_lifetime() -> None:
    with serving(echo_handler) as srv, srv.connect() as s:
        s.sendall(b"w")
        recv_exact(s, 1)
        before = srv.engine.stats()[0]
        for i in range(300):
            s.sendall(b"%d" % i)
            recv_exact(s, len(b"%d" % i))
        after = srv.engine.stats()[0]
        # Each message costs one send SQE; receiving costs nothing more.
        assert after.sqes - before.sqes <= (after.sends - before.sends) + 2
