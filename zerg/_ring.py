"""The Python face of one io_uring (``zerg._uring``), one layer above the shim.

Why a wrapper at all: setup errors become exceptions with names, the harvest
arrays are allocated once per ring, and ``user_data`` packing is defined in
one place.  Hot paths call ``lib.zu_*`` directly with ``Ring.ptr``; nothing
here is in a per-message path except ``harvest``.

The ``user_data`` codec lives here and nowhere else in Python: ``encode(op,
key)`` packs an operation (:class:`Op`) and a key (a connection id, a poll
token, the fd a MSG_RING hand-off carries); the shim's ``zu_harvest`` unpacks
with the same constants (``ZU_UD_OP_BITS``), so the dispatch loop reads op,
key and provided-buffer id from separate arrays and never shifts.  Keys are
never reused within a ring's life, so a late completion for a closed
connection finds nothing and is ignored instead of hitting a newer connection
that got the same fd.
"""

from __future__ import annotations

import enum
import errno
import functools
import os
from collections.abc import Callable
from typing import Any, Final

from zerg._uring import ffi, lib


class Op(enum.IntEnum):
    """What a submission was for; comes back with its completion."""

    ACCEPT = 1
    RECV = 2
    SEND = 3
    CANCEL = 4          # the completion of a cancel request itself
    POLL = 5
    POLL_REMOVE = 6
    MSG = 7             # an fd handed over by the acceptor (IORING_OP_MSG_RING)
    CONNECT = 8         # an outbound connect (zerg.connect)


_OP_BITS: Final[int] = lib.ZU_UD_OP_BITS
_OP_MASK: Final[int] = lib.ZU_UD_OP_MASK
KEY_LIMIT: Final[int] = 1 << (64 - _OP_BITS)
"""Keys are below this (they share the 64-bit ``user_data`` with the op)."""


def encode(op: Op, key: int = 0) -> int:
    """The ``user_data`` of a request for ``op`` about ``key``."""
    return (key << _OP_BITS) | op


def msg_key(reactor_index: int, fd: int) -> int:
    """The key of the acceptor's own MSG_RING request: which reactor it targets
    and which fd it carries, so a refused message goes to that same reactor."""
    return (reactor_index << 32) | fd


def split_msg_key(key: int) -> tuple[int, int]:
    """``msg_key``'s inverse: ``(reactor_index, fd)``."""
    return key >> 32, key & 0xFFFFFFFF


def decode(user_data: int) -> tuple[Op, int]:
    """``encode``'s inverse (for logs and tests; the harvest splits in C)."""
    return Op(user_data & _OP_MASK), user_data >> _OP_BITS


CQE_F_BUFFER: Final[int] = lib.IORING_CQE_F_BUFFER
CQE_F_MORE: Final[int] = lib.IORING_CQE_F_MORE
CQE_F_BUF_MORE: Final[int] = lib.IORING_CQE_F_BUF_MORE


class Ring:
    """One io_uring instance plus its flat CQE arrays."""

    __slots__ = ("batch", "bid_arr", "closed", "cq_entries", "fd", "features", "flags",
                 "key_arr", "op_arr", "ptr", "res_arr", "setup_flags", "sq_entries")

    def __init__(
        self,
        entries: int,
        *,
        setup_flags: int = 0,
        sq_thread_cpu: int | None = None,
        sq_thread_idle_ms: int = 0,
        cq_entries: int = 0,
        batch: int = 256,
    ) -> None:
        err = ffi.new("int *")
        ptr = lib.zu_ring_new(
            entries, cq_entries, setup_flags,
            -1 if sq_thread_cpu is None else sq_thread_cpu, sq_thread_idle_ms, err,
        )
        if ptr == ffi.NULL:
            code = -err[0]
            raise OSError(
                code,
                f"io_uring_setup(entries={entries}, flags={setup_flags:#x}) failed: "
                f"{os.strerror(code)}",
            )
        self.ptr = ptr
        # Read by the reactor every loop iteration: an attribute, not a
        # property (a property's call showed in its profile).  Set by close().
        self.closed = False
        self.fd: int = lib.zu_ring_fd(ptr)
        self.setup_flags: int = lib.zu_ring_setup_flags(ptr)
        self.features: int = lib.zu_ring_features(ptr)
        self.sq_entries: int = lib.zu_ring_sq_entries(ptr)
        self.cq_entries: int = lib.zu_ring_cq_entries(ptr)
        self.batch = batch
        self.op_arr = ffi.new("unsigned char[]", batch)
        self.key_arr = ffi.new("unsigned long long[]", batch)
        self.res_arr = ffi.new("int[]", batch)
        self.flags = ffi.new("unsigned[]", batch)
        self.bid_arr = ffi.new("unsigned short[]", batch)

    def harvest(self) -> int:
        """Take up to ``batch`` CQEs into ``op_arr``, ``key_arr``, ``res_arr``,
        ``flags`` and ``bid_arr``; returns how many."""
        return int(lib.zu_harvest(self.ptr, self.batch, self.op_arr, self.key_arr,
                                  self.res_arr, self.flags, self.bid_arr))

    def completions(self) -> list[tuple[Op, int, int, int, int]]:
        """One harvest as ``(op, key, res, flags, bid)`` tuples (not for hot paths)."""
        n = self.harvest()
        ops = ffi.unpack(self.op_arr, n)
        return [(Op(ops[i]), self.key_arr[i], self.res_arr[i], self.flags[i], self.bid_arr[i])
                for i in range(n)]

    def setup_buffer_ring(
        self, bgid: int, entries: int, base: object, buf_size: int, *, incremental: bool
    ) -> None:
        flags = lib.IOU_PBUF_RING_INC if incremental else 0
        ret = lib.zu_bufring_setup(self.ptr, bgid, entries, flags, base, buf_size)
        if ret < 0:
            raise OSError(-ret, f"registering the provided buffer ring failed: "
                                f"{os.strerror(-ret)}")

    def enter_result(self, ret: int, what: str) -> int:
        """Raise on a real ``io_uring_enter`` error (the shim maps the harmless
        ones -- timeout, signal, try again -- to 0); else return ``ret``."""
        if ret < 0:
            raise OSError(-ret, f"io_uring_enter ({what}) failed: {os.strerror(-ret)}")
        return ret

    def check(self, ret: int, what: str) -> None:
        if ret < 0:
            if ret == -errno.EBUSY:
                raise OSError(errno.EBUSY, f"{what}: submission queue full")
            raise OSError(-ret, f"{what}: {os.strerror(-ret)}")

    @property
    def address(self) -> int:
        """The native ring's address, for ``zerg._speedups`` (built from the same shim)."""
        return int(ffi.cast("uintptr_t", self.ptr))

    @property
    def sqes_prepared(self) -> int:
        return int(lib.zu_sqes_prepared(self.ptr))

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            lib.zu_ring_free(self.ptr)
            self.ptr = ffi.NULL


