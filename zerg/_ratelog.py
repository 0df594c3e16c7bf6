"""Error logs that cannot be used as a weapon.

Why: a client can make a handler raise at will (malformed input, a reset in
the middle of a write).  Logging a full traceback for each lets 30,000 such
connections write megabytes of log in seconds and stall the reactor that
writes it.  So per reactor: the first ``burst`` errors of an ``interval``
are logged with their traceback, later ones only counted, and the count is
reported once the interval is over.  A peer that resets or stops reading
(``ConnectionResetError``, ``BrokenPipeError``, ``ConnectionAbortedError``)
is the network, not a bug: debug level, never counted.
"""

from __future__ import annotations

import logging
import time
from typing import Final

log = logging.getLogger("zerg")

PEER_GONE: Final = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)


class ErrorLog:
    """Rate-limited error logging for one reactor (its thread only)."""

    __slots__ = ("_burst", "_interval", "_logged", "_since", "_suppressed")

    def __init__(self, burst: int = 10, interval: float = 10.0) -> None:
        self._burst = burst
        self._interval = interval
        self._since = time.monotonic()
        self._logged = 0
        self._suppressed = 0

    def error(self, msg: str, *args: object, exc: BaseException) -> None:
        """Log ``msg % args`` with ``exc``'s traceback, within the rate."""
        if isinstance(exc, PEER_GONE):
            log.debug(msg + " (the peer went away: %s)", *args, exc)
            return
        now = time.monotonic()
        if now - self._since >= self._interval:
            if self._suppressed:
                log.error("zerg: %d more error(s) like the above in the last %.0f s were "
                          "not logged (rate limit: %d per %.0f s)", self._suppressed,
                          now - self._since, self._burst, self._interval)
            self._since = now
            self._logged = 0
            self._suppressed = 0
        if self._logged < self._burst:
            self._logged += 1
            log.error(msg, *args, exc_info=exc)
        else:
            self._suppressed += 1

    @property
    def suppressed(self) -> int:
        """Errors counted but not logged in the current interval."""
        return self._suppressed
