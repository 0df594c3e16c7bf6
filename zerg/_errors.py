"""Exceptions that are part of zerg's public surface."""

from __future__ import annotations


class UnsupportedKernelError(RuntimeError):
    """io_uring, or a feature zerg was asked to use, is not available here.

    The message names the feature and the kernel version that has it, and
    what to do about it (upgrade, change the setting, or lift a sandbox).
    """

    feature: str
    """What is missing, e.g. ``"IORING_SETUP_DEFER_TASKRUN"``."""
    needs: str
    """What would provide it, e.g. ``"Linux 6.1"``."""

    def __init__(self, feature: str, needs: str, detail: str = "") -> None:
        self.feature = feature
        self.needs = needs
        msg = f"{feature} is not available: it needs {needs}"
        if detail:
            msg += f" ({detail})"
        super().__init__(msg)


class WriteBufferFullError(BufferError):
    """A write would stage more than ``ReactorConfig.max_write_buffer`` bytes.

    Nothing of the rejected write was staged.  ``await conn.flush()`` and
    write again; the cap exists so a peer that does not read cannot grow the
    server without bound.
    """
