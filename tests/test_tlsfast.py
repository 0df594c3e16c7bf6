"""The TLS layer's C fast path (native/tlsfast.c) against its Python reference.

With the extension, ``_TlsLayer``'s ``on_recv``, ``write`` and ``flush`` and
its ``pending_write_bytes`` getter are C; the Python methods stay the
reference.  Real TLS over real sockets does not split bytes the same way
twice, so traces are not compared.  Instead each random exchange runs with
the C methods and again with the reference swapped in, and both must
deliver every byte the client sent, echoed in order, through every kind of
write (``bytes`` -- the C path -- views, sequences, empty writes, several
writes per read, more than the write buffer holds).  The handler also reads
the C getter and the reference getter at the same moment and requires them
to agree.  A ``zerg.Protocol`` server runs the same exchanges.
"""

from __future__ import annotations

import contextlib
import inspect
import socket
import ssl
from collections.abc import Iterator
from typing import Any

import pytest
import trustme
from conftest import serving
from fastpath_check import run_with_extension, swapped
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import zerg
from zerg import _native
from zerg._tls import _TlsLayer
from zerg.adapters import PipeReader

METHODS = ("on_recv", "write", "flush")
GETTERS = ("pending_write_bytes",)
KINDS = ("bytes", "bytes", "view", "seq", "split", "empty+bytes", "bytearray")

_CA = trustme.CA()
_CERT = _CA.issue_cert("localhost", "127.0.0.1")


def server_ctx() -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    _CERT.configure_cert(ctx)
    return ctx


def client_ctx() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    _CA.configure_trust(ctx)
    return ctx


def reference_getter(name: str) -> Any:
    """The Python property the C getter replaced (the class's own without the extension)."""
    sp = _native.speedups
    return _TlsLayer.__dict__[name] if sp is None else sp.tls_reference(name)


@contextlib.contextmanager
def reference() -> Iterator[None]:
    """The Python methods back in ``_TlsLayer`` for the duration."""
    sp = _native.speedups
    assert sp is not None
    with contextlib.ExitStack() as stack:
        for name in METHODS + GETTERS:
            stack.enter_context(swapped(_TlsLayer, name, sp.tls_reference(name)))
        yield


def write_as(conn: zerg.Connection, kind: str, data: bytes, seq: zerg.BufferSequence) -> None:
    """Echo ``data`` (the bytes of ``seq``) with the write ``kind`` says."""
    if kind == "bytes":
        conn.write(data)
    elif kind == "view":
        conn.write(memoryview(data))
    elif kind == "seq":
        conn.write(seq)
    elif kind == "split":
        half = len(data) // 2
        conn.write(data[:half])
        conn.write(data[half:])
    elif kind == "empty+bytes":
        conn.write(b"")
        conn.write(data)
    else:
        conn.write(bytearray(data))


class Checks:
    """What the handlers saw: C getter and reference getter disagreements."""

    def __init__(self) -> None:
        self.getter = reference_getter("pending_write_bytes")
        self.mismatches: list[tuple[int, int]] = []

    def compare(self, conn: zerg.Connection) -> None:
        c = conn.pending_write_bytes
        ref = self.getter.__get__(conn)
        if c != ref:
            self.mismatches.append((c, ref))
        # Bytes spilled (refused by the plain write once encrypted) and written
        # before the handshake count too; both are rare, so they are set here
        # for a moment to compare the getters on them.
        st: Any = conn._tls      # type: ignore[attr-defined]
        saved = st.spill_bytes, st.early_bytes
        for spill, early in ((7, 0), (0, 11), (5, 3)):
            st.spill_bytes, st.early_bytes = spill, early
            c, ref = conn.pending_write_bytes, self.getter.__get__(conn)
            if c != ref:
                self.mismatches.append((c, ref))
        st.spill_bytes, st.early_bytes = saved


def echo_handler(plan: list[str], checks: Checks) -> Any:
    async def handler(conn: zerg.Connection) -> None:
        reader = PipeReader(conn)
        i = 0
        while True:
            res = await reader.read()
            buf = res.buffer
            if buf:
                checks.compare(conn)
                write_as(conn, plan[i % len(plan)], buf.tobytes(), buf)
                i += 1
                checks.compare(conn)
            reader.advance_to(len(buf))
            await conn.flush()
            checks.compare(conn)
            if res.is_completed:
                reader.complete()
                return
    return handler


