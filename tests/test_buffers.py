"""BufferSequence against a `bytes` model (hypothesis), plus slot ownership and lifetimes."""

from __future__ import annotations

import array
import functools
import hashlib
import io
import itertools
import struct
import sys
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zerg._buffers import BufferSequence, SlotLease, leased, retire, unconsumed
from zerg._native import speedups


def owning(segments: list[memoryview], keys: list[Any],
           give_back: Callable[[list[Any]], None]) -> BufferSequence:
    """An owning sequence as the input pipe makes one: a lease per chain."""
    return leased(segments, SlotLease(keys, give_back))

fast = settings(max_examples=200, deadline=None)

# A small alphabet makes needles (and b"\r\n") actually occur; full binary now and then.
small_bytes = st.lists(st.sampled_from(b"ab\r\n"), max_size=40).map(bytes)
any_bytes = st.one_of(small_bytes, st.binary(max_size=40))


@st.composite
def chunked(draw: st.DrawFn, allow_empty: bool = True) -> list[bytes]:
    """A list of chunks: random splits, all-1-byte splits, or one chunk."""
    data = draw(any_bytes)
    how = draw(st.sampled_from(["random", "ones", "single"]))
    if how == "ones":
        return [data[i : i + 1] for i in range(len(data))]
    if how == "single":
        return [data]
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=8)))
    bounds = [0, *cuts, len(data)]
    chunks = [data[x:y] for x, y in itertools.pairwise(bounds)]
    return chunks if allow_empty else [c for c in chunks if c]


def _as_buffer(chunk: bytes, kind: int) -> bytes | bytearray | memoryview:
    return (chunk, bytearray(chunk), memoryview(chunk))[kind % 3]


@st.composite
def sequences(draw: st.DrawFn) -> tuple[BufferSequence, bytes]:
    """(seq, model): plain, sliced out of a larger chain, or owning and already advanced."""
    chunks = draw(chunked())
    data = b"".join(chunks)
    how = draw(st.sampled_from(["plain", "single", "slice", "owning"]))
    if how == "plain":
        return BufferSequence([_as_buffer(c, i) for i, c in enumerate(chunks)]), data
    if how == "single":
        return BufferSequence(bytearray(data)), data
    pre, post = draw(any_bytes), draw(any_bytes)
    if how == "slice":
        seq = BufferSequence([pre, *chunks, post])
        return seq[len(pre) : len(pre) + len(data)], data
    owner = owning(
        [memoryview(bytearray(c)) for c in [pre, *chunks, post]],
        list(range(len(chunks) + 2)),
        lambda ids: None,
    )
    owner.advance(len(pre))
    return owner[: len(data)], data


index_or_none = st.one_of(st.none(), st.integers(-50, 50))


# -- construction, len, bool, iteration, copies ------------------------------------------


@fast
@given(sequences())
def test_basic_model(case: tuple[BufferSequence, bytes]) -> None:
    seq, data = case
    assert len(seq) == len(data)
    assert bool(seq) == bool(data)
    segments = list(seq)
    assert all(isinstance(s, memoryview) and s.readonly and s.format == "B" for s in segments)
    assert all(s.nbytes for s in segments)
    assert b"".join(segments) == data
    assert seq.tobytes() == data
    assert bytes(seq) == data
    first = seq.first
    assert first.readonly and first.format == "B"
    assert first.tobytes() == (segments[0].tobytes() if segments else b"")
    assert seq.is_single_segment == (len(segments) <= 1)
    assert f"len={len(data)} " in repr(seq)
    assert seq == data and seq == bytearray(data) and seq == memoryview(data)
    assert seq != data + b"x"
    assert seq == BufferSequence(data) and seq == BufferSequence(seq)
    if data:
        assert seq != bytes([data[0] ^ 1]) + data[1:]


# The buffer protocol: a C base (the extension) or __buffer__ (3.12+) gives it; a pure-Python
# class on 3.11 cannot, and there bytearray() falls back to iterating (segments, not ints).
EXPORTS_BUFFER = speedups is not None or sys.version_info >= (3, 12)


