"""The send-memory attack of issue 17, measured: RSS before, at the peak, after.

    python benchmarks/attack_memory.py [--clients 2000] [--reply-mib 4]

A zerg server in a child process (default configuration, so the reactor's
``max_write_memory`` is its default: an eighth of RAM) answers every request
with a ``--reply-mib`` reply, written in 1 MiB pieces; on
``WriteBufferFullError`` (the budget's back-pressure) it awaits ``flush()``
and goes on.  ``--clients`` clients connect with a 4 KiB receive window, ask,
and never read.  While their replies are staged, a normal client asks for a
small reply (100 bytes) and the time until it has it is taken.  Then every attacker resets,
and the server's RSS is followed for 10 s.

The reply is one shared ``bytes`` object: what is measured is zerg's memory,
not the C library's heap keeping a per-client allocation of the handler.
"""

from __future__ import annotations

import argparse
import resource
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SERVER = """
import sys
import zerg
DATA = b"r" * (int(sys.argv[1]) << 20)


async def handle(conn):
    snap = await conn.read()
    item = conn.try_get_ring(snap)
    small = item is not None and bytes(item.view) == b"small"
    if item is not None:
        conn.return_ring(item)
    if small:                       # a normal client: a small reply
        conn.write(b"k" * 100)
        await conn.flush()
        return
    view = memoryview(DATA)
    while view:
        try:
            conn.write(view[:1 << 20])
        except zerg.WriteBufferFullError:
            await conn.flush()
            continue
        view = view[1 << 20:]
    await conn.wait_sent()

engine = zerg.Engine(zerg.EngineOptions(ip="127.0.0.1", port=0))
engine.listen()
print(engine.port, flush=True)
engine.serve(handle)
"""


def rss_mib(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() >> 20


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--clients", type=int, default=2000)
    ap.add_argument("--reply-mib", type=int, default=4)
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = args.clients + 256
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    srv = subprocess.Popen([sys.executable, "-c", SERVER, str(args.reply_mib)],
                           stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert srv.stdout is not None
        port = int(srv.stdout.readline())
        before = rss_mib(srv.pid)
        socks = []
        for _ in range(args.clients):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.connect(("127.0.0.1", port))
            s.sendall(b"go")
            socks.append(s)
        peak = before
        for _ in range(30):
            time.sleep(0.1)
            peak = max(peak, rss_mib(srv.pid))
        t0 = time.monotonic()
        with socket.create_connection(("127.0.0.1", port), timeout=30) as probe:
            probe.sendall(b"small")
            first = b""
            while len(first) < 100 and (chunk := probe.recv(65536)):
                first += chunk
        probe_ms = (time.monotonic() - t0) * 1000
        peak = max(peak, rss_mib(srv.pid))
        for s in socks:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
        after = peak
        for i in range(20):
            time.sleep(0.5)
            after = rss_mib(srv.pid)
            print(f"  +{(i + 1) * 0.5:4.1f} s  RSS {after} MiB", flush=True)
        print(f"{args.clients} clients x {args.reply_mib} MiB: RSS before {before} MiB, "
              f"peak {peak} MiB, after {after} MiB; a normal client's reply in "
              f"{probe_ms:.0f} ms ({len(first)} of 100 bytes)")
        return 0 if len(first) == 100 else 1
    finally:
        srv.send_signal(signal.SIGTERM)
        try:
            srv.wait(10)
        except subprocess.TimeoutExpired:
            srv.kill()


if __name__ == "__main__":
    sys.exit(main())
