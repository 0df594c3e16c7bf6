"""Soak test: mixed load with random disconnects; RSS and slot counts over time.

    python scripts/soak.py --duration 600          # what `make soak` runs

One zerg server (HTTP example + echo, in this process) takes load from client
threads that mix keep-alive HTTP requests, echo round trips of random sizes,
resets mid-message and half-closes.  Every ``--interval`` seconds it prints
RSS, connections, slots in use and write segments in use; at the end it fails
(exit 1) if RSS grew by more than ``--rss-slack-mb`` after warm-up or if any
slot or segment is still held once clients are gone.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import random
import socket
import struct
import sys
import threading
import time
from pathlib import Path
from types import ModuleType

import zerg

ROOT = Path(__file__).resolve().parent.parent


def _load_http() -> ModuleType:
    spec = importlib.util.spec_from_file_location("zerg_example_http", ROOT / "examples/http.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod        # dataclasses look their module up here
    spec.loader.exec_module(mod)
    return mod


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _recv_exact(s: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return bytes(buf)


def client(port: int, stop: threading.Event, seed: int, errors: list[str]) -> None:
    rng = random.Random(seed)
    while not stop.is_set():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                kind = rng.random()
                if kind < 0.5:                      # keep-alive HTTP
                    for _ in range(rng.randint(1, 50)):
                        body = os.urandom(rng.randint(0, 2000))
                        s.sendall(b"POST /echo HTTP/1.1\r\nContent-Length: %d\r\n\r\n"
                                  % len(body) + body)
                        head = b""
                        while b"\r\n\r\n" not in head:
                            head += s.recv(1)
                        got = _recv_exact(s, len(body))
                        if got != body:
                            errors.append("http echo mismatch")
                elif kind < 0.8:                    # reset mid-request
                    s.sendall(b"POST /echo HTTP/1.1\r\nContent-Length: 100000\r\n\r\n"
                              + os.urandom(rng.randint(0, 50000)))
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                else:                               # half-close after a request
                    s.sendall(b"GET / HTTP/1.1\r\n\r\n")
                    s.shutdown(socket.SHUT_WR)
                    while s.recv(65536):
                        pass
        except OSError as exc:
            if not stop.is_set():
                errors.append(f"client: {exc!r}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--duration", type=float, default=600.0)
    ap.add_argument("--interval", type=float, default=30.0)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--rss-slack-mb", type=float, default=20.0)
    args = ap.parse_args(argv)

    http = _load_http()
    engine = zerg.Engine(zerg.EngineOptions(ip="127.0.0.1", port=0))
    engine.listen()
    server = threading.Thread(target=engine.serve, args=(http.handle,), daemon=True)
    server.start()
    while not engine.stats():
        time.sleep(0.01)

    stop = threading.Event()
    errors: list[str] = []
    clients = [threading.Thread(target=client, args=(engine.port, stop, i, errors), daemon=True)
               for i in range(args.clients)]
    for t in clients:
        t.start()
    t0 = time.monotonic()
    samples: list[tuple[float, float, int, int, int]] = []
    print("   t(s)   RSS(MB)  conns  slots  segments  accepted  errors", flush=True)
    while (elapsed := time.monotonic() - t0) < args.duration:
        time.sleep(min(args.interval, max(args.duration - elapsed, 0.01)))
        st = engine.stats()[0]
        sample = (time.monotonic() - t0, rss_mb(), st.connections, st.slots_in_use,
                  st.write_segments_in_use)
        samples.append(sample)
        print(f"{sample[0]:7.0f} {sample[1]:9.1f} {sample[2]:6d} {sample[3]:6d} {sample[4]:9d} "
              f"{st.accepted:9d} {len(errors):7d}", flush=True)
    stop.set()
    for t in clients:
        t.join(15)
    time.sleep(0.5)
    st = engine.stats()[0]
    engine.stop()
    server.join(10)
    ok = True
    if st.slots_in_use or st.write_segments_in_use or st.connections:
        print(f"FAIL: left behind: {st}")
        ok = False
    warm = [s[1] for s in samples[len(samples) // 4:]] or [rss_mb()]
    growth = max(warm) - min(warm)
    print(f"RSS after warm-up: min {min(warm):.1f} MB, max {max(warm):.1f} MB "
          f"(growth {growth:.1f} MB, slack {args.rss_slack_mb} MB)")
    if growth > args.rss_slack_mb:
        print("FAIL: RSS kept growing")
        ok = False
    if errors:
        print(f"{len(errors)} client errors, first: {errors[:3]}")
        ok = False
    print("soak:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
