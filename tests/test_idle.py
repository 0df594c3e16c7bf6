"""What an idle connection keeps (scenario C1: servers hold 10,000s of them).

Over real sockets: each connection echoes once, then waits.  The Python
objects the server made for the idle connections are counted by type, per
connection, so a change that keeps one more object per connection -- a
closure, a bound method, a copied context -- fails here, not just as a
number in ``make bench``.  Object counts, not bytes: they are the same on
every CPython version.
"""

from __future__ import annotations

import collections
import gc
import socket
import time

from conftest import RunningServer, echo_handler, serving, wait_for

import zerg
from zerg import _native

N = 40
# A small receive ring, so that the warm-up uses every slot: a slot's
# memoryview is made on its first receive and kept for the reactor's life.
SMALL_RING = zerg.ReactorConfig(buffer_ring_entries=64)


class Echo(zerg.Protocol):
    def data_received(self, conn: zerg.Connection, seq: zerg.BufferSequence) -> None:
        conn.write(seq)


def _echo(s: socket.socket) -> socket.socket:
    s.sendall(b"x" * 64)
    got = b""
    while len(got) < 64:
        chunk = s.recv(64 - len(got))
        assert chunk
        got += chunk
    return s


def _echo_once(port: int) -> socket.socket:
    return _echo(socket.create_connection(("127.0.0.1", port), timeout=10))


def _types() -> collections.Counter[str]:
    gc.collect()
    return collections.Counter(type(o).__name__ for o in gc.get_objects())


def per_idle_connection(srv: RunningServer) -> dict[str, float]:
    """The gc-tracked objects N more idle connections added, per connection,
    by type (after a warm-up that made the server's shared objects)."""
    warm = [_echo_once(srv.port) for _ in range(N)]
    for _ in range(3):
        for s in warm:
            _echo(s)
    time.sleep(0.1)
    before = _types()
    socks = [_echo_once(srv.port) for _ in range(N)]
    wait_for(lambda: srv.engine.stats()[0].connections == 2 * N, what="the connections")
    time.sleep(0.1)
    after = _types()
    after.subtract(before)
    for s in warm + socks:
        s.close()
    # The client's own sockets live in this process too.
    after["socket"] -= N
    return {k: v / N for k, v in after.items() if v / N >= 0.5}


def test_an_idle_protocol_connection_keeps_its_connection_and_output_pipe() -> None:
    with serving(Echo(), reactor=SMALL_RING) as srv:
        got = per_idle_connection(srv)
    # The output pipe (from the echo) and its staged list; no input pipe,
    # nothing bound or copied per connection.
    assert got["ProtocolConnection"] == 1 and got["OutputPipe"] == 1, got
    assert round(got["list"]) == 1, got
    for kind in ("InputPipe", "function", "cell", "method", "Context", "Future", "memoryview"):
        assert kind not in got, got


def test_an_idle_handler_connection_keeps_no_closure_or_context_of_its_own() -> None:
    with serving(echo_handler, reactor=SMALL_RING) as srv:
        got = per_idle_connection(srv)
    # The Task's own context is the only one; its done callback is the
    # strategy's, bound once, run in the strategy's context.  With the
    # extension the task is a ConnTask, and the waiting read's ReadWaiter
    # keeps it itself: no bound wake-up method either.
    for kind in ("function", "cell", "method"):
        assert kind not in got, got
    task = "ConnTask" if _native.speedups is not None else "Task"
    assert got.get("Context") == 1 and got.get(task) == 1, got
    if _native.speedups is not None:
        assert "builtin_function_or_method" not in got, got
    assert got["Connection"] == 1 and got["InputPipe"] == 1 and got["OutputPipe"] == 1, got