class IoVec:
    """The memory of one gathered send (``RingSubmitter.sendv``): a msghdr and
    up to ``capacity`` iovecs, owned by one connection and reused for each of
    its gathered sends (one at a time: it must stay valid until the
    completion).  ``pieces`` is what ``fill`` was given, until ``clear``: the
    bases may be cffi buffers over memoryviews, and a memoryview that is still
    exported when the garbage collector clears it is an error, so the sender
    drops them once the request is prepared (the iovecs hold plain addresses;
    the segments keep the memory alive)."""

    __slots__ = ("capacity", "count", "pieces", "state")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.state = ffi.new("char[]", lib.zu_sendv_size(capacity))
        self.pieces: list[tuple[Any, int, int]] = []
        self.count = 0

    def fill(self, pieces: list[tuple[Any, int, int]]) -> None:
        """Point the iovecs at ``pieces``: (base, offset, length) each."""
        if len(pieces) > self.capacity:
            raise ValueError(f"{len(pieces)} pieces for {self.capacity} iovecs")
        state = self.state
        for i, (base, off, n) in enumerate(pieces):
            lib.zu_sendv_set(state, i, base, off, n)
        self.pieces = pieces
        self.count = len(pieces)

    def clear(self) -> None:
        """Drop the references to the bases (the iovecs stay as they are)."""
        self.pieces = []


class RingSubmitter:
    """The requests a connection makes, prepared on one ring.

    A connection talks to the kernel only through this (``ConnectionHost.
    submitter``), so a test can hand it a recorder and drive it with synthetic
    completions.  Each method prepares one SQE; it is submitted with the
    reactor's next ``io_uring_enter``.  A full submission queue raises.
    """

    __slots__ = ("_cancel_ud", "_ptr", "_ring", "address", "send")

    def __init__(self, ring: Ring) -> None:
        self._ring = ring
        self._ptr = ring.ptr
        self.address = ring.address     # for the C fast path: it prepares sends itself
        self._cancel_ud = encode(Op.CANCEL)
        # send(fd, base, offset, length, user_data) -> 0 or -errno: the shim's
        # function with the ring bound, so a send costs no Python frame.
        self.send: Callable[[int, object, int, int, int], int] = functools.partial(
            lib.zu_prep_send, ring.ptr)

    def recv(self, fd: int, user_data: int) -> None:
        """A multishot receive into the provided buffer ring."""
        self._ring.check(lib.zu_prep_recv_multishot(self._ptr, fd, user_data), "recv")

    def sendv(self, fd: int, iov: IoVec, user_data: int) -> int:
        """One send of every piece ``iov`` was filled with, in order (sendmsg):
        0, or -errno (``check`` raises).  ``iov`` must live until the completion."""
        ret: int = lib.zu_prep_sendv(self._ptr, fd, iov.state, iov.count, user_data)
        return ret

    def resend(self, fd: int, base: object, offset: int, length: int, user_data: int) -> int:
        """``send``, after the kernel answered the last one with -EAGAIN: it
        waits until the socket is writable before trying (no spinning)."""
        ret: int = lib.zu_prep_send_when_writable(self._ptr, fd, base, offset, length, user_data)
        return ret

    def resendv(self, fd: int, iov: IoVec, user_data: int) -> int:
        """``sendv``, waiting until the socket is writable (see ``resend``)."""
        ret: int = lib.zu_prep_sendv_when_writable(self._ptr, fd, iov.state, iov.count,
                                                   user_data)
        return ret

    def check(self, ret: int, what: str) -> None:
        """Raise for the -errno a ``send`` returned."""
        self._ring.check(ret, what)

    def cancel(self, target: int) -> None:
        """Cancel the request whose user_data is ``target``."""
        if not self._ring.closed:
            self._ring.check(lib.zu_prep_cancel(self._ptr, target, self._cancel_ud), "cancel")

    def close(self, fd: int) -> None:
        """Close ``fd``; nothing of ours is in the kernel for it any more."""
        try:
            os.close(fd)
        except OSError:
            pass
