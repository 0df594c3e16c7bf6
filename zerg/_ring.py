"""The Python face of one io_uring (``zerg._uring``), one layer above the shim.

Why a wrapper at all: setup errors become exceptions with names, the harvest
arrays are allocated once per ring, and ``user_data`` packing is defined in
one place.  Hot paths call ``lib.zu_*`` directly with ``Ring.ptr``; nothing
here is in a per-message path except ``harvest``.

``user_data`` layout: the low 8 bits are the operation (``OP_*``), the rest a
key (a connection id, a poll token, ...).  Keys are never reused within a
ring's life, so a late completion for a closed connection finds nothing and
is ignored instead of hitting a newer connection that got the same fd.
"""

from __future__ import annotations

import errno
import os
from typing import Final

from zerg._uring import ffi, lib

OP_ACCEPT: Final = 1
OP_RECV: Final = 2
OP_SEND: Final = 3
OP_CANCEL: Final = 4
OP_POLL: Final = 5
OP_POLL_REMOVE: Final = 6
OP_MSG: Final = 7
OP_NOP: Final = 8

CQE_F_BUFFER: Final[int] = lib.IORING_CQE_F_BUFFER
CQE_F_MORE: Final[int] = lib.IORING_CQE_F_MORE
CQE_F_BUF_MORE: Final[int] = lib.IORING_CQE_F_BUF_MORE
CQE_BUFFER_SHIFT: Final = 16


class Ring:
    """One io_uring instance plus its flat CQE arrays."""

    __slots__ = ("_closed", "batch", "cq_entries", "fd", "features", "flags", "ptr",
                 "res_arr", "setup_flags", "sq_entries", "ud_arr")

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
        self._closed = False
        self.fd: int = lib.zu_ring_fd(ptr)
        self.setup_flags: int = lib.zu_ring_setup_flags(ptr)
        self.features: int = lib.zu_ring_features(ptr)
        self.sq_entries: int = lib.zu_ring_sq_entries(ptr)
        self.cq_entries: int = lib.zu_ring_cq_entries(ptr)
        self.batch = batch
        self.ud_arr = ffi.new("unsigned long long[]", batch)
        self.res_arr = ffi.new("int[]", batch)
        self.flags = ffi.new("unsigned[]", batch)

    def harvest(self) -> tuple[list[int], list[int], list[int]]:
        """Take up to ``batch`` CQEs: (user_data, res, flags) as three lists."""
        n = lib.zu_harvest(self.ptr, self.batch, self.ud_arr, self.res_arr, self.flags)
        if not n:
            return [], [], []
        return ffi.unpack(self.ud_arr, n), ffi.unpack(self.res_arr, n), ffi.unpack(self.flags, n)

    def setup_buffer_ring(
        self, bgid: int, entries: int, base: object, buf_size: int, *, incremental: bool
    ) -> None:
        flags = lib.IOU_PBUF_RING_INC if incremental else 0
        ret = lib.zu_bufring_setup(self.ptr, bgid, entries, flags, base, buf_size)
        if ret < 0:
            raise OSError(-ret, f"registering the provided buffer ring failed: "
                                f"{os.strerror(-ret)}")

    def check(self, ret: int, what: str) -> None:
        if ret < 0:
            if ret == -errno.EBUSY:
                raise OSError(errno.EBUSY, f"{what}: submission queue full")
            raise OSError(-ret, f"{what}: {os.strerror(-ret)}")

    @property
    def sqes_prepared(self) -> int:
        return int(lib.zu_sqes_prepared(self.ptr))

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            lib.zu_ring_free(self.ptr)
            self.ptr = ffi.NULL

    @property
    def closed(self) -> bool:
        return self._closed
