"""BufferSequence's reading methods in C (native/seqfast.c) against the reference.

With the extension, ``__getitem__``, ``__contains__``, ``__bytes__``,
``tobytes``, ``find``, ``index``, ``startswith``, ``first`` and ``contiguous``
of ``zerg.BufferSequence`` are ``SequenceCore``'s C descriptors (the slot
wrapper for the two slots), and the Python functions they replaced are
``zerg._speedups.sequence_reference(name)``.  Hypothesis builds the same
random sequence -- random bytes cut into random segments of every buffer
kind, inside a larger chain, owning and advanced, sliced again and again,
some of them dead (their bytes given back) -- and plays the same random
reads on it twice, with the C methods and with the Python ones put back, and
compares every result and every error (type and message).

With ``ZERG_NO_EXTENSIONS=1`` the class must carry the Python methods only,
and the comparison runs in a child process with the extension.
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
from collections.abc import Callable, Iterator
from typing import Any

from fastpath_check import run_with_extension
from hypothesis import given, settings
from hypothesis import strategies as st

from zerg import BufferSequence
from zerg._buffers import SlotLease, leased
from zerg._native import speedups

NAMES = ("__getitem__", "__contains__", "__bytes__", "tobytes", "find", "index", "startswith",
         "first", "contiguous")


@contextlib.contextmanager
def reference_methods() -> Iterator[None]:
    """The Python methods back in BufferSequence for the duration."""
    assert speedups is not None
    fast = {name: BufferSequence.__dict__[name] for name in NAMES}
    try:
        for name in NAMES:
            setattr(BufferSequence, name, speedups.sequence_reference(name))
        yield
    finally:
        for name in NAMES:
            setattr(BufferSequence, name, fast[name])


def test_the_class_carries_the_c_methods_and_keeps_the_reference() -> None:
    if speedups is None:
        for name in NAMES:
            kind = type(inspect.getattr_static(BufferSequence, name)).__name__
            assert kind == ("property" if name == "first" else "function"), name
        return
    assert set(speedups.sequence_methods()) == set(NAMES)
    core = speedups.SequenceCore
    for name in NAMES:
        assert BufferSequence.__dict__[name] is core.__dict__[name], name
        ref = speedups.sequence_reference(name)
        assert ref.__qualname__ if name != "first" else ref.fget.__qualname__
    # bound again: nothing changes, the references stay the Python ones
    speedups.bind_sequence(BufferSequence, memoryview(b""))
    for name in NAMES:
        assert BufferSequence.__dict__[name] is core.__dict__[name], name
        assert type(speedups.sequence_reference(name)).__name__ in ("function", "property")


# -- the sequences -------------------------------------------------------------------------

small = st.lists(st.sampled_from(b"ab\r\n"), max_size=40).map(bytes)
data_st = st.one_of(small, st.binary(max_size=40))
bound = st.one_of(st.none(), st.integers(-50, 50))


def _as_buffer(chunk: bytes, kind: int) -> Any:
    if kind == 0:
        return chunk
    if kind == 1:
        return bytearray(chunk)
    if kind == 2:
        return memoryview(bytearray(chunk)).toreadonly()
    return memoryview(bytes(x for b in chunk for x in (b, 0)))[::2]   # strided: copied


@st.composite
def cases(draw: st.DrawFn) -> tuple[Any, ...]:
    """How to build a sequence (a recipe, so each run builds its own)."""
    data = draw(data_st)
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=8)))
    bounds = [0, *cuts, len(data)]
    chunks = [data[x:y] for x, y in itertools.pairwise(bounds)]
    kinds = draw(st.lists(st.integers(0, 3), min_size=len(chunks), max_size=len(chunks)))
    how = draw(st.sampled_from(["plain", "plain", "slice", "slice", "owning", "owning",
                                "consumed", "released"]))
    pre, post = draw(data_st), draw(data_st)
    slices = draw(st.lists(st.tuples(bound, bound), max_size=3))
    return chunks, kinds, how, pre, post, slices


def build(case: tuple[Any, ...]) -> tuple[BufferSequence, list[Any]]:
    """(the sequence, what must stay alive with it)."""
    chunks, kinds, how, pre, post, slices = case
    keep: list[Any] = []
    if how == "plain":
        seq = BufferSequence([_as_buffer(c, k) for c, k in zip(chunks, kinds, strict=True)])
    elif how == "slice":
        whole = BufferSequence([pre, *chunks, post])
        n = sum(map(len, chunks))
        seq = whole[len(pre):len(pre) + n]
    else:
        owner = leased([memoryview(bytearray(c)) for c in [pre, *chunks, post]],
                       SlotLease(list(range(len(chunks) + 2)), lambda keys: None))
        keep.append(owner)
        n = sum(map(len, chunks))
        if how == "consumed":               # a slice of bytes the owner then gave back
            seq = owner[:len(pre) + n]
            owner.advance(len(pre) + (1 if n else 0))
        else:
            owner.advance(len(pre))
            seq = owner[:n]
            if how == "released":
                owner.release()
    for a, b in slices:
        seq = sliced(seq, a, b)
    return seq, keep


def sliced(seq: BufferSequence, a: int | None, b: int | None) -> BufferSequence:
    """seq[a:b], or seq itself when that raises (a dead sequence cannot be sliced)."""
    try:
        return seq[a:b]
    except ValueError:
        return seq


# -- the reads ------------------------------------------------------------------------------

needle_st = st.one_of(
    small.map(lambda b: b[:4]),
    st.sampled_from([b"", b"a", b"\r\n", b"ab", b"\n\r\n", b"zz"]),
    st.integers(-1, 256),
    st.sampled_from([bytearray(b"\r\n"), memoryview(b"ab"), memoryview(b"a\x00b\x00")[::2],
                     "ab", None, 3.5]),
)
prefix_st = st.one_of(needle_st.filter(lambda n: not isinstance(n, int)),
                      st.lists(small.map(lambda b: b[:3]), max_size=3).map(tuple))
index_st = st.one_of(st.integers(-60, 60), st.sampled_from([2 ** 70, -(2 ** 70), True]))
step_st = st.sampled_from([None, 1, 2, -1, 0, True, 2 ** 70])

read_st = st.one_of(
    st.tuples(st.just("getitem"), index_st),
    st.tuples(st.just("slice"), st.tuples(bound, bound, step_st)),
    st.tuples(st.sampled_from(["find", "index"]), st.tuples(needle_st, bound, bound),
              st.integers(1, 4)),
    st.tuples(st.just("contains"), needle_st),
    st.tuples(st.just("startswith"), st.tuples(prefix_st, bound, bound), st.integers(1, 4)),
    st.tuples(st.sampled_from(["tobytes", "bytes", "first", "contiguous", "iter", "len",
                               "repr", "buffer", "getitem_str"])),
)


def describe(x: Any) -> Any:
    if isinstance(x, BufferSequence):
        fields = (x._start, x._stop, x._owns, len(x._segs), list(x._offs))
        return ("seq", fields, outcome(lambda: x.tobytes()))
    if isinstance(x, memoryview):
        return ("view", x.tobytes(), x.readonly, x.format, x.ndim)
    return (type(x).__name__, x)


def outcome(fn: Callable[[], Any]) -> Any:
    try:
        return describe(fn())
    except Exception as exc:  # every error: its type and message
        return ("raised", type(exc).__name__, str(exc))


def call(seq: BufferSequence, read: tuple[Any, ...]) -> Any:
    op = read[0]
    if op == "getitem":
        return outcome(lambda: seq[read[1]])
    if op == "getitem_str":
        return outcome(lambda: seq["a"])  # type: ignore[call-overload]
    if op == "slice":
        a, b, step = read[1]
        return outcome(lambda: seq[a:b:step])
    if op in ("find", "index", "startswith"):
        sub, start, end = read[1]
        form = read[2]
        method = getattr(seq, op)
        if form == 1:
            return outcome(lambda: method(sub))
        if form == 2:
            return outcome(lambda: method(sub, start))
        if form == 3:
            return outcome(lambda: method(sub, start, end))
        return outcome(lambda: method(sub, start=start, end=end))
    if op == "contains":
        return outcome(lambda: read[1] in seq)
    if op == "tobytes":
        return outcome(seq.tobytes)
    if op == "bytes":
        return outcome(lambda: bytes(seq))
    if op == "buffer":
        return outcome(lambda: memoryview(seq))
    if op == "first":
        return outcome(lambda: seq.first)
    if op == "contiguous":
        return outcome(seq.contiguous)
    if op == "iter":
        return outcome(lambda: [piece.tobytes() for piece in seq])
    if op == "len":
        return outcome(lambda: (len(seq), bool(seq)))
    if op == "repr":
        return outcome(lambda: repr(seq))
    raise AssertionError(op)


def play(case: tuple[Any, ...], reads: list[tuple[Any, ...]]) -> list[Any]:
    seq, keep = build(case)
    trace = [describe(seq)]
    for read in reads:
        trace.append(call(seq, read))
        if read[0] == "slice":              # and read on from the slice, if there is one
            seq = sliced(seq, read[1][0], read[1][1])
    del keep
    return trace


@settings(max_examples=600, deadline=None)
@given(cases(), st.lists(read_st, max_size=12))
def test_c_reads_agree_with_the_reference(case: tuple[Any, ...],
                                          reads: list[tuple[Any, ...]]) -> None:
    if speedups is None:
        return                      # the child run with the extension does this
    fast = play(case, reads)
    with reference_methods():
        ref = play(case, reads)
    assert fast == ref


def test_find_across_boundaries_agrees_exhaustively() -> None:
    """Every needle of up to 4 bytes of a small alphabet, every start/end,
    over every way to cut a short text into segments: C find is bytes.find."""
    text = b"abaab\r\nab"
    cuts_all = [[j for j in range(1, len(text)) if mask >> j & 1] for mask in range(0, 512, 7)]
    needles = [b"a", b"b", b"ab", b"ba", b"aab", b"\r\n", b"b\r\na", b"abaa", b"x"]
    for cuts in cuts_all:
        bounds = [0, *cuts, len(text)]
        seq = BufferSequence([text[x:y] for x, y in itertools.pairwise(bounds)])
        for sub in needles:
            for start in range(-2, len(text) + 2):
                for end in (None, 3, 6, len(text), -1):
                    assert seq.find(sub, start, end) == text.find(sub, start, end), (
                        cuts, sub, start, end)
                assert seq.startswith(sub, start) == text.startswith(sub, start)


def test_a_long_needle_across_many_small_segments() -> None:
    """A needle longer than the boundary buffer (256 bytes) across 1-byte
    segments: the copy around the boundary goes to the heap."""
    text = bytes(range(256)) * 3
    seq = BufferSequence([text[i:i + 1] for i in range(len(text))])
    for sub in (text[100:500], text[255:700], text[255:257]):
        assert seq.find(sub) == text.find(sub)
        assert seq.find(sub, 300) == text.find(sub, 300)
        assert seq.startswith(sub, text.find(sub))


def test_subclass_overrides_are_honoured() -> None:
    """index, ``in`` and bytes() call the subclass's find/tobytes, as the
    reference does."""
    seen: list[str] = []

    class Watching(BufferSequence):
        def find(self, sub: Any, start: int | None = 0, end: int | None = None) -> int:
            seen.append("find")
            return super().find(sub, start, end)

        def tobytes(self) -> bytes:
            seen.append("tobytes")
            return super().tobytes()

    seq = Watching([b"ab", b"cd"])
    assert seq.index(b"bc") == 1 and b"cd" in seq and bytes(seq) == b"abcd"
    assert seen == ["find", "find", "tobytes"]


def test_the_comparison_runs_with_the_extension() -> None:
    """Under ZERG_NO_EXTENSIONS=1 the comparison above runs in a child with it."""
    if speedups is None:
        run_with_extension(__file__, passed=6)
