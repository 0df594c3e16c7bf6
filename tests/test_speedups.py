"""The C extension against its Python reference (``ZERG_NO_EXTENSIONS``).

The whole suite runs twice (``make test``): with ``zerg._speedups`` and with
``ZERG_NO_EXTENSIONS=1``.  Here the switch itself is checked, and hypothesis
drives the C ``RecvSlots`` and the Python ``RecvSlots`` with the same random,
valid operations on two real rings and compares every result.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zerg import _native
from zerg._recvslots import IncrementalRecvSlots, RecvSlots
from zerg._ring import CQE_F_BUF_MORE, Ring
from zerg._slab import SlabPool

SLOTS = 8
SLOT = 256


def test_switch_selects_the_implementation() -> None:
    """ZERG_NO_EXTENSIONS=1 runs the reference; otherwise the extension is used."""
    asked = os.environ.get("ZERG_NO_EXTENSIONS", "") not in ("", "0")
    assert (_native.speedups is None) == asked
    probe = ("import zerg._native as n, zerg._recvslots as r, zerg._ring as g, zerg._slab as s;"
             "ring = g.Ring(8); pool = s.SlabPool(256, 8, 512);"
             "print(type(r.RecvSlots.create(ring, pool, incremental=False)).__module__)")
    for value, want in (("1", "zerg._recvslots"), ("", "zerg._speedups")):
        env = dict(os.environ, ZERG_NO_EXTENSIONS=value)
        out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True,
                             text=True, check=True, timeout=60)
        assert out.stdout.strip() == want


@contextlib.contextmanager
def _pair(incremental: bool) -> Iterator[tuple[Any, Any]]:
    """A C and a Python RecvSlots, each on its own real ring and region
    (the rings closed on the way out)."""
    from zerg import _speedups

    rings: list[Ring] = []
    made: list[Any] = []
    try:
        for native in (True, False):
            ring = Ring(8)
            rings.append(ring)
            pool = SlabPool(SLOT, SLOTS, 512)
            ring.setup_buffer_ring(0, SLOTS, pool.recv_base, SLOT, incremental=incremental)
            if native:
                made.append(_speedups.RecvSlots(ring_address=ring.address, owner=ring,
                                                recv_view=pool.recv_view, slot_size=SLOT,
                                                total=SLOTS, incremental=incremental))
            else:
                made.append(IncrementalRecvSlots(ring, pool) if incremental
                            else RecvSlots(ring, pool))
        yield made[0], made[1]
    finally:
        for ring in rings:
            ring.close()


def _same(c: Any, py: Any) -> None:
    for name in ("out", "bytes_in", "shared_cqes", "in_use", "returns_pending",
                 "keys_are_slots", "total", "slot_size", "pinned"):
        assert getattr(c, name) == getattr(py, name), name


ops = st.lists(st.tuples(st.sampled_from(["cqe", "cqe", "cqe", "give", "flush", "park",
                                          "pin", "unpin"]),
                         st.integers(-110, SLOT // 2), st.booleans(), st.integers(0, 1000)),
               max_size=60)


@settings(max_examples=120, deadline=None)
@given(st.booleans(), ops)
def test_c_and_python_recv_slots_agree(incremental: bool,
                                       script: list[tuple[str, int, bool, int]]) -> None:
    with _pair(incremental) as (c, py):
        kernel_free = list(range(SLOTS))     # slots the kernel may fill
        filling: int | None = None           # incremental: the slot the kernel is filling
        keys: list[int] = []                 # keys the application holds
        pins: list[int] = []                 # keys a send reads (Connection.forward)
        used: dict[int, int] = {}            # incremental: bytes the kernel filled per slot
        sink = object()
        for op, res, more, pick in script:
            if op == "cqe":
                if filling is not None:
                    bid = filling
                elif kernel_free:
                    bid = kernel_free.pop(pick % len(kernel_free))
                else:
                    continue
                if incremental:         # the kernel never fills past a slot's end
                    room = SLOT - used.get(bid, 0)
                    res = min(res, room)
                    more = more and 0 < res < room
                    used[bid] = used.get(bid, 0) + max(res, 0)
                    if not more:
                        used.pop(bid, None)
                else:
                    more = False
                flags = CQE_F_BUF_MORE if more else 0
                filling = bid if more else None
                kc, kp = c.on_cqe(res, flags, bid), py.on_cqe(res, flags, bid)
                assert kc == kp
                if kc is not None:
                    keys.append(kc)
                    assert c.slot_of(kc) == py.slot_of(kc) == bid
                    assert len(c.view(kc, res)) == len(py.view(kc, res)) == res
                    assert c.view(kc, res).readonly
            elif op == "give" and keys:
                key = keys.pop(pick % len(keys))
                c.give_back(key)
                py.give_back(key)
            elif op == "pin" and keys:
                key = keys[pick % len(keys)]
                c.pin(key)
                py.pin(key)
                pins.append(key)
            elif op == "unpin" and pins:
                key = pins.pop(pick % len(pins))
                c.unpin(key)
                py.unpin(key)
            elif op == "flush":
                before = c.in_use
                got_c, got_py = c.flush(), py.flush()
                assert got_c == got_py
                # What went back is free for the kernel again; a pinned slot is not.
                held = ({c.slot_of(k) for k in keys + pins}
                        | ({filling} if filling is not None else set()))
                kernel_free = [b for b in range(SLOTS) if b not in held]
                assert c.in_use <= before
            elif op == "park":
                c.park(sink)
                py.park(sink)
                assert c.take_relief() is py.take_relief() is True
            _same(c, py)
        for key in keys:
            c.give_back(key)
            py.give_back(key)
        if pins:
            assert c.pinned == py.pinned > 0
            c.flush()
            py.flush()
            _same(c, py)
            assert c.in_use > 0           # the pinned slots stay out of the kernel's hands
        for key in pins:
            c.unpin(key)
            py.unpin(key)
        assert c.flush() == py.flush()
        _same(c, py)
        if filling is None:
            assert c.in_use == 0


def test_c_slot_views_show_their_slot_and_survive_a_released_view() -> None:
    """The C RecvSlots slices each receive from a per-slot view it keeps: the
    bytes must be the slot's, every length down to 0, and a consumer that
    releases its view (``with memoryview(...)``) must not spoil the next
    receive into that slot."""
    if _native.speedups is None:
        return                                  # the C class is not loaded here
    with _pair(False) as (c, py):
        for native, slots in ((True, c), (False, py)):
            region = slots.recv_view.obj        # the pool's mmap, writable
            for k in range(SLOTS):
                region[k * SLOT:(k + 1) * SLOT] = bytes([k + 1]) * SLOT
            for k in range(SLOTS):
                for n in (0, 1, 64, SLOT - 1, SLOT):
                    view = slots.view(k, n)
                    assert view.tobytes() == bytes([k + 1]) * n, (native, k, n)
                    assert view.readonly and view.obj is region
                    view.release()
                    assert slots.view(k, n).tobytes() == bytes([k + 1]) * n
            region[3 * SLOT] = 0xEE                 # a view shows the memory, not a copy
            assert slots.view(3, 2).tobytes() == b"\xee\x04"


def test_recv_slots_refuse_an_unpin_without_a_pin() -> None:
    """Both accountings: unpinning more often than pinning is a zerg bug, said loudly."""
    with _pair(False) as (c, py):
        for slots in (c, py):
            key = slots.on_cqe(10, 0, 2)
            slots.pin(key)
            slots.unpin(key)
            with pytest.raises(RuntimeError, match="unpinned more often than pinned"):
                slots.unpin(key)


def test_c_recv_slots_refuse_a_double_give_back() -> None:
    """The reference trusts its callers; the C accounting checks, loudly."""
    with _pair(True) as (c, _):
        key = c.on_cqe(10, CQE_F_BUF_MORE, 3)
        assert key == 3
        c.give_back(key)
        with pytest.raises(RuntimeError, match="zerg bug: slot part 3 given back twice"):
            c.give_back(key)


class _Sink:
    """A completion sink whose send_pending records itself and, as told,
    raises or marks another sink dirty while the dirty list is walked."""

    def __init__(self, sink_id: int, how: str, log: list[Any], dirty: list[Any]) -> None:
        self.id, self.how, self.log, self.dirty = sink_id, how, log, dirty

    def send_pending(self) -> None:
        self.log.append(("send", self.id))
        if self.how == "raise":
            raise ValueError(self.id)
        if self.how == "more":          # a write inside a send: dirty again, sent too
            self.dirty.append(_Sink(self.id + 100, "ok", self.log, self.dirty))
        if self.how == "interrupt":
            raise KeyboardInterrupt


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(["ok", "ok", "raise", "more", "interrupt"]), max_size=8))
def test_c_send_dirty_agrees_with_the_reference(hows: list[str]) -> None:
    """Dispatcher.send_dirty (C) and Reactor._send_dirty (the reference): the
    same sends in the same order, the same sinks reported failed, the list
    emptied -- or, on KeyboardInterrupt, left as it was and the error raised."""
    from types import SimpleNamespace

    from zerg import _speedups
    from zerg._reactor import Reactor

    def play(native: bool) -> list[Any]:
        log: list[Any] = []
        dirty: list[Any] = []
        dirty += [_Sink(i, how, log, dirty) for i, how in enumerate(hows)]

        def failed(op: int, key: int, exc: BaseException) -> None:
            log.append(("failed", int(op), key, type(exc).__name__, str(exc)))

        ring = Ring(8)
        try:
            if native:
                pool = SlabPool(SLOT, SLOTS, 512)
                ring.setup_buffer_ring(0, SLOTS, pool.recv_base, SLOT, incremental=False)
                slots = _speedups.RecvSlots(ring_address=ring.address, owner=ring,
                                            recv_view=pool.recv_view, slot_size=SLOT,
                                            total=SLOTS, incremental=False)
                run = _speedups.Dispatcher(
                    ring_address=ring.address, owner=ring, batch=8, slots=slots,
                    conns=_speedups.ConnTable(),
                    poll_fired=lambda *a: None, on_accept=lambda *a: None,
                    new_connection=lambda *a: None, failed=failed).send_dirty
            else:
                host = SimpleNamespace(_completion_failed=failed)
                run = lambda d: Reactor._send_dirty(host, d)    # type: ignore[arg-type]  # noqa: E731
            try:
                run(dirty)
            except KeyboardInterrupt:
                log.append(("interrupted", len(dirty)))
        finally:
            ring.close()
        log.append(("left", len(dirty)))
        return log

    assert play(True) == play(False)


_KEYS = st.one_of(st.integers(0, 40), st.integers(0, 600),
                  st.sampled_from([2**63, 2**64 - 1]))
_PROBES = st.one_of(_KEYS, st.sampled_from([-1, 2**64, "7", None]))
_TABLE_OPS = st.lists(st.one_of(
    st.tuples(st.just("set"), _KEYS), st.tuples(st.just("set"), _KEYS),
    st.tuples(st.just("pop"), _PROBES), st.tuples(st.just("pop_default"), _PROBES),
    st.tuples(st.just("get"), _PROBES), st.tuples(st.just("get_default"), _PROBES),
    st.tuples(st.just("del"), _PROBES), st.tuples(st.just("getitem"), _PROBES),
    st.tuples(st.just("in"), _PROBES), st.tuples(st.just("clear"), st.just(0)),
    st.tuples(st.just("fill"), st.integers(1, 300))), max_size=80)


@settings(max_examples=300, deadline=None)
@given(_TABLE_OPS)
def test_conn_table_agrees_with_a_dict(script: list[tuple[str, Any]]) -> None:
    """The reactor's table of connections by id (a C ConnTable with the
    extension, a dict without): every operation the reactor uses gives the
    same result and the same error class, through growth and shrinking; the
    snapshots list ids in ascending order."""
    from zerg import _speedups

    table, ref = _speedups.ConnTable(), {}     # type: ignore[var-annotated]
    calls = {"pop": ("pop",), "pop_default": ("pop", "none"), "get": ("get",),
             "get_default": ("get", "none"), "del": ("__delitem__",),
             "getitem": ("__getitem__",), "in": ("__contains__",)}

    def both(name: str, *args: Any) -> None:
        results = []
        for t in (table, ref):
            try:
                results.append(("ok", getattr(t, name)(*args)))
            except (KeyError, TypeError) as exc:
                results.append((type(exc).__name__, None))
        assert results[0] == results[1]

    for stamp, (op, key) in enumerate(script):
        if op == "set":
            table[key] = ref[key] = ("sink", stamp)
        elif op == "fill":                          # many at once: the array grows
            for k in range(1000, 1000 + key):
                table[k] = ref[k] = ("sink", k)
        elif op == "clear":
            table.clear()
            ref.clear()
        else:
            name, *default = calls[op]
            both(name, key, *default)
        assert len(table) == len(ref)
        assert bool(table) == bool(ref)
    assert table.keys() == sorted(ref) == list(table)
    assert table.values() == [ref[k] for k in sorted(ref)]


def test_conn_table_refuses_ids_it_cannot_hold() -> None:
    """Ids are ints from 0 to 2**64-1: anything else is refused when stored,
    with the key named, and is simply absent when looked up."""
    from zerg import _speedups

    table = _speedups.ConnTable()
    for bad in (-1, 2**64, "7", 7.5):
        with pytest.raises(TypeError, match="ConnTable ids are ints"):
            table[bad] = object()               # type: ignore[index]
        assert table.get(bad) is None           # type: ignore[arg-type]
        assert bad not in table
    assert len(table) == 0
    with pytest.raises(TypeError):
        _speedups.ConnTable({})                 # type: ignore[call-arg]
    with pytest.raises(TypeError, match=r"get\(\) takes 1 or 2 arguments \(0 given\)"):
        table.get()                             # type: ignore[call-arg]
    with pytest.raises(TypeError, match=r"pop\(\) takes 1 or 2 arguments \(3 given\)"):
        table.pop(1, 2, 3)                      # type: ignore[call-arg]


def test_conn_table_releases_what_it_held() -> None:
    """A removed connection's destructor may look at the table (it finds it
    whole, the removed id gone); a table in a reference cycle with what it
    holds is collected."""
    import gc
    import weakref

    from zerg import _speedups

    table = _speedups.ConnTable()
    seen: list[Any] = []

    class Sink:
        def __init__(self, sink_id: int) -> None:
            self.id = sink_id

        def __del__(self) -> None:
            seen.append((self.id, self.id in table, len(table), sorted(table)[:3]))

    for i in range(1, 101):
        table[i] = Sink(i)
    del table[50]
    assert seen == [(50, False, 99, [1, 2, 3])]
    table[7] = Sink(1007)                        # a replaced object goes after the store
    assert seen[-1] == (7, True, 99, [1, 2, 3])
    seen.clear()
    table.clear()
    assert len(seen) == 99 and all(not present and n == 0 for _, present, n, _ in seen)

    class Holder:
        pass

    cyclic = _speedups.ConnTable()
    holder = Holder()
    holder.table = cyclic                       # type: ignore[attr-defined]
    cyclic[1] = holder
    gone = weakref.ref(holder)
    del cyclic, holder
    gc.collect()
    assert gone() is None
