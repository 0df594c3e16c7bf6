"""examples/proxy.py through real clients and real upstreams.

redis-benchmark through the proxy to a real redis-server, wrk through it to
examples/http.py, and raw sockets for half-close, resets, an unreachable
upstream and back-pressure.  The proxy forwards with ``Connection.forward``:
its stats must show no payload byte copied.
"""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import RunningServer, serving, socket_echo, socket_server, wait_for
from examples_loader import load_example

import zerg

proxy = load_example("proxy")
http = load_example("http")


@contextlib.contextmanager
def proxying(port: int, **options: Any) -> Iterator[RunningServer]:
    """The proxy on a free port, to 127.0.0.1:``port``."""
    front = proxy.Front("127.0.0.1", port, connect_timeout=2.0)
    with serving(front, **options) as srv:
        yield srv


def tls_echo(s: ssl.SSLSocket, payload: bytes, timeout: float = 20.0) -> bytes:
    """Send ``payload`` and read as many bytes back, interleaved, from this
    thread alone.  An ``ssl.SSLSocket`` must not be read on one thread while
    another writes it: OpenSSL's connection object is not thread-safe, and
    the two sides fail at random ("[SSL] internal error", records the peer
    rejects)."""
    s.setblocking(False)
    got = bytearray()
    sent = 0
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE)
        while len(got) < len(payload):
            left = deadline - time.monotonic()
            assert left > 0, f"echoed {len(got)} of {len(payload)} bytes, sent {sent}"
            sel.select(left)
            with contextlib.suppress(ssl.SSLWantReadError):
                while chunk := s.recv(65536):
                    got += chunk
                else:
                    raise AssertionError(f"the stream ended after {len(got)} bytes")
            if sent < len(payload):
                with contextlib.suppress(ssl.SSLWantWriteError, ssl.SSLWantReadError):
                    # A refused write is retried with the same length, as OpenSSL asks.
                    sent += s.send(payload[sent:sent + 65536])
                if sent == len(payload):
                    sel.modify(s, selectors.EVENT_READ)
    s.setblocking(True)
    return bytes(got)


def _recv_all(s: socket.socket, out: bytearray | None = None) -> bytes:
    """Every byte up to the end; ``out`` shows how far it got if recv raises."""
    out = bytearray() if out is None else out
    while chunk := s.recv(65536):
        out.extend(chunk)
    return bytes(out)