@fast
@given(sequences())
def test_buffer_protocol_exports_a_copy(case: tuple[BufferSequence, bytes]) -> None:
    seq, data = case
    if not EXPORTS_BUFFER:
        if data:  # an empty one iterates nothing and gives bytearray()
            with pytest.raises(TypeError):
                bytearray(seq)
        return
    assert bytearray(seq) == data
    view = memoryview(seq)
    assert view.readonly and view.tobytes() == data
    assert hashlib.sha256(seq).digest() == hashlib.sha256(data).digest()
    with pytest.raises((BufferError, TypeError)):
        io.BytesIO(b"x").readinto(seq)  # asks for a writable buffer


def test_buffer_export_is_checked_and_does_not_pin_slots() -> None:
    given_back: list[int] = []
    owner = owning([memoryview(bytearray(b"hello ")), memoryview(bytearray(b"world"))],
                   [0, 1], given_back.extend)
    if EXPORTS_BUFFER:
        view = memoryview(owner)
        owner.release()
        assert given_back == [0, 1]
        assert view.tobytes() == b"hello world"  # a copy: the slots are free to be reused
        with pytest.raises(ValueError, match="after release"):
            bytearray(owner)
    else:
        owner.release()
        assert given_back == [0, 1]


def test_constructor_forms() -> None:
    assert len(BufferSequence()) == 0 and not BufferSequence()
    assert BufferSequence([b"", b"", b""]).is_single_segment
    assert list(BufferSequence([b"ab", b"", b"c"])) == [b"ab", b"c"]
    words = array.array("H", [1, 2])
    seq = BufferSequence(words)
    assert len(seq) == 4 and seq.tobytes() == words.tobytes()
    seq = BufferSequence(memoryview(bytearray(b"abcdef")).cast("B", (2, 3)))
    assert seq.tobytes() == b"abcdef"
    source = bytearray(b"xyz")
    seq = BufferSequence(source)
    source[0] = ord("X")  # non-owning: a view, not a copy
    assert seq.tobytes() == b"Xyz"
    with pytest.raises(TypeError):
        BufferSequence("text")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        hash(seq)
    assert (seq == "Xyz") is False


# -- indexing and slicing ------------------------------------------------------------------


@fast
@given(sequences(), st.integers(-45, 45))
def test_indexing(case: tuple[BufferSequence, bytes], i: int) -> None:
    seq, data = case
    if -len(data) <= i < len(data):
        assert seq[i] == data[i]
    else:
        with pytest.raises(IndexError):
            seq[i]


@fast
@given(sequences(), st.lists(st.tuples(index_or_none, index_or_none), min_size=1, max_size=4))
def test_nested_slicing(
    case: tuple[BufferSequence, bytes], bounds: list[tuple[int | None, int | None]]
) -> None:
    seq, data = case
    for a, b in bounds:
        seq, data = seq[a:b], data[a:b]
        assert isinstance(seq, BufferSequence)
        assert len(seq) == len(data)
        assert seq.tobytes() == data
        assert b"".join(seq) == data
        assert seq.first.tobytes() == data[: seq.first.nbytes]
    if data:
        assert seq[-1] == data[-1] and seq[0] == data[0]


def test_released_views_do_not_break_the_sequence() -> None:
    seq = BufferSequence([b"abc", b"def"])
    with seq.first as mv:
        assert mv.tobytes() == b"abc"
    for piece in seq:
        piece.release()
    with BufferSequence()[:].first as empty:
        assert empty.nbytes == 0
    assert seq.tobytes() == b"abcdef" and seq.first.tobytes() == b"abc"
    assert BufferSequence().first.nbytes == 0


def test_slicing_shares_memory_and_rejects_steps() -> None:
    source = bytearray(b"hello world")
    seq = BufferSequence([source, b"!"])[6:]
    source[6] = ord("W")
    assert seq.tobytes() == b"World!"
    assert seq[::1].tobytes() == b"World!"
    for step in (2, -1, 0):
        with pytest.raises(ValueError):
            seq[::step]
    with pytest.raises(TypeError):
        seq["a"]  # type: ignore[call-overload]


# -- searching ------------------------------------------------------------------------------


