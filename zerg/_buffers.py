# BufferSequence: a read-only, zero-copy chain of memoryviews over receive slots.
#
# Operations we want to support:
#   - len(), bool(), seq[i] -> int, seq[a:b] -> BufferSequence (no copy), iteration over the
#     memoryview segments, find()/index()/rfind()/rindex()/count() across segment boundaries,
#     startswith()/endswith(), tobytes(), copy_into(), contiguous() (one buffer: a view or
#     one copy), == against bytes-like objects, `first`, `is_single_segment`.
#   - On the one sequence that owns receive slots (made by the connection): advance(n) hands
#     back every slot whose bytes are all consumed; release() hands back the rest.
#
# Goals:
#   - Zero copy. Slicing never copies and never even re-slices memoryviews: a sequence is a
#     window [start, stop) over a shared chain of segments. Searching reads segments in place
#     (compiled `re` patterns accept buffers plus pos/endpos); across a boundary it copies at
#     most len(sub) - 1 bytes from each side.
#   - Complexity is a security property (see h11's _receivebuffer.py). Every operation is
#     O(log segments + bytes touched): slicing is O(1), and find() scans each byte of the
#     searched range once plus O(len(sub)) per segment boundary. A parser that
#     keeps searching a growing buffer passes `start=` (what it already examined) and stays
#     linear overall.
#   - Loud use-after-release. Reading a slot after it went back to the kernel would read
#     bytes of some other connection; every reading operation checks validity in O(1).
#
# Plan:
#   - The chain: `_segs` (list of read-only 'B' memoryviews) and `_offs` (offs[i] is where
#     segment i starts in chain coordinates, offs[-1] is the total). Both are shared by a
#     sequence and all its slices; `_start`/`_stop` are chain coordinates.
#   - A sequence is a plain value. The lease -- which receive slots its segments live in and
#     how to give them back -- belongs to the connection's input pipe (`zerg._inputpipe`),
#     which hands an owning sequence a `Lease` record: the key per segment (None for private
#     memory), `give_back(keys)`, `next` (the first segment still held) and `held_from`, the
#     chain offset where that segment starts. Slots only ever go back from the front, so a
#     view is valid iff start >= held_from; release() sets held_from to a huge number,
#     which invalidates the owner and all its slices in one store.
#   - The pipe's chain operations (take over the unconsumed part, compact) are the module
#     functions at the bottom: they are this module's internal API, used by the input pipe.
#   - Returned slots have their chain entry replaced by an empty memoryview, so the chain
#     stops referencing slot memory as soon as the slot is gone.
#   - This module is the reference. With the extension, the reading methods a parser runs
#     (__getitem__, __contains__, __bytes__, tobytes, find, index, startswith, first,
#     contiguous) are C (native/seqfast.c): bind_sequence() below puts the C base's
#     descriptors in the class in place of the Python functions, which
#     zerg._speedups.sequence_reference(name) keeps for the tests that compare them.
#
# Warnings (lifetimes):
#   - A sequence from get_sequence() borrows receive slots. Its bytes are valid until the
#     owner advances past them or releases; copy (tobytes()) anything you need to keep.
#   - The owner is the one mutable object: advance() moves its start. Slices are immutable
#     views and keep their bytes, but raise ValueError once those bytes were handed back.
#   - memoryviews obtained from iteration or `first` are NOT checked: do not keep them past
#     advance()/release() of the bytes they show. Each is a fresh view, so releasing it
#     (`with seq.first as mv:`) does not affect the sequence.
#   - A non-owning sequence built by BufferSequence(data) borrows `data`; mutating or
#     resizing the underlying objects is the caller's business, as with memoryview.

from __future__ import annotations

import operator
import re
import sys
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Final, Protocol, SupportsIndex, overload

from zerg._native import speedups

__all__ = ["BufferSequence", "BytesLike"]