class EchoProtocol(zerg.Protocol):
    def __init__(self, plan: list[str], checks: Checks) -> None:
        self.plan = plan
        self.checks = checks
        self.i = 0

    def data_received(self, conn: zerg.Connection, seq: zerg.BufferSequence) -> None:
        self.checks.compare(conn)
        write_as(conn, self.plan[self.i % len(self.plan)], seq.tobytes(), seq)
        self.i += 1
        self.checks.compare(conn)


def exchange(port: int, messages: list[bytes]) -> bytes:
    """Send each message and read its echo before the next, then end the
    TLS session.  Everything the server sent back."""
    got = bytearray()
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    with client_ctx().wrap_socket(raw, server_hostname="localhost") as s:
        for msg in messages:
            s.sendall(msg)
            want = len(got) + len(msg)
            while len(got) < want:
                chunk = s.recv(65536)
                assert chunk, "the server ended the stream early"
                got += chunk
        plain = s.unwrap()          # close_notify both ways
        plain.close()
    return bytes(got)


def run(messages: list[bytes], plan: list[str], protocol: bool) -> Checks:
    checks = Checks()
    handler: Any = EchoProtocol(plan, checks) if protocol else echo_handler(plan, checks)
    # Small segments: replies and records span them.
    cfg = zerg.ReactorConfig(write_buffer_size=4096)
    with serving(handler, ssl=server_ctx(), reactor=cfg) as srv:
        got = exchange(srv.port, messages)
    assert got == b"".join(messages)
    return checks


def pattern(n: int, seed: int) -> bytes:
    return bytes((i * 7 + seed) & 0xFF for i in range(n))


# Sizes across the record size (16 KiB) and the write buffer (32 KiB): small
# replies, whole records, several records per message, the spill.
messages = st.one_of(
    st.binary(min_size=1, max_size=64),
    st.builds(pattern, st.integers(65, 40_000), st.integers(0, 255)),
)
exchanges = st.tuples(
    st.lists(messages, min_size=1, max_size=5),
    st.lists(st.sampled_from(KINDS), min_size=1, max_size=4),
    st.booleans(),
)


@settings(max_examples=15, deadline=None, print_blob=False,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(exchanges)
def test_c_tls_layer_and_reference_echo_every_byte(case: tuple[list[bytes], list[str],
                                                               bool]) -> None:
    messages, plan, protocol = case
    checks = run(messages, plan, protocol)
    assert checks.mismatches == []
    if _native.speedups is not None:
        with reference():
            checks = run(messages, plan, protocol)
        assert checks.mismatches == []


def test_the_tls_layer_methods_are_c_with_the_extension() -> None:
    want_m, want_g = (("function", "property") if _native.speedups is None
                      else ("method_descriptor", "getset_descriptor"))
    for name in METHODS:
        assert type(inspect.getattr_static(_TlsLayer, name)).__name__ == want_m, name
    for name in GETTERS:
        assert type(inspect.getattr_static(_TlsLayer, name)).__name__ == want_g, name


@pytest.mark.parametrize("protocol", [False, True])
def test_a_record_split_across_receives_and_records_together(protocol: bool) -> None:
    """The C on_recv's cases other than "one whole record": part of a record
    (nothing to read yet), then the rest with the next records in one
    receive (more than one record: its continuation in Python)."""
    checks = Checks()
    plan = ["bytes"]
    handler: Any = EchoProtocol(plan, checks) if protocol else echo_handler(plan, checks)
    with serving(handler, ssl=server_ctx()) as srv:
        ctx = client_ctx()
        raw = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
        while True:                     # the handshake by hand, over the socket
            try:
                obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                raw.sendall(outgoing.read())
                incoming.write(raw.recv(65536))
        raw.sendall(outgoing.read())
        records = []
        for text in (b"first", b"second", b"third"):
            obj.write(text)
            records.append(outgoing.read())
        first = records[0]
        raw.sendall(first[:3])                      # a part of the first record
        raw.sendall(first[3:] + records[1] + records[2])    # its rest and two more
        want = b"firstsecondthird"
        got = b""
        while len(got) < len(want):
            data = raw.recv(65536)
            assert data
            incoming.write(data)
            while True:
                try:
                    got += obj.read(65536)
                except ssl.SSLWantReadError:
                    break
        assert got == want
        raw.close()
    assert checks.mismatches == []


def test_the_comparison_runs_with_the_extension() -> None:
    """Under ZERG_NO_EXTENSIONS=1 the comparisons above run in a child with it."""
    if _native.speedups is None:
        run_with_extension(__file__, passed=5)
