"""SequenceReader (issue 14): every operation agrees with the same operation on
``bytes``, for random bytes cut into random segments.

Every test runs against both implementations: the Python reference
(``zerg._seqreader.PySequenceReader``) and ``zerg.SequenceReader`` (the C
reader when the extension is loaded, the reference otherwise).
``tests/test_readerfast.py`` compares the two with each other.
"""

from __future__ import annotations

import itertools
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import zerg
from zerg import BufferSequence, SequenceReader
from zerg._native import speedups
from zerg._seqreader import PySequenceReader

READERS = [pytest.param(PySequenceReader, id="reference"),
           pytest.param(SequenceReader, id="C" if speedups is not None else "same")]

small = st.lists(st.sampled_from(b"ab\r\n\x00\xff"), max_size=60).map(bytes)
# Length lines and their near misses, for try_read_decimal.
numbers = st.lists(st.one_of(st.integers(-10**20, 10**20).map(lambda n: b"%d" % n),
                             st.sampled_from([b"$", b"*", b"\r\n", b"\r", b"\n", b"-", b"a"])),
                   max_size=12).map(b"".join)
data_st = st.one_of(small, numbers, st.binary(max_size=60))


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
        if op == "decimal":
            return self.decimal(*arg)
        if op == "skip":
            q = p
            while q < len(d) and d[q] in arg:
                q += 1
            self.pos = q
            return q - p
        raise AssertionError(op)

    def decimal(self, prefix: bytes, delim: bytes, signed: bool, limit: int) -> Any:
        """prefix, [-]1-19 digits, delimiter, matched whole by a regex; None when the
        bytes there are the start of such a frame; else an error."""
        rest = self.data[self.pos:]
        sign = b"-?" if signed else b""
        frame = re.escape(prefix) + b"(" + sign + b"[0-9]{1,19})" + re.escape(delim)
        m = re.match(frame, rest)
        if m is not None:
            value = int(m[1])
            if abs(value) > limit:
                return "error"
            self.pos += m.end()
            return value
        # The start of a frame: every byte so far fits, and the frame is not over.
        start = re.escape(prefix[:len(rest)]) if len(rest) < len(prefix) else (
            re.escape(prefix) + b"(" + sign + b"[0-9]{1,19}(" + b"|".join(
                re.escape(delim[:k]) for k in range(len(delim))) + b")|" + sign + b")")
        return None if re.fullmatch(start, rest) else "error"


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
    if op == "decimal":
        prefix, delim, signed, limit = arg
        try:
            return r.try_read_decimal(prefix, delim, signed=signed, limit=limit)
        except ValueError:
            return "error"
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
    st.tuples(st.just("decimal"), st.tuples(st.sampled_from([b"", b"$", b"*", b"ab"]),
                                            st.sampled_from([b"\r\n", b"\n", b"a", b"\r\n\r"]),
                                            st.booleans(),
                                            st.sampled_from([0, 9, 100, 2**63 - 1, 10**19]))),
    st.tuples(st.just("skip"), st.sampled_from([b"a", b"ab", b"\r\n", b"\x00\xff"])),
), max_size=25)


@pytest.mark.parametrize("reader", READERS)
@settings(max_examples=400, deadline=None)
@given(case=cut(), program=ops)
def test_every_operation_agrees_with_bytes(reader: type[SequenceReader],
                                           case: tuple[BufferSequence, bytes],
                                           program: list[tuple[str, Any]]) -> None:
    seq, data = case
    r = reader(seq)
    m = Model(data)
    for op, arg in program:
        before = r.consumed
        got, want = real(r, op, arg), m.run(op, arg)
        assert got == want, (op, arg)
        assert r.consumed == m.pos
        assert r.remaining == len(data) - m.pos and r.end == (m.pos == len(data))
        assert r.examined >= r.consumed
        if want is None or want == "error":
            assert r.consumed == before                 # a miss keeps the position
        if want is None:
            assert r.examined == len(data)              # ... having looked at everything
    assert r.unread.tobytes() == data[m.pos:]


frame_st = st.tuples(st.sampled_from([b"", b"$", b"*"]), st.integers(-10**20, 10**20),
                     st.sampled_from([b"\r\n", b"\n", b":"]))


@st.composite
def framed(draw: st.DrawFn) -> tuple[BufferSequence, bytes, list[tuple[bytes, bytes]]]:
    """Length lines one after another, some with a byte dropped or changed; cut."""
    frames = draw(st.lists(frame_st, max_size=8))
    parts = [b"%b%d%b" % f for f in frames]
    for i in draw(st.lists(st.integers(0, max(len(parts) - 1, 0)), max_size=2)):
        if parts:
            k = draw(st.integers(0, len(parts[i]) - 1))
            parts[i] = parts[i][:k] + draw(st.sampled_from([b"", b"x", b"0", b"-"])) + \
                parts[i][k + 1:]
    data = b"".join(parts)
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=6)))
    bounds = [0, *cuts, len(data)]
    seq = BufferSequence([data[x:y] for x, y in itertools.pairwise(bounds)])
    return seq, data, [(f[0], f[2]) for f in frames]


@pytest.mark.parametrize("reader", READERS)
@settings(max_examples=300, deadline=None)
@given(case=framed(), signed=st.booleans(),
       limit=st.sampled_from([0, 9, 1000, 2**63 - 1, 10**19]))
