"""zerg.new_event_loop: a reactor loop without a listener.

Why: programs that only make outbound connections, tests, and asyncio
code that wants io_uring underneath (``asyncio.Runner(loop_factory=
zerg.new_event_loop)``, an event-loop policy) need the loop without an
``Engine``.  It is a full reactor -- one io_uring, a provided buffer ring,
a slab pool -- that accepts nothing; closing the loop frees the ring.
Like every reactor it belongs to the thread that made it
(``IORING_SETUP_SINGLE_ISSUER``): create it on the thread that runs it.
"""

from __future__ import annotations

import asyncio

from zerg._config import ReactorConfig
from zerg._probe import probe, require
from zerg._reactor import Reactor
from zerg._seam import CompletionSink, ConnectionHost


class _NoAccepts:
    """The start strategy of a loop without a listener: nothing is accepted."""

    def start(self, host: ConnectionHost, conn_id: int, fd: int) -> CompletionSink:
        raise RuntimeError("a standalone zerg loop has no listener")

    async def drain(self, timeout: float) -> None:
        """Nothing runs handlers here."""


def new_event_loop(reactor: ReactorConfig | None = None) -> asyncio.AbstractEventLoop:
    """A new zerg reactor loop with no listener (like ``uvloop.new_event_loop``).

    Raises ``zerg.UnsupportedKernelError`` where io_uring (or a feature the
    configuration asks for) is missing.  Close it to free its ring.
    """
    cfg = ReactorConfig() if reactor is None else reactor
    if not isinstance(cfg, ReactorConfig):
        raise TypeError(f"reactor must be a ReactorConfig or None, got {type(cfg).__name__}")
    require(probe(), cfg, msg_ring=False)
    loop = Reactor(0, cfg, _NoAccepts(), listen_fd=None, shutdown_timeout_s=0.0).loop
    loop.standalone = True
    return loop
