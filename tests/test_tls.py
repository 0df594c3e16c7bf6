"""TLS over zerg (``EngineOptions.ssl``, ``zerg._tls``) through real peers.

Certificates are made at test time with trustme.  Clients: Python's ``ssl``
(blocking and asyncio), ``openssl s_client``, curl and wrk, and zerg's own
``TlsConnection`` in client mode on a standalone loop; every adapter level
on the server side.  A sans-IO part drives two ``TlsSession``\\ s against
each other without sockets.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import io
import logging
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import trustme
from conftest import ErrorLog, RunningServer, read_to_end, reader_echo, serving, wait_for
from examples_loader import load_example

import zerg
from zerg._native import speedups
from zerg._tls import LEVEL1_ERROR, TlsConnection, TlsProtocolConnection, _TlsLayer
from zerg._tlssession import TlsSession, server_context
from zerg.adapters import BufferWriter, ConnectionStream, PipeReader

MiB = 1 << 20
PATTERN = bytes(range(256)) * 4096         # 1 MiB, every byte value, position-dependent


# ------------------------------------------------------------------ certificates
@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_cert(ca: trustme.CA) -> trustme.LeafCert:
    return ca.issue_cert("localhost", "127.0.0.1", "alt.example")


def make_server_ctx(cert: trustme.LeafCert, alpn: list[str] | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ctx)
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


@pytest.fixture
def server_ctx(server_cert: trustme.LeafCert) -> ssl.SSLContext:
    return make_server_ctx(server_cert, ["h2", "http/1.1"])


@pytest.fixture
def client_ctx(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return ctx


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> Path:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


def tls_connect(srv: RunningServer, ctx: ssl.SSLContext, hostname: str = "localhost",
                timeout: float = 10.0) -> ssl.SSLSocket:
    """A TLS client socket to ``srv``; ragged EOFs raise (so a clean
    close_notify is told apart from a bare FIN)."""
    raw = socket.create_connection(("127.0.0.1", srv.port), timeout=timeout)
    try:
        return ctx.wrap_socket(raw, server_hostname=hostname, suppress_ragged_eofs=False)
    except BaseException:
        raw.close()
        raise


def recv_n(sock: ssl.SSLSocket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), MiB))
        if not chunk:
            raise ConnectionError(f"peer closed after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def stat(srv: RunningServer, field: str) -> int:
    return sum(int(getattr(st, field)) for st in srv.engine.stats())


# ------------------------------------------------------------------ handlers
def stream_echo(conn: zerg.Connection) -> None:
    """A plain def handler (worker thread): line echo through io.BufferedReader."""
    stream = ConnectionStream(conn)
    reader = io.BufferedReader(stream)
    while line := reader.readline():
        stream.write(line)
    stream.close()


async def level2_echo(conn: zerg.Connection) -> None:
    """Level 2: read() + get_sequence() works on decrypted bytes."""
    while not (snap := await conn.read()).is_closed:
        seq = conn.get_sequence(snap)
        conn.write(seq)
        seq.release()
        await conn.flush()


class EchoProtocol(zerg.Protocol):
    def __init__(self) -> None:
        self.made: list[zerg.TlsInfo | None] = []
        self.lost: list[BaseException | None] = []
        self.eofs = 0

    def connection_made(self, conn: zerg.Connection) -> None:
        self.made.append(conn.tls)
        conn.write(b"welcome\n")

    def data_received(self, conn: zerg.Connection, seq: zerg.BufferSequence) -> int | None:
        conn.write(seq)
        return None

    def eof_received(self, conn: zerg.Connection) -> bool:
        self.eofs += 1
        return False

    def connection_lost(self, conn: zerg.Connection, exc: BaseException | None) -> None:
        self.lost.append(exc)


# ------------------------------------------------------------------ echo at every level
async def exchange(port: int, ctx: ssl.SSLContext, payload: bytes, expect: int) -> bytes:
    """asyncio's TLS client (one thread: an SSL object must never be used by two
    at once): send ``payload`` while reading ``expect`` bytes, then close with
    close_notify."""
    r, w = await asyncio.open_connection("127.0.0.1", port, ssl=ctx,
                                         server_hostname="localhost")

    async def send() -> None:
        w.write(payload)
        await w.drain()

    try:
        _, got = await asyncio.gather(send(), r.readexactly(expect))
    finally:
        w.close()
        await w.wait_closed()
    return got


def check_echo(srv: RunningServer, ctx: ssl.SSLContext, payload: bytes = PATTERN) -> None:
    with tls_connect(srv, ctx) as s:
        s.sendall(b"hello\n")
        assert recv_n(s, 6) == b"hello\n"
        s.unwrap()          # our close_notify; the server answers with its own
    # 1 MiB both ways at once, every byte checked.
    assert asyncio.run(exchange(srv.port, ctx, payload, len(payload))) == payload


def test_pipereader_echo_1mib(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> None:
    with serving(reader_echo, ssl=server_ctx) as srv:
        check_echo(srv, client_ctx)
        wait_for(lambda: stat(srv, "closed") == 2, what="the connections to close")
        st = srv.engine.stats()[0]
        assert st.closed_by == {"peer_eof": 2} and st.tls_failed == 0
        assert st.slots_in_use == 0 and st.write_segments_in_use == 0


def test_connection_stream_echo_1mib(server_ctx: ssl.SSLContext,
                                     client_ctx: ssl.SSLContext) -> None:
    payload = b"".join(b"%07d " % i + PATTERN[i % 256: i % 256 + 90] + b"\n"
                       for i in range(10_000))
    with serving(stream_echo, ssl=server_ctx) as srv:
        check_echo(srv, client_ctx, payload)


def test_level2_echo_and_level1_refused(server_ctx: ssl.SSLContext,
                                        client_ctx: ssl.SSLContext) -> None:
    with serving(level2_echo, ssl=server_ctx) as srv:
        check_echo(srv, client_ctx)
    errors: list[str] = []

    async def level1(conn: zerg.Connection) -> None:
        snap = await conn.read()
        try:
            conn.try_get_ring(snap)
        except TypeError as exc:
            errors.append(str(exc))
        seq = conn.get_sequence(snap)       # level 2 still works on the same snapshot
        item = zerg.RingItem(0, len(seq), memoryview(seq.tobytes()))
        seq.release()
        try:
            conn.return_ring(item)
        except TypeError as exc:
            errors.append(str(exc))
        conn.write(b"refused\n")
        await conn.flush()

    with serving(level1, ssl=server_ctx) as srv, tls_connect(srv, client_ctx) as s:
        s.sendall(b"x")
        assert recv_n(s, 8) == b"refused\n"
    assert errors == [LEVEL1_ERROR, LEVEL1_ERROR]
    for name in ("level 2", "PipeReader", "ConnectionStream", "BufferWriter", "zerg.Protocol"):
        assert name in LEVEL1_ERROR


def test_buffer_writer_large_response(server_ctx: ssl.SSLContext,
                                      client_ctx: ssl.SSLContext) -> None:
    """BufferWriter's lent segments (pool and jumbo) carry plaintext; what leaves is TLS."""

    async def handler(conn: zerg.Connection) -> None:
        reader = PipeReader(conn)
        res = await reader.read_at_least(8)
        n = int(res.buffer[:8].tobytes())
        reader.advance_to(8)
        writer = BufferWriter(conn)
        mem = writer.get_memory(100_000)        # past one segment: a jumbo one
        mem[:100_000] = PATTERN[:100_000]
        writer.advance(100_000)
        pos = 100_000
        while pos < n:                          # then pool segments, chained
            mem = writer.get_memory()
            k = min(len(mem), n - pos)
            mem[:k] = PATTERN[pos:pos + k]
            writer.advance(k)
            pos += k
        await writer.flush()
        buf = conn.get_buffer(5)                # get_buffer/advance take plaintext too
        buf[:5] = b"/done"
        conn.advance(5)
        await conn.flush()

    with serving(handler, ssl=server_ctx) as srv, tls_connect(srv, client_ctx) as s:
        s.sendall(b"%08d" % MiB)
        assert recv_n(s, MiB + 5) == PATTERN + b"/done"
        assert s.recv(10) == b""                # the handler returned: a clean close_notify