@st.composite
def needles(draw: st.DrawFn, data: bytes) -> bytes:
    if data and draw(st.booleans()):
        i = draw(st.integers(0, len(data) - 1))
        j = draw(st.integers(i, min(len(data), i + 8)))
        return data[i:j]  # taken from the data: often spans segment boundaries
    return draw(st.one_of(small_bytes.map(lambda b: b[:5]), st.binary(max_size=3)))


@fast
@given(st.data(), sequences(), index_or_none, index_or_none)
def test_find_and_index(
    draw: st.DataObject, case: tuple[BufferSequence, bytes], start: int | None, end: int | None
) -> None:
    seq, data = case
    sub = draw.draw(needles(data))
    for needle in (sub, bytearray(sub), memoryview(sub)):
        assert seq.find(needle, start, end) == data.find(needle, start, end)
    assert seq.find(sub) == data.find(sub)
    assert seq.find(sub, start) == data.find(sub, start)
    assert (sub in seq) == (sub in data)
    if data.find(sub, start, end) >= 0:
        assert seq.index(sub, start, end) == data.index(sub, start, end)
    else:
        with pytest.raises(ValueError):
            seq.index(sub, start, end)


@fast
@given(sequences(), st.integers(0, 255), index_or_none, index_or_none)
def test_find_int(
    case: tuple[BufferSequence, bytes], byte: int, start: int | None, end: int | None
) -> None:
    seq, data = case
    assert seq.find(byte, start, end) == data.find(byte, start, end)
    assert (byte in seq) == (byte in data)


def test_find_errors() -> None:
    seq = BufferSequence([b"ab", b"c"])
    for bad in (256, -1):
        with pytest.raises(ValueError):
            seq.find(bad)
    with pytest.raises(TypeError):
        seq.find("a")  # type: ignore[arg-type]


def test_find_across_many_segments() -> None:
    data = b"xxGET / HTTP/1.1\r\nHost: a\r\n\r\nbody"
    ones = BufferSequence([data[i : i + 1] for i in range(len(data))])
    for sub in (b"\r\n\r\n", b"HTTP/1.1", b"\r\nHost", b"body", b"xxG", b"y"):
        assert ones.find(sub) == data.find(sub)
        for start in range(len(data) + 2):
            assert ones.find(sub, start) == data.find(sub, start)
    split = BufferSequence([b"ab\r", b"\n", b"\r", b"\ncd"])
    assert split.find(b"\r\n\r\n") == 2
    assert split.find(b"\n\r\ncd") == 3


def test_find_exhaustive_small() -> None:
    data = b"a\r\n\r\nab\r"
    chains = [
        BufferSequence([data[i : i + 1] for i in range(len(data))]),
        BufferSequence([data[:3], data[3:4], data[4:]]),
        owning(
            [memoryview(c) for c in (data[:2], b"", data[2:5], b"", b"", data[5:])],
            [0, 1, 2, 3, 4, 5],
            lambda ids: None,
        ),
    ]
    subs = {data[i:j] for i in range(len(data)) for j in range(i, min(len(data), i + 5) + 1)}
    n = len(data)
    for seq in chains:
        for sub in subs:
            for start in range(-n - 1, n + 2):
                for end in (None, *range(-n - 1, n + 2)):
                    assert seq.find(sub, start, end) == data.find(sub, start, end), (
                        sub,
                        start,
                        end,
                    )


@fast
@given(st.data(), sequences(), index_or_none, index_or_none)
def test_startswith(
    draw: st.DataObject, case: tuple[BufferSequence, bytes], start: int | None, end: int | None
) -> None:
    seq, data = case
    prefix = draw.draw(st.one_of(needles(data), st.just(data[:3]), st.just(data)))
    assert seq.startswith(prefix) == data.startswith(prefix)
    assert seq.startswith(prefix, start, end) == data.startswith(prefix, start, end)
    assert seq.startswith(bytearray(prefix), start) == data.startswith(prefix, start)
    other = draw.draw(small_bytes)
    assert seq.startswith((other, prefix), start, end) == data.startswith(
        (other, prefix), start, end
    )
    assert seq.startswith((), start) is False


