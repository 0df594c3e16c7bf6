"""Feature detection: what this kernel's io_uring can do, checked at start-up.

Why: a missing feature must fail loudly at ``Engine.serve`` with the name of
the feature and the kernel that has it, not later as an ``EINVAL`` from a
CQE.  ``probe()`` reads the kernel once; ``require()`` is pure, so tests can
hand it a forged ``KernelFeatures`` to check every refusal path.
"""

from __future__ import annotations

import errno
import functools
import os
import re
from dataclasses import dataclass

from zerg._config import ReactorConfig
from zerg._errors import UnsupportedKernelError
from zerg._uring import ffi, lib

# Opcodes zerg submits, with the kernel release that introduced them.
_OPCODES: dict[str, tuple[int, str]] = {
    "IORING_OP_POLL_ADD": (lib.IORING_OP_POLL_ADD, "Linux 5.1"),
    "IORING_OP_POLL_REMOVE": (lib.IORING_OP_POLL_REMOVE, "Linux 5.1"),
    "IORING_OP_ACCEPT": (lib.IORING_OP_ACCEPT, "Linux 5.5"),
    "IORING_OP_ASYNC_CANCEL": (lib.IORING_OP_ASYNC_CANCEL, "Linux 5.5"),
    "IORING_OP_SEND": (lib.IORING_OP_SEND, "Linux 5.6"),
    "IORING_OP_RECV": (lib.IORING_OP_RECV, "Linux 5.6"),
}

# Features that are not opcodes are told apart by kernel release.
FEATURE_VERSIONS: dict[str, tuple[int, int]] = {
    "provided buffer rings": (5, 19),
    "multishot accept": (5, 19),
    "multishot recv": (6, 0),
    "IORING_SETUP_SINGLE_ISSUER": (6, 0),
    "IORING_SETUP_DEFER_TASKRUN": (6, 1),
    "IORING_OP_MSG_RING": (5, 18),
    "incremental buffer consumption (IOU_PBUF_RING_INC)": (6, 12),
    "IORING_SETUP_SQPOLL": (5, 1),
}


@dataclass(frozen=True, slots=True)
class KernelFeatures:
    """What ``probe()`` found.  ``error`` is the negative errno of ring setup."""

    release: tuple[int, int]
    """Kernel release as (major, minor), from ``uname``."""
    opcodes: frozenset[str]
    """The ``IORING_OP_*`` names zerg needs that the kernel's probe lists."""
    error: int = 0
    """0, or the negative errno with which ``io_uring_setup`` failed."""
    io_uring_disabled: int = 0
    """The ``kernel.io_uring_disabled`` sysctl (0 when absent)."""


def _parse_release(text: str) -> tuple[int, int]:
    m = re.match(r"(\d+)\.(\d+)", text)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def _read_disabled_sysctl() -> int:
    try:
        with open("/proc/sys/kernel/io_uring_disabled") as f:
            return int(f.read().strip() or 0)
    except (OSError, ValueError):
        return 0


@functools.cache
def probe() -> KernelFeatures:
    """What this kernel's io_uring can do (asked once per process, then cached).

    Never raises: a kernel without io_uring gives ``error != 0``; pass the
    result to the checks ``Engine.serve`` runs to get a readable refusal.
    """
    out = ffi.new("unsigned char[]", 256)
    ret = lib.zu_probe_ops(out, 256)
    release = _parse_release(os.uname().release)
    if ret < 0:
        return KernelFeatures(release, frozenset(), ret, _read_disabled_sysctl())
    ops = frozenset(name for name, (code, _) in _OPCODES.items() if code <= ret and out[code])
    return KernelFeatures(release, ops, 0, _read_disabled_sysctl())


def _fmt(v: tuple[int, int]) -> str:
    return f"Linux {v[0]}.{v[1]}"


def _need(feats: KernelFeatures, feature: str) -> None:
    want = FEATURE_VERSIONS[feature]
    if feats.release < want:
        raise UnsupportedKernelError(
            feature, _fmt(want), f"this kernel is {_fmt(feats.release)}"
        )


def require_io_uring(feats: KernelFeatures) -> None:
    """Raise unless io_uring itself can be set up here."""
    if feats.error == 0:
        return
    err = -feats.error
    if err == errno.ENOSYS:
        raise UnsupportedKernelError(
            "io_uring", "Linux 5.1 (zerg needs 6.1)",
            f"io_uring_setup returned ENOSYS; this kernel is {_fmt(feats.release)}",
        )
    if err == errno.EPERM:
        why = (
            f"kernel.io_uring_disabled={feats.io_uring_disabled}; set it to 0 with sysctl"
            if feats.io_uring_disabled
            else "blocked by a seccomp policy or a container runtime; allow io_uring_setup"
        )
        raise UnsupportedKernelError("io_uring", "permission to call io_uring_setup", why)
    if err == errno.ENOMEM:
        raise UnsupportedKernelError(
            "io_uring", "locked memory for its rings", "ENOMEM: raise RLIMIT_MEMLOCK"
        )
    raise UnsupportedKernelError(
        "io_uring", "a working io_uring_setup", f"it failed with {errno.errorcode.get(err, err)}"
    )


def require(feats: KernelFeatures, cfg: ReactorConfig, *, msg_ring: bool = False) -> None:
    """Raise ``UnsupportedKernelError`` for the first thing ``cfg`` needs that is missing."""
    require_io_uring(feats)
    for name, (_, needs) in _OPCODES.items():
        if name not in feats.opcodes:
            raise UnsupportedKernelError(name, needs, "the io_uring probe does not list it")
    _need(feats, "provided buffer rings")
    _need(feats, "multishot accept")
    _need(feats, "multishot recv")
    if cfg.single_issuer:
        _need(feats, "IORING_SETUP_SINGLE_ISSUER")
    if cfg.defer_taskrun:
        _need(feats, "IORING_SETUP_DEFER_TASKRUN")
    if cfg.incremental_buffers:
        _need(feats, "incremental buffer consumption (IOU_PBUF_RING_INC)")
    if cfg.sqpoll:
        _need(feats, "IORING_SETUP_SQPOLL")
    if msg_ring:
        _need(feats, "IORING_OP_MSG_RING")
