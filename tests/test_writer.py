"""BufferWriter (IBufferWriter<byte>) and the stdlib http.server showcase."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import RunningServer, recv_exact, serving, wait_for
from examples_loader import EXAMPLES

import zerg
import zerg._outputpipe
from zerg.adapters import BufferWriter, ConnectionStream

TEN_MIB = 10 * 1024 * 1024
Served = tuple[int, dict[str, bytes]]     # the example's port, and the files it serves


def _payload() -> bytes:
    return hashlib.sha256(b"seed").digest() * (TEN_MIB // 32)


def test_ten_mib_response_by_hash_async() -> None:
    payload = _payload()

    async def handler(conn: zerg.Connection) -> None:
        w = BufferWriter(conn)
        view = memoryview(payload)
        pos = 0
        while pos < len(view):              # in place, IBufferWriter style
            mem = w.get_memory(1000)
            k = min(len(mem), len(view) - pos)
            mem[:k] = view[pos:pos + k]
            w.advance(k)
            pos += k
        assert w.written == len(payload)
        await w.flush()

    with serving(handler) as srv, srv.connect(timeout=30) as s:
        got = recv_exact(s, len(payload))
        assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
        wait_for(lambda: srv.engine.stats()[0].write_segments_in_use == 0, what="segments back")


def test_ten_mib_response_from_worker_thread_flush_sync() -> None:
    payload = _payload()

    def handler(conn: zerg.Connection) -> None:
        w = BufferWriter(conn)
        for i in range(0, len(payload), 100_000):
            w.write(payload[i:i + 100_000])
        w.flush_sync()
        w.write(b"END")
        w.flush_sync()

    with serving(handler) as srv, srv.connect(timeout=30) as s:
        got = recv_exact(s, len(payload) + 3)
        assert got[-3:] == b"END"
        assert hashlib.sha256(got[:-3]).digest() == hashlib.sha256(payload).digest()


def test_writer_and_connection_writes_keep_order() -> None:
    async def handler(conn: zerg.Connection) -> None:
        conn.write(b"1-")
        w = BufferWriter(conn)
        w.write(b"2-")
        await w.flush()
        conn.write(b"3-")
        w.write(b"4")
        await w.flush()

    with serving(handler) as srv, srv.connect() as s:
        assert recv_exact(s, 7) == b"1-2-3-4"


def test_writer_misuse_raises() -> None:
    outcome: list[str] = []
    cfg = zerg.ReactorConfig(write_buffer_size=4096, max_write_buffer=16384)

    async def handler(conn: zerg.Connection) -> None:
        w = BufferWriter(conn)
        mem = w.get_memory(10)
        for bad in (len(mem) + 1, -1):
            try:
                w.advance(bad)
            except ValueError as exc:
                outcome.append(str(exc))
        outcome.append(str(len(w.get_memory(5000))))     # past one segment: a jumbo one
        for bad_hint in (16385, -1):
            try:
                w.get_memory(bad_hint)
            except (zerg.WriteBufferFullError, ValueError) as exc:
                outcome.append(f"{type(exc).__name__}: {exc}")
        try:
            w.write(b"x" * 20000)
        except zerg.WriteBufferFullError as exc:
            outcome.append(str(exc))
        conn.write(b"ok")
        await conn.flush()

    with serving(handler, reactor=cfg) as srv, srv.connect() as s:
        assert recv_exact(s, 2) == b"ok"
        wait_for(lambda: srv.engine.stats()[0].connections == 0, what="closed")
        # the writer was dropped unflushed: its segments, the jumbo one too,
        # came back with the close
        assert srv.engine.stats()[0].write_segments_in_use == 0
    assert "past the" in outcome[0] and "past the" in outcome[1]
    assert int(outcome[2]) >= 5000
    assert outcome[3].startswith("WriteBufferFullError") and "max_write_buffer=16384" in outcome[3]
    assert outcome[4].startswith("ValueError") and ">= 0" in outcome[4]
    assert "max_write_buffer" in outcome[5]


# ------------------------------------- get_memory past one segment (jumbo segments)
def _segments_back(srv: RunningServer) -> None:
    wait_for(lambda: srv.engine.stats()[0].write_segments_in_use == 0, what="segments back")


@pytest.mark.parametrize("size", [64 * 1024, 1024 * 1024])
@pytest.mark.parametrize("side", ["reactor", "worker"])
def test_get_memory_larger_than_a_segment_by_hash(size: int, side: str) -> None:
    """get_memory(size_hint) past write_buffer_size (32 KiB) gives one contiguous
    piece of at least size_hint bytes; it arrives intact and goes back."""
    payload = os.urandom(size)
    lengths: list[int] = []

    def fill(w: BufferWriter) -> None:
        mem = w.get_memory(size)
        lengths.append(len(mem))
        mem[:size] = payload
        w.advance(size)

    async def on_reactor(conn: zerg.Connection) -> None:
        w = BufferWriter(conn)
        fill(w)
        await w.flush()

    def on_worker(conn: zerg.Connection) -> None:
        w = BufferWriter(conn)
        fill(w)
        w.flush_sync()

    handler = on_reactor if side == "reactor" else on_worker
    with serving(handler) as srv, srv.connect(timeout=30) as s:
        got = recv_exact(s, size)
        assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
        _segments_back(srv)
    assert lengths[0] >= size


def test_get_memory_up_to_max_write_buffer_and_beyond() -> None:
    cap = 256 * 1024 + 100                  # not a whole number of pages
    cfg = zerg.ReactorConfig(max_write_buffer=cap)
    payload = os.urandom(cap)
    outcome: list[str] = []

    async def handler(conn: zerg.Connection) -> None:
        w = BufferWriter(conn)
        try:
            w.get_memory(cap + 1)
        except zerg.WriteBufferFullError as exc:
            outcome.append(str(exc))
        mem = w.get_memory(cap)             # all of the cap, in one piece
        outcome.append(str(len(mem)))
        mem[:cap] = payload
        w.advance(cap)
        try:
            w.get_memory(1)                 # the cap is reached: nothing more
        except zerg.WriteBufferFullError as exc:
            outcome.append(str(exc))
        await w.flush()

    with serving(handler, reactor=cfg) as srv, srv.connect(timeout=30) as s:
        got = recv_exact(s, cap)
        assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
        _segments_back(srv)
    assert f"max_write_buffer={cap}" in outcome[0]
    assert int(outcome[1]) == cap
    assert f"max_write_buffer={cap}" in outcome[2] and "flush first" in outcome[2]


def test_get_memory_jumbo_between_small_writes_keeps_order() -> None:
    big = os.urandom(200 * 1024)
    expected = b"head:" + big + b":tail"

    async def handler(conn: zerg.Connection) -> None:
        w = BufferWriter(conn)
        w.write(b"head:")
        mem = w.get_memory(len(big))
        mem[:len(big)] = big
        w.advance(len(big))
        w.write(b":tail")
        assert w.written == len(expected)
        await w.flush()

    with serving(handler) as srv, srv.connect(timeout=30) as s:
        got = recv_exact(s, len(expected))
        assert hashlib.sha256(got).digest() == hashlib.sha256(expected).digest()
        _segments_back(srv)


def test_jumbo_segment_longer_than_one_send_goes_out_in_pieces(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A jumbo segment over the most one send may ask for (2 GiB; 50 000 bytes
    here) is queued as consecutive pieces, and released once."""
    monkeypatch.setattr(zerg._outputpipe, "_MAX_SEND", 50_000)
    big = os.urandom(200 * 1024 + 7)
    expected = b"<" + big + b">"

    async def handler(conn: zerg.Connection) -> None:
        w = BufferWriter(conn)
        w.write(b"<")
        mem = w.get_memory(len(big))
        mem[:len(big)] = big
        w.advance(len(big))
        w.write(b">")
        await w.flush()

    with serving(handler) as srv, srv.connect(timeout=30) as s:
        got = recv_exact(s, len(expected))
        assert hashlib.sha256(got).digest() == hashlib.sha256(expected).digest()
        _segments_back(srv)


