"""Soak test: mixed load with random disconnects; RSS and slot counts over time.

    python scripts/soak.py --duration 600          # what `make soak` runs

One zerg server (the HTTP example, in this process) takes load from client
threads that mix keep-alive HTTP requests with echo bodies of random sizes,
resets mid-message and half-closes.  Beside them runs one hostile client of
each kind of issue 17, in a loop (``--no-hostile`` leaves them out):

- ``big-reply``: asks for a 1 MiB echo, reads nothing for a while, resets
  (send memory, the write budget);
- ``flood``: pipelines GETs without reading (the read pause, fairness);
- ``pipeline``: 20,000 pipelined GETs, every reply checked (no truncation);
- ``smuggle``: a bare LF, a NUL, a missing Host -- each must get a 400;
- ``slowloris``: a header one byte a second (the header timeout closes it);
- ``closer``: a 1 MiB echo with ``Connection: close``, never read (the
  closing deadline aborts it).

Every ``--interval`` seconds it prints RSS, connections, slots in use, write
segments in use and the slowest normal request of the interval; at the end
it fails (exit 1) if RSS grew by more than ``--rss-slack-mb`` after warm-up,
if any slot or segment is still held once clients are gone, if a normal
request took over ``--max-latency`` seconds, or if any client saw a wrong
answer.
"""

from __future__ import annotations

import argparse
import functools
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


