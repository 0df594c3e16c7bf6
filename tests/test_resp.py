"""examples/resp.py through real sockets, hypothesis, and real Redis clients."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import pty
import random
import re
import select
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from conftest import ErrorLog, RunningServer, recv_exact, recv_until_closed, serving, wait_for
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import zerg

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "resp.py"


def _load_example() -> ModuleType:
    """examples/ is not a package: load resp.py from its path."""
    spec = importlib.util.spec_from_file_location("zerg_example_resp", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


resp = _load_example()


# -- a small RESP client for the raw-socket tests -------------------------------------------

@dataclass(frozen=True)
class Err:
    message: str


def encode(*args: bytes | str | int) -> bytes:
    parts = [a if isinstance(a, bytes) else str(a).encode() for a in args]
    return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%b\r\n" % (len(p), p) for p in parts)


class Client:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()

    def _fill(self) -> None:
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError(f"server closed; unparsed: {bytes(self.buf)!r}")
        self.buf += chunk

    def _line(self) -> bytes:
        while (i := self.buf.find(b"\r\n")) < 0:
            self._fill()
        line = bytes(self.buf[:i])
        del self.buf[: i + 2]
        return line

    def reply(self) -> Any:
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            return Err(rest.decode("latin-1"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n == -1:
                return None
            while len(self.buf) < n + 2:
                self._fill()
            assert self.buf[n : n + 2] == b"\r\n"
            data = bytes(self.buf[:n])
            del self.buf[: n + 2]
            return data
        if kind == b"*":
            n = int(rest)
            return None if n == -1 else [self.reply() for _ in range(n)]
        raise AssertionError(f"not a RESP reply: {line!r}")

    def call(self, *args: bytes | str | int) -> Any:
        self.sock.sendall(encode(*args))
        return self.reply()

    def closed(self) -> bool:
        """True if the server closed the connection (and sent nothing more)."""
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True


_errors = ErrorLog()


@contextlib.contextmanager
def _serve(**options: Any) -> Iterator[RunningServer]:
    log = logging.getLogger("zerg")
    log.addHandler(_errors)
    try:
        with serving(resp.handle, **options) as srv:
            yield srv
            # Every connection closed; every receive slot and write segment went back.
            wait_for(lambda: srv.engine.stats()[0].connections == 0, what="all closed")
            stats = srv.engine.stats()[0]
            assert (stats.slots_in_use, stats.write_segments_in_use) == (0, 0), stats
    finally:
        log.removeHandler(_errors)


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    with _serve() as srv:
        yield srv


@pytest.fixture(scope="module")
def small_write_buffer_server() -> Iterator[RunningServer]:
    """max_write_buffer 256 KiB: one read of pipelined commands has more replies."""
    with _serve(reactor=zerg.ReactorConfig(max_write_buffer=256 * 1024)) as srv:
        yield srv


@pytest.fixture(autouse=True)
def _no_handler_errors() -> Iterator[None]:
    yield
    records, _errors.records = _errors.records, []
    assert not records, [r.getMessage() for r in records]


@pytest.fixture
def client(server: RunningServer) -> Iterator[Client]:
    with server.connect() as sock:
        yield Client(sock)


# -- commands -------------------------------------------------------------------------------

def test_ping_and_echo(client: Client) -> None:
    client.sock.sendall(b"*1\r\n$4\r\nPING\r\n")
    assert recv_exact(client.sock, 7) == b"+PONG\r\n"
    assert client.call("ping", "hello") == b"hello"
    assert client.call("ECHO", "zerg") == b"zerg"


def test_inline_commands(client: Client) -> None:
    client.sock.sendall(b"PING\r\n\r\nset inline:k  v1\r\nGET inline:k\nping hi\r\n")
    assert [client.reply() for _ in range(4)] == ["PONG", "OK", b"v1", b"hi"]


def test_set_get_del_exists(client: Client) -> None:
    assert client.call("GET", "sg:a") is None
    assert client.call("SET", "sg:a", "1") == "OK"
    assert client.call("SET", "sg:b", "2") == "OK"
    assert client.call("GET", "sg:a") == b"1"
    assert client.call("EXISTS", "sg:a", "sg:b", "sg:none", "sg:a") == 3
    assert client.call("DEL", "sg:a", "sg:none", "sg:a") == 1
    assert client.call("GET", "sg:a") is None
    assert client.call("exists", "sg:a") == 0
    assert client.call("get", "sg:b") == b"2"


def test_set_options(client: Client) -> None:
    assert client.call("SET", "so:k", "1", "NX") == "OK"
    assert client.call("SET", "so:k", "2", "nx") is None
    assert client.call("SET", "so:other", "2", "XX") is None
    assert client.call("SET", "so:k", "3", "XX", "EX", "100") == "OK"
    assert client.call("GET", "so:k") == b"3"
    assert client.call("SET", "so:k", "4", "NX", "XX") == Err("ERR syntax error")
    assert client.call("SET", "so:k", "4", "EX", "1", "PX", "5") == Err("ERR syntax error")
    assert client.call("SET", "so:k", "4", "EX") == Err("ERR syntax error")
    assert client.call("SET", "so:k", "4", "BOGUS") == Err("ERR syntax error")
    assert client.call("SET", "so:k", "4", "EX", "x") == Err(
        "ERR value is not an integer or out of range")
    assert client.call("SET", "so:k", "4", "PX", "0") == Err(
        "ERR invalid expire time in 'set' command")
    assert client.call("GET", "so:k") == b"3"


def test_incr(client: Client) -> None:
    assert client.call("INCR", "in:n") == 1
    assert client.call("incr", "in:n") == 2
    assert client.call("SET", "in:n", "41") == "OK"
    assert client.call("INCR", "in:n") == 42
    assert client.call("GET", "in:n") == b"42"
    assert client.call("SET", "in:neg", "-5") == "OK"
    assert client.call("INCR", "in:neg") == -4
    not_int = Err("ERR value is not an integer or out of range")
    for bad in ["abc", "1.5", " 1", "+1", "01", "", "99999999999999999999"]:
        assert client.call("SET", "in:bad", bad) == "OK"
        assert client.call("INCR", "in:bad") == not_int, bad
    assert client.call("SET", "in:max", str(2**63 - 1)) == "OK"
    assert client.call("INCR", "in:max") == Err("ERR increment or decrement would overflow")


def test_mget_mset(client: Client) -> None:
    assert client.call("MSET", "ms:a", "1", "ms:b", "2") == "OK"
    assert client.call("MGET", "ms:a", "ms:none", "ms:b") == [b"1", None, b"2"]
    assert client.call("MSET", "ms:a", "1", "ms:b") == Err(
        "ERR wrong number of arguments for 'mset' command")


def test_expiry_is_lazy_and_exact(client: Client) -> None:
    assert client.call("SET", "ex:px", "v", "PX", "50") == "OK"
    assert client.call("SET", "ex:ex", "v", "EX", "100") == "OK"
    assert client.call("SET", "ex:cleared", "v", "PX", "50") == "OK"
    assert client.call("SET", "ex:cleared", "w") == "OK"  # a plain SET drops the TTL
    time.sleep(0.1)
    assert client.call("GET", "ex:px") is None
    assert client.call("EXISTS", "ex:px") == 0
    assert client.call("GET", "ex:ex") == b"v"
    assert client.call("GET", "ex:cleared") == b"w"
    assert client.call("SET", "ex:n", "1", "PX", "400") == "OK"
    assert client.call("INCR", "ex:n") == 2  # INCR keeps the TTL
    time.sleep(0.45)
    assert client.call("MGET", "ex:n", "ex:ex") == [None, b"v"]


def test_command_config_and_quit(client: Client) -> None:
    assert client.call("COMMAND") == []
    assert client.call("COMMAND", "DOCS") == []
    assert client.call("COMMAND", "COUNT") == len(resp.COMMANDS) + 1
    assert client.call("CONFIG", "GET", "save") == [b"save", b""]
    assert client.call("CONFIG", "GET", "appendonly") == [b"appendonly", b"no"]
    assert client.call("CONFIG", "GET", "nothing*") == []
    client.sock.sendall(b"PING\r\n" + encode("QUIT") + encode("PING"))
    assert client.reply() == "PONG"
    assert client.reply() == "OK"
    assert client.closed()


def test_unknown_command(client: Client) -> None:
    assert client.call("FOO", "a", "b") == Err(
        "ERR unknown command 'FOO', with args beginning with: 'a' 'b' ")
    assert client.call("nope") == Err("ERR unknown command 'nope', with args beginning with: ")
    # Client bytes never break the reply line.
    assert client.call(b"x\r\ny", b"\r\n") == Err(
        "ERR unknown command 'x  y', with args beginning with: '  ' ")
    many = client.call("FOO", *[b"x" * 200] * 10_000)  # the message stays short
    assert many == Err("ERR unknown command 'FOO', with args beginning with: '"
                       + "x" * 128 + "' ")
    assert client.call("PING") == "PONG"


@pytest.mark.parametrize("args", [
    ("GET",), ("GET", "a", "b"), ("SET", "k"), ("ECHO",), ("INCR",), ("DEL",),
    ("EXISTS",), ("MGET",), ("MSET", "k"), ("PING", "a", "b"),
])
def test_wrong_arity(client: Client, args: tuple[str, ...]) -> None:
    name = args[0].lower()
    assert client.call(*args) == Err(f"ERR wrong number of arguments for '{name}' command")
    assert client.call("PING") == "PONG"


# -- framing: pipelining, bad frames, limits, binary data ------------------------------------

def test_pipeline_of_1000_commands_in_random_chunks(client: Client) -> None:
    rng = random.Random(20240607)
    model: dict[bytes, bytes] = {}
    frames: list[bytes] = []
    expected: list[Any] = []
    for i in range(1000):
        key = b"pl:%d" % rng.randrange(50)
        op = rng.randrange(6)
        if op == 0:
            value = rng.randbytes(rng.randrange(40))
            frames.append(encode("SET", key, value))
            model[key] = value
            expected.append("OK")
        elif op == 1:
            frames.append(encode("GET", key))
            expected.append(model.get(key))
        elif op == 2:
            frames.append(encode("INCR", b"pl:counter"))
            count = int(model.get(b"pl:counter", b"0")) + 1
            model[b"pl:counter"] = b"%d" % count
            expected.append(count)
        elif op == 3:
            frames.append(b"PING\r\n" if rng.random() < 0.5 else encode("PING"))
            expected.append("PONG")
        elif op == 4:
            frames.append(encode("ECHO", b"%d" % i))
            expected.append(b"%d" % i)
        else:
            keys = [b"pl:%d" % rng.randrange(50) for _ in range(3)]
            frames.append(encode("MGET", *keys))
            expected.append([model.get(k) for k in keys])
    data = b"".join(frames)
    client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    pos = 0
    while pos < len(data):
        size = rng.choice([1, 1, 1, 2, 3, 5, 8, 13, 64, 500, 4096])
        client.sock.sendall(data[pos : pos + size])
        pos += size
        if rng.random() < 0.02:
            time.sleep(0.001)  # let the server read a partial frame
    assert [client.reply() for _ in range(1000)] == expected


@pytest.mark.parametrize("fixture", ["server", "small_write_buffer_server"])
def test_200k_pipelined_commands_all_answered_in_order(
        fixture: str, request: pytest.FixtureRequest) -> None:
    """Far more replies than may be staged at once: the handler stops parsing past the
    high-water mark, flushes, and parses on; every reply arrives, in order, none cut."""
    server: RunningServer = request.getfixturevalue(fixture)
    value = bytes(range(100))
    with server.connect() as sock:
        assert Client(sock).call("SET", "pipe:v", value) == "OK"
    n = 200_000
    echoed = range(0, n, 997)  # ECHO their own index
    frames = [encode("PING"), encode("GET", "pipe:v")] * (n // 2)
    replies = [b"+PONG\r\n", b"$100\r\n%b\r\n" % value] * (n // 2)
    for i in echoed:
        frames[i] = encode("ECHO", i)
        replies[i] = b"$%d\r\n%d\r\n" % (len(b"%d" % i), i)
    with server.connect(timeout=30) as sock:
        def send() -> None:
            sock.sendall(b"".join(frames))
            sock.shutdown(socket.SHUT_WR)  # the server answers all, then hangs up

        sender = threading.Thread(target=send)
        started = time.monotonic()
        sender.start()
        time.sleep(0.2)  # replies pile up: the server must wait, then go on
        try:
            data = recv_until_closed(sock)
        finally:
            sender.join()
        elapsed = time.monotonic() - started
    expected = b"".join(replies)
    assert len(data) == len(expected), f"{data.count(b'+PONG')} PONGs of {n // 2}"
    assert data == expected
    assert elapsed < 20, elapsed


@pytest.mark.parametrize("frame, reason", [
    (b"*abc\r\n", "invalid multibulk length"),
    (b"*-2\r\n", "invalid multibulk length"),
    (b"*+1\r\n", "invalid multibulk length"),
    (b"* 1\r\n", "invalid multibulk length"),
    (b"*%d\r\n" % (1024 * 1024 + 1), "invalid multibulk length"),
    (b"*1\r\n:5\r\n", "expected '$', got ':'"),
    (b"*2\r\n$4\r\nECHO\r\n*1\r\n$1\r\na\r\n", "expected '$', got '*'"),
    (b"*1\r\n$x\r\n", "invalid bulk length"),
    (b"*1\r\n$-1\r\n", "invalid bulk length"),
    (b"*1\r\n$\r\n", "invalid bulk length"),
    (b"*1\r\n$4\r\nPINGxx\r\n", "bulk length does not match"),
    (b"*1\r\n$2\r\nPING\r\n", "bulk length does not match"),
])
def test_malformed_frames_get_protocol_error_then_close(
        client: Client, frame: bytes, reason: str) -> None:
    client.sock.sendall(encode("PING") + frame)  # what came before is still answered
    assert client.reply() == "PONG"
    reply = client.reply()
    assert isinstance(reply, Err) and reply.message.startswith("ERR Protocol error: ")
    assert reason in reply.message
    assert client.closed()


@pytest.mark.parametrize("frame, reason", [
    (b"*1\r\n$%d\r\n" % (64 * 1024 * 1024 + 1), "invalid bulk length"),
    (b"*1\r\n$99999999999999999999999\r\n", "invalid bulk length"),
    (b"PING" * 20000, "too big inline request"),
    (b"*1" + b"1" * 70000, "too big count string"),
])
def test_oversized_input_is_rejected(client: Client, frame: bytes, reason: str) -> None:
    client.sock.sendall(frame)
    reply = client.reply()
    assert reply == Err(f"ERR Protocol error: {reason}")
    assert client.closed()


@pytest.mark.parametrize("frames, replies", [
    (b"ECHO split-line\r\n", [b"split-line"]),
    (encode("ECHO", b"a\r\nb") + encode("SET", "split:k", "v") + encode("GET", "split:k"),
     [b"a\r\nb", "OK", b"v"]),
])
def test_every_byte_in_its_own_read(client: Client, frames: bytes, replies: list[Any]) -> None:
    # Every split point, "\r" | "\n" included, falls between two reads of the server.
    client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for ch in frames:
        client.sock.sendall(bytes([ch]))
        time.sleep(0.001)
    assert [client.reply() for _ in replies] == replies


def test_binary_safe_keys_and_values(client: Client) -> None:
    every_byte = bytes(range(256))
    assert client.call("SET", every_byte, every_byte + b"\r\n$3\r\n*1\r\n") == "OK"
    assert client.call("GET", every_byte) == every_byte + b"\r\n$3\r\n*1\r\n"
    big = random.Random(7).randbytes(1024 * 1024)
    assert client.call("SET", "bin:1mib", big) == "OK"
    assert client.call("GET", "bin:1mib") == big
    assert client.call("SET", "bin:empty", b"") == "OK"
    assert client.call("GET", "bin:empty") == b""


def test_value_larger_than_the_receive_ring(client: Client) -> None:
    # 20 MiB is more than every receive slot together (1024 x 16 KiB): the parser must
    # stream it out of the slots, and the reply goes out in pieces.
    big = random.Random(11).randbytes(20 * 1024 * 1024)
    assert client.call("SET", "bin:20mib", big) == "OK"
    assert client.call("STRLEN-IS-NOT-SUPPORTED") == Err(
        "ERR unknown command 'STRLEN-IS-NOT-SUPPORTED', with args beginning with: ")
    assert client.call("GET", "bin:20mib") == big
    assert client.call("DEL", "bin:20mib") == 1


def test_many_clients_mid_value_do_not_drain_the_receive_ring(server: RunningServer) -> None:
    # 100 clients x 200 KB half-sent values would hold 20 MB of receive slots (more than
    # the ring has) if the parser kept them until each value was whole.
    size, socks = 200_000, []
    try:
        for i in range(100):
            sock = server.connect()
            sock.sendall(encode("SET", b"mid:%d" % i, b"v" * size)[:-1000])
            socks.append(sock)
        with server.connect(timeout=5) as sock:
            assert Client(sock).call("PING") == "PONG"
        for i, sock in enumerate(socks):
            sock.sendall(encode("SET", b"mid:%d" % i, b"v" * size)[-1000:])
        assert [Client(sock).reply() for sock in socks] == ["OK"] * 100
    finally:
        for sock in socks:
            sock.close()
    with server.connect() as sock:
        assert Client(sock).call("EXISTS", *[b"mid:%d" % i for i in range(100)]) == 100


def test_command_with_100k_arguments_is_linear(client: Client) -> None:
    keys = [b"many:%d" % i for i in range(100_000)]
    data = encode("EXISTS", *keys)
    started = time.monotonic()
    for i in range(0, len(data), 1000):  # many reads while the command is incomplete
        client.sock.sendall(data[i : i + 1000])
    assert client.reply() == 0
    assert time.monotonic() - started < 10


# -- no input crashes the server ------------------------------------------------------------

_TOKENS = st.sampled_from([
    b"*", b"$", b"\r\n", b"\n", b"\r", b"-", b"+", b":", b" ", b"k", b"\x00", b"\xff",
    b"PING", b"SET", b"GET", b"INCR", b"MGET", b"MSET", b"DEL", b"ECHO", b"EX", b"PX", b"NX",
    b"QUIT", b"COMMAND", b"CONFIG", b"99999999999999999999",
])
_PIECE = st.one_of(
    _TOKENS,
    st.binary(max_size=4),
    st.integers(-3, 5).map(lambda n: b"*%d\r\n" % n),  # RESP-shaped, right or wrong
    st.integers(-3, 8).map(lambda n: b"$%d\r\n" % n),
    st.integers(-3, 3).map(lambda n: b"%d" % n),
    st.tuples(st.sampled_from([b"*", b"$"]), st.one_of(_TOKENS, st.binary(max_size=3)))
    .map(lambda t: t[0] + t[1] + b"\r\n"),  # a length line with junk for a length
)
_GARBAGE = st.one_of(
    st.binary(max_size=400),
    st.lists(_PIECE, max_size=40).map(b"".join),
)


@settings(max_examples=50, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(garbage=_GARBAGE)
def test_random_bytes_never_crash_the_server(server: RunningServer, garbage: bytes) -> None:
    with server.connect(timeout=5) as sock:
        sock.sendall(garbage)
        sock.shutdown(socket.SHUT_WR)  # the server answers what it can, then hangs up
        client = Client(sock)
        try:
            while True:
                client.reply()  # whatever comes back is well-formed RESP
        except ConnectionError:
            assert not client.buf, f"a partial reply: {bytes(client.buf)!r}"
    with server.connect() as sock:
        assert Client(sock).call("PING") == "PONG"
    records, _errors.records = _errors.records, []
    assert not records, [r.getMessage() for r in records]


# -- real clients -------------------------------------------------------------------------

def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: run `make test`, which installs redis-tools")
    return path


def _cli(server: RunningServer, *args: str) -> str:
    out = subprocess.run([_tool("redis-cli"), "-p", str(server.port), *args],
                         capture_output=True, text=True, timeout=10, check=True)
    return out.stdout.strip()


def test_redis_cli_commands(server: RunningServer) -> None:
    assert _cli(server, "ping") == "PONG"
    assert _cli(server, "set", "cli:k", "v") == "OK"
    assert _cli(server, "get", "cli:k") == "v"
    assert _cli(server, "incr", "cli:n") == "1"
    assert _cli(server, "incr", "cli:n") == "2"
    assert _cli(server, "get", "cli:none") == ""
    assert "unknown command" in _cli(server, "frobnicate")


def test_redis_cli_interactive(server: RunningServer) -> None:
    """An interactive redis-cli (on a pty) asks COMMAND DOCS first, then works."""
    master, slave = pty.openpty()
    env = {**os.environ, "TERM": "dumb", "HOME": "/nonexistent"}
    proc = subprocess.Popen([_tool("redis-cli"), "-p", str(server.port)],
                            stdin=slave, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    out = b""

    def expect(text: bytes) -> None:
        nonlocal out
        deadline = time.monotonic() + 10
        while text not in out:
            assert time.monotonic() < deadline, f"no {text!r} in {out!r}"
            if select.select([master], [], [], 0.1)[0]:
                out += os.read(master, 4096)

    try:
        for line, answer in [(b"set tty:k tty-v", b"OK"), (b"get tty:k", b'"tty-v"'),
                             (b"incr tty:n", b"(integer) 1")]:
            os.write(master, line + b"\r")
            expect(answer)
        os.write(master, b"quit\r")
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)


def test_redis_benchmark_runs_without_errors(server: RunningServer) -> None:
    cmd = [_tool("redis-benchmark"), "-p", str(server.port), "-q", "-n", "20000", "-c", "20",
           "-P", "16", "-t", "set,get,incr,ping"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    # -q prints "SET: 123456.79 requests per second, p50=..." after \r-separated progress.
    lines = [ln.strip() for ln in re.split(r"[\r\n]+", output) if ln.strip()]
    assert not [ln for ln in lines if "error" in ln.lower() or "ERR" in ln], output
    rates = {m[1]: float(m[2]) for ln in lines
             if (m := re.match(r"([A-Z_]+): ([0-9.]+) requests per second", ln))}
    for test in ("SET", "GET", "INCR", "PING_INLINE", "PING_MBULK"):
        assert rates.get(test, 0) > 0, output