if TYPE_CHECKING:  # any buffer-protocol object (bytes, bytearray, memoryview, array, mmap)
    from _typeshed import ReadableBuffer as BytesLike
    from _typeshed import WriteableBuffer
elif sys.version_info >= (3, 12):
    from collections.abc import Buffer as BytesLike
else:
    BytesLike = bytes | bytearray | memoryview

_EMPTY: Final = memoryview(b"")
_RELEASED: Final = sys.maxsize
_NOT_OWNER: Final = "only the sequence returned by get_sequence owns slots"
_new: Final = object.__new__
_PYBUF_WRITABLE: Final = 1  # inspect.BufferFlags.WRITABLE (3.12+)
_CHUNK: Final = 64 * 1024   # rfind reads backwards in copies of this size

if TYPE_CHECKING:
    _ExportBase = object
else:  # the storage, len/bool and buffer protocol in C; see BufferSequence
    _ExportBase = object if speedups is None else speedups.SequenceCore
_new_seq: Final = _ExportBase.__new__  # no __init__: the hot path fills the slots itself
_FIELDS: Final = ("_offs", "_owns", "_segs", "_slots", "_start", "_stop")


_SEARCHERS: Final[dict[bytes, Callable[[BytesLike, int, int], re.Match[bytes] | None]]] = {}


def _searcher(sub: bytes) -> Callable[[BytesLike, int, int], re.Match[bytes] | None]:
    """`search(buffer, pos, endpos)` for the literal `sub`; searches in place, no copy."""
    search = _SEARCHERS.get(sub)
    if search is None:
        if len(_SEARCHERS) >= 256:  # bounded: parsers use a handful of separators
            _SEARCHERS.clear()
        search = _SEARCHERS[sub] = re.compile(re.escape(sub)).search
    return search


def _needle(sub: BytesLike | int) -> bytes:
    if isinstance(sub, int):
        return bytes((sub,))  # ValueError outside 0..255, like bytes.find
    return memoryview(sub).tobytes()


def _adjust(start: int | None, end: int | None, n: int) -> tuple[int, int]:
    """Normalize start/end exactly like bytes.find (CPython's ADJUST_INDICES)."""
    if end is None or end > n:
        end = n
    elif end < 0:
        end = max(end + n, 0)
    if start is None:
        start = 0
    elif start < 0:
        start = max(start + n, 0)
    return start, end


RELEASED: Final = _RELEASED
"""``Lease.held_from`` once every slot went back."""


class Lease(Protocol):
    """What an owning sequence holds of its receive slots (made by the input pipe).

    ``keys[i]`` is where segment i lives (None: private memory, nothing to give
    back); ``next`` is the first segment still held; ``held_from`` the chain
    offset where it starts (``RELEASED`` once all went back).  ``give_back``
    gets the keys of segments consumed, each exactly once, in chain order; it
    must not raise.
    """

    keys: list[Any]
    next: int
    held_from: int

    def give_back(self, keys: list[Any]) -> None: ...


