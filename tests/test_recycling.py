"""Recycled sequences, leases, lists and read results never show through a live object.

With the extension a level-2 or level-3 read takes its ``BufferSequence``,
its ``SlotLease`` and their one- and two-item lists from freelists that
dying sequences and leases refill (native/speedups.c), and a level-1
``RingSnapshot`` or a ``PipeReader`` ``ReadResult`` comes from its class's
freelist (native/connfast.c).  What a user relies
on: a sequence, slice or lease still referenced -- and any of their lists
someone holds -- keeps its bytes, keys and contents whatever is made and
dropped around it, and every slot goes back exactly once.  Hypothesis plays
random scripts of makes, slices, advances, releases, drops and list grabs
through the hot path's constructor (``leased_single``) and checks every
kept object after every step.  The reference (``ZERG_NO_EXTENSIONS=1``)
recycles nothing and must pass the same scripts.
"""

from __future__ import annotations

import gc
from typing import Any

from conftest import recv_exact, serving
from hypothesis import given, settings
from hypothesis import strategies as st

import zerg
from zerg import BufferSequence
from zerg._buffers import leased_single, window
from zerg.adapters import PipeReader, ReadResult

OPS = st.lists(
    st.tuples(st.sampled_from(["make", "make", "slice", "window", "advance", "release",
                               "drop", "drop", "grab", "collect"]),
              st.integers(0, 1 << 16), st.integers(0, 64)),
    min_size=1, max_size=60)


RELEASED = 1 << 62


class Kept:
    """A sequence the script still holds, the bytes it must show, where its
    window starts in its owner's chain, and the owning sequence it reads."""

    def __init__(self, seq: BufferSequence, data: bytes, start: int,
                 root: Kept | None) -> None:
        self.seq, self.data, self.start = seq, data, start
        self.root = root if root is not None else self
        self.total = len(data)
        self.held_from = 0          # on the owner: where its held bytes start
        self.serial = 0             # on the owner: its slot is ("slot", serial)

    def dead(self) -> bool:
        """Its bytes went back: the window starts before what the owner holds."""
        return self.start < self.root.held_from


@settings(max_examples=150, deadline=None)
@given(OPS)
def test_kept_sequences_leases_and_lists_never_change_under_recycling(
        ops: list[tuple[str, int, int]]) -> None:
    given_back: list[Any] = []
    kept: list[Kept] = []
    leases: list[tuple[Any, list[Any]]] = []    # a lease held, and its keys then
    grabbed: list[tuple[list[Any], list[Any]]] = []    # a list held, and its items then
    serial = 0

    def give_back(keys: list[Any]) -> None:
        given_back.extend(keys)

    for op, a, b in ops:
        live = [k for k in kept if not k.dead()]
        owners = [k for k in kept if k.root is k]
        if op == "make" or not kept:
            serial += 1
            data = bytes((serial + i) % 251 for i in range(1 + b))
            seq, lease = leased_single(memoryview(data), ("slot", serial), give_back)
            kept.append(Kept(seq, data, 0, None))
            kept[-1].serial = serial
            leases.append((lease, list(lease.keys)))
        elif op == "slice" and live:
            k = live[a % len(live)]
            i = b % (len(k.data) + 1)
            j = i + (a >> 8) % (len(k.data) - i + 1)
            kept.append(Kept(k.seq[i:j], k.data[i:j], k.start + i, k.root))
        elif op == "window" and live:
            k = live[a % len(live)]
            kept.append(Kept(window(k.seq), k.data, k.start, k.root))
        elif op == "advance" and [k for k in owners if not k.dead()]:
            alive = [k for k in owners if not k.dead()]
            k = alive[a % len(alive)]
            n = b % (len(k.data) + 1)
            k.seq.advance(n)
            k.data, k.start = k.data[n:], k.start + n
            if k.start == k.total:      # its one segment is consumed: it went back
                k.held_from = k.total
        elif op == "release" and owners:
            k = owners[a % len(owners)]
            k.seq.release()
            k.held_from = RELEASED
        elif op == "drop":
            held: tuple[list[Kept], list[Any], list[Any]] = (kept, leases, grabbed)
            which = held[b % 3]
            if which:
                del which[a % len(which)]
        elif op == "grab":
            # the lists of a released sequence no longer change: hold them
            done = [k for k in kept if k.root.held_from == RELEASED]
            if done:
                k = done[a % len(done)]
                for name in ("_segs", "_offs"):
                    got = getattr(k.seq, name)
                    grabbed.append((got, list(got)))
        elif op == "collect":
            gc.collect()
        # Every object still held is as it was.
        for k in kept:
            if k.dead():
                try:
                    bytes(k.seq)
                except ValueError:
                    pass
                else:
                    raise AssertionError("a sequence whose bytes went back still reads")
            else:
                assert bytes(k.seq) == k.data
                assert len(k.seq) == len(k.data)
        for lease, keys in leases:
            assert type(lease).__name__ == "SlotLease" and lease.keys == keys
        for got, items in grabbed:
            assert type(got) is list and got == items
        assert len(given_back) == len(set(given_back))    # each slot back at most once
    # Releasing the owners still held gives their slots back, each once; a
    # dropped owner gives nothing back by itself (its pipe would release it).
    owned = {("slot", k.serial) for k in kept if k.root is k}
    for k in kept:
        if k.root is k:
            k.seq.release()
    assert len(given_back) == len(set(given_back)) and owned <= set(given_back)


