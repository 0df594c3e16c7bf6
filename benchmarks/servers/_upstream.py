"""The upstream of the proxy scenario (P1): the C liburing echo server.

Each proxy server starts its own upstream, so the runner treats a proxy like
any other server.  The upstream is pinned to the CPUs the proxy does not run
on (the load generator's, on the two-CPU machines the runner pins to), so
the proxy's own CPU is the one under test and the same for every proxy; it
dies with the process that started it (``PR_SET_PDEATHSIG``), even when that
process execs another program (haproxy) and is then killed.
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Final

BIN: Final = Path(__file__).resolve().parent.parent / "bin"
ECHO: Final = BIN / "c_uring_echo"
_PR_SET_PDEATHSIG: Final = 1


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def start_echo(host: str) -> tuple[int, subprocess.Popen[bytes]]:
    """Start the C echo server on ``host`` (a free port); its port and process."""
    if not ECHO.exists():
        sys.exit(f"{ECHO} is missing: benchmarks/run.py builds it (make bench)")
    mine = os.sched_getaffinity(0)
    others = set(range(os.cpu_count() or 1)) - mine
    argv = [str(ECHO), "--host", host, "--port", "0"]
    if others and len(mine) < (os.cpu_count() or 1):
        argv = ["taskset", "-c", ",".join(map(str, sorted(others))), *argv]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            preexec_fn=_die_with_parent)
    assert proc.stdout is not None
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        line = proc.stdout.readline().decode(errors="replace")
        m = re.match(r"ready (\d+)", line)
        if m:
            return int(m.group(1)), proc
        if not line and proc.poll() is not None:
            break
    proc.kill()
    sys.exit("the C echo upstream did not start")