class BufferSequence(_ExportBase):
    """An immutable, zero-copy sequence of bytes made of memoryview segments.

    Behaves like a read-only ``bytes`` for len, indexing, slicing (slices share memory, no
    copy), ``find``/``index``/``startswith`` (bytes semantics, across segment boundaries),
    and ``==`` against bytes-like objects. Iterating yields the segments as read-only
    memoryviews of format 'B', not ints. Not hashable.

    ``bytes(seq)``, ``bytearray(seq)`` and ``memoryview(seq)`` give a *copy* of the bytes
    (the buffer protocol exports ``tobytes()``, never slot memory, so nothing can outlive
    ``release()`` unchecked). The export comes from the C base ``SequenceCore`` on 3.11
    and from ``__buffer__`` (PEP 688) on 3.12+; with ``ZERG_NO_EXTENSIONS=1`` on 3.11 only
    ``bytes(seq)`` works, as a pure-Python class cannot export a buffer there.

    ``BufferSequence(data)`` wraps one buffer-protocol object or an iterable of them without
    copying. Sequences from ``conn.get_sequence()`` own receive slots: see ``advance`` and
    ``release``. Any read of bytes whose slot was handed back raises ValueError.
    """

    # With the extension the fields live in the C base (SequenceCore).
    __slots__ = _FIELDS if speedups is None else ()

    _segs: list[memoryview]
    _offs: list[int]
    _start: int
    _stop: int
    _slots: Lease | None
    _owns: bool

    def __init__(self, data: BytesLike | Iterable[BytesLike] = ()) -> None:
        if isinstance(data, BufferSequence):  # share its chain (and its validity checks)
            data._check()
            self._segs, self._offs, self._slots = data._segs, data._offs, data._slots
            self._start, self._stop, self._owns = data._start, data._stop, False
            return
        try:
            items: Iterable[BytesLike] = (memoryview(data),)  # type: ignore[arg-type]
        except TypeError:
            items = data  # type: ignore[assignment]
        segs = [_readonly_bytes_view(x) for x in items]
        self._init_chain([mv for mv in segs if mv.nbytes])

    def _init_chain(self, segs: list[memoryview]) -> None:
        offs = [0]
        total = 0
        for mv in segs:
            total += mv.nbytes
            offs.append(total)
        self._segs = segs
        self._offs = offs
        self._start = 0
        self._stop = total
        self._slots = None
        self._owns = False

    # -- validity ----------------------------------------------------------------------

    def _check(self) -> None:
        slots = self._slots
        if slots is not None and self._start < slots.held_from:
            raise ValueError(self._dead_message(slots))

    def _dead_message(self, slots: Lease) -> str:
        if slots.held_from == _RELEASED:
            return (
                "BufferSequence used after release(): its receive slots went back to the "
                "kernel and may already hold other data; copy with tobytes() before release()"
            )
        return (
            "BufferSequence slice used after advance() consumed its bytes: their receive "
            "slots went back to the kernel; copy with tobytes() before advancing past them"
        )

    # -- basic protocol ----------------------------------------------------------------

    if speedups is None:  # else the C base's, which these mirror

        def __len__(self) -> int:
            return self._stop - self._start

        def __bool__(self) -> bool:
            return self._stop > self._start

    def __repr__(self) -> str:
        start, stop = self._start, self._stop
        nsegs = 0 if start == stop else self._locate(stop - 1) - self._locate(start) + 1
        state = ""
        if self._slots is not None:
            if self._slots.held_from == _RELEASED:
                state = " released"
            elif start < self._slots.held_from:
                state = " consumed"
            elif self._owns:
                state = " owning"
        return f"<BufferSequence len={stop - start} segments={nsegs}{state}>"

    def _locate(self, pos: int) -> int:
        """Index of the segment holding chain offset pos (requires pos < total)."""
        if len(self._segs) == 1:
            return 0
        return bisect_right(self._offs, pos) - 1

    @overload
    def __getitem__(self, key: SupportsIndex) -> int: ...
    @overload
    def __getitem__(self, key: slice) -> BufferSequence: ...
    def __getitem__(self, key: SupportsIndex | slice) -> int | BufferSequence:
        slots = self._slots
        if slots is not None and self._start < slots.held_from:
            raise ValueError(self._dead_message(slots))
        start = self._start
        n = self._stop - start
        if isinstance(key, slice):
            if key.step is not None and key.step != 1:
                raise ValueError("BufferSequence slicing does not support a step")
            a, b, _ = key.indices(n)
            view = _new_seq(BufferSequence)
            view._segs = self._segs
            view._offs = self._offs
            view._start = start + a
            view._stop = start + (b if b > a else a)
            view._slots = self._slots
            view._owns = False
            return view
        i = operator.index(key)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError("BufferSequence index out of range")
        pos = start + i
        k = self._locate(pos)
        return self._segs[k][pos - self._offs[k]]

    def _pieces(self, a: int, b: int, fresh: bool = False) -> list[memoryview]:
        """The bytes of chain range [a, b) as memoryviews (no copy of the bytes).

        Whole segments are the chain's own views unless `fresh` (for handing out).
        """
        if a >= b:
            return []
        segs, offs = self._segs, self._offs
        k = self._locate(a)
        s, e = offs[k], offs[k + 1]
        if b <= e:
            return [segs[k][a - s : b - s]]
        pieces = [segs[k][a - s :]]
        k += 1
        while offs[k + 1] < b:
            if offs[k + 1] > offs[k]:
                pieces.append(segs[k][:] if fresh else segs[k])
            k += 1
        pieces.append(segs[k][: b - offs[k]])
        return pieces

    def _copy(self, a: int, b: int) -> bytes:
        """A copy of chain range [a, b)."""
        segs = self._segs
        if len(segs) == 1:
            return segs[0][a:b].tobytes()
        if a >= b:
            return b""
        offs = self._offs
        k = bisect_right(offs, a) - 1
        s = offs[k]
        if b <= offs[k + 1]:
            return segs[k][a - s : b - s].tobytes()
        return b"".join(self._pieces(a, b))

    def __iter__(self) -> Iterator[memoryview]:
        self._check()
        return iter(self._pieces(self._start, self._stop, fresh=True))

    @property
    def first(self) -> memoryview:
        """The first segment (read-only memoryview); empty if the sequence is empty."""
        self._check()
        a, b = self._start, self._stop
        if a == b:
            return memoryview(b"")
        k = self._locate(a)
        s, e = self._offs[k], self._offs[k + 1]
        return self._segs[k][a - s : (b if b < e else e) - s]

    @property
    def is_single_segment(self) -> bool:
        """True if all bytes are in `first` (also True when empty)."""
        a, b = self._start, self._stop
        return len(self._segs) <= 1 or a == b or self._locate(a) == self._locate(b - 1)

    # -- copying out -------------------------------------------------------------------

    def tobytes(self) -> bytes:
        """A copy of the bytes (one allocation for the result)."""
        self._check()
        return self._copy(self._start, self._stop)

    def __bytes__(self) -> bytes:
        return self.tobytes()

    if sys.version_info >= (3, 12) or TYPE_CHECKING:  # typed as a Buffer for users on 3.11 too

        def __buffer__(self, flags: int, /) -> memoryview:
            """A read-only copy of the bytes (PEP 688): ``bytearray(seq)``, ``memoryview(seq)``."""
            if flags & _PYBUF_WRITABLE:
                raise BufferError("BufferSequence is read-only")
            return memoryview(self.tobytes())

    def copy_into(self, buffer: WriteableBuffer) -> int:
        """Copy min(len(self), len(buffer)) bytes into writable `buffer`; return the count."""
        self._check()
        dst = memoryview(buffer)
        if dst.readonly:
            raise TypeError("copy_into needs a writable buffer")
        if dst.format != "B" or dst.ndim != 1:
            dst = dst.cast("B")
        n = min(self._stop - self._start, dst.nbytes)
        pos = 0
        for piece in self._pieces(self._start, self._start + n):
            end = pos + piece.nbytes
            dst[pos:end] = piece
            pos = end
        return n

    def __eq__(self, other: object) -> bool:
        """Byte-wise equality with another BufferSequence or a bytes-like object."""
        if isinstance(other, BufferSequence):
            if len(other) != len(self):
                return False
            other = other.tobytes()
        elif not isinstance(other, (bytes, bytearray, memoryview)):
            return NotImplemented
        self._check()
        a, b = self._start, self._stop
        theirs = memoryview(other)
        if theirs.nbytes != b - a:
            return False
        if theirs.format != "B" or theirs.ndim != 1:
            theirs = theirs.cast("B")
        if b - a <= 256:  # a small copy beats comparing memoryviews piecewise
            return self._copy(a, b) == theirs
        pos = 0
        for piece in self._pieces(a, b):
            end = pos + piece.nbytes
            if piece != theirs[pos:end]:
                return False
            pos = end
        return True

    __hash__ = None  # type: ignore[assignment]  # mutable owner, bytes-like equality

    # -- searching ---------------------------------------------------------------------

    def find(self, sub: BytesLike | int, start: int | None = 0, end: int | None = None) -> int:
        """Lowest index of `sub` in self[start:end], or -1; exactly like bytes.find."""
        slots = self._slots
        if slots is not None and self._start < slots.held_from:
            raise ValueError(self._dead_message(slots))
        if type(sub) is not bytes:
            sub = _needle(sub)
        base = self._start
        if start == 0 and end is None:   # _span(), inline: find() is a parser's hot path
            a, b = base, self._stop
        else:
            start, end = _adjust(start, end, self._stop - base)
            a, b = base + start, base + end
        m = len(sub)
        if b - a < m:
            return -1
        if m == 0:
            return a - base
        search = _SEARCHERS.get(sub) or _searcher(sub)
        if len(self._segs) == 1:
            found = search(self._segs[0], a, b)
            return -1 if found is None else found.start() - base
        pos = self._find_chained(sub, search, a, b)
        return -1 if pos < 0 else pos - base

    def _find_chained(
        self,
        sub: bytes,
        search: Callable[[BytesLike, int, int], re.Match[bytes] | None],
        a: int,
        b: int,
    ) -> int:
        """find() over chain range [a, b) spanning segments; a chain offset or -1.

        Each segment is searched in place. Between in-segment searches, a match that
        starts in segment k at or after a and runs into segment k+1 (or further) is looked
        for by copying < 2 * len(sub) bytes around the boundary, and only when the segment's
        tail holds a candidate first byte. In-segment matches of segment k start before any
        crossing match of k, which start before any match of k+1: the first hit is lowest.
        """
        segs, offs = self._segs, self._offs
        m = len(sub)
        first_byte = sub[0]
        head = None  # searcher for sub[:1], made on first need
        k = bisect_right(offs, a) - 1
        while True:
            s = offs[k]
            e = offs[k + 1]
            if e >= b:  # the last segment of the range
                found = search(segs[k], a - s, b - s)
                return -1 if found is None else found.start() + s
            seg = segs[k]
            found = search(seg, a - s, e - s)
            if found is not None:
                return found.start() + s
            if m == 2:
                if a < e and seg[e - 1 - s] == first_byte:
                    nxt = segs[k + 1]  # e < b, so the range goes on
                    if (nxt[0] == sub[1]) if nxt else (self._copy(e - 1, e + 1) == sub):
                        return e - 1
            elif m > 2:
                lo = e - m + 1 if e - m + 1 > a else a  # crossing matches start in [lo, e)
                if lo < e and lo + m <= b:
                    if head is None:
                        head = _searcher(sub[:1])
                    cand = head(seg, lo - s, e - s)
                    if cand is not None:
                        p = cand.start() + s
                        i = self._copy(p, min(b, e + m - 1)).find(sub)
                        if i >= 0:  # the lowest match at or after p; none starts in [a, p)
                            return p + i
            a = e
            k += 1

    def index(self, sub: BytesLike | int, start: int | None = 0, end: int | None = None) -> int:
        """Like find() but raises ValueError when `sub` is absent, like bytes.index."""
        i = self.find(sub, start, end)
        if i < 0:
            raise ValueError("subsection not found")
        return i

    def __contains__(self, sub: BytesLike | int) -> bool:
        return self.find(sub) >= 0

    def startswith(
        self,
        prefix: BytesLike | tuple[BytesLike, ...],
        start: int | None = 0,
        end: int | None = None,
    ) -> bool:
        """Like bytes.startswith; copies at most len(prefix) bytes."""
        return self._has_affix(prefix, start, end, at_end=False)

    def rfind(self, sub: BytesLike | int, start: int | None = 0, end: int | None = None) -> int:
        """Highest index of ``sub`` in self[start:end], or -1; exactly like bytes.rfind.

        Reads the range from its end in chunks of at most 64 KiB (plus
        ``len(sub) - 1`` bytes of overlap), each copied once: bytes touched, no
        more."""
        self._check()
        if type(sub) is not bytes:
            sub = _needle(sub)
        base = self._start
        a, b = self._span(start, end)
        m = len(sub)
        if b - a < m:
            return -1
        if m == 0:
            return b - base
        hi = b
        while hi - a >= m:
            lo = max(a, hi - _CHUNK - m + 1)
            i = self._copy(lo, hi).rfind(sub)
            if i >= 0:
                return lo + i - base
            hi = lo + m - 1        # a match ending in the next chunk starts before lo + m - 1
        return -1

    def rindex(self, sub: BytesLike | int, start: int | None = 0, end: int | None = None) -> int:
        """Like rfind() but raises ValueError when ``sub`` is absent, like bytes.rindex."""
        i = self.rfind(sub, start, end)
        if i < 0:
            raise ValueError("subsection not found")
        return i

    def count(self, sub: BytesLike | int, start: int | None = 0, end: int | None = None) -> int:
        """Non-overlapping occurrences of ``sub`` in self[start:end]; like bytes.count."""
        self._check()
        if type(sub) is not bytes:
            sub = _needle(sub)
        n = self._stop - self._start
        start, end = _adjust(start, end, n)
        if end - start < len(sub):
            return 0
        if not sub:
            return end - start + 1
        found = 0
        pos = start
        while (i := self.find(sub, pos, end)) >= 0:
            found += 1
            pos = i + len(sub)
        return found

    def endswith(
        self,
        suffix: BytesLike | tuple[BytesLike, ...],
        start: int | None = 0,
        end: int | None = None,
    ) -> bool:
        """Like bytes.endswith; copies at most len(suffix) bytes."""
        return self._has_affix(suffix, start, end, at_end=True)

    def _span(self, start: int | None, end: int | None) -> tuple[int, int]:
        """Chain coordinates of self[start:end], normalized like bytes methods."""
        base = self._start
        if start == 0 and end is None:
            return base, self._stop
        start, end = _adjust(start, end, self._stop - base)
        return base + start, base + end

    def _has_affix(self, affix: BytesLike | tuple[BytesLike, ...], start: int | None,
                   end: int | None, at_end: bool) -> bool:
        """startswith (``at_end`` False) / endswith: copies at most len(affix) bytes."""
        self._check()
        a, b = self._span(start, end)
        for p in affix if isinstance(affix, tuple) else (affix,):
            want = p if type(p) is bytes else memoryview(p).tobytes()
            m = len(want)
            if b - a >= m and (self._copy(b - m, b) if at_end else self._copy(a, a + m)) == want:
                return True
        return False

    def contiguous(self) -> memoryview:
        """All the bytes as one read-only memoryview, for code that wants one
        buffer (``struct.unpack_from``, ``hashlib``, ``int.from_bytes``, a C
        library): a zero-copy view when they lie in one segment, one copy
        otherwise.  A view shares the warning of ``first``: do not keep it past
        ``advance()``/``release()``."""
        self._check()
        a, b = self._start, self._stop
        if a == b:
            return memoryview(b"")
        k = self._locate(a)
        s, e = self._offs[k], self._offs[k + 1]
        if b <= e:
            return self._segs[k][a - s:b - s]
        return memoryview(self._copy(a, b))

    # -- owning sequences --------------------------------------------------------------

    def advance(self, n: int) -> None:
        """Consume n bytes from the front; slots now fully consumed go back at once.

        Only the owning sequence (from get_sequence) has this; it then shows the rest.
        Slices taken earlier keep working as long as their bytes are still held.
        """
        if not self._owns:
            raise TypeError(_NOT_OWNER)
        self._check()
        if not 0 <= n <= self._stop - self._start:
            raise ValueError(f"advance({n}) outside 0..{self._stop - self._start}")
        self._start = consumed = self._start + n
        slots = self._slots
        assert slots is not None
        offs = self._offs
        first = last = slots.next
        nsegs = len(self._segs)
        while last < nsegs and offs[last + 1] <= consumed:
            self._segs[last] = _EMPTY  # drop our reference to the slot's memory
            last += 1
        if last > first:
            slots.next = last
            slots.held_from = offs[last]
            slots.give_back(slots.keys[first:last])

    def release(self) -> None:
        """Give every slot still held back (one give_back call). Idempotent.

        Afterwards any read of this sequence or of its slices raises ValueError.
        """
        if not self._owns:
            raise TypeError(_NOT_OWNER)
        slots = self._slots
        assert slots is not None
        if slots.held_from == _RELEASED:
            return
        keys = retire(self)
        if keys:
            slots.give_back(keys)

