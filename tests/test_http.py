"""examples/http.py through real clients: http.client, curl, wrk, raw sockets."""

from __future__ import annotations

import http.client
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from conftest import RunningServer, recv_until_closed, serving
from examples_loader import load_example
from hypothesis import given, settings
from hypothesis import strategies as st

import zerg

http_example = load_example("http")


@pytest.fixture(scope="module")
def srv() -> Iterator[RunningServer]:
    with serving(http_example.handle) as s:
        yield s


def _get(port: int, path: str = "/", **kw: str) -> tuple[int, bytes, dict[str, str]]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request("GET", path, headers=kw)
        r = c.getresponse()
        return r.status, r.read(), dict(r.getheaders())
    finally:
        c.close()


def test_http_client_get(srv: RunningServer) -> None:
    status, body, headers = _get(srv.port)
    assert status == 200 and body == b"Hello, World!"
    assert headers["Content-Length"] == "13"


def test_http_client_keep_alive_and_post_echo(srv: RunningServer) -> None:
    c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    for i in range(20):
        c.request("POST", "/echo", body=b"payload-%d" % i)
        r = c.getresponse()
        assert r.status == 200 and r.read() == b"payload-%d" % i
    c.request("GET", "/missing")
    r = c.getresponse()
    assert r.status == 404
    r.read()
    c.close()


def test_large_body_echo(srv: RunningServer) -> None:
    body = bytes(range(256)) * 4000           # ~1 MB, many segments
    c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    c.request("POST", "/echo", body=body)
    r = c.getresponse()
    assert r.status == 200 and r.read() == body
    c.close()


def test_pipelined_requests_answered_in_order(srv: RunningServer) -> None:
    reqs = b"".join(b"POST /echo HTTP/1.1\r\nContent-Length: %d\r\n\r\n%d" % (len(b"%d" % i), i)
                    for i in range(100))
    reqs += b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        for i in range(0, len(reqs), 7):        # also split requests across reads
            s.sendall(reqs[i:i + 7])
        data = recv_until_closed(s)
    bodies = re.findall(rb"\r\n\r\n(\d+)(?=HTTP/1.1|$)", data)
    assert [int(b) for b in bodies] == list(range(100))
    assert data.endswith(b"Hello, World!")


def _raw(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(payload)
        return recv_until_closed(s)


@pytest.mark.parametrize(
    ("payload", "status"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nBad Header\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nContent-Length: abc\r\n\r\n", 400),
        (b"GET / HTTP/2.0\r\n\r\n", 505),
        (b"GET / HTTP/1.1\r\nX: " + b"a" * 9000 + b"\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\nX: " + b"a" * 9000, 431),     # never-ending header block
        (b"POST /echo HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n", 413),
        (b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 501),
    ],
)
def test_refused_requests_get_status_and_close(srv: RunningServer, payload: bytes,
                                                status: int) -> None:
    data = _raw(srv.port, payload)
    assert data.startswith(b"HTTP/1.1 %d " % status)
    assert b"Connection: close" in data


def test_http10_closes_by_default(srv: RunningServer) -> None:
    data = _raw(srv.port, b"GET / HTTP/1.0\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"Hello, World!")


def test_curl(srv: RunningServer) -> None:
    curl = shutil.which("curl")
    assert curl, "curl is missing: run `make test`, which installs it"
    out = subprocess.run([curl, "-sS", "-i", f"http://127.0.0.1:{srv.port}/"],
                         capture_output=True, timeout=20, check=True).stdout
    assert out.startswith(b"HTTP/1.1 200 OK") and out.endswith(b"Hello, World!")


def test_wrk_short_run_without_errors(srv: RunningServer) -> None:
    wrk = shutil.which("wrk")
    assert wrk, "wrk is missing: run `make test`, which installs it"
    out = subprocess.run([wrk, "-t1", "-c16", "-d1s", f"http://127.0.0.1:{srv.port}/"],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    assert "Non-2xx" not in out and "Socket errors" not in out, out
    assert int(re.search(r"(\d+) requests in", out).group(1)) > 100  # type: ignore[union-attr]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.integers(min_value=1, max_value=40))
def test_parser_never_escapes_an_unexpected_exception(data: bytes, split: int) -> None:
    segs = [data[i:i + split] for i in range(0, len(data), split)]
    buf = zerg.BufferSequence(segs)
    pos = scanned = 0
    while pos < len(buf):
        try:
            res = http_example.parse_request(buf, pos, scanned)
        except http_example.HttpError as err:
            assert err.status in (400, 413, 431, 501, 505)
            return
        if isinstance(res, int):
            assert 0 <= res <= len(buf) - pos
            return
        assert res.size > 0
        pos += res.size


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(min_size=0, max_size=50), min_size=1, max_size=6),
       st.integers(min_value=1, max_value=17))
def test_parser_finds_requests_across_any_split(bodies: list[bytes], split: int) -> None:
    raw = b"".join(b"POST /echo HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s" % (len(b), b)
                   for b in bodies)
    buf = zerg.BufferSequence([raw[i:i + split] for i in range(0, len(raw), split)])
    pos = 0
    got = []
    while pos < len(buf):
        req = http_example.parse_request(buf, pos, 0)
        assert not isinstance(req, int)
        got.append(req.body.tobytes())
        pos += req.size
    assert got == bodies


def test_make_demo_style_process_answers() -> None:
    """The example runs as a program with --host/--port and stops on SIGINT."""
    import signal

    with socket.socket() as probe_sock:
        probe_sock.bind(("127.0.0.1", 0))
        port = probe_sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, str(http_example.__file__), "--host", "127.0.0.1",
                             "--port", str(port)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert "listening" in proc.stdout.readline()
        deadline = time.monotonic() + 10
        while True:
            try:
                status, body, _ = _get(port)
                break
            except ConnectionRefusedError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        assert status == 200 and body == b"Hello, World!"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
        proc.wait()


def test_body_arriving_after_headers_in_a_later_read(srv: RunningServer) -> None:
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        s.sendall(b"POST /echo HTTP/1.1\r\nContent-Length: 5\r\n\r\n")
        time.sleep(0.1)             # the parser sees the head alone first
        s.sendall(b"he")
        time.sleep(0.1)
        s.sendall(b"llo")
        data = s.recv(4096)
    assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"\r\n\r\nhello")