@fast
@given(st.data(), sequences(), index_or_none, index_or_none)
def test_rfind_count_endswith_agree_with_bytes(
    draw: st.DataObject, case: tuple[BufferSequence, bytes], start: int | None, end: int | None
) -> None:
    seq, data = case
    sub = draw.draw(st.one_of(needles(data), st.just(data[-3:]), st.just(b"")))
    assert seq.rfind(sub, start, end) == data.rfind(sub, start, end)
    assert seq.rfind(sub) == data.rfind(sub)
    assert seq.count(sub, start, end) == data.count(sub, start, end)
    assert seq.count(bytearray(sub)) == data.count(sub)
    assert seq.endswith(sub, start, end) == data.endswith(sub, start, end)
    assert seq.endswith((b"\x01\x02", sub)) == data.endswith((b"\x01\x02", sub))
    if data.rfind(sub, start, end) >= 0:
        assert seq.rindex(sub, start, end) == data.rindex(sub, start, end)
    else:
        with pytest.raises(ValueError):
            seq.rindex(sub, start, end)
    if data:
        assert seq.rfind(data[-1]) == data.rfind(data[-1])     # an int, like bytes
        assert seq.count(data[0]) == data.count(data[0])


def test_rfind_across_chunks_and_segments() -> None:
    """rfind reads backwards in 64 KiB copies: matches on a chunk edge, and
    across segment edges, are found."""
    buf = bytearray(b"." * 200_000)
    for at in (0, 3, 65_535, 65_536 - 2, 131_070, 199_996):
        buf[at:at + 4] = b"ABCD"
    data = bytes(buf)
    for cuts in ([], [1, 65_537, 65_538], list(range(0, 200_000, 7919))):
        bounds = [0, *cuts, len(data)]
        seq = BufferSequence([data[x:y] for x, y in itertools.pairwise(bounds)])
        for end in (None, 199_999, 131_073, 131_072, 65_539, 4, 3):
            assert seq.rfind(b"ABCD", 0, end) == data.rfind(b"ABCD", 0, end)
        assert seq.count(b"ABCD") == data.count(b"ABCD")


@fast
@given(sequences())
def test_contiguous_is_a_view_in_one_segment_and_a_copy_across(
        case: tuple[BufferSequence, bytes]) -> None:
    seq, data = case
    one = seq.contiguous()
    assert one.readonly and one.tobytes() == data
    assert struct.unpack_from(f"{len(data)}s", one)[0] == data
    if seq.is_single_segment and data:
        assert one.obj is seq.first.obj                    # zero-copy: the segment's memory
    elif data:
        assert isinstance(one.obj, bytes)                  # one copy


def test_contiguous_of_a_released_sequence_raises() -> None:
    owner = owning([memoryview(bytearray(b"abc"))], [0], lambda ids: None)
    owner.release()
    with pytest.raises(ValueError, match="after release"):
        owner.contiguous()


# -- copy_into --------------------------------------------------------------------------


@fast
@given(sequences(), st.integers(0, 50))
def test_copy_into(case: tuple[BufferSequence, bytes], size: int) -> None:
    seq, data = case
    target = bytearray(b"\xee" * size)
    n = seq.copy_into(target)
    assert n == min(size, len(data))
    assert target == data[:n] + b"\xee" * (size - n)
    words = array.array("I", [0] * 3)
    assert seq.copy_into(words) == min(12, len(data))
    assert words.tobytes()[: min(12, len(data))] == data[:12]


def test_copy_into_needs_writable() -> None:
    with pytest.raises(TypeError):
        BufferSequence(b"abc").copy_into(b"xyz")


# -- owning sequences -------------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.calls: list[list[int]] = []

    def __call__(self, ids: list[int]) -> None:
        assert ids, "give_back must not be called with nothing to give"
        self.calls.append(list(ids))

    @property
    def given(self) -> list[int]:
        return [i for call in self.calls for i in call]


def _owning(chunks: list[bytes], ids: list[int]) -> tuple[BufferSequence, Recorder]:
    rec = Recorder()
    return owning([memoryview(bytearray(c)) for c in chunks], ids, rec), rec


