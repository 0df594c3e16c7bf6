"""Counter fields (``zerg._native.counters``): the per-message ints of the
connection classes, kept as C integers with the extension.

What a user can see must not depend on it: the attributes are ints, start at
0, and count what they counted before (``bytes_in``, pending bytes, traffic).
With the extension the C hot path updates them without making an int object
per message, which ``benchmarks/allocations.py`` measures; here the layout is
checked: the classes derive from a ``zerg._speedups`` counters base and keep
the fields out of their own ``__slots__``.
"""

from __future__ import annotations

import gc
import weakref

import pytest
from conftest import recv_exact, serving, wait_for

import zerg
from zerg import _native
from zerg._connection import Connection
from zerg._inputpipe import InputPipe
from zerg._outputpipe import OutputPipe
from zerg._seam import Traffic

KEPT = {Connection: ("bytes_in",), InputPipe: ("head", "tail", "unread"),
        OutputPipe: ("bytes_out", "loans", "pending"),
        Traffic: ("bytes_out", "forward_copied", "forwarded", "sends")}


def test_a_counters_base_behaves_like_int_slots() -> None:
    base = _native.counters("Probe", ("a", "b"))

    class Probe(base):  # type: ignore[valid-type,misc]
        __slots__ = ("__weakref__", "c")

    p = Probe()
    assert (p.a, p.b) == (0, 0)
    p.a += 2**40
    p.b = -7
    p.c = [p]                                   # a cycle through a slot of the subclass
    assert (p.a, p.b) == (2**40, -7) and type(p.a) is int
    ref = weakref.ref(p)
    del p
    gc.collect()
    assert ref() is None
    if _native.speedups is not None:
        assert base.__module__ == "zerg._speedups"
        q = Probe()
        q.a = 5
        with pytest.raises(OverflowError):
            q.a = 2**64
        with pytest.raises(TypeError, match="takes an int, not str"):
            q.a = "1"
        with pytest.raises(TypeError, match="cannot be deleted"):
            del q.a
        assert q.a == 5                         # a refused value changes nothing
    else:
        assert base.__slots__ == ("a", "b")     # type: ignore[attr-defined]


@pytest.mark.parametrize("cls", list(KEPT))
def test_the_connection_classes_keep_their_counters_in_the_base(cls: type) -> None:
    names = KEPT[cls]
    own = set(cls.__dict__.get("__slots__", ()))
    assert not own & set(names)
    base = cls.__mro__[1]
    assert set(names) <= {n for n in dir(base) if not n.startswith("__")}
    if _native.speedups is not None:
        assert any(c.__module__ == "zerg._speedups" for c in cls.__mro__)


def test_counts_over_a_real_connection_agree_with_the_bytes() -> None:
    """bytes_in, pending bytes and the reactor's traffic after an echo of known
    sizes: the same numbers with the C counters as with the reference."""
    sizes = [1, 255, 256, 4096, 70_000]
    total = sum(sizes)
    seen: list[tuple[int, int]] = []

    async def echo(conn: zerg.Connection) -> None:
        got = 0
        while got < total:
            snap = await conn.read()
            if snap.is_closed:
                break
            while (item := conn.try_get_ring(snap)) is not None:
                conn.write(item.view)
                got += item.length
                conn.return_ring(item)
            conn.reset_read()
            await conn.flush()
        await conn.wait_sent()
        seen.append((conn.bytes_in, conn.pending_write_bytes))

    with serving(echo, reactor_count=1) as srv, srv.connect() as sock:
        for n in sizes:
            sock.sendall(b"x" * n)
            assert recv_exact(sock, n) == b"x" * n
        wait_for(lambda: bool(seen), what="the handler's counts")
        stats = srv.engine.stats()[0]
    assert seen == [(total, 0)]
    assert stats.bytes_in == stats.bytes_out == total
    assert 1 <= stats.sends <= len(sizes) * 20
