"""The PROXY protocol (issue 16): the header parser, then real connections with
a header in front -- from raw sockets, and from a real haproxy with
``send-proxy-v2`` in front of two zerg servers, driven by wrk."""

from __future__ import annotations

import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import recv_exact, recv_until_closed, serving, wait_for
from examples_loader import load_example
from hypothesis import given, settings
from hypothesis import strategies as st

import zerg
from zerg._proxyproto import MAX_HEADER, V2_SIGNATURE, ProxyHeaderError, parse

# -- the parser --------------------------------------------------------------------------

V1_TCP4 = b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\n"
V1_TCP6 = b"PROXY TCP6 2001:db8::7 2001:db8::1 56324 443\r\n"


def v2(cmd: int = 1, fam: int = 0x11, body: bytes | None = None) -> bytes:
    if body is None:
        body = bytes([192, 0, 2, 7, 198, 51, 100, 1]) + struct.pack("!HH", 56324, 443)
    return V2_SIGNATURE + bytes([0x20 | cmd, fam]) + struct.pack("!H", len(body)) + body


V2_TCP6 = v2(fam=0x21, body=socket.inet_pton(socket.AF_INET6, "2001:db8::7")
             + socket.inet_pton(socket.AF_INET6, "2001:db8::1") + struct.pack("!HH", 56324, 443))


@pytest.mark.parametrize(("header", "peer"), [
    (V1_TCP4, ("192.0.2.7", 56324)),
    (V1_TCP6, ("2001:db8::7", 56324, 0, 0)),
    (b"PROXY UNKNOWN\r\n", None),
    (b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n", None),
    (v2(), ("192.0.2.7", 56324)),
    (V2_TCP6, ("2001:db8::7", 56324, 0, 0)),
    (v2(cmd=0, fam=0, body=b""), None),                     # LOCAL: a health check
    (v2(body=bytes([192, 0, 2, 7, 198, 51, 100, 1]) + struct.pack("!HH", 1, 2)
        + b"\x04\x00\x03abc"), ("192.0.2.7", 1)),           # with a TLV
])
def test_every_prefix_waits_and_the_whole_header_parses(
        header: bytes, peer: object) -> None:
    for i in range(len(header)):
        assert parse(header[:i]) is None, i
    assert parse(header + b"GET / HTTP/1.1\r\n") == (len(header), peer)


@pytest.mark.parametrize(("data", "why"), [
    (b"GET / HTTP/1.1\r\n", "does not start with a PROXY header"),
    (b"PROXY TCP5 1.2.3.4 1.2.3.4 1 2\r\n", "malformed"),
    (b"PROXY TCP4 1.2.3.4 1.2.3.4 1\r\n", "malformed"),
    (b"PROXY TCP4 1.2.3.999 1.2.3.4 1 2\r\n", "bad source address"),
    (b"PROXY TCP4 2001:db8::1 1.2.3.4 1 2\r\n", "family mismatch"),
    (b"PROXY TCP4 1.2.3.4 1.2.3.4 65536 2\r\n", "bad port"),
    (b"PROXY TCP4 1.2.3.4 1.2.3.4 01 2\r\n", "bad port"),
    (b"PROXY TCP4 1.2.3.4 1.2.3.4 -1 2\r\n", "bad port"),
    (b"PROXY " + b"x" * 200, "longer than 107"),
    (V2_SIGNATURE[:5] + b"x", "does not start with a PROXY header"),
    (V2_SIGNATURE + b"\x11\x11\x00\x00", "version 1"),
    (V2_SIGNATURE + b"\x22\x11\x00\x00", "command 2"),
    (V2_SIGNATURE + b"\x21\x11" + struct.pack("!H", MAX_HEADER), "at most"),
    (v2(body=b"\x01\x02\x03"), "family 1 and 3 address bytes"),
])
def test_anything_else_is_refused_with_a_reason(data: bytes, why: str) -> None:
    with pytest.raises(ProxyHeaderError, match=why):
        parse(data)


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.binary(max_size=120),
                 st.sampled_from([V1_TCP4, V1_TCP6, v2(), V2_TCP6]).flatmap(
                     lambda h: st.tuples(st.just(h), st.integers(0, len(h)), st.binary(max_size=8))
                     .map(lambda t: t[0][:t[1]] + t[2]))))
def test_no_input_escapes_as_another_error(data: bytes) -> None:
    try:
        got = parse(data)
    except ProxyHeaderError:
        return
    if got is not None:
        length, _ = got
        assert 0 < length <= len(data)


# -- real connections ----------------------------------------------------------------------

async def who(conn: zerg.Connection) -> None:
    """Answers each line with the peer it sees, then the line."""
    from zerg.adapters import PipeReader
    reader = PipeReader(conn)
    try:
        while True:
            res = await reader.read()
            sr = zerg.SequenceReader(res.buffer)
            while (line := sr.try_read_bytes_to(b"\n")) is not None:
                conn.write(repr(conn.peername).encode() + b" " + line + b"\n")
            reader.advance_to(sr.consumed, len(res.buffer))
            await conn.flush()
            if res.is_completed:
                return
    finally:
        reader.complete()


def _shut_out(s: socket.socket) -> bool:
    """The server closed the connection without a byte: an EOF, or a reset (the
    kernel resets a connection closed with unread bytes, like a refused header)."""
    try:
        return recv_until_closed(s) == b""
    except ConnectionResetError:
        return True