def test_protocol_echo(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> None:
    proto = EchoProtocol()
    with serving(proto, ssl=server_ctx) as srv:
        got = asyncio.run(exchange(srv.port, client_ctx, PATTERN, 8 + MiB))
        assert got == b"welcome\n" + PATTERN
        wait_for(lambda: len(proto.lost) == 1, what="connection_lost")
        bad = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        bad.sendall(b"GET / HTTP/1.1\r\n\r\n")
        assert bad.recv(100) == b""             # plain HTTP to a TLS port: closed
        bad.close()
        wait_for(lambda: stat(srv, "tls_failed") == 1, what="the failure to count")
    # connection_made saw the finished handshake; the failed one never reached the protocol.
    assert len(proto.made) == 1 and proto.made[0] is not None
    assert proto.made[0].version is not None
    assert proto.eofs == 1 and proto.lost == [None]


def test_asyncio_client(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> None:
    async def client(port: int) -> bytes:
        r, w = await asyncio.open_connection("127.0.0.1", port, ssl=client_ctx,
                                             server_hostname="localhost")
        w.write(PATTERN)
        await w.drain()
        data = await r.readexactly(len(PATTERN))
        w.close()
        await w.wait_closed()
        return data

    with serving(reader_echo, ssl=server_ctx) as srv:
        assert asyncio.run(client(srv.port)) == PATTERN


# ------------------------------------------------------------------ ALPN, SNI, conn.tls
def test_alpn_and_sni_in_conn_tls(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> None:
    seen: list[zerg.TlsInfo | None] = []
    names: list[str | None] = []
    server_ctx.sni_callback = lambda obj, name, ctx: names.append(name)   # the user's own

    async def handler(conn: zerg.Connection) -> None:
        seen.append(conn.tls)
        conn.write(b"ok")
        await conn.flush()

    client_ctx.set_alpn_protocols(["http/1.1"])
    with serving(handler, ssl=server_ctx) as srv, \
            tls_connect(srv, client_ctx, hostname="alt.example") as s:
        assert recv_n(s, 2) == b"ok"
        assert s.selected_alpn_protocol() == "http/1.1"
    info = seen[0]
    assert info is not None
    assert info.alpn_protocol == "http/1.1"
    assert info.server_name == "alt.example"
    assert names == ["alt.example"]                 # the user's callback still ran
    assert info.version in ("TLSv1.2", "TLSv1.3") and info.cipher
    assert info.peer_certificate is None and info.peer_certificate_der is None


def test_client_certificates(ca: trustme.CA, server_cert: trustme.LeafCert,
                             client_ctx: ssl.SSLContext) -> None:
    ctx = make_server_ctx(server_cert)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ca.configure_trust(ctx)
    seen: list[zerg.TlsInfo | None] = []

    async def handler(conn: zerg.Connection) -> None:
        seen.append(conn.tls)
        conn.write(b"hi")
        await conn.flush()

    with serving(handler, ssl=ctx) as srv:
        with tls_connect(srv, client_ctx) as s, pytest.raises(ssl.SSLError):
            s.recv(10)      # TLS 1.3: the refusal of a client without a certificate comes here
        wait_for(lambda: stat(srv, "tls_failed") == 1, what="the failure to count")
        ca.issue_cert("client@example.com").configure_cert(client_ctx)
        with tls_connect(srv, client_ctx) as s:
            assert recv_n(s, 2) == b"hi"
    info = seen[0]
    assert info is not None and info.peer_certificate is not None
    assert info.peer_certificate_der
    assert (("rfc822Name", "client@example.com") in info.peer_certificate["subjectAltName"]
            or ("email", "client@example.com") in info.peer_certificate["subjectAltName"])
    assert len(seen) == 1


# ------------------------------------------------------------------ bad handshakes
def test_handshake_timeout_closes_and_counts(server_ctx: ssl.SSLContext,
                                             client_ctx: ssl.SSLContext) -> None:
    with serving(reader_echo, ssl=server_ctx, tls_handshake_timeout_s=0.3) as srv:
        silent = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        t0 = time.monotonic()
        assert silent.recv(100) == b""          # closed by the server, nothing sent
        assert 0.25 < time.monotonic() - t0 < 3.0
        silent.close()
        wait_for(lambda: stat(srv, "tls_failed") == 1, what="the timeout to count")
        check_echo(srv, client_ctx, b"still serving")
        wait_for(lambda: stat(srv, "closed") == 3, what="all three to close")
        assert srv.engine.stats()[0].closed_by == {"tls_handshake": 1, "peer_eof": 2}


@pytest.mark.parametrize("protocol", [False, True], ids=["handler", "protocol"])
def test_garbage_and_plain_http_close_only_that_connection(
        server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, protocol: bool) -> None:
    """Each bad client costs its own connection, a count and a debug line: nothing
    at error level (asyncio's "exception was never retrieved" for the failed
    handshake's future included, which a Protocol server has nobody to await)."""
    errors = ErrorLog()
    asyncio_log = logging.getLogger("asyncio")
    asyncio_log.addHandler(errors)
    handler: Any = _PlainEcho() if protocol else reader_echo
    try:
        _garbage_and_plain_http(handler, server_ctx, client_ctx)
        gc.collect()                    # the failed connections' futures, if they linger
    finally:
        asyncio_log.removeHandler(errors)
    assert [r.getMessage() for r in errors.records] == []


class _PlainEcho(zerg.Protocol):
    def data_received(self, conn: zerg.Connection, seq: zerg.BufferSequence) -> None:
        conn.write(seq)


def _garbage_and_plain_http(handler: Any, server_ctx: ssl.SSLContext,
                            client_ctx: ssl.SSLContext) -> None:
    with serving(handler, ssl=server_ctx) as srv:
        good = tls_connect(srv, client_ctx)     # open across the bad ones
        good.sendall(b"before\n")
        assert recv_n(good, 7) == b"before\n"
        for junk in (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", bytes(range(256)) * 8,
                     b"\x16\x03\x01\x00\x05hello"):
            bad = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
            bad.sendall(junk)
            try:
                while bad.recv(4096):
                    pass                        # an alert maybe, then the close
            except ConnectionResetError:
                pass
            bad.close()
        closed_early = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        closed_early.close()                    # a FIN before any handshake byte
        wait_for(lambda: stat(srv, "tls_failed") == 4, what="four failures to count")
        good.sendall(b"after\n")
        assert recv_n(good, 6) == b"after\n"
        good.unwrap()
        good.close()
        check_echo(srv, client_ctx, b"x" * 1000)     # and new connections are served
        assert stat(srv, "tls_failed") == 4
        wait_for(lambda: stat(srv, "connections") == 0, what="every connection to close")
        assert srv.engine.stats()[0].closed_by == {"tls_handshake": 4, "peer_eof": 3}


# ------------------------------------------------------------------ closing
def test_close_notify_both_ways(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> None:
    received: list[bytes] = []

    async def until_end(conn: zerg.Connection) -> None:
        data = await read_to_end(PipeReader(conn))
        received.append(data)
        if data == b"ragged":
            conn.write(b"bye")      # after the peer's end we may still write

    with serving(until_end, ssl=server_ctx) as srv:
        # The client's close_notify ends the handler's input; the server answers
        # with its own, which unwrap() waits for.
        with tls_connect(srv, client_ctx) as s:
            s.sendall(b"clean")
            s.unwrap().close()
        wait_for(lambda: len(received) == 1, what="the handler to see the end")
        # A bare FIN (a ragged EOF, as many HTTP clients end) is an end as well;
        # the server still writes, then closes with close_notify.
        with tls_connect(srv, client_ctx) as s:
            s.sendall(b"ragged")
            socket.socket.shutdown(s, socket.SHUT_WR)
            assert recv_n(s, 3) == b"bye"
            assert s.recv(10) == b""    # SSLEOFError here would mean no close_notify
    assert received == [b"clean", b"ragged"]


def test_write_eof_half_closes_with_close_notify(server_ctx: ssl.SSLContext,
                                                 client_ctx: ssl.SSLContext) -> None:
    got: list[bytes] = []
    refused: list[str] = []

    async def half(conn: zerg.Connection) -> None:
        reader = PipeReader(conn)
        conn.write(b"answer")
        assert conn.can_write_eof()
        conn.write_eof()                    # close_notify, then the FIN after the bytes
        try:
            conn.write(b"late")
        except BrokenPipeError as exc:
            refused.append(str(exc))
        got.append(await read_to_end(reader))     # the peer may still talk

    with serving(half, ssl=server_ctx) as srv, tls_connect(srv, client_ctx) as s:
        assert recv_n(s, 6) == b"answer"
        assert s.recv(10) == b""            # the server's close_notify: a clean end
        s.sendall(b"more after your end")
        s.unwrap().close()                  # ours; the server's came already
        wait_for(lambda: bool(got), what="the handler to read the rest")
    assert got == [b"more after your end"]
    assert len(refused) == 1 and "write_eof" in refused[0]


def test_server_close_sends_close_notify(server_ctx: ssl.SSLContext,
                                         client_ctx: ssl.SSLContext) -> None:
    async def greet(conn: zerg.Connection) -> None:
        conn.write(b"hello")
        await conn.flush()
        conn.close()

    with serving(greet, ssl=server_ctx) as srv, tls_connect(srv, client_ctx) as s:
        assert recv_n(s, 5) == b"hello"
        assert s.recv(10) == b""            # clean: suppress_ragged_eofs=False would raise
        wait_for(lambda: stat(srv, "closed") == 1, what="the close")
        assert srv.engine.stats()[0].closed_by == {"closed": 1}


# ------------------------------------------------------------------ flow control
def test_flooding_peer_pauses_the_receive(server_ctx: ssl.SSLContext,
                                          client_ctx: ssl.SSLContext) -> None:
    """max_read_buffer bounds a TLS connection's decrypted bytes too."""
    go = threading.Event()
    flood = PATTERN * 8
    checked: list[bool] = []

    async def slow(conn: zerg.Connection) -> None:
        reader = PipeReader(conn)
        while not go.is_set():
            await asyncio.sleep(0.01)
        got = 0
        ok = True
        while got < len(flood):
            res = await reader.read()
            buf = res.buffer
            ok = ok and buf.tobytes() == flood[got:got + len(buf)]
            got += len(buf)
            reader.advance_to(len(buf))
        checked.append(ok)
        conn.write(b"%d" % got)
        await conn.flush()

    reactor = zerg.ReactorConfig(max_read_buffer=256 * 1024)
    answer: list[bytes] = []
    with serving(slow, ssl=server_ctx, reactor=reactor) as srv:
        client = threading.Thread(target=lambda: answer.append(asyncio.run(
            exchange(srv.port, client_ctx, flood, len(b"%d" % len(flood))))), daemon=True)
        client.start()
        wait_for(lambda: stat(srv, "receive_paused") == 1, what="the receive to pause")
        # Paused, and every ciphertext slot back with the kernel (returns are batched
        # per loop iteration, hence the wait): the decrypted bytes are private memory.
        wait_for(lambda: srv.engine.stats()[0].slots_in_use == 0, what="the slots to go back")
        assert stat(srv, "receive_paused") == 1
        go.set()
        client.join(20)
    assert answer == [b"%d" % len(flood)] and checked == [True]


def test_writes_at_max_write_buffer_spill_the_record_overhead(
        server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> None:
    """A write that fills max_write_buffer in plaintext is accepted; the record
    overhead that does not fit follows (nothing lost, nothing duplicated)."""
    cap = 65536
    rounds = 16

    async def fill(conn: zerg.Connection) -> None:
        for i in range(rounds):
            chunk = PATTERN[i * cap:(i + 1) * cap]
            conn.write(chunk)               # 0 + cap <= cap: taken; its records are not
            assert conn.pending_write_bytes > cap
            await conn.flush()
        stream = BufferWriter(conn)
        mem = stream.get_memory(cap)
        mem[:cap] = PATTERN[:cap]
        stream.advance(cap)
        await stream.wait_sent()

    reactor = zerg.ReactorConfig(write_buffer_size=4096, max_write_buffer=cap)
    with serving(fill, ssl=server_ctx, reactor=reactor) as srv, \
            tls_connect(srv, client_ctx) as s:
        assert recv_n(s, rounds * cap + cap) == PATTERN[:rounds * cap] + PATTERN[:cap]
        assert s.recv(10) == b""


# ------------------------------------------------------------------ real clients
def test_openssl_s_client(server_ctx: ssl.SSLContext, ca_file: Path) -> None:
    openssl = shutil.which("openssl")
    assert openssl, "openssl is missing: run `make test`, which installs it"

    def one_line(conn: zerg.Connection) -> None:
        stream = ConnectionStream(conn)
        reader = io.BufferedReader(stream)     # (kept: collected, it closes the stream)
        stream.write(reader.readline())
        stream.close()

    with serving(one_line, ssl=server_ctx) as srv:
        out = subprocess.run(
            [openssl, "s_client", "-connect", f"127.0.0.1:{srv.port}", "-servername",
             "localhost", "-alpn", "http/1.1", "-CAfile", str(ca_file), "-verify_return_error",
             "-ign_eof"],
            input=b"hello from s_client\n", capture_output=True, timeout=20)
    text = out.stdout.decode(errors="replace")
    assert "Verify return code: 0 (ok)" in text, text
    assert "ALPN protocol: http/1.1" in text, text
    assert "hello from s_client" in text, text       # s_client prints only what it read


@pytest.mark.parametrize("impl", ["protocol", "pipereader"])
def test_curl_and_wrk_against_examples_http(server_cert: trustme.LeafCert,
                                            ca_file: Path, impl: str) -> None:
    curl, wrk = shutil.which("curl"), shutil.which("wrk")
    assert curl and wrk, "curl/wrk are missing: run `make test`, which installs them"
    http = load_example("http")
    ctx = make_server_ctx(server_cert, ["http/1.1"])     # no h2: this server speaks 1.1
    handler = http.HttpProtocol() if impl == "protocol" else http.handle
    with serving(handler, ssl=ctx) as srv:
        url = f"https://localhost:{srv.port}/"
        resolve = f"localhost:{srv.port}:127.0.0.1"
        out = subprocess.run([curl, "-sS", "-i", "--cacert", str(ca_file), "--resolve", resolve,
                              url], capture_output=True, timeout=20, check=True).stdout
        assert out.startswith(b"HTTP/1.1 200 OK") and out.endswith(b"Hello, World!")
        body = PATTERN[:200_000]
        out = subprocess.run([curl, "-sS", "--cacert", str(ca_file), "--resolve", resolve,
                              "--data-binary", "@-", "-H", "Content-Type: x", "-H", "Expect:",
                              url + "echo"], input=body, capture_output=True, timeout=20,
                             check=True).stdout
        assert out == body
        assert stat(srv, "tls_failed") == 0
        res = subprocess.run([wrk, "-t1", "-c8", "-d1s", f"https://127.0.0.1:{srv.port}/"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
        assert "Non-2xx" not in res and "Socket errors" not in res, res
        m = re.search(r"(\d+) requests in", res)
        assert m is not None and int(m.group(1)) > 100, res
        # wrk opens one connection first and drops it before any handshake byte.
        assert stat(srv, "tls_failed") <= 1


# ------------------------------------------------------------------ engine shapes
@pytest.mark.parametrize("shape", [{"reactor_count": 2}, {"workers": 2}])
def test_multi_reactor_and_workers(shape: dict[str, Any], server_ctx: ssl.SSLContext,
                                   client_ctx: ssl.SSLContext) -> None:
    async def version(conn: zerg.Connection) -> None:
        info = conn.tls
        conn.write(str(info.version if info else None).encode())
        await conn.flush()

    with serving(version, ssl=server_ctx, **shape) as srv:
        if "workers" in shape:
            wait_for(lambda: len(srv.engine.stats()) == 2, timeout=15,
                     what="both workers to report")
        for _ in range(6):
            with tls_connect(srv, client_ctx) as s:
                assert s.recv(20).startswith(b"TLSv1.")
        if "workers" in shape:
            wait_for(lambda: stat(srv, "closed") == 6, timeout=5, what="the workers' report")
    assert stat(srv, "accepted") == 6 and stat(srv, "tls_failed") == 0


# ------------------------------------------------------------------ the client side
def test_tls_connection_client_mode(server_ctx: ssl.SSLContext,
                                    client_ctx: ssl.SSLContext) -> None:
    """zerg to zerg: a client-side TlsConnection on a standalone loop (what
    zerg.connect builds on) against the TLS server."""
    client_ctx.set_alpn_protocols(["http/1.1"])

    async def client(port: int) -> tuple[bytes, zerg.TlsInfo | None, BaseException | None]:
        loop = asyncio.get_running_loop()
        host: Any = loop.reactor      # type: ignore[attr-defined]
        sock = socket.create_connection(("127.0.0.1", port))
        conn = TlsConnection(host, 1 << 40, sock.detach(), client_ctx, server_side=False,
                             server_hostname="localhost", handshake_timeout=5.0)
        conn.start()
        conn.write(b"early ")               # before the handshake: it goes first after it
        await conn.handshake
        conn.write(PATTERN)
        await conn.flush()
        reader = PipeReader(conn)
        res = await reader.read_at_least(6 + MiB)
        data = res.buffer.tobytes()
        reader.advance_to(len(res.buffer))
        conn.close()
        # a second one whose server is not TLS at all: the handshake future fails
        plain = socket.create_server(("127.0.0.1", 0))
        peer = socket.create_connection(plain.getsockname())
        server_side, _ = plain.accept()
        bad = TlsConnection(host, (1 << 40) + 1, peer.detach(), client_ctx, server_side=False,
                            server_hostname="localhost", handshake_timeout=5.0)
        bad.start()
        server_side.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        failure: BaseException | None = None
        try:
            await bad.handshake
        except ssl.SSLError as exc:
            failure = exc
        server_side.close()
        plain.close()
        while conn.peername is not None or bad.peername is not None:
            await asyncio.sleep(0.01)       # both fully closed before the loop goes
        return data, conn.tls, failure

    with serving(reader_echo, ssl=server_ctx) as srv:
        loop = zerg.new_event_loop()
        try:
            data, info, failure = loop.run_until_complete(client(srv.port))
        finally:
            loop.close()
    assert data == b"early " + PATTERN
    assert info is not None and info.server_name == "localhost"
    assert info.alpn_protocol == "http/1.1" and info.peer_certificate is not None
    assert isinstance(failure, ssl.SSLError)


def test_zerg_connect_with_ssl(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> None:
    """zerg.connect(ssl=...) builds on the client-side TlsConnection: a handler
    client and a Protocol client against the TLS server, and a name that does
    not verify."""
    client_ctx.set_alpn_protocols(["http/1.1"])

    class Collect(zerg.Protocol):
        def __init__(self) -> None:
            self.data = bytearray()
            self.made: list[zerg.TlsInfo | None] = []

        def connection_made(self, conn: zerg.Connection) -> None:
            self.made.append(conn.tls)
            conn.write(b"from a protocol")

        def data_received(self, conn: zerg.Connection, seq: zerg.BufferSequence) -> None:
            self.data += seq.tobytes()

    async def client(port: int) -> tuple[bytes, zerg.TlsInfo | None, Collect, BaseException]:
        conn = await zerg.connect("127.0.0.1", port, ssl=client_ctx,
                                  server_hostname="localhost", timeout=10)
        conn.write(PATTERN)
        await conn.flush()
        reader = PipeReader(conn)
        res = await reader.read_at_least(MiB)
        data = res.buffer.tobytes()
        reader.advance_to(len(res.buffer))
        info = conn.tls
        conn.close()
        proto = Collect()
        pconn = await zerg.connect("127.0.0.1", port, ssl=client_ctx,
                                   server_hostname="localhost", protocol=proto)
        while len(proto.data) < 15:
            await asyncio.sleep(0.01)
        pconn.close()
        failure: BaseException = AssertionError("wrong.example was accepted")
        try:
            await zerg.connect("127.0.0.1", port, ssl=client_ctx,
                               server_hostname="wrong.example", timeout=10)
        except ssl.SSLCertVerificationError as exc:
            failure = exc
        await asyncio.sleep(0.05)
        return data, info, proto, failure

    with serving(reader_echo, ssl=server_ctx) as srv, \
            asyncio.Runner(loop_factory=zerg.new_event_loop) as runner:
        data, info, proto, failure = runner.run(client(srv.port))
        wait_for(lambda: stat(srv, "tls_failed") == 1, what="the refused handshake to count")
    assert data == PATTERN
    assert info is not None and info.alpn_protocol == "http/1.1"
    assert info.server_name == "localhost" and info.peer_certificate is not None
    assert bytes(proto.data) == b"from a protocol"
    assert len(proto.made) == 1 and proto.made[0] is not None
    assert "wrong.example" in str(failure)


def test_sans_io_sessions(server_cert: trustme.LeafCert, client_ctx: ssl.SSLContext) -> None:
    """Two TlsSessions, client and server, talking through their BIOs only."""
    opts = server_context(make_server_ctx(server_cert, ["http/1.1"]), 1.0)
    client_ctx.set_alpn_protocols(["http/1.1"])
    srv = TlsSession(opts.context, server_side=True)
    cli = TlsSession(client_ctx, server_side=False, server_hostname="localhost")
    for _ in range(4):
        done_c = cli.handshake()
        srv.feed(cli.output())
        done_s = srv.handshake()
        cli.feed(srv.output())
    assert done_c and done_s
    assert srv.info().server_name == "localhost" and cli.info().server_name == "localhost"
    assert srv.info().alpn_protocol == cli.info().alpn_protocol == "http/1.1"
    assert cli.read() == b""                    # session tickets only
    srv.feed(cli.encrypt(PATTERN))
    assert srv.read() == PATTERN
    cli.feed(srv.encrypt(b"x" * 70_000))
    assert cli.read() == b"x" * 70_000
    srv.feed(cli.close_notify())
    assert srv.read() == b"" and srv.peer_closed
    cli.feed(srv.close_notify())
    assert cli.read() == b"" and cli.peer_closed
    garbage = TlsSession(opts.context, server_side=True)
    garbage.feed(b"GET / HTTP/1.1\r\n\r\n")
    with pytest.raises(ssl.SSLError, match="HTTP_REQUEST"):
        garbage.handshake()
    bad_hello = TlsSession(opts.context, server_side=True)
    bad_hello.feed(b"\x16\x03\x01\x00\x05hello")
    with pytest.raises(ssl.SSLError):
        bad_hello.handshake()
    assert bad_hello.output().startswith(b"\x15")      # an alert to send


# ------------------------------------------------------------------ options, extension
def test_options_are_validated(client_ctx: ssl.SSLContext) -> None:
    with pytest.raises(TypeError, match=r"ssl must be an ssl\.SSLContext.*got bool"):
        zerg.EngineOptions(ssl=True)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="client-side context"):
        zerg.EngineOptions(ssl=client_ctx)
    with pytest.raises(ValueError, match="tls_handshake_timeout_s"):
        zerg.EngineOptions(tls_handshake_timeout_s=0)
    with pytest.raises(ValueError, match="tls_handshake_timeout_s"):
        zerg.EngineOptions(tls_handshake_timeout_s="10")  # type: ignore[arg-type]


def test_the_tls_overrides_are_what_runs() -> None:
    """The C dispatcher calls its fast paths only for the exact plain classes;
    a TLS connection's own methods are found by name, with and without it."""
    for cls in (TlsConnection, TlsProtocolConnection):
        for name in ("on_recv", "on_recv_end", "write", "close", "abort", "get_buffer",
                     "advance", "flush", "try_get_ring", "return_ring", "forward",
                     "write_eof"):
            found = inspect.getattr_static(cls, name)
            if name in ("on_recv", "write", "flush") and speedups is not None:
                # native/tlsfast.c: the layer's own methods, in C
                assert found is _TlsLayer.__dict__[name], (cls, name)
                assert type(found).__name__ == "method_descriptor", (cls, name)
            else:
                assert getattr(cls, name).__module__ == "zerg._tls", (cls, name)
    if speedups is not None:
        assert type(zerg.Connection.__dict__["write"]).__name__ != "function"


# ------------------------------------------------------------------ memory
@pytest.mark.parametrize("protocol", [False, True])
def test_a_closed_tls_connection_is_freed_without_the_cycle_collector(
        server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, protocol: bool) -> None:
    """A TLS connection keeps no reference cycle once closed: it goes when
    the reactor drops it, not at some later gc pass (a server with many
    short TLS connections would otherwise hold all of them until then)."""
    import gc

    def alive() -> int:
        return sum(isinstance(o, _TlsLayer) for o in gc.get_objects())

    handler: Any = EchoProtocol() if protocol else reader_echo
    gc.collect()
    gc.disable()
    try:
        with serving(handler, ssl=server_ctx) as srv:
            before = alive()
            for i in range(3):
                with tls_connect(srv, client_ctx) as s:
                    if protocol:
                        assert recv_n(s, 8) == b"welcome\n"
                    s.sendall(b"ping %d" % i)
                    assert recv_n(s, 6) == b"ping %d" % i
                    s.unwrap().close()
            wait_for(lambda: stat(srv, "connections") == 0, what="the connections to close")
            wait_for(lambda: alive() == before, timeout=2.0,
                     what="the closed TLS connections to be freed by reference counting")
    finally:
        gc.enable()