def _readonly_bytes_view(obj: BytesLike) -> memoryview:
    """A read-only, format 'B', 1-D, C-contiguous view of obj's bytes.  A
    non-contiguous buffer (a strided view) is copied once: the searches (``re``
    here, memchr in C) and the C methods read a segment as one block."""
    mv = memoryview(obj)
    if not mv.c_contiguous:
        return memoryview(mv.tobytes())
    if mv.format != "B" or mv.ndim != 1:
        mv = mv.cast("B")
    return mv if mv.readonly else mv.toreadonly()


# -- the input pipe's chain operations (internal API of zerg._inputpipe) -------------------


def leased(segments: list[memoryview], lease: Lease) -> BufferSequence:
    """The owning sequence over ``segments``, segment i living at ``lease.keys[i]``."""
    if len(segments) != len(lease.keys):
        raise ValueError("need exactly one lease key per segment")
    self = _new_seq(BufferSequence)
    self._init_chain([_readonly_bytes_view(mv) for mv in segments])
    self._slots = lease
    self._owns = True
    return self


class SlotLease:
    """The ``Lease`` record the input pipe (and the Protocol sink) make for an
    owning sequence: which slots it holds and how they go back.  With the
    extension, ``zerg._speedups.SlotLease`` (the same fields) replaces it."""

    __slots__ = ("give_back", "held_from", "keys", "next")

    def __init__(self, keys: list[Any], give_back: Callable[[list[Any]], None]) -> None:
        self.keys = keys
        self.give_back = give_back
        self.next = 0
        self.held_from = 0


