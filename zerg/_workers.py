"""Worker processes: N processes serve one listener, to use every core.

Under the GIL one process runs Python on one core at a time; ``workers=N``
forks N processes that run their own reactors.  On a TCP port each worker
binds the port with ``SO_REUSEPORT`` (the kernel spreads connections over
them) and the calling process keeps only a bound, non-listening socket that
reserves the port; over a UNIX socket or a socket from outside
(``unix_path``, ``listen_fd``) every worker inherits the supervisor's one
listening socket.  The calling process supervises: a worker that dies is
logged and replaced; ``stop()``, SIGINT or SIGTERM stop them all (SIGTERM,
then SIGKILL after the grace period); SIGHUP (``request_restart``) replaces
them one at a time, each successor serving before its predecessor drains.

Each worker reports on a pipe: one ``r`` line once it serves (a rolling
restart waits for it), then its ``Engine.stats()`` as a JSON line every
``REPORT_EVERY_S``; the supervisor keeps the latest of each, so
``Engine.stats()`` in the supervisor lists every worker's reactors.

Forking copies the caller's memory, so a handler may be any callable,
closures included.  Fork from a process that already runs other threads
only if those threads hold no locks the workers need.
"""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import time
from collections.abc import Callable
from typing import Any

from zerg._config import EngineOptions

log = logging.getLogger("zerg")

_POLL_S = 0.05
_READY_TIMEOUT_S = 30.0     # a new worker of a rolling restart must serve by then
REPORT_EVERY_S = 0.5       # how often a worker reports its stats


class WorkerPool:
    """Forks and supervises the worker processes of one ``Engine.serve``."""

    def __init__(self, options: EngineOptions, each: EngineOptions,
                 run_worker: Callable[[EngineOptions, int, int], None]) -> None:
        """``each``: what every worker serves with (its own SO_REUSEPORT port, or the
        shared socket's fd it inherits)."""
        self.options = each
        self.count = options.workers
        self._run_worker = run_worker
        self.pids: dict[int, int] = {}         # pid -> worker index
        self.restarts = 0
        self.replaced = 0                       # workers replaced by rolling restarts
        self._stopping = False
        self._roll_requested = False
        self._retiring: set[int] = set()        # old workers draining after a replacement
        self._reports: dict[int, _Report] = {}   # pid -> its report pipe
        self._latest: dict[int, list[dict[str, Any]]] = {}   # index -> its last stats

    def stop(self) -> None:
        """Signal-safe: only sets a flag that the supervising loop polls."""
        self._stopping = True

    def request_restart(self) -> None:
        """Signal-safe (SIGHUP): replace every worker, one at a time."""
        self._roll_requested = True

    def _spawn(self, index: int) -> int:
        """Fork worker ``index``; returns its pid.  Its report pipe is read by
        ``_read_reports``."""
        ready_r, ready_w = os.pipe()
        pid = os.fork()
        if pid == 0:                            # the worker
            code = 0
            try:
                os.close(ready_r)
                for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                    signal.signal(sig, signal.SIG_DFL)
                self._run_worker(self.options, index, ready_w)
            except BaseException:
                log.exception("zerg worker %d failed", index)
                code = 1
            finally:
                os._exit(code)
        os.close(ready_w)
        os.set_blocking(ready_r, False)
        self.pids[pid] = index
        self._reports[pid] = _Report(ready_r)
        return pid

    def _read_reports(self) -> None:
        """Take what the workers reported (non-blocking)."""
        for pid, report in list(self._reports.items()):
            self._take(pid, report)

    def _take(self, pid: int, report: _Report) -> None:
        report.read()
        index = self.pids.get(pid)
        if index is not None and report.latest and pid not in self._retiring:
            self._latest[index] = report.latest     # (not a replaced one's: its successor's)

    def stats(self) -> list[dict[str, Any]]:
        """The latest stats each worker reported for its reactors (dicts of
        ReactorStats' fields, ``worker`` set to the worker's index); after the
        pool stopped, what each reported last, as it exited."""
        return [{**st, "worker": index}
                for index, stats in sorted(self._latest.items()) for st in stats]

    def run(self) -> None:
        """Start the workers and supervise them until ``stop()``."""
        for i in range(self.count):
            self._spawn(i)
        try:
            while not self._stopping:
                self._reap(restart=True)
                self._read_reports()
                if self._roll_requested:
                    self._roll()
                time.sleep(_POLL_S)
        finally:
            self._shutdown()

    def _roll(self) -> None:
        """A rolling restart: for each worker, start its replacement, wait until it
        serves, then stop the old one gracefully (it drains), and only then go on.
        Over a shared socket (``unix_path``/``listen_fd``) no connection is lost:
        the old worker stops accepting and its queue is the others' too."""
        self._roll_requested = False
        for pid, index in sorted(self.pids.items(), key=lambda item: item[1]):
            if self._stopping:
                return
            if pid not in self.pids:
                continue                        # died meanwhile: already replaced
            new = self._spawn(index)
            if not self._wait_ready(new):
                log.error("zerg: the new worker %d did not start; rolling restart stopped, "
                          "the old one (pid %d) keeps serving", index, pid)
                self._retire(new)               # if it hangs rather than died
                return
            self._retire(pid)
            self.replaced += 1
        log.info("zerg: rolling restart done: %d workers replaced", len(self.pids))

    def _wait_ready(self, pid: int) -> bool:
        """True once worker ``pid`` serves; False if it exits first or takes
        longer than _READY_TIMEOUT_S."""
        report = self._reports[pid]
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while time.monotonic() < deadline and not self._stopping:
            select.select([report.fd], [], [], _POLL_S)
            report.read()
            if report.ready:
                return True
            if report.closed:
                return False
        return False

    def _retire(self, pid: int) -> None:
        """Stop one worker gracefully (SIGTERM: it drains) and wait for it."""
        self._retiring.add(pid)
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + self.options.shutdown_timeout_s + 3.0
        while pid in self.pids and time.monotonic() < deadline:
            self._reap(restart=True)            # and any other worker that died
            time.sleep(0.01)
        if pid in self.pids:
            log.error("zerg worker pid %d did not stop; killing it", pid)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            while pid in self.pids:
                self._reap(restart=True)
                time.sleep(0.01)
        self._retiring.discard(pid)

    def _reap(self, restart: bool) -> None:
        while self.pids:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.pids.clear()
                return
            if pid == 0:
                return
            report = self._reports.pop(pid, None)
            if report is not None:
                self._take(pid, report)         # its last report, written as it exited
                report.close()
            index = self.pids.pop(pid, None)
            if index is None or pid in self._retiring:
                continue                        # a replaced worker that finished draining
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
        for report in self._reports.values():
            report.close()
        self._reports.clear()


class _Report:
    """The supervisor's end of one worker's report pipe."""

    __slots__ = ("buf", "closed", "fd", "latest", "ready")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = b""
        self.ready = False
        self.closed = False
        self.latest: list[dict[str, Any]] = []

    def read(self) -> None:
        while not self.closed:
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                return
            if not chunk:
                self.close()
                return
            self.buf += chunk
            *lines, self.buf = self.buf.split(b"\n")
            for line in lines:
                if line == b"r":
                    self.ready = True
                elif line:
                    try:
                        self.latest = json.loads(line)
                    except ValueError:
                        log.error("zerg: a worker reported garbage: %r", line[:100])

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            os.close(self.fd)


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"
