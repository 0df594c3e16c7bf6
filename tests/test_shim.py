"""The C shim (native/uringshim.c) through the built module, on a real io_uring.

Kernel ABI values of the compat constants, the io_uring_enter return contract
of uringshim.h (a timeout is 0, a real error comes back as -errno and loses
nothing), the harvest's user_data split, and buffer ring setup failures that
leave the ring as it was.
"""

from __future__ import annotations

import ast
import errno
import pathlib
import socket
import threading
import time
from collections.abc import Callable

import pytest

import zerg
from zerg._ring import CQE_F_BUFFER, KEY_LIMIT, Op, Ring, encode
from zerg._uring import ffi, lib

STUB = pathlib.Path(zerg.__file__).resolve().parent / "_uring.pyi"   # as installed, or here
WAITS = ["zu_submit_and_wait", "zu_enter_ext"]
SECOND = 1_000_000_000


def _wait(name: str) -> Callable[[object, int, int], int]:
    fn: Callable[[object, int, int], int] = getattr(lib, name)
    return fn


def _in_other_thread(fn: Callable[[], list[int]]) -> list[int]:
    out: list[int] = []
    t = threading.Thread(target=lambda: out.extend(fn()))
    t.start()
    t.join(10)
    assert not t.is_alive()
    return out


def test_compat_constants_have_the_kernel_abi_values() -> None:
    assert lib.IOU_PBUF_RING_INC == 2
    assert lib.IORING_CQE_F_BUF_MORE == 1 << 4
    assert lib.IORING_SETUP_SINGLE_ISSUER == 1 << 12
    assert lib.IORING_SETUP_DEFER_TASKRUN == 1 << 13
    assert (lib.ZU_UD_OP_BITS, lib.ZU_UD_OP_MASK) == (8, 255)


def test_stub_declares_exactly_what_the_module_exports() -> None:
    tree = ast.parse(STUB.read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "_Lib")
    declared = {n.name for n in cls.body if isinstance(n, ast.FunctionDef)}
    declared |= {n.target.id for n in cls.body
                 if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}
    assert declared == set(dir(lib))


@pytest.mark.parametrize("wait", WAITS)
def test_timeout_with_nothing_to_do_is_zero_not_etime(wait: str) -> None:
    ring = Ring(8)
    try:
        t0 = time.monotonic()
        assert _wait(wait)(ring.ptr, 1, 20_000_000) == 0
        assert time.monotonic() - t0 >= 0.015, "it returned before the timeout"
        assert ring.completions() == []
    finally:
        ring.close()


@pytest.mark.parametrize("wait", WAITS)
def test_nop_round_trip_splits_op_and_key(wait: str) -> None:
    ring = Ring(8)
    try:
        assert lib.zu_prep_nop(ring.ptr, encode(Op.POLL, 7)) == 0
        assert lib.zu_prep_nop(ring.ptr, encode(Op.MSG, KEY_LIMIT - 1)) == 0
        assert _wait(wait)(ring.ptr, 2, SECOND) >= 0
        assert ring.completions() == [(Op.POLL, 7, 0, 0, 0), (Op.MSG, KEY_LIMIT - 1, 0, 0, 0)]
    finally:
        ring.close()


def test_enter_from_a_second_thread_on_a_single_issuer_ring_is_an_error() -> None:
    """The kernel refuses a submitter other than the ring's creator with EEXIST:
    each enter returns exactly that, and the refused NOP is still queued."""
    ring = Ring(8, setup_flags=lib.IORING_SETUP_SINGLE_ISSUER)
    try:
        assert lib.zu_prep_nop(ring.ptr, encode(Op.POLL, 1)) == 0
        got = _in_other_thread(lambda: [
            lib.zu_submit(ring.ptr),
            lib.zu_submit_and_wait(ring.ptr, 1, SECOND // 10),
            lib.zu_enter_ext(ring.ptr, 1, SECOND // 10),
        ])
        assert got == [-errno.EEXIST] * 3
        assert lib.zu_submit_and_wait(ring.ptr, 1, SECOND) >= 0
        assert ring.completions() == [(Op.POLL, 1, 0, 0, 0)]
    finally:
        ring.close()


def test_prep_on_a_full_sq_returns_the_failed_submits_errno() -> None:
    """A prep that must submit to find room reports why that submit failed
    (not a generic EBUSY), and prepares nothing."""
    ring = Ring(2, setup_flags=lib.IORING_SETUP_SINGLE_ISSUER)
    try:
        assert ring.sq_entries == 2
        got = _in_other_thread(lambda: [
            lib.zu_prep_nop(ring.ptr, encode(Op.POLL, key)) for key in range(3)
        ])
        assert got == [0, 0, -errno.EEXIST]
        assert ring.sqes_prepared == 2
        assert lib.zu_submit_and_wait(ring.ptr, 2, SECOND) >= 0
        assert [key for _, key, _, _, _ in ring.completions()] == [0, 1]
    finally:
        ring.close()


def test_bufring_setup_failures_leave_the_ring_as_it_was() -> None:
    ring = Ring(8)
    mem = ffi.new("char[]", 4 * 64)
    a, b = socket.socketpair()
    try:
        setup = lib.zu_bufring_setup
        assert setup(ring.ptr, 0, 3, 0, mem, 64) == -errno.EINVAL          # not a power of 2
        assert setup(ring.ptr, 1 << 16, 4, 0, mem, 64) == -errno.EINVAL    # bgid is 16 bits
        assert setup(ring.ptr, 0, 4, 0x8000, mem, 64) == -errno.EINVAL     # the kernel says no
        assert setup(ring.ptr, 0, 4, 0, mem, 64) == 0
        assert setup(ring.ptr, 0, 4, 0, mem, 64) == -errno.EEXIST
        # The ring that did register is the one the kernel fills.
        assert lib.zu_prep_recv_multishot(ring.ptr, a.fileno(), encode(Op.RECV, 5)) == 0
        b.sendall(b"hi")
        assert lib.zu_submit_and_wait(ring.ptr, 1, SECOND) >= 0
        [(op, key, res, flags, bid)] = ring.completions()
        assert (op, key, res, bid) == (Op.RECV, 5, 2, 0)
        assert flags & CQE_F_BUFFER
        assert ffi.buffer(mem, 2)[:] == b"hi"
    finally:
        ring.close()
        a.close()
        b.close()