_PySlotLease: Final = SlotLease     # the reference (the extension replaces SlotLease below)


def leased_single(view: memoryview, key: Any,
                  give_back: Callable[[list[Any]], None]) -> tuple[BufferSequence, SlotLease]:
    """``leased([view], SlotLease([key], give_back))`` for the hot path, and the
    lease: ``view`` must already be a read-only, format 'B', 1-D memoryview
    (receive slot views are)."""
    lease = _new(_PySlotLease)
    lease.keys = [key]
    lease.give_back = give_back
    lease.next = 0
    lease.held_from = 0
    self = _new_seq(BufferSequence)
    self._segs = [view]
    n = len(view)
    self._offs = [0, n]
    self._start = 0
    self._stop = n
    self._slots = lease
    self._owns = True
    return self, lease


def window(seq: BufferSequence) -> BufferSequence:
    """``seq[:]`` for the hot path: a non-owning view of all of ``seq``
    (same chain, same validity checks), without the slice arithmetic."""
    view = _new_seq(BufferSequence)
    view._segs = seq._segs
    view._offs = seq._offs
    view._start = seq._start
    view._stop = seq._stop
    view._slots = seq._slots
    view._owns = False
    return view


def single_view(seq: BufferSequence) -> memoryview | None:
    """The bytes as one memoryview (checked, no copy) when the chain has one
    segment; None otherwise."""
    segs = seq._segs
    if len(segs) != 1:
        return None
    slots = seq._slots
    if slots is not None and seq._start < slots.held_from:
        raise ValueError(seq._dead_message(slots))
    seg = segs[0]
    if seq._start == 0 and seq._stop == len(seg):
        return seg
    return seg[seq._start:seq._stop]


