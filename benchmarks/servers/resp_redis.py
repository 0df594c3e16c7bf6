"""redis-server itself, the peer of examples/resp.py in the RESP scenarios.

redis-server cannot take ``--port 0`` (that turns TCP off), so this picks a free port, and
the runner must measure redis's CPU, not a wrapper's: the process execs redis-server (same
pid) after forking a watcher that prints ``ready <port>`` once redis accepts connections.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import time

from _common import parse_args

READY_TIMEOUT = 20.0


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def announce_when_up(host: str, port: int) -> None:
    """In a forked child: print the ready line once the port accepts, then exit."""
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, port), timeout=0.5).close()
        except OSError:
            time.sleep(0.01)
            continue
        print(f"ready {port}", flush=True)
        os._exit(0)
    print(f"redis-server did not listen on {host}:{port} within {READY_TIMEOUT:.0f} s",
          file=sys.stderr, flush=True)
    os._exit(1)


def main() -> None:
    args = parse_args("redis-server for the RESP scenarios")
    exe = shutil.which("redis-server")
    if exe is None:
        sys.exit("redis-server not found (apt install redis-server)")
    port = args.port or free_port(args.host)
    if os.fork() == 0:
        announce_when_up(args.host, port)
    # One thread, no persistence, no protected mode: the same job as examples/resp.py.
    os.execv(exe, [exe, "--bind", args.host, "--port", str(port), "--save", "",
                   "--appendonly", "no", "--protected-mode", "no", "--loglevel", "warning",
                   "--io-threads", "1"])


if __name__ == "__main__":
    main()