def _rejected(srv: object) -> int:
    return sum(s.proxy_rejected for s in srv.engine.stats())  # type: ignore[attr-defined]


def test_the_header_is_read_and_the_bytes_after_it_are_the_handlers() -> None:
    with serving(who, proxy_protocol=True) as srv:
        for header, seen in ((V1_TCP4, b"('192.0.2.7', 56324)"),
                             (v2(), b"('192.0.2.7', 56324)"),
                             (V2_TCP6, b"('2001:db8::7', 56324, 0, 0)")):
            with srv.connect() as s:            # header and request in one packet
                s.sendall(header + b"one\ntwo\n")
                assert recv_exact(s, 2 * len(seen) + 10) == seen + b" one\n" + seen + b" two\n"
        with srv.connect() as s:                # a byte at a time, the header too
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for b in V1_TCP6 + b"hi\n":
                s.sendall(bytes([b]))
                time.sleep(0.001)
            seen = b"('2001:db8::7', 56324, 0, 0)"
            assert recv_exact(s, len(seen) + 4) == seen + b" hi\n"
        with srv.connect() as s:                # LOCAL: the real peer stands
            s.sendall(v2(cmd=0, fam=0, body=b"") + b"x\n")
            want = repr(s.getsockname()).encode() + b" x\n"
            assert recv_exact(s, len(want)) == want
        assert _rejected(srv) == 0


def test_a_missing_bad_or_late_header_closes_only_that_connection() -> None:
    with serving(who, proxy_protocol=True, proxy_header_timeout_s=0.3) as srv:
        with srv.connect() as s:
            s.sendall(b"GET / HTTP/1.1\r\n\r\n")            # no header
            assert _shut_out(s)
        with srv.connect() as s:
            s.sendall(b"PROXY TCP4 1.2.3.999 1.2.3.4 1 2\r\nhi\n")
            assert _shut_out(s)
        with srv.connect() as s:                            # nothing: the timeout
            started = time.monotonic()
            assert _shut_out(s)
            assert 0.2 < time.monotonic() - started < 5
        with srv.connect() as s:
            s.sendall(b"PROXY TCP4 1.2.3")                  # half a header, then quiet
            assert _shut_out(s)
        wait_for(lambda: _rejected(srv) == 4, what="4 rejections counted")
        with srv.connect() as s:                            # the others are served
            s.sendall(V1_TCP4 + b"still here\n")
            assert recv_exact(s, 32).endswith(b" still here\n")


def test_stopping_closes_connections_still_waiting_for_a_header() -> None:
    with serving(who, proxy_protocol=True, proxy_header_timeout_s=30) as srv:
        s = srv.connect()
        time.sleep(0.1)
        srv.stop()
        assert recv_until_closed(s) == b""
        s.close()


# -- haproxy in front -----------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def haproxy_for(tmp_path: Path) -> Iterator[object]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(backends: list[int]) -> int:
        exe = shutil.which("haproxy")
        assert exe, "haproxy is missing (make test installs it)"
        port = _free_port()
        servers = "\n".join(f"    server s{i} 127.0.0.1:{p} send-proxy-v2"
                            for i, p in enumerate(backends))
        cfg = tmp_path / "haproxy.cfg"
        cfg.write_text(f"""
global
    maxconn 4096
defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend front
    bind 127.0.0.1:{port}
    default_backend zerg
backend zerg
    balance roundrobin
{servers}
""")
        proc = subprocess.Popen([exe, "-f", str(cfg), "-db"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        procs.append(proc)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return port
            except OSError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else b""
                assert time.monotonic() < deadline, "haproxy did not listen"
                time.sleep(0.05)

    yield start
    for p in procs:
        p.terminate()
        p.wait(10)
        if p.stderr is not None:
            p.stderr.close()


def test_behind_haproxy_the_peer_is_the_client_and_wrk_sees_no_error(
        haproxy_for: object) -> None:
    http = load_example("http")

    async def both(conn: zerg.Connection) -> None:
        """`who` for lines starting with 'who', examples/http.py for the rest."""
        first = await conn.input.read_at_least(3)
        if first.buffer[:3].tobytes() == b"who":
            conn.input.advance_to(0, 0)
            await who(conn)
        else:
            conn.input.advance_to(0, 0)
            await http.handle(conn)

    with serving(both, proxy_protocol=True) as a, serving(both, proxy_protocol=True) as b:
        front = haproxy_for([a.port, b.port])  # type: ignore[operator]
        for _ in range(4):                      # round robin: both servers answer
            with socket.create_connection(("127.0.0.1", front), timeout=10) as s:
                s.sendall(b"who\n")
                want = repr(s.getsockname()).encode() + b" who\n"
                assert recv_exact(s, len(want)) == want
        out = subprocess.run(["wrk", "-t1", "-c16", "-d2s", f"http://127.0.0.1:{front}/"],
                             capture_output=True, text=True, timeout=60).stdout
        assert "Socket errors" not in out and "Non-2xx" not in out, out
        assert int(out.split(" requests in ")[0].split()[-1]) > 1000, out
        for srv in (a, b):
            assert sum(s.accepted for s in srv.engine.stats()) > 2
            assert _rejected(srv) == 0
