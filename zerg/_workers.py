"""Worker processes: one listener per process (``SO_REUSEPORT``), to use every core.

Under the GIL one process runs Python on one core at a time; ``workers=N``
forks N processes that each bind the same port with ``SO_REUSEPORT`` (the
kernel spreads connections over them) and run their own reactors.  The
calling process keeps only a bound, non-listening socket that reserves the
port, and supervises: a worker that dies is logged and replaced; ``stop()``,
SIGINT or SIGTERM stop them all (SIGTERM, then SIGKILL after the grace
period).

Forking copies the caller's memory, so a handler may be any callable,
closures included.  Fork from a process that already runs other threads
only if those threads hold no locks the workers need.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable

from zerg._config import EngineOptions

log = logging.getLogger("zerg")

_POLL_S = 0.05


class WorkerPool:
    """Forks and supervises the worker processes of one ``Engine.serve``."""

    def __init__(self, options: EngineOptions, each: EngineOptions,
                 run_worker: Callable[[EngineOptions, int], None]) -> None:
        """``each``: what every worker serves with (its own SO_REUSEPORT port, or the
        shared socket's fd it inherits)."""
        self.options = each
        self.count = options.workers
        self._run_worker = run_worker
        self.pids: dict[int, int] = {}         # pid -> worker index
        self.restarts = 0
        self._stopping = False

    def stop(self) -> None:
        """Signal-safe: only sets a flag that the supervising loop polls."""
        self._stopping = True

    def _spawn(self, index: int) -> None:
        pid = os.fork()
        if pid == 0:                            # the worker
            code = 0
            try:
                for sig in (signal.SIGINT, signal.SIGTERM):
                    signal.signal(sig, signal.SIG_DFL)
                self._run_worker(self.options, index)
            except BaseException:
                log.exception("zerg worker %d failed", index)
                code = 1
            finally:
                os._exit(code)
        self.pids[pid] = index

    def run(self) -> None:
        """Start the workers and supervise them until ``stop()``."""
        for i in range(self.count):
            self._spawn(i)
        try:
            while not self._stopping:
                self._reap(restart=True)
                time.sleep(_POLL_S)
        finally:
            self._shutdown()

    def _reap(self, restart: bool) -> None:
        while self.pids:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.pids.clear()
                return
            if pid == 0:
                return
            index = self.pids.pop(pid, None)
            if index is None:
                continue
            if restart and not self._stopping:
                log.error("zerg worker %d (pid %d) died (%s); restarting it",
                          index, pid, _describe(status))
                self.restarts += 1
                self._spawn(index)

    def _shutdown(self) -> None:
        for pid in list(self.pids):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + self.options.shutdown_timeout_s + 3.0
        while self.pids and time.monotonic() < deadline:
            self._reap(restart=False)
            time.sleep(0.01)
        for pid in list(self.pids):
            log.error("zerg worker pid %d did not stop; killing it", pid)
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        self.pids.clear()


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"