class Latency:
    """The slowest normal request since the last ``take``, and overall."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.interval = 0.0
        self.worst = 0.0

    def add(self, seconds: float) -> None:
        with self._lock:
            self.interval = max(self.interval, seconds)
            self.worst = max(self.worst, seconds)

    def take(self) -> float:
        with self._lock:
            value, self.interval = self.interval, 0.0
            return value


def client(port: int, stop: threading.Event, seed: int, errors: list[str],
           latency: Latency) -> None:
    rng = random.Random(seed)
    while not stop.is_set():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                kind = rng.random()
                if kind < 0.5:                      # keep-alive HTTP
                    for _ in range(rng.randint(1, 50)):
                        body = os.urandom(rng.randint(0, 2000))
                        t0 = time.monotonic()
                        s.sendall(b"POST /echo HTTP/1.1\r\nHost: soak\r\n"
                                  b"Content-Length: %d\r\n\r\n" % len(body) + body)
                        head = b""
                        while b"\r\n\r\n" not in head:
                            chunk = s.recv(1)
                            if not chunk:
                                raise ConnectionError("closed before the reply")
                            head += chunk
                        got = _recv_exact(s, len(body))
                        latency.add(time.monotonic() - t0)
                        if not head.startswith(b"HTTP/1.1 200") or got != body:
                            errors.append("http echo mismatch")
                elif kind < 0.8:                    # reset mid-request
                    s.sendall(b"POST /echo HTTP/1.1\r\nHost: soak\r\n"
                              b"Content-Length: 100000\r\n\r\n"
                              + os.urandom(rng.randint(0, 50000)))
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                else:                               # half-close after a request
                    s.sendall(b"GET / HTTP/1.1\r\nHost: soak\r\n\r\n")
                    s.shutdown(socket.SHUT_WR)
                    while s.recv(65536):
                        pass
        except OSError as exc:
            if not stop.is_set():
                errors.append(f"client: {exc!r}")


_GET = b"GET /plaintext HTTP/1.1\r\nHost: soak\r\n\r\n"
_MIB = b"\xab" * (1 << 20)


def _reset(s: socket.socket) -> None:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def _read_all(s: socket.socket) -> bytes:
    chunks = []
    while chunk := s.recv(1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


def _hostile_once(kind: str, port: int, stop: threading.Event, errors: list[str]) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        if kind == "big-reply":             # staged memory it never reads, then a reset
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.sendall(b"POST /echo HTTP/1.1\r\nHost: soak\r\nContent-Length: %d\r\n\r\n"
                      % len(_MIB) + _MIB)
            stop.wait(2.0)
            _reset(s)
        elif kind == "flood":               # sends without ever reading
            s.setblocking(False)
            deadline = time.monotonic() + 2.0
            batch = _GET * 1000
            while time.monotonic() < deadline and not stop.is_set():
                try:
                    s.send(batch)
                except BlockingIOError:
                    time.sleep(0.01)        # the server paused reading us: good
            _reset(s)
        elif kind == "pipeline":            # deep pipelining: every reply, none cut
            n = 20_000

            def send() -> None:
                s.sendall(_GET * n)
                s.shutdown(socket.SHUT_WR)

            sender = threading.Thread(target=send)
            sender.start()
            data = _read_all(s)
            sender.join()
            if data.count(b"Hello, World!") != n:
                errors.append(f"pipeline: {data.count(b'Hello, World!')} of {n} replies")
        elif kind == "smuggle":             # each must be refused with 400
            for bad in (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\nContent-Length: 5\r\n\r\n",
                        b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n",
                        b"GET / HTTP/1.1\r\n\r\n"):
                with socket.create_connection(("127.0.0.1", port), timeout=10) as b:
                    b.sendall(bad)
                    reply = _read_all(b)
                    if not reply.startswith(b"HTTP/1.1 400"):
                        errors.append(f"smuggle: {bad!r} got {reply[:40]!r}")
        elif kind == "slowloris":           # the header timeout must close it
            s.sendall(b"GET / HTTP/1.1\r\n")
            t0 = time.monotonic()
            try:
                while not stop.is_set():
                    s.sendall(b"X")
                    if time.monotonic() - t0 > 30:
                        errors.append("slowloris: still open after 30 s")
                        return
                    time.sleep(1.0)
            except OSError:
                pass                        # closed by the server (408 then close)
        elif kind == "closer":              # closing with bytes the peer never takes
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.sendall(b"POST /echo HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n"
                      b"Content-Length: %d\r\n\r\n" % len(_MIB) + _MIB)
            stop.wait(8.0)                  # past the soak server's close_timeout_s
            _reset(s)


HOSTILE = ("big-reply", "flood", "pipeline", "smuggle", "slowloris", "closer")


def hostile(kind: str, port: int, stop: threading.Event, errors: list[str]) -> None:
    while not stop.is_set():
        try:
            _hostile_once(kind, port, stop, errors)
        except OSError as exc:
            if kind in ("pipeline", "smuggle") and not stop.is_set():
                errors.append(f"{kind}: {exc!r}")
        stop.wait(0.5)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--duration", type=float, default=600.0)
    ap.add_argument("--interval", type=float, default=30.0)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--rss-slack-mb", type=float, default=20.0)
    ap.add_argument("--max-latency", type=float, default=2.0,
                    help="slowest normal request allowed, in seconds")
    ap.add_argument("--no-hostile", action="store_true", help="normal load only")
    args = ap.parse_args(argv)

    http = _load_http()
    # Short deadlines so the hostile clients meet them within the soak.
    reactor = zerg.ReactorConfig(close_timeout_s=5.0, idle_timeout_s=30.0)
    engine = zerg.Engine(zerg.EngineOptions(ip="127.0.0.1", port=0, reactor=reactor))
    engine.listen()
    handler = functools.partial(http.handle, header_timeout=5.0)
    server = threading.Thread(target=engine.serve, args=(handler,), daemon=True)
    server.start()
    while not engine.stats():
        time.sleep(0.01)

    stop = threading.Event()
    errors: list[str] = []
    latency = Latency()
    clients = [threading.Thread(target=client, args=(engine.port, stop, i, errors, latency),
                                daemon=True)
               for i in range(args.clients)]
    if not args.no_hostile:
        clients += [threading.Thread(target=hostile, args=(kind, engine.port, stop, errors),
                                     daemon=True) for kind in HOSTILE]
    for t in clients:
        t.start()
    t0 = time.monotonic()
    samples: list[tuple[float, float, int, int, int]] = []
    print("   t(s)   RSS(MB)  conns  slots  segments  accepted  errors  slowest(ms)", flush=True)
    while (elapsed := time.monotonic() - t0) < args.duration:
        time.sleep(min(args.interval, max(args.duration - elapsed, 0.01)))
        st = engine.stats()[0]
        sample = (time.monotonic() - t0, rss_mb(), st.connections, st.slots_in_use,
                  st.write_segments_in_use)
        samples.append(sample)
        print(f"{sample[0]:7.0f} {sample[1]:9.1f} {sample[2]:6d} {sample[3]:6d} {sample[4]:9d} "
              f"{st.accepted:9d} {len(errors):7d} {latency.take() * 1000:12.0f}", flush=True)
    stop.set()
    for t in clients:
        t.join(15)
    deadline = time.monotonic() + 10       # closing connections meet close_timeout_s
    while engine.stats()[0].connections and time.monotonic() < deadline:
        time.sleep(0.1)
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
    print(f"slowest normal request: {latency.worst * 1000:.0f} ms "
          f"(limit {args.max_latency * 1000:.0f} ms)")
    if latency.worst > args.max_latency:
        print("FAIL: normal requests were held up")
        ok = False
    if errors:
        print(f"{len(errors)} client errors, first: {errors[:3]}")
        ok = False
    print("soak:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
