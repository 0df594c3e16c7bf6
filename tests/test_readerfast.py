"""The C SequenceReader (native/readerfast.c) against the Python reference.

``zerg.SequenceReader`` is ``zerg._speedups.SequenceReader`` with the
extension and ``zerg._seqreader.PySequenceReader`` (the reference) without.
Hypothesis builds the same random sequence (random bytes cut into random
segments; plain, a slice of a larger chain, or an owning sequence whose
owner advances and releases under the reader) and plays the same random
operations -- the op model of tests/test_seqreader.py plus out-of-range
arguments, keyword forms, bad delimiters and byte orders -- through both
classes, and compares every result, every error (type and message) and the
reader's visible state after each step.

With ``ZERG_NO_EXTENSIONS=1`` zerg.SequenceReader must be the reference, and
the comparison runs in a child process with the extension.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from fastpath_check import run_with_extension
from hypothesis import given, settings
from hypothesis import strategies as st

import zerg
from zerg import BufferSequence
from zerg._buffers import SlotLease, leased
from zerg._native import speedups
from zerg._seqreader import PySequenceReader


def test_zerg_sequencereader_is_the_c_type_with_the_extension() -> None:
    if speedups is None:
        assert zerg.SequenceReader is PySequenceReader
        return
    assert zerg.SequenceReader is speedups.SequenceReader
    assert PySequenceReader.__module__ == "zerg._seqreader"
    public = {n for n in dir(PySequenceReader) if not n.startswith("_")}
    assert public <= set(dir(speedups.SequenceReader))


small = st.lists(st.sampled_from(b"ab\r\n\x00\xff"), max_size=50).map(bytes)
longer = st.lists(st.sampled_from(b"ab\r\n\x00"), min_size=12, max_size=60).map(bytes)
numbers = st.lists(st.one_of(st.integers(-10**20, 10**20).map(lambda n: b"%d" % n),
                             st.sampled_from([b"$", b"*", b"\r\n", b"\r", b"-", b"a"])),
                   max_size=10).map(b"".join)
data_st = st.one_of(small, longer, numbers, st.binary(max_size=50))


@st.composite
def cases(draw: st.DrawFn) -> tuple[Any, ...]:
    data = draw(data_st)
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=8)))
    bounds = [0, *cuts, len(data)]
    chunks = [data[x:y] for x, y in itertools.pairwise(bounds)]
    how = draw(st.sampled_from(["plain", "slice", "owner", "owned slice"]))
    return chunks, how, draw(small)


def build(case: tuple[Any, ...]) -> tuple[BufferSequence, BufferSequence | None]:
    """(the sequence read, its owner if it has one)."""
    chunks, how, pre = case
    if how == "plain":
        return BufferSequence(chunks), None
    if how == "slice":
        n = sum(map(len, chunks))
        return BufferSequence([pre, *chunks, pre])[len(pre):len(pre) + n], None
    owner = leased([memoryview(bytearray(c)) for c in [pre, *chunks]],
                   SlotLease(list(range(len(chunks) + 1)), lambda keys: None))
    owner.advance(len(pre))
    return (owner if how == "owner" else owner[:]), owner


delims = st.sampled_from([b"a", b"\r\n", b"ab", b"\n\r\n", b"\x00", b"zz", b"b\r", b"",
                          bytearray(b"\r\n"), memoryview(b"ab"), memoryview(b"a\x00b\x00")[::2],
                          "ab", 7])
flag = st.sampled_from([True, False, 0, 1, None, "x"])
count = st.integers(-2, 14)
op_st = st.one_of(
    st.tuples(st.sampled_from(["advance", "rewind", "exact", "bytes"]), count,
              st.booleans()),
    st.tuples(st.just("is_next"), st.tuples(delims, flag), st.booleans()),
    st.tuples(st.sampled_from(["to", "bytes_to"]), st.tuples(delims, flag),
              st.integers(1, 3)),
    st.tuples(st.just("int"),
              st.tuples(st.integers(-1, 10),
                        st.sampled_from(["big", "little", "middle", None, 1]), flag),
              st.booleans()),
    st.tuples(st.just("decimal"),
              st.tuples(st.sampled_from([b"", b"$", b"*", bytearray(b"$"), b"x" * 17, "$", None]),
                        st.sampled_from([b"\r\n", b"\n", b"", b"0", b"-", memoryview(b"\r\n"),
                                         b"y" * 17, None]),
                        flag, st.sampled_from([0, 9, 2**63 - 1, 2**63, 2**64, 10**30, -1, True,
                                               1.5, None])),
              st.booleans()),
    st.tuples(st.just("skip"), st.sampled_from([b"a", b"ab", b"\r\n", b"\x00\xff", b"", 97, 256,
                                                -1, bytearray(b"\n"), "a"]), st.none()),
    st.tuples(st.sampled_from(["byte", "unread", "owner_release"]), st.none(), st.none()),
    st.tuples(st.just("owner_advance"), st.integers(0, 6), st.none()),
)


def describe(x: Any) -> Any:
    if isinstance(x, BufferSequence):
        return ("seq", x._start, x._stop, x._owns, outcome(x.tobytes))
    return (type(x).__name__, x)


def outcome(fn: Callable[[], Any]) -> Any:
    try:
        return describe(fn())
    except Exception as exc:  # every error: its type and message
        return ("raised", type(exc).__name__, str(exc))


def step(r: Any, owner: BufferSequence | None, op: tuple[Any, ...]) -> Any:
    name, arg, form = op
    if name in ("advance", "rewind"):
        method = getattr(r, name)
        return outcome(lambda: method(n=arg) if form else method(arg))
    if name in ("exact", "bytes"):
        method = getattr(r, "try_read_exact" if name == "exact" else "try_read_bytes")
        return outcome(lambda: method(n=arg) if form else method(arg))
    if name == "is_next":
        prefix, adv = arg
        if form:
            return outcome(lambda: r.is_next(prefix, advance=adv))
        return outcome(lambda: r.is_next(prefix))
    if name in ("to", "bytes_to"):
        delim, past = arg
        method = r.try_read_to if name == "to" else r.try_read_bytes_to
        if form == 1:
            return outcome(lambda: method(delim))
        if form == 2:
            return outcome(lambda: method(delim, past))
        return outcome(lambda: method(delimiter=delim, advance_past=past))
    if name == "int":
        length, order, signed = arg
        if order is None:
            return outcome(lambda: r.try_read_int(length))
        if form:
            return outcome(lambda: r.try_read_int(length, order, signed=signed))
        return outcome(lambda: r.try_read_int(length=length, byteorder=order))
    if name == "decimal":
        prefix, delim, signed, limit = arg
        kw = {k: v for k, v in (("signed", signed), ("limit", limit)) if v is not None}
        if prefix is None:
            return outcome(lambda: r.try_read_decimal(**kw))
        if delim is None:
            return outcome(lambda: r.try_read_decimal(prefix, **kw))
        if form:
            return outcome(lambda: r.try_read_decimal(prefix, delim, **kw))
        return outcome(lambda: r.try_read_decimal(prefix=prefix, delimiter=delim, **kw))
    if name == "skip":
        return outcome(lambda: r.skip(arg))
    if name == "byte":
        return outcome(r.try_read_byte)
    if name == "unread":
        return outcome(lambda: r.unread)
    if name == "owner_release":
        return outcome(lambda: owner.release() if owner is not None else None)
    if name == "owner_advance":
        return outcome(lambda: owner.advance(min(arg, len(owner))) if owner is not None
                       else None)
    raise AssertionError(name)


def play(cls: type, case: tuple[Any, ...], ops: list[tuple[Any, ...]]) -> list[Any]:
    seq, owner = build(case)
    r = cls(seq)
    trace: list[Any] = []
    for op in ops:
        trace.append(step(r, owner, op))
        trace.append((r.consumed, outcome(lambda: r.remaining), outcome(lambda: r.end),
                      r.examined, outcome(lambda: repr(r)), r.sequence is seq))
    return trace


@settings(max_examples=800, deadline=None)
@given(cases(), st.lists(op_st, max_size=30))
def test_c_reader_agrees_with_the_reference(case: tuple[Any, ...],
                                            ops: list[tuple[Any, ...]]) -> None:
    if speedups is None:
        return                      # the child run with the extension does this
    assert play(speedups.SequenceReader, case, ops) == play(PySequenceReader, case, ops)


def test_construction_agrees() -> None:
    """What the constructor accepts and refuses, both ways of calling it."""
    if speedups is None:
        return
    seq = BufferSequence(b"abc")
    for cls in (speedups.SequenceReader, PySequenceReader):
        assert cls(seq=seq).sequence is seq and cls(seq).consumed == 0
    for bad in (b"abc", None, memoryview(b"x")):
        got = []
        for cls in (speedups.SequenceReader, PySequenceReader):
            try:
                cls(bad)  # type: ignore[arg-type]
            except TypeError as exc:
                got.append(str(exc))
        assert len(got) == 2 and got[0] == got[1]

    class Sub(speedups.SequenceReader):  # type: ignore[misc,name-defined]
        pass

    sub = Sub(seq)
    assert sub.try_read_bytes(2) == b"ab" and isinstance(sub, speedups.SequenceReader)


def test_the_comparison_runs_with_the_extension() -> None:
    """Under ZERG_NO_EXTENSIONS=1 the comparison above runs in a child with it."""
    if speedups is None:
        run_with_extension(__file__, passed=4)
