"""examples/frames.py (issue 14): length-prefixed frames split at every
awkward boundary, pipelined, oversized."""

from __future__ import annotations

import socket
import threading
import time

from conftest import recv_exact, recv_until_closed, serving
from examples_loader import load_example

frames = load_example("frames")


def _frame(payload: bytes) -> bytes:
    return len(payload).to_bytes(4, "big") + payload


def test_frames_split_at_every_boundary_are_echoed_whole() -> None:
    """The wire of three frames (an empty one included) cut at every byte
    offset: inside a length, between length and payload, inside a payload."""
    wire = _frame(b"abc") + _frame(b"") + _frame(b"0123456789")
    with serving(frames.handle) as srv:
        for cut in range(1, len(wire)):
            with srv.connect() as s:
                s.sendall(wire[:cut])
                time.sleep(0.002)                   # the server sees the first part alone
                s.sendall(wire[cut:])
                assert recv_exact(s, len(wire)) == wire, cut


def test_a_byte_at_a_time_and_large_frames() -> None:
    big = bytes(range(256)) * 2048                   # 512 KiB: many receive slots
    wire = _frame(b"x") + _frame(big) + _frame(b"end")
    with serving(frames.handle) as srv, srv.connect() as s:
        for i in range(12):                          # the first frame and a length, bytewise
            s.sendall(wire[i:i + 1])
            time.sleep(0.001)
        sender = threading.Thread(target=s.sendall, args=(wire[12:],))
        sender.start()
        assert recv_exact(s, len(wire)) == wire
        sender.join()


def test_pipelined_frames_are_answered_in_order_with_bounded_staging() -> None:
    wire = b"".join(_frame(b"%d" % i * (i % 50)) for i in range(20_000))
    with serving(frames.handle) as srv, srv.connect() as s:
        def send() -> None:
            s.sendall(wire)
            s.shutdown(socket.SHUT_WR)

        sender = threading.Thread(target=send)
        sender.start()
        time.sleep(0.2)                              # replies pile up; the server waits
        got = recv_until_closed(s)
        sender.join()
    assert got == wire


def test_an_oversized_frame_closes_the_connection() -> None:
    with serving(frames.handle) as srv, srv.connect() as s:
        s.sendall(_frame(b"ok") + (frames.MAX_FRAME + 1).to_bytes(4, "big") + b"x" * 100)
        assert recv_until_closed(s) == _frame(b"ok")