def drop_single(seq: BufferSequence) -> None:
    """Mark a one-segment owning sequence released *without* giving its slot
    back (the caller does): the Protocol fast path's cheap release."""
    slots = seq._slots
    assert slots is not None
    slots.next = 1
    slots.held_from = _RELEASED
    seq._segs[0] = _EMPTY


def retire(seq: BufferSequence) -> list[Any]:
    """Mark an owning sequence and its slices dead, drop its references to slot
    memory, and return the keys it still held (the caller gives them back or
    hands them on)."""
    slots = seq._slots
    assert slots is not None
    first = slots.next
    nsegs = len(seq._segs)
    keys = slots.keys[first:]
    slots.next = nsegs
    slots.held_from = _RELEASED
    seq._segs[first:] = [_EMPTY] * (nsegs - first)
    return keys


def unconsumed(seq: BufferSequence) -> tuple[list[memoryview], list[Any]]:
    """Take over an owning sequence's unconsumed bytes without copying: their
    segments and keys.  ``seq`` and its slices are dead afterwards."""
    if not seq._owns:
        raise TypeError(_NOT_OWNER)
    seq._check()
    slots = seq._slots
    assert slots is not None
    first = slots.next
    held = seq._segs[first:]
    skip = seq._start - seq._offs[first] if first < len(seq._segs) else 0
    if skip:
        held[0] = held[0][skip:]
    return held, retire(seq)


