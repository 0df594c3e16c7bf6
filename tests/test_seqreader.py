"""SequenceReader (issue 14): every operation agrees with the same operation on
``bytes``, for random bytes cut into random segments."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import zerg
from zerg import BufferSequence, SequenceReader

small = st.lists(st.sampled_from(b"ab\r\n\x00\xff"), max_size=60).map(bytes)
data_st = st.one_of(small, st.binary(max_size=60))


@st.composite
def cut(draw: st.DrawFn) -> tuple[BufferSequence, bytes]:
    data = draw(data_st)
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=8)))
    bounds = [0, *cuts, len(data)]
    return BufferSequence([data[x:y] for x, y in itertools.pairwise(bounds)]), data


class Model:
    """The same reader over bytes: what SequenceReader must do."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def run(self, op: str, arg: Any) -> Any:
        d, p = self.data, self.pos
        op = {"bytes_to": "to", "bytes": "exact"}.get(op, op)  # the copying forms
        if op == "advance":
            n = min(arg, len(d) - p)
            self.pos += n
            return n
        if op == "rewind":
            n = min(arg, p)
            self.pos -= n
            return n
        if op == "is_next":
            prefix, adv = arg
            ok = d.startswith(prefix, p)
            if ok and adv:
                self.pos += len(prefix)
            return ok
        if op == "to":
            delim, past = arg
            i = d.find(delim, p)
            if i < 0:
                return None
            self.pos = i + len(delim) if past else i
            return d[p:i]
        if op == "exact":
            if len(d) - p < arg:
                return None
            self.pos += arg
            return d[p:p + arg]
        if op == "int":
            length, order, signed = arg
            if len(d) - p < length:
                return None
            self.pos += length
            return int.from_bytes(d[p:p + length], order, signed=signed)
        if op == "byte":
            if p >= len(d):
                return None
            self.pos += 1
            return d[p]
        if op == "skip":
            q = p
            while q < len(d) and d[q] in arg:
                q += 1
            self.pos = q
            return q - p
        raise AssertionError(op)


def real(r: SequenceReader, op: str, arg: Any) -> Any:
    if op == "advance":
        n = min(arg, r.remaining)
        r.advance(n)
        return n
    if op == "rewind":
        n = min(arg, r.consumed)
        r.rewind(n)
        return n
    if op == "is_next":
        return r.is_next(arg[0], advance=arg[1])
    if op == "to":
        got = r.try_read_to(arg[0], advance_past=arg[1])
        return None if got is None else got.tobytes()
    if op == "exact":
        got = r.try_read_exact(arg)
        return None if got is None else got.tobytes()
    if op == "bytes_to":
        return r.try_read_bytes_to(arg[0], advance_past=arg[1])
    if op == "bytes":
        return r.try_read_bytes(arg)
    if op == "int":
        return r.try_read_int(arg[0], arg[1], signed=arg[2])
    if op == "byte":
        return r.try_read_byte()
    if op == "skip":
        return r.skip(arg)
    raise AssertionError(op)


needles = st.sampled_from([b"a", b"\r\n", b"ab", b"\n\r\n", b"\x00", b"zz", b"b\r"])
ops = st.lists(st.one_of(
    st.tuples(st.just("advance"), st.integers(0, 10)),
    st.tuples(st.just("rewind"), st.integers(0, 10)),
    st.tuples(st.just("is_next"), st.tuples(needles, st.booleans())),
    st.tuples(st.just("to"), st.tuples(needles, st.booleans())),
    st.tuples(st.just("exact"), st.integers(0, 12)),
    st.tuples(st.just("bytes_to"), st.tuples(needles, st.booleans())),
    st.tuples(st.just("bytes"), st.integers(0, 12)),
    st.tuples(st.just("int"), st.tuples(st.integers(1, 9), st.sampled_from(["big", "little"]),
                                        st.booleans())),
    st.tuples(st.just("byte"), st.none()),
    st.tuples(st.just("skip"), st.sampled_from([b"a", b"ab", b"\r\n", b"\x00\xff"])),
), max_size=25)


@settings(max_examples=400, deadline=None)
@given(cut(), ops)
def test_every_operation_agrees_with_bytes(case: tuple[BufferSequence, bytes],
                                           program: list[tuple[str, Any]]) -> None:
    seq, data = case
    r = SequenceReader(seq)
    m = Model(data)
    for op, arg in program:
        before = r.consumed
        got, want = real(r, op, arg), m.run(op, arg)
        assert got == want, (op, arg)
        assert r.consumed == m.pos
        assert r.remaining == len(data) - m.pos and r.end == (m.pos == len(data))
        assert r.examined >= r.consumed
        if want is None:
            assert r.consumed == before                 # a miss keeps the position
            assert r.examined == len(data)              # ... having looked at everything
    assert r.unread.tobytes() == data[m.pos:]


def test_a_failed_search_is_not_repeated_from_the_start() -> None:
    """try_read_to remembers how far a failed search looked."""
    calls: list[int] = []

    class Counting(BufferSequence):
        def find(self, sub: Any, start: int | None = 0, end: int | None = None) -> int:
            calls.append(start or 0)
            return super().find(sub, start, end)

    seq = Counting([b"x" * 1000, b"y" * 1000])
    r = SequenceReader(seq)
    assert r.try_read_to(b"\r\n") is None
    assert r.try_read_to(b"\r\n") is None
    assert calls == [0, 1999]                           # the second resumed at the end
    r.rewind(0)
    r.advance(5)
    assert r.try_read_to(b"\r\n") is None and calls[-1] == 1999


def test_argument_errors_name_the_problem() -> None:
    r = SequenceReader(BufferSequence(b"abc"))
    with pytest.raises(ValueError, match="advance"):
        r.advance(4)
    with pytest.raises(ValueError, match="rewind"):
        r.rewind(1)
    with pytest.raises(ValueError, match="empty delimiter"):
        r.try_read_to(b"")
    with pytest.raises(ValueError, match="length"):
        r.try_read_int(0)
    with pytest.raises(ValueError, match="n must be"):
        r.try_read_exact(-1)
    with pytest.raises(TypeError, match="BufferSequence"):
        SequenceReader(b"abc")  # type: ignore[arg-type]
    assert zerg.SequenceReader is SequenceReader
    assert "consumed=0" in repr(r)