def test_many_reads_in_a_row_keep_every_other_sequence_intact() -> None:
    """The hot path's pattern at scale: make, keep every other one, drop the
    rest at once, so freed objects and lists are reused while the kept ones
    are read again afterwards."""
    backs: list[Any] = []
    kept = []
    for i in range(2000):
        data = bytes([i % 256]) * (1 + i % 7)
        seq, _ = leased_single(memoryview(data), i, backs.extend)
        view = seq[:]
        if i % 2:
            kept.append((seq, view, seq._segs, seq._offs, data))
        else:
            seq.release()
    for seq, view, segs, offs, data in kept:
        assert bytes(seq) == data and bytes(view) == data
        assert segs == [seq._segs[0]] and offs == [0, len(data)]
        assert len(segs) == 1 and bytes(segs[0]) == data
    assert sorted(backs) == list(range(0, 2000, 2))


def test_snapshots_and_read_results_a_handler_keeps_stay_as_they_were() -> None:
    """Level 1 keeps every other snapshot, level 3 every other read result,
    while the rest are dropped (and their memory reused): the kept ones read
    what they said when they were made."""
    kept: list[tuple[tuple[object, ...], tuple[object, ...]]] = []

    async def level1(conn: zerg.Connection) -> None:
        n = 0
        while not (snap := await conn.read()).is_closed:
            while (item := conn.try_get_ring(snap)) is not None:
                conn.write(item.view)
                conn.return_ring(item)
            conn.reset_read()
            if n % 2:
                kept.append((snap, tuple(snap)))
            n += 1
            await conn.flush()

    async def level3(conn: zerg.Connection) -> None:
        reader = PipeReader(conn)
        n = 0
        while True:
            result = await reader.read()
            data = result.buffer.tobytes()
            conn.write(data)
            reader.advance_to(len(result.buffer))
            if n % 2:
                kept.append((result, (len(data), result.is_completed, result.is_canceled)))
            n += 1
            await conn.flush()
            if result.is_completed:
                break
        reader.complete()

    for handler in (level1, level3):
        kept.clear()
        with serving(handler) as srv, srv.connect() as s:
            for i in range(300):
                msg = b"%d;" % i
                s.sendall(msg)
                assert recv_exact(s, len(msg)) == msg
        assert len(kept) >= 100
        for obj, then in kept:
            if isinstance(obj, ReadResult):
                assert obj.is_completed == then[1] and obj.is_canceled == then[2]
            else:
                assert type(obj) is zerg.RingSnapshot and tuple(obj) == then