def test_decimal_reads_agree_with_a_regex(reader: type[SequenceReader],
                                          case: tuple[BufferSequence, bytes, Any],
                                          signed: bool, limit: int) -> None:
    """try_read_decimal frame after frame (and the wrong frame's prefix)."""
    seq, data, frames = case
    r, m = reader(seq), Model(data)
    for prefix, delim in [*frames, (b"$", b"\r\n")]:
        before = r.consumed
        arg = (prefix, delim, signed, limit)
        got, want = real(r, "decimal", arg), m.run("decimal", arg)
        assert got == want and r.consumed == m.pos, (arg, data[before:])
        if want is None or want == "error":
            assert r.consumed == before
            break


def test_a_failed_search_is_not_repeated_from_the_start() -> None:
    """try_read_to remembers how far a failed search looked: the reference
    calls the sequence's find, which a subclass can count (the C reader reads
    the chain instead; the next test shows the same property for both)."""
    calls: list[int] = []

    class Counting(BufferSequence):
        def find(self, sub: Any, start: int | None = 0, end: int | None = None) -> int:
            calls.append(start or 0)
            return super().find(sub, start, end)

    seq = Counting([b"x" * 1000, b"y" * 1000])
    r = PySequenceReader(seq)
    assert r.try_read_to(b"\r\n") is None
    assert r.try_read_to(b"\r\n") is None
    assert calls == [0, 1999]                           # the second resumed at the end
    r.rewind(0)
    r.advance(5)
    assert r.try_read_to(b"\r\n") is None and calls[-1] == 1999


@pytest.mark.parametrize("reader", READERS)
def test_a_failed_search_resumes_where_it_stopped(reader: type[SequenceReader]) -> None:
    """The same property, seen by both implementations: bytes that change
    under the sequence (its memory is the caller's, like a memoryview's) in
    the part a failed search already looked at are not searched again; a new
    delimiter, a fresh reader, or a position before the failed search's start
    search everything."""
    backing = bytearray(b"x" * 1000 + b"y" * 1000)
    seq = BufferSequence([memoryview(backing)[:1000], memoryview(backing)[1000:]])
    r = reader(seq)
    assert r.try_read_to(b"\r\n") is None and r.examined == 2000
    backing[10:12] = b"\r\n"             # looked at already: not seen again
    backing[1998:2000] = b"\r\n"         # ends where the failed search stopped: seen before
    assert r.try_read_to(b"\r\n") is None
    r.advance(5)                          # from a later position: still resumes
    assert r.try_read_bytes_to(b"\r\n") is None and r.consumed == 5
    assert r.try_read_bytes_to(b"x\r") == b"xxxx"        # another delimiter: a new search
    assert reader(seq).try_read_bytes_to(b"\r\n") == b"x" * 10
    r = reader(seq)
    r.advance(20)
    assert r.try_read_to(b"\r\n", advance_past=False) is not None and r.consumed == 1998
    assert r.try_read_to(b"zz") is None
    r.rewind(1998)                        # before where the failed search started
    backing[30:32] = b"zz"
    assert r.try_read_bytes_to(b"zz") == bytes(backing[:30])


@pytest.mark.parametrize("reader", READERS)
def test_reads_that_fail_move_nothing(reader: type[SequenceReader]) -> None:
    """A read that raises (the bytes went back, a bad byteorder) leaves the
    position and the result of the next read as they were."""
    from zerg._buffers import SlotLease, leased

    owner = leased([memoryview(b"ab\r\ncd")], SlotLease([1], lambda keys: None))
    r = reader(owner[:])
    with pytest.raises(ValueError, match="byteorder"):
        r.try_read_int(2, "middle")  # type: ignore[arg-type]
    assert r.consumed == 0
    owner.release()
    for read in (lambda: r.try_read_exact(2), lambda: r.try_read_byte(),
                 lambda: r.try_read_int(1), lambda: r.try_read_bytes(1),
                 lambda: r.try_read_to(b"\r\n"), lambda: r.try_read_bytes_to(b"\r\n"),
                 lambda: r.is_next(b"ab"), lambda: r.skip(b"a"), lambda: r.unread):
        with pytest.raises(ValueError, match="after release"):
            read()
        assert r.consumed == 0
    assert r.remaining == 6 and not r.end and r.skip(b"") == 0


@pytest.mark.parametrize("reader", READERS)
def test_argument_errors_name_the_problem(reader: type[SequenceReader]) -> None:
    r = reader(BufferSequence(b"abc"))
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
    with pytest.raises(ValueError, match="bytes must be in range"):
        r.skip(256)
    with pytest.raises(ValueError, match="empty delimiter"):
        r.try_read_decimal(b"", b"")
    with pytest.raises(ValueError, match="at most 16 bytes"):
        r.try_read_decimal(b"$" * 17)
    with pytest.raises(ValueError, match="limit must be >= 0"):
        r.try_read_decimal(limit=-1)
    with pytest.raises(TypeError, match="limit must be an int"):
        r.try_read_decimal(limit=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"expected b'\$', digits and b'\\r\\n', got b'abc'"):
        r.try_read_decimal(b"$")
    big = reader(BufferSequence(b"$1001\r\n"))
    with pytest.raises(ValueError, match="1001 is beyond the limit 1000"):
        big.try_read_decimal(b"$", limit=1000)
    assert big.consumed == 0 and big.try_read_decimal(b"$", limit=1001) == 1001
    with pytest.raises(TypeError, match="BufferSequence, not bytes"):
        reader(b"abc")  # type: ignore[arg-type]
    assert zerg.SequenceReader is SequenceReader
    assert repr(r) == "<SequenceReader consumed=0 remaining=3>"