def _dead_ops() -> list[Callable[[BufferSequence], Any]]:
    return [
        lambda s: s[0],
        lambda s: s[0:1],
        lambda s: list(s),
        lambda s: s.find(b"a"),
        lambda s: s.index(b""),
        lambda s: s.startswith(b""),
        lambda s: s.tobytes(),
        lambda s: bytes(s),
        lambda s: s.copy_into(bytearray(4)),
        lambda s: s.first,
        lambda s: s == b"",
        lambda s: BufferSequence(s),
    ]


def _assert_dead(seq: BufferSequence) -> None:
    for op in _dead_ops():
        with pytest.raises(ValueError):
            op(seq)


@fast
@given(chunked(), st.data())
def test_owning_advance_and_release(chunks: list[bytes], draw: st.DataObject) -> None:
    data = b"".join(chunks)
    ids = [100 + 7 * i for i in range(len(chunks))]
    ends = [len(b"".join(chunks[: i + 1])) for i in range(len(chunks))]
    owner, rec = _owning(chunks, ids)
    slices: list[tuple[BufferSequence, int, int]] = []  # (slice, start, stop) in data
    consumed = 0
    for _ in range(draw.draw(st.integers(0, 6))):
        a = draw.draw(st.integers(0, len(owner)))
        b = draw.draw(st.integers(a, len(owner)))
        slices.append((owner[a:b], consumed + a, consumed + b))
        n = draw.draw(st.integers(0, len(owner)))
        owner.advance(n)
        consumed += n
        # Exactly the fully consumed slots went back, each once, in order, batched.
        expect = [sid for sid, end in zip(ids, ends, strict=True) if end <= consumed]
        assert rec.given == expect
        assert len(owner) == len(data) - consumed
        assert owner.tobytes() == data[consumed:]
        assert owner == data[consumed:]
        held_from = ends[len(expect) - 1] if expect else 0
        for view, start, stop in slices:
            if start >= held_from:
                assert view.tobytes() == data[start:stop]
                assert view.find(b"\r\n") == data[start:stop].find(b"\r\n")
            else:
                _assert_dead(view)
                assert len(view) == stop - start
                assert "consumed" in repr(view)
    calls_before = len(rec.calls)
    owner.release()
    assert rec.given == ids  # everything exactly once, in order
    assert len(rec.calls) <= calls_before + 1
    owner.release()  # idempotent
    assert rec.given == ids
    assert len(owner) == len(data) - consumed  # len keeps working
    assert "released" in repr(owner)
    _assert_dead(owner)
    for view, _, _ in slices:
        _assert_dead(view)
    with pytest.raises(ValueError):
        owner.advance(0)


def test_owning_partial_segment_stays() -> None:
    owner, rec = _owning([b"abc", b"def", b"gh"], [1, 2, 3])
    owner.advance(2)
    assert rec.calls == [] and owner.tobytes() == b"cdefgh" and owner.first.tobytes() == b"c"
    owner.advance(1)
    assert rec.calls == [[1]] and owner.first.tobytes() == b"def"
    owner.advance(4)
    assert rec.calls == [[1], [2]] and owner.tobytes() == b"h"
    owner.advance(1)
    assert rec.calls == [[1], [2], [3]] and len(owner) == 0 and owner.tobytes() == b""
    owner.release()
    assert rec.calls == [[1], [2], [3]]  # nothing left: no empty call


def test_owning_advance_batches_and_bounds() -> None:
    owner, rec = _owning([b"a", b"", b"bc", b"d"], [5, 6, 7, 8])
    owner.advance(0)
    assert rec.calls == []
    owner.advance(3)
    assert rec.calls == [[5, 6, 7]]
    for bad in (-1, 2):
        with pytest.raises(ValueError):
            owner.advance(bad)
    tail = owner[:]
    owner.release()
    assert rec.calls == [[5, 6, 7], [8]]
    _assert_dead(tail)


def test_owning_segments_are_read_only() -> None:
    owner, _ = _owning([b"ab", b"cd"], [0, 1])
    assert all(mv.readonly for mv in owner)
    with pytest.raises(TypeError):
        owner.first[0] = 1
    with pytest.raises(ValueError):
        owning([memoryview(b"x")], [], lambda ids: None)


