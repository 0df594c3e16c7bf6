"""SequenceReader: a forward cursor over a BufferSequence, for parser authors.

Why: every parser over a ``BufferSequence`` re-implements the same cursor
arithmetic (where am I, is the next token complete, decode this integer),
and integer decoding through ``tobytes()`` copies whole segments.  .NET's
``SequenceReader<T>`` is the model: a position that only moves forward
unless rewound, and reads that either succeed whole or leave the position
where it was.

Operations: ``consumed``/``remaining``/``end``; ``advance``/``rewind``;
``is_next``; ``try_read_to``/``try_read_exact`` (zero-copy slices) and their copying
forms ``try_read_bytes_to``/``try_read_bytes`` (one ``bytes``, cheaper than a
slice for a short token the parser keeps); ``try_read_int``/``try_read_byte``;
``skip``.  Every ``try_*`` returns None when the bytes it
needs have not all arrived yet, and then leaves the position unchanged.
``examined`` is the furthest offset any operation looked at: pass
``(reader.consumed, reader.examined)`` to ``PipeReader.advance_to`` so the
next read waits for new bytes instead of re-parsing the same ones.

Costs: slices are zero-copy views of the sequence (valid as long as it
is); ``try_read_int`` copies only its ``length`` bytes, ``is_next`` only
``len(prefix)``; searches never look at a byte twice between successful
reads (a failed ``try_read_to`` remembers how far it looked).

Threading: like the sequence it reads.

Implementations: this module's class is the reference.  With the C
extension, ``zerg.SequenceReader`` (and this module's ``SequenceReader``) is
``zerg._speedups.SequenceReader`` (native/readerfast.c), which reads the
sequence's chain of segments directly -- a search within one segment is one
memchr/memmem, the copying reads build their bytes straight from the
segments -- with the same results, errors and messages; the Python class
stays importable as ``PySequenceReader`` and the tests drive both with the
same operations (the multidict/yarl convention).  Only a subclass of
BufferSequence that overrides ``find``/``__getitem__``/``startswith`` can tell
them apart: this class calls those methods, the C one reads the chain.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Final, Literal

from zerg._buffers import BufferSequence, BytesLike
from zerg._native import speedups

__all__ = ["PySequenceReader", "SequenceReader"]

_SKIPPERS: Final[dict[bytes, re.Pattern[bytes]]] = {}
_FRAME_MAX: Final = 16  # longest prefix or delimiter of try_read_decimal


def _not_decimal(window: bytes, prefix: bytes, delimiter: bytes) -> str:
    return (f"try_read_decimal: expected {prefix!r}, digits and {delimiter!r}, "
            f"got {window!r}")


def _skipper(values: bytes) -> re.Pattern[bytes]:
    """A pattern matching the first byte *not* in ``values``."""
    pat = _SKIPPERS.get(values)
    if pat is None:
        if len(_SKIPPERS) >= 64:
            _SKIPPERS.clear()
        cls = b"".join(b"\\x%02x" % b for b in sorted(set(values)))
        pat = _SKIPPERS[values] = re.compile(b"[^" + cls + b"]")
    return pat


class SequenceReader:
    """A forward cursor over ``seq`` (see the module docstring)."""

    __slots__ = ("_examined", "_miss", "_pos", "_seq")

    def __init__(self, seq: BufferSequence) -> None:
        if not isinstance(seq, BufferSequence):
            raise TypeError(f"SequenceReader reads a BufferSequence, not {type(seq).__name__}")
        self._seq = seq
        self._pos = 0
        self._examined = 0
        # The last failed search: (delimiter, searched from, searched up to).
        self._miss: tuple[bytes, int, int] | None = None

    # -- position ------------------------------------------------------------------------

    @property
    def sequence(self) -> BufferSequence:
        """The sequence being read."""
        return self._seq

    @property
    def consumed(self) -> int:
        """Bytes read (the position)."""
        return self._pos

    @property
    def remaining(self) -> int:
        """Bytes after the position."""
        return len(self._seq) - self._pos

    @property
    def end(self) -> bool:
        """True when nothing remains."""
        return self._pos >= len(self._seq)

    @property
    def examined(self) -> int:
        """The furthest offset any operation looked at (>= ``consumed``)."""
        return max(self._examined, self._pos)

    @property
    def unread(self) -> BufferSequence:
        """The bytes after the position (a zero-copy slice)."""
        return self._seq[self._pos:]

    def advance(self, n: int) -> None:
        """Move forward ``n`` bytes (0 <= n <= remaining)."""
        if not 0 <= n <= len(self._seq) - self._pos:
            raise ValueError(f"advance({n}) outside 0..{len(self._seq) - self._pos}")
        self._pos += n

    def rewind(self, n: int) -> None:
        """Move back ``n`` bytes (0 <= n <= consumed)."""
        if not 0 <= n <= self._pos:
            raise ValueError(f"rewind({n}) outside 0..{self._pos}")
        self._pos -= n

    def _look(self, upto: int) -> None:
        if upto > self._examined:
            self._examined = upto

    # -- reads ---------------------------------------------------------------------------

    def is_next(self, prefix: BytesLike, advance: bool = False) -> bool:
        """True if the unread bytes start with ``prefix``; with ``advance``, move
        past it.  False also when fewer bytes than ``prefix`` have arrived and
        they match so far (check ``remaining`` to tell)."""
        want = prefix if type(prefix) is bytes else memoryview(prefix).tobytes()
        n = len(want)
        self._look(min(self._pos + n, len(self._seq)))
        if not self._seq.startswith(want, self._pos):
            return False
        if advance:
            self._pos += n
        return True

    def try_read_to(self, delimiter: BytesLike,
                    advance_past: bool = True) -> BufferSequence | None:
        """The bytes before the next ``delimiter`` (a zero-copy slice), and the
        position moves past the delimiter (or onto it: ``advance_past=False``).
        None when no delimiter has arrived yet."""
        delim = delimiter if type(delimiter) is bytes else memoryview(delimiter).tobytes()
        if not delim:
            raise ValueError("empty delimiter")
        seq = self._seq
        pos = self._pos
        start = pos
        miss = self._miss
        if miss is not None and miss[0] == delim and miss[1] <= pos:
            # [miss[1], miss[2]) held no delimiter: resume where that search stopped.
            start = max(pos, miss[2] - len(delim) + 1)
        i = seq.find(delim, start)
        if i < 0:
            self._miss = (delim, pos, len(seq))
            self._look(len(seq))
            return None
        self._miss = None
        self._look(i + len(delim))
        piece = seq[pos:i]
        self._pos = i + len(delim) if advance_past else i
        return piece

    def try_read_bytes_to(self, delimiter: BytesLike, advance_past: bool = True) -> bytes | None:
        """``try_read_to`` for short tokens a parser keeps (a length line, a
        key, a header name): the bytes before the delimiter as one ``bytes``
        copy instead of a view.  None when no delimiter has arrived yet."""
        piece = self.try_read_to(delimiter, advance_past)
        return None if piece is None else piece.tobytes()

    def try_read_bytes(self, n: int) -> bytes | None:
        """``try_read_exact`` as one ``bytes`` copy (for short values a parser
        keeps), or None if fewer than ``n`` bytes arrived."""
        piece = self.try_read_exact(n)
        return None if piece is None else piece.tobytes()

    def try_read_exact(self, n: int) -> BufferSequence | None:
        """The next ``n`` bytes (a zero-copy slice), or None if fewer arrived."""
        if n < 0:
            raise ValueError(f"try_read_exact({n}): n must be >= 0")
        pos = self._pos
        if len(self._seq) - pos < n:
            self._look(len(self._seq))
            return None
        piece = self._seq[pos:pos + n]      # may raise (bytes gone): then nothing moved
        self._pos = pos + n
        return piece

    def try_read_int(self, length: int, byteorder: Literal["little", "big"] = "big", *,
                     signed: bool = False) -> int | None:
        """The next ``length`` bytes as an integer (``int.from_bytes`` rules),
        or None if fewer arrived.  Copies only those bytes."""
        if length <= 0:
            raise ValueError(f"try_read_int({length}): length must be > 0")
        pos = self._pos
        if len(self._seq) - pos < length:
            self._look(len(self._seq))
            return None
        raw = self._seq[pos:pos + length].tobytes()
        value = int.from_bytes(raw, byteorder, signed=signed)  # a bad byteorder moves nothing
        self._pos = pos + length
        return value

    def try_read_decimal(self, prefix: BytesLike = b"", delimiter: BytesLike = b"\r\n", *,
                         signed: bool = False, limit: int = 2**63 - 1) -> int | None:
        """The ASCII decimal number framed by ``prefix`` and ``delimiter``
        (``b"$42\\r\\n"`` with prefix ``b"$"``: 42), and the position moves past the
        delimiter; None when those bytes have not all arrived yet.

        A length line in one call instead of a search, a slice, a check and
        ``int()``.  1 to 19 digits, a leading ``-`` only when ``signed``.  Looks
        at most ``len(prefix) + 20 + len(delimiter)`` bytes ahead, so a peer that
        never sends the delimiter is refused as soon as the bytes cannot make a
        number: ValueError, position unchanged, also for ``abs(value) > limit``.
        ``prefix`` and ``delimiter`` are at most 16 bytes each."""
        pre = prefix if type(prefix) is bytes else memoryview(prefix).tobytes()
        delim = delimiter if type(delimiter) is bytes else memoryview(delimiter).tobytes()
        if not delim:
            raise ValueError("empty delimiter")
        if len(pre) > _FRAME_MAX or len(delim) > _FRAME_MAX:
            raise ValueError(f"try_read_decimal: prefix and delimiter are at most {_FRAME_MAX} "
                             "bytes")
        if not isinstance(limit, int):
            raise TypeError(f"try_read_decimal: limit must be an int, not {type(limit).__name__}")
        if limit < 0:
            raise ValueError(f"try_read_decimal: limit must be >= 0, not {limit}")
        pos = self._pos
        window = self._seq[pos:pos + len(pre) + 20 + len(delim)].tobytes()
        n = len(window)
        self._look(pos + n)
        i = len(pre)
        if window[:i] != pre[:n]:
            raise ValueError(_not_decimal(window, pre, delim))
        if n < i:
            return None
        start = i + 1 if signed and window[i:i + 1] == b"-" else i
        i = start
        while i < n and i - start < 19 and 48 <= window[i] <= 57:
            i += 1
        if i == n:
            return None
        tail = window[i:i + len(delim)]
        if i == start or tail != delim[:len(tail)]:
            raise ValueError(_not_decimal(window, pre, delim))
        if len(tail) < len(delim):
            return None
        value = int(window[start:i])
        if value > limit:
            raise ValueError(f"try_read_decimal: {'-' if start > len(pre) else ''}{value} "
                             f"is beyond the limit {limit}")
        self._pos = pos + i + len(delim)
        return -value if start > len(pre) else value

    def try_read_byte(self) -> int | None:
        """The next byte, or None at the end."""
        pos = self._pos
        if pos >= len(self._seq):
            return None
        value = self._seq[pos]
        self._pos = pos + 1
        return value

    def skip(self, byte_values: BytesLike | int) -> int:
        """Move past every leading byte that is one of ``byte_values`` (bytes, or
        one int); returns how many were skipped.  Reads segments in place."""
        if isinstance(byte_values, int):
            values = bytes((byte_values,))
        else:
            values = memoryview(byte_values).tobytes()
        if not values:
            return 0
        other = _skipper(values).search
        skipped = 0
        for piece in self._seq[self._pos:]:
            found = other(piece)
            if found is not None:
                skipped += found.start()
                break
            skipped += len(piece)
        self._pos += skipped
        self._look(min(self._pos + 1, len(self._seq)))
        return skipped

    def __repr__(self) -> str:
        return f"<SequenceReader consumed={self._pos} remaining={self.remaining}>"


PySequenceReader = SequenceReader
"""The pure-Python reference, whichever ``SequenceReader`` is."""

if speedups is not None and not TYPE_CHECKING:
    SequenceReader = speedups.SequenceReader  # the C reader, same behaviour
