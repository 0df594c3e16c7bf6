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


def _sq_threads() -> dict[int, str]:
    """Kernel SQPOLL threads of this process: tid -> allowed CPUs."""
    found = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                comm = f.read().strip()
            if comm.startswith("iou-sqp"):
                with open(f"/proc/self/task/{tid}/status") as f:
                    cpus = next(line.split(":")[1].strip() for line in f
                                if line.startswith("Cpus_allowed_list"))
                found[int(tid)] = cpus
        except OSError:
            continue
    return found


def test_sqpoll_thread_submits_and_is_pinned_with_sq_aff() -> None:
    cpu = os.cpu_count() - 1 if os.cpu_count() else 0  # type: ignore[operator]
    before = set(_sq_threads())
    cfg = zerg.ReactorConfig(sqpoll=True, defer_taskrun=False, sq_thread_cpu=cpu,
                             sq_thread_idle_ms=50)
    with serving(echo_handler, reactor=cfg) as srv:
        _echo_roundtrips(srv, 100)
        flags = srv.engine.stats()[0].setup_flags
        threads = {t: c for t, c in _sq_threads().items() if t not in before}
        # Proof: a kernel SQ thread exists for the ring, pinned where asked.
        assert threads, "no iou-sqp kernel thread found"
        assert list(threads.values()) == [str(cpu)]
        time.sleep(0.2)                     # let it idle past sq_thread_idle_ms
        _echo_roundtrips(srv, 20)           # NEED_WAKEUP is handled: still serving
    assert flags & lib.IORING_SETUP_SQPOLL and flags & lib.IORING_SETUP_SQ_AFF


def test_sqpoll_with_defer_taskrun_is_refused_clearly() -> None:
    with pytest.raises(ValueError, match="sqpoll=True needs defer_taskrun=False"):
        zerg.ReactorConfig(sqpoll=True)


@pytest.mark.parametrize("mode", ["submit_and_wait", "enter_ext_arg"])
def test_both_loop_modes_serve(mode: str) -> None:
    cfg = zerg.ReactorConfig(loop_mode=mode)  # type: ignore[arg-type]
    with serving(echo_handler, reactor=cfg) as srv:
        _echo_roundtrips(srv, 200)
        payload = os.urandom(1 << 20)
        with srv.connect() as s:
            t = threading.Thread(target=s.sendall, args=(payload,))
            t.start()
            assert recv_exact(s, len(payload)) == payload
            t.join()
        # An idle loop still wakes for timers (asyncio.sleep in handlers) and stops.
        assert srv.engine.stats()[0].waits > 0


@pytest.mark.parametrize("reactors", [2, 4])
@pytest.mark.parametrize("handoff", ["msg_ring", "queue"])
def test_reactors_spread_connections(reactors: int, handoff: str) -> None:
    acc = zerg.AcceptorConfig(handoff=handoff)  # type: ignore[arg-type]
    with serving(echo_handler, reactor_count=reactors, acceptor=acc) as srv:
        socks = [srv.connect() for _ in range(reactors * 6)]
        for i, s in enumerate(socks):
            s.sendall(b"c%d" % i)
        for i, s in enumerate(socks):
            assert recv_exact(s, len(b"c%d" % i)) == b"c%d" % i
        stats = srv.engine.stats()
        assert [st.accepted for st in stats] == [6] * reactors
        acc_stats = srv.engine.acceptor_stats()
        assert acc_stats is not None and acc_stats.accepted == reactors * 6
        if handoff == "msg_ring":
            wait_for(lambda: srv.engine.acceptor_stats().handed_by_msg_ring  # type: ignore[union-attr]
                     == reactors * 6, what="msg_ring completions")
            assert acc_stats.handed_by_queue == 0
        else:
            assert acc_stats.handed_by_queue == reactors * 6
        for s in socks:
            s.close()
        wait_for(lambda: sum(st.connections for st in srv.engine.stats()) == 0, what="closed")


async def _pid_handler(conn: zerg.Connection) -> None:
    conn.write(b"%d" % os.getpid())
    await conn.flush()


def _pids_seen(port: int, n: int) -> set[int]:
    """Pids that answered.  A connection queued on a worker that was just
    killed is reset by the kernel (SO_REUSEPORT does not migrate it)."""
    seen = set()
    for _ in range(n):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                data = b""
                while chunk := s.recv(32):
                    data += chunk
                seen.add(int(data))
        except (ConnectionResetError, ConnectionRefusedError, ValueError):
            continue
    return seen


def test_workers_processes_serve_and_restart_a_dead_one(caplog: pytest.LogCaptureFixture) -> None:
    import signal

    with serving(_pid_handler, workers=2) as srv:
        wait_for(lambda: len(srv.engine.worker_pids()) == 2, what="2 workers")
        pids = set(srv.engine.worker_pids())
        deadline = time.monotonic() + 10
        seen: set[int] = set()
        while seen != pids and time.monotonic() < deadline:
            seen |= _pids_seen(srv.port, 20)
        assert seen == pids, "both worker processes answered"
        victim = min(pids)
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: victim not in srv.engine.worker_pids()
                 and len(srv.engine.worker_pids()) == 2, what="a replacement worker")
        new = set(srv.engine.worker_pids()) - pids
        deadline = time.monotonic() + 10
        while not new <= seen and time.monotonic() < deadline:
            seen |= _pids_seen(srv.port, 10)
        assert new <= seen, "the replacement serves"
        srv.stop()
        for pid in pids | new:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
    assert any("restarting" in r.getMessage() for r in caplog.records)


def test_sqpoll_thread_submits_without_io_uring_enter() -> None:
    """With the SQ thread awake, a prepared SQE is consumed and completes with no
    io_uring_enter from us: liburing's submit only publishes the SQ tail."""
    from zerg._ring import Op, Ring, encode

    ring = Ring(8, setup_flags=lib.IORING_SETUP_SQPOLL, sq_thread_idle_ms=2000)
    try:
        # Wake the thread once (it starts asleep until the first submit).
        lib.zu_prep_nop(ring.ptr, 1)
        lib.zu_submit_and_wait(ring.ptr, 1, 1_000_000_000)
        ring.harvest()
        enters_before = lib.zu_enter_calls(ring.ptr)
        assert not lib.zu_sq_need_wakeup(ring.ptr), "the SQ thread should be awake"
        lib.zu_prep_nop(ring.ptr, encode(Op.POLL, 7))
        lib.zu_flush_sq(ring.ptr)       # publish the SQ tail only: no syscall at all
        deadline = time.monotonic() + 2
        got: list[int] = []
        while not got and time.monotonic() < deadline:
            # Reads the shared CQ memory: no syscall.
            got = [key for _, key, _, _, _ in ring.completions()]
        assert got == [7]
        assert lib.zu_enter_calls(ring.ptr) == enters_before
    finally:
        ring.close()


def test_acceptor_batch_sqes_submits_bursts_early() -> None:
    acc = zerg.AcceptorConfig(batch_sqes=1)
    with serving(echo_handler, reactor_count=2, acceptor=acc) as srv:
        socks = [srv.connect() for _ in range(20)]
        for i, s in enumerate(socks):
            s.sendall(b"q%d" % i)
        for i, s in enumerate(socks):
            assert recv_exact(s, len(b"q%d" % i)) == b"q%d" % i
            s.close()
        acceptor = srv.engine._acceptor
        assert acceptor is not None and acceptor.submits >= 1