def test_only_the_owner_advances_or_releases() -> None:
    owner, _ = _owning([b"abc"], [0])
    for seq in (BufferSequence(b"abc"), owner[1:], BufferSequence(owner)):
        with pytest.raises(TypeError, match="get_sequence"):
            seq.advance(0)
        with pytest.raises(TypeError, match="get_sequence"):
            seq.release()


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300), st.data())
def test_extended_and_compacted_keep_bytes_and_give_each_slot_back_once(
    data: bytes, draw: st.DataObject
) -> None:
    """The adapters' ownership moves: bytes stay equal to the model, slots go back once."""
    given_back: list[int] = []
    cut = draw.draw(st.integers(0, len(data)))
    first, second = data[:cut], data[cut:]
    segs1 = [first[i:i + 7] for i in range(0, len(first), 7)]
    segs2 = [second[i:i + 5] for i in range(0, len(second), 5)]
    ids1 = list(range(len(segs1)))
    ids2 = list(range(100, 100 + len(segs2)))
    seq = owning([memoryview(s) for s in segs1], ids1, given_back.extend)
    k = draw.draw(st.integers(0, len(first)))
    seq.advance(k)
    old_view = seq[:]
    held, keys = unconsumed(seq)
    ext = owning(held + [memoryview(s) for s in segs2], keys + ids2, given_back.extend)
    assert ext.tobytes() == data[k:]
    if len(old_view):
        with pytest.raises(ValueError):
            old_view.tobytes()
    if draw.draw(st.booleans()):      # compaction: one private copy, the slots go back
        copy = ext.tobytes()
        freed = retire(ext)
        ext = owning([memoryview(copy)] if copy else [], [-1] if copy else [],
                     given_back.extend)
        given_back.extend(freed)
        assert ext.tobytes() == data[k:]
    m = draw.draw(st.integers(0, len(ext)))
    ext.advance(m)
    assert ext.tobytes() == data[k + m:]
    ext.release()
    real = [i for i in given_back if i >= 0]
    assert sorted(real) == sorted(ids1 + ids2)       # every slot, exactly once


# -- the C chain operations against their Python reference -------------------------------


def _fields(seq: BufferSequence) -> tuple[Any, ...]:
    slots = seq._slots
    lease = None if slots is None else (list(slots.keys), slots.next, slots.held_from)
    return ([s.tobytes() for s in seq._segs], list(seq._offs), seq._start, seq._stop,
            lease, seq._owns)


def _outcome(fn: Callable[[], Any]) -> Any:
    try:
        result = fn()
    except ValueError as exc:
        return ("ValueError", str(exc))
    if isinstance(result, memoryview):
        return ("view", result.tobytes(), result.readonly)
    if isinstance(result, BufferSequence):
        return ("seq", _fields(result), result.tobytes())
    return result


@fast
@given(sequences(), st.integers(0, 3))
def test_chain_operations_agree_with_the_reference(
        case: tuple[BufferSequence, bytes], advance: int) -> None:
    """window and single_view (C with the extension) give what the Python
    reference gives on the same sequences, errors included; leased_single and
    drop_single build and release the same one-slot owning sequence."""
    import zerg._buffers as zb

    ref = zb.REFERENCE
    seq, data = case
    assert _outcome(lambda: zb.window(seq)) == _outcome(lambda: ref["window"](seq))
    assert _outcome(lambda: zb.single_view(seq)) == _outcome(lambda: ref["single_view"](seq))
    got: list[list[Any]] = [[], []]
    made: list[tuple[BufferSequence, Any, Any]] = []
    for i, fn in enumerate((zb.leased_single, ref["leased_single"])):
        view = memoryview(bytearray(data)).toreadonly()
        one, lease = fn(view, 42, got[i].extend)
        assert one._slots is lease and len(one) == len(data) and bool(one) == bool(data)
        if advance <= len(data):
            one.advance(advance)
        made.append((one, _fields(one), _outcome(functools.partial(zb.single_view, one))))
    assert made[0][1:] == made[1][1:]
    assert got[0] == got[1]
    for (one, _, _), drop in zip(made, (zb.drop_single, ref["drop_single"]), strict=True):
        drop(one)
    assert _fields(made[0][0]) == _fields(made[1][0])
    assert _outcome(lambda: zb.single_view(made[0][0])) == _outcome(
        lambda: ref["single_view"](made[1][0]))
