"""Connection.write_eof: a TCP half-close after the staged bytes."""

from __future__ import annotations

import socket

from conftest import read_to_end, serving

import zerg
from zerg.adapters import PipeReader


def test_write_eof_sends_the_staged_bytes_then_the_end_and_keeps_reading() -> None:
    outcome: dict[str, object] = {}

    async def handler(conn: zerg.Connection) -> None:
        assert conn.can_write_eof()
        conn.write(b"x" * 200_000)          # more than one send: the EOF waits for them
        conn.write_eof()
        conn.write_eof()                    # idempotent
        try:
            conn.write(b"late")
        except BrokenPipeError as exc:
            outcome["late"] = str(exc)
        outcome["got"] = await read_to_end(PipeReader(conn))   # the peer still sends after our EOF

    class Proto(zerg.Protocol):
        def data_received(self, conn: zerg.Connection, seq: zerg.BufferSequence) -> None:
            conn.write(seq)
            conn.write_eof()

        def eof_received(self, conn: zerg.Connection) -> bool:
            return False

    for h in (handler, Proto()):
        with serving(h) as srv:
            s = srv.connect()
            if h is handler:
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
                assert data == b"x" * 200_000       # every byte, then the end
                s.sendall(b"after the server's eof")
                s.shutdown(socket.SHUT_WR)
            else:
                s.sendall(b"echo once")
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
                assert data == b"echo once"
            s.close()
    assert "write_eof" in str(outcome["late"])
    assert outcome["got"] == b"after the server's eof"
