"""Hostile clients (issue 17): logs that cannot be used as a weapon, and a
deadline for connections that close while the peer does not read."""

from __future__ import annotations

import logging
import socket
import time

import pytest
from conftest import serving, wait_for

import zerg


def test_handler_errors_are_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    """50 connections whose handler raises: a handful of tracebacks, not 50."""
    async def handler(conn: zerg.Connection) -> None:
        await conn.read()
        raise ValueError("boom from a hostile request")

    caplog.set_level(logging.DEBUG, logger="zerg")
    with serving(handler) as srv:
        for _ in range(50):
            with srv.connect() as s:
                s.sendall(b"x")
                assert s.recv(10) == b""
    tracebacks = [r for r in caplog.records if r.exc_info and r.levelno >= logging.ERROR]
    assert 1 <= len(tracebacks) <= 10


def test_peer_resets_are_logged_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    async def handler(conn: zerg.Connection) -> None:
        await conn.read()
        raise ConnectionResetError(104, "Connection reset by peer")

    caplog.set_level(logging.DEBUG, logger="zerg")
    with serving(handler) as srv, srv.connect() as s:
        s.sendall(b"x")
        assert s.recv(10) == b""
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("the peer went away" in r.getMessage() for r in caplog.records)


def test_a_closing_connection_whose_peer_does_not_read_is_aborted() -> None:
    """close_timeout_s: the reply the peer never reads does not keep the fd and
    the send memory for ever."""
    async def handler(conn: zerg.Connection) -> None:
        await conn.read()
        for _ in range(256):                    # 8 MiB the peer will never read
            conn.write(b"z" * 32768)
        conn.close()

    cfg = zerg.ReactorConfig(close_timeout_s=0.5)
    with serving(handler, reactor=cfg) as srv:
        s = socket.create_connection(("127.0.0.1", srv.port))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(b"x")
        time.sleep(0.2)
        assert srv.engine.stats()[0].write_segments_in_use > 0     # stuck sending
        t0 = time.monotonic()
        wait_for(lambda: srv.engine.stats()[0].connections == 0, timeout=5,
                 what="the closing deadline")
        assert time.monotonic() - t0 < 3.0
        assert srv.engine.stats()[0].write_segments_in_use == 0
        s.close()


def test_close_timeout_is_validated() -> None:
    with pytest.raises(ValueError, match="close_timeout_s"):
        zerg.ReactorConfig(close_timeout_s=0)
    assert zerg.ReactorConfig(close_timeout_s=None).close_timeout_s is None