def pieces(seq: BufferSequence) -> tuple[list[memoryview], list[Any]]:
    """The bytes of ``seq`` (any sequence, owning or a slice of one) as the
    memoryviews of its segments, trimmed to its window, each with the key of
    the slot it lives in (None: private memory, or no lease at all).  Each view
    is a new memoryview over the same memory, so it outlives the release of
    the chain's own view when its slot is given back (a pinned slot's memory
    stays valid).  Checked (a consumed or released sequence raises); ``seq``
    is left as it was."""
    seq._check()
    start, stop = seq._start, seq._stop
    if start >= stop:
        return [], []
    offs = seq._offs
    segs = seq._segs
    lease = seq._slots
    first = seq._locate(start)
    views: list[memoryview] = []
    keys: list[Any] = []
    i = first
    while i < len(segs) and offs[i] < stop:
        seg = segs[i]
        lo = start - offs[i] if i == first else 0
        hi = min(len(seg), stop - offs[i])
        views.append(seg[lo:hi])    # a view of its own: the owner may release seg
        keys.append(None if lease is None else lease.keys[i])
        i += 1
    return views, keys


def held_slots(seq: BufferSequence) -> int:
    """How many segments (slots) an owning sequence still holds."""
    slots = seq._slots
    return 0 if slots is None else len(seq._segs) - slots.next


# -- the C versions of the hot chain operations (the functions above are the reference) ----

REFERENCE: Final[dict[str, Callable[..., Any]]] = {
    "leased_single": leased_single, "single_view": single_view,
    "drop_single": drop_single, "window": window,
}
"""The pure-Python chain operations, kept for tests that compare them with C."""

if speedups is not None and not TYPE_CHECKING:
    SlotLease = speedups.SlotLease
    speedups.bind_sequence(BufferSequence, _EMPTY)
    leased_single = speedups.leased_single
    single_view = speedups.single_view
    drop_single = speedups.drop_single
    window = speedups.window