@pytest.fixture
def redis_port() -> Iterator[int]:
    exe = shutil.which("redis-server")
    assert exe, "redis-server is missing: run `make test`, which installs it"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([exe, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                             "--appendonly", "no"], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.02)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def test_redis_benchmark_through_the_proxy(redis_port: int) -> None:
    with proxying(redis_port) as srv:
        out = subprocess.run(["redis-benchmark", "-h", "127.0.0.1", "-p", str(srv.port),
                              "-t", "set,get", "-n", "20000", "-P", "16", "-c", "20", "-q",
                              "--csv"], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert re.search(r'"SET","[\d.]+"', out.stdout) and re.search(r'"GET","[\d.]+"',
                                                                        out.stdout)
        cli = subprocess.run(["redis-cli", "-p", str(srv.port), "set", "k", "through"],
                             capture_output=True, text=True, timeout=10)
        assert cli.stdout.strip() == "OK"
        cli = subprocess.run(["redis-cli", "-p", str(srv.port), "get", "k"],
                             capture_output=True, text=True, timeout=10)
        assert cli.stdout.strip() == "through"
        wait_for(lambda: srv.engine.stats()[0].connections == 0, what="every pair closed")
        st = srv.engine.stats()[0]
        assert st.forwarded_bytes > 1_000_000
        assert st.forward_copied_bytes == 0, "the proxy copied payload bytes"
        assert st.slots_in_use == 0 and st.write_segments_in_use == 0
        assert st.connected == st.accepted


def test_wrk_through_the_proxy_to_the_http_example() -> None:
    with serving(http.handle) as web, proxying(web.port) as srv:
        out = subprocess.run(["wrk", "-t1", "-c16", "-d1s", f"http://127.0.0.1:{srv.port}/"],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        m = re.search(r"(\d+) requests in", out.stdout)
        assert m and int(m.group(1)) > 100, out.stdout
        assert "Socket errors" not in out.stdout and "Non-2xx" not in out.stdout, out.stdout


def test_half_close_is_passed_on_both_ways() -> None:
    """The client sends a request and shuts its side; the upstream reads to the
    end, answers, and closes: the client gets every byte, then the end."""

    upstream: list[str] = []        # what the upstream saw, for the failure message

    def answer_after_eof(c: socket.socket) -> None:
        got = bytearray()
        with c:
            try:
                _recv_all(c, got)                   # ends only if the FIN came through
            except OSError as exc:
                upstream.append(f"{exc!r} after {len(got)} bytes")
                raise
            upstream.append(f"end after {len(got)} bytes")
            c.sendall(b"got %d bytes" % len(got))

    with socket_server(answer_after_eof) as port, proxying(port) as srv:
        s = srv.connect()
        s.sendall(b"q" * 100_000)
        s.shutdown(socket.SHUT_WR)
        reply = _recv_all(s)
        assert reply == b"got 100000 bytes", (reply, upstream, srv.engine.stats()[0])
        s.close()
        wait_for(lambda: srv.engine.stats()[0].connections == 0, what="both sides closed")


def test_resets_are_passed_on() -> None:
    def reset_at_once(c: socket.socket) -> None:
        c.recv(100)
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        c.close()

    with socket_server(reset_at_once) as port, proxying(port) as srv:
        s = srv.connect()
        s.sendall(b"hello")
        with pytest.raises(ConnectionResetError):
            while s.recv(100):
                pass
        s.close()
        wait_for(lambda: srv.engine.stats()[0].connections == 0, what="both sides closed")

    seen: list[bytes | str] = []

    def read_until_gone(c: socket.socket) -> None:
        with c:
            try:
                while data := c.recv(100):
                    seen.append(data)
                seen.append("eof")
            except ConnectionResetError:
                seen.append("reset")

    with socket_server(read_until_gone) as port, proxying(port) as srv:
        s = srv.connect()
        s.sendall(b"x")
        wait_for(lambda: b"x" in seen, what="the byte through")
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()                                   # the client resets
        wait_for(lambda: "reset" in seen, what="the reset passed upstream")


def test_an_unreachable_upstream_closes_the_client() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]                   # nobody listens there
    front = proxy.Front("127.0.0.1", dead, connect_timeout=2.0)
    with serving(front) as srv:
        c = srv.connect()
        c.sendall(b"anyone?")
        assert _recv_all(c) == b""
        c.close()
        wait_for(lambda: front.failed == 1, what="the failure counted")


def test_a_slow_upstream_slows_the_client_and_memory_stays_bounded() -> None:
    """The upstream reads nothing for a while: the proxy stops reading the
    client (its sends back up) instead of buffering; then everything arrives."""
    release = threading.Event()
    got = bytearray()

    def slow(c: socket.socket) -> None:
        with c:
            release.wait(20)
            while chunk := c.recv(65536):
                got.extend(chunk)

    payload = os.urandom(48 << 20)     # more than loopback's socket buffers take
    cfg = zerg.ReactorConfig(buffer_ring_entries=64, recv_buffer_size=4096)
    with socket_server(slow) as port, proxying(port, reactor=cfg) as srv:
        s = srv.connect()
        def send() -> None:
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)

        sender = threading.Thread(target=send)
        sender.start()
        time.sleep(1.0)
        st = srv.engine.stats()[0]
        assert sender.is_alive(), "the proxy took 48 MiB while its upstream read nothing"
        assert st.slots_in_use < 64 and st.write_segments_in_use == 0
        release.set()
        sender.join(30)
        wait_for(lambda: len(got) == len(payload), timeout=30, what="every byte upstream")
        assert bytes(got) == payload
        s.close()
        wait_for(lambda: srv.engine.stats()[0].connections == 0, what="both sides closed")
        assert srv.engine.stats()[0].forward_copied_bytes == 0


def test_a_tls_front_decrypts_for_a_plain_upstream() -> None:
    """The proxy's optional TLS front: a Python ssl client talks TLS to the
    proxy, the upstream gets plain bytes and its echo goes back encrypted;
    closing the client with close_notify closes the pair."""
    import ssl

    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    payload = os.urandom(300_000)
    with socket_server(socket_echo) as port, proxying(port, ssl=server_ctx) as srv:
        with client_ctx.wrap_socket(srv.connect(), server_hostname="127.0.0.1") as s:
            assert tls_echo(s, payload) == payload
        wait_for(lambda: srv.engine.stats()[0].connections == 0, what="both sides closed")
        st = srv.engine.stats()[0]
        assert st.tls_failed == 0 and st.slots_in_use == 0
        # Decrypted bytes are immutable: forwarded upstream as they are.
        assert st.forwarded_bytes >= len(payload) and st.forward_copied_bytes == 0