# ------------------------------------------------------- stdlib http.server demo
@pytest.fixture(scope="module")
def stdlib_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Served]:
    root: Path = tmp_path_factory.mktemp("www")
    files = {"empty.bin": b"", "one.bin": b"\x7f", "big.bin": os.urandom(5 * 1024 * 1024)}
    for name, data in files.items():
        (root / name).write_bytes(data)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "stdlib_http.py"), "--host", "127.0.0.1",
         "--port", str(port), "--directory", str(root)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    assert "serving" in proc.stdout.readline()
    yield port, files
    proc.send_signal(signal.SIGINT)
    try:
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


@pytest.mark.parametrize("name", ["empty.bin", "one.bin", "big.bin"])
def test_stdlib_http_urllib_downloads_intact(stdlib_server: Served, name: str) -> None:
    port, files = stdlib_server
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/{name}", timeout=20) as r:
        assert r.status == 200
        assert r.read() == files[name]


@pytest.mark.parametrize("name", ["empty.bin", "one.bin", "big.bin"])
def test_stdlib_http_curl_downloads_intact(stdlib_server: Served, name: str) -> None:
    port, files = stdlib_server
    curl = shutil.which("curl")
    assert curl, "curl is missing: run `make test`, which installs it"
    out = subprocess.run([curl, "-sS", "--fail", f"http://127.0.0.1:{port}/{name}"],
                         capture_output=True, timeout=30, check=True).stdout
    assert hashlib.sha256(out).digest() == hashlib.sha256(files[name]).digest()


def test_stdlib_http_listing_and_404(stdlib_server: Served) -> None:
    port, _ = stdlib_server
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as r:
        listing = r.read().decode()
    assert "big.bin" in listing and "one.bin" in listing
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/missing", timeout=10)
    assert info.value.code == 404
    info.value.close()                  # the error holds the response and its socket


def test_stream_write_large_from_worker_thread_back_pressure() -> None:
    """A 10 MiB write through the stream to a slow reader neither fails nor balloons."""
    payload = _payload()
    cfg = zerg.ReactorConfig(write_buffer_size=16384, max_write_buffer=256 * 1024)

    def handler(conn: zerg.Connection) -> None:
        ConnectionStream(conn).write(payload)

    with serving(handler, reactor=cfg) as srv, srv.connect(timeout=30) as s:
        got = bytearray()
        while len(got) < len(payload):
            got += s.recv(65536)
            if len(got) < 1_000_000:
                time.sleep(0.001)           # slow at first
        assert hashlib.sha256(bytes(got)).digest() == hashlib.sha256(payload).digest()
