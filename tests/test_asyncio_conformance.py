"""CPython's own asyncio test suite, on zerg loops (issue 13).

test_events, test_streams, test_sock_lowlevel, test_sendfile,
test_subprocess, test_server and test_tasks run with every loop they make
being a zerg reactor loop (see tests/conformance/run_asyncio_suite.py).
Zero failures and zero errors; the only skips are CPython's own (other
platforms, the proactor)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

RUNNER = Path(__file__).resolve().parent / "conformance" / "run_asyncio_suite.py"


def test_cpython_asyncio_suite_passes_on_zerg_loops() -> None:
    proc = subprocess.run([sys.executable, str(RUNNER)], capture_output=True, text=True,
                          timeout=600, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert lines, f"no result line; stderr tail:\n{proc.stderr[-3000:]}"
    run, failures, errors, skipped, loops = (int(x) for x in lines[-1].split()[1:])
    failed = [ln for ln in proc.stderr.splitlines() if ln.startswith(("FAIL:", "ERROR:"))]
    assert (failures, errors) == (0, 0), "\n".join(failed[:40])
    assert proc.returncode == 0
    assert run > 1000 and loops > 100, (run, loops)
    assert skipped < 60, skipped       # CPython's own platform skips only
