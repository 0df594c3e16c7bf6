"""A strict HTTP/1.x request parser on a ``SequenceReader``.

Why it is in zerg: an HTTP server written on zerg spends most of its time per
request in the head parser, not in zerg (a profile of ``examples/http.py``
under pipelined load: three quarters of the CPU in the interpreter, parsing).
Line by line in Python that is 1.9 µs a request; the C implementation
(native/httpfast.c, the same rules, messages and results) takes 0.1 µs, so
the parser stops hiding the transport.

What it parses: the request line and the header fields of RFC 9112, strictly
-- what a server in front of others must refuse, it refuses:

- lines end with CRLF, or with a bare LF throughout (RFC 9112 2.2 lets a
  server accept that), never a mix; whichever the request line uses;
- the method is a token, the target visible ASCII, the version
  ``HTTP/1.1`` or ``HTTP/1.0`` (another ``HTTP/d.d`` is a 505);
- a field is ``token ":" value``; the value loses its leading and trailing
  spaces and tabs, and may hold no control character (HTAB excepted), so a
  bare CR or a NUL can never smuggle a second field in;
- ``Content-Length`` is 1 to 19 digits, repeated only with the same value;
- ``Transfer-Encoding`` is refused (501): the body framing this parser
  reports is ``Content-Length`` only, and accepting a chunked body it does
  not frame would be the classic smuggling hole;
- an HTTP/1.1 request has exactly one ``Host`` (HTTP/1.0: at most one);
- ``Connection`` is a comma-separated list of options: ``close`` ends the
  connection after the reply, ``keep-alive`` keeps an HTTP/1.0 one.

Bounds: more than ``max_fields`` fields, or a head longer than ``max_size``
bytes (plus its final line end), is a 431 -- raised as soon as the bytes
already there show it, not after waiting for the rest.

The body: ``parse_request`` reads the head and then its
``RequestHead.content_length`` bytes as a zero-copy slice, one call per
request (bounded by ``max_body``: 413); with ``parse_request_head`` the body
is the caller's (``sr.try_read_exact(head.content_length)``).

With the C extension, ``parse_request`` and ``parse_request_head`` are C
functions and ``RequestHead`` the C type; ``PyRequestHead``,
``py_parse_request`` and ``py_parse_request_head`` stay importable as the
reference, which tests/test_http1.py drives against the C one with the same
random bytes.  The C functions read a ``zerg.SequenceReader`` (the C
reader); the reference reads either.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Final, TypeVar, overload

from zerg._buffers import BufferSequence
from zerg._native import speedups
from zerg._seqreader import PySequenceReader, SequenceReader

__all__ = ["NEED_HEAD", "HttpError", "PyRequestHead", "RequestHead", "parse_request",
           "parse_request_head", "py_parse_request", "py_parse_request_head"]

_T = TypeVar("_T")

MAX_SIZE: Final = 8192
MAX_FIELDS: Final = 100
MAX_BODY: Final = 1024 * 1024
NEED_HEAD: Final = 0
"""What ``parse_request`` returns while the request's head has not all arrived
(any other int: the head is there and that many body bytes are missing)."""

_token: Final = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+").fullmatch
_target: Final = re.compile(rb"[\x21-\x7e]+").fullmatch
_version: Final = re.compile(rb"HTTP/[0-9]\.[0-9]").fullmatch
_digits: Final = re.compile(rb"[0-9]{1,19}").fullmatch
_ctl: Final = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]").search   # HTAB excepted
_CONTENT_LENGTH, _HOST, _CONNECTION, _TRANSFER_ENCODING = range(4)
_SPECIAL: Final = {b"content-length": _CONTENT_LENGTH, b"host": _HOST,
                   b"connection": _CONNECTION, b"transfer-encoding": _TRANSFER_ENCODING}


class HttpError(Exception):
    """A request that must be refused; ``status`` is the response code to send
    (400, 431, 501 or 505 from the parser), ``str(err)`` says why."""

    def __init__(self, status: int, why: str) -> None:
        super().__init__(why)
        self.status = status


class PyRequestHead:
    """A parsed request head: the request line, the fields in order (names and
    values as sent, values stripped), the body's length (0 without
    ``Content-Length``), and whether the connection stays open after the reply.
    ``path`` is the target up to its first ``?`` (the target itself without
    one), made once here so a router reads an attribute instead of splitting.

    The C type makes ``headers`` on first use: until then it keeps the fields
    as one ``bytes`` object, and ``get(name)`` reads them in place, so a
    request whose fields are not listed costs one object for all of them."""

    __slots__ = ("content_length", "headers", "keep_alive", "method", "path", "target",
                 "version")

    def __init__(self, method: bytes, target: bytes, version: bytes,
                 headers: list[tuple[bytes, bytes]], content_length: int,
                 keep_alive: bool) -> None:
        self.method = method
        self.target = target
        self.path = target.split(b"?", 1)[0] if isinstance(target, bytes) else target
        self.version = version
        self.headers = headers
        self.content_length = content_length
        self.keep_alive = keep_alive

    @overload
    def get(self, name: bytes, /) -> bytes | None: ...
    @overload
    def get(self, name: bytes, default: _T, /) -> bytes | _T: ...

    def get(self, name: bytes, default: object = None, /) -> object:
        """The value of the first field called ``name`` (bytes, any case), or
        ``default``."""
        if not isinstance(name, bytes):
            raise TypeError(f"get() takes the field name as bytes, not {type(name).__name__}")
        want = name.lower()
        for field, value in self.headers:
            if field.lower() == want:
                return value
        return default

    def __repr__(self) -> str:
        return (f"<RequestHead {self.method!r} {self.target!r} {self.version!r} "
                f"fields={len(self.headers)} content_length={self.content_length} "
                f"keep_alive={self.keep_alive}>")


def _head(sr: PySequenceReader | SequenceReader, start: int, limit: int,
          max_fields: int) -> PyRequestHead | None:
    line = sr.try_read_bytes_to(b"\n")
    if line is None:
        return None
    crlf = line[-1:] == b"\r"
    parts = (line[:-1] if crlf else line).split(b" ")
    if len(parts) != 3 or not _token(parts[0]) or not _target(parts[1]):
        raise HttpError(400, "malformed request line")
    method, target, version = parts
    if version not in (b"HTTP/1.1", b"HTTP/1.0"):
        if _version(version):
            raise HttpError(505, "unsupported HTTP version")
        raise HttpError(400, "malformed HTTP version")
    headers: list[tuple[bytes, bytes]] = []
    length = 0
    seen_length = False
    hosts = 0
    close = keep = False
    while True:
        line = sr.try_read_bytes_to(b"\n")
        if line is None:
            return None
        if crlf:
            if line[-1:] != b"\r":
                raise HttpError(400, "mixed line ends")
            line = line[:-1]
        if not line:
            break
        if sr.consumed - start > limit or len(headers) == max_fields:
            raise HttpError(431, "header block too large" if len(headers) < max_fields
                            else "too many header fields")
        name, sep, value = line.partition(b":")
        value = value.strip(b" \t")
        if not sep or not _token(name) or _ctl(value):
            raise HttpError(400, "malformed header field")
        headers.append((name, value))
        special = _SPECIAL.get(name.lower())
        if special is None:
            continue
        if special == _CONTENT_LENGTH:
            if not _digits(value) or (seen_length and int(value) != length):
                raise HttpError(400, "bad Content-Length")
            length = int(value)
            seen_length = True
        elif special == _HOST:
            hosts += 1
        elif special == _CONNECTION:
            options = {opt.strip(b" \t") for opt in value.lower().split(b",")}
            close = close or b"close" in options
            keep = keep or b"keep-alive" in options
        else:
            raise HttpError(501, "Transfer-Encoding is not supported")
    if sr.consumed - start > limit:
        raise HttpError(431, "header block too large")
    if hosts > 1 or (hosts == 0 and version == b"HTTP/1.1"):
        raise HttpError(400, "an HTTP/1.1 request needs exactly one Host")
    keep_alive = not close and (version == b"HTTP/1.1" or keep)
    return PyRequestHead(method, target, version, headers, length, keep_alive)


def py_parse_request_head(sr: PySequenceReader | SequenceReader, *, max_size: int = MAX_SIZE,
                          max_fields: int = MAX_FIELDS) -> PyRequestHead | None:
    """Parse the request head at ``sr``'s position.

    Returns the head with ``sr`` moved past it (to the body's first byte), or
    None, with ``sr`` where it was, while the head has not all arrived.
    Raises ``HttpError`` (``sr`` where it was) for a head that must be
    refused, as soon as the bytes that arrived show it.  Each line is one
    ``try_read_bytes_to(b"\\n")``, so ``sr.examined`` says how far it looked.
    """
    _check_limits("parse_request_head", max_size=max_size, max_fields=max_fields)
    start = sr.consumed
    limit = max_size + 2            # the final line end is not the head's size
    try:
        head = _head(sr, start, limit, max_fields)
    except HttpError:
        sr.rewind(sr.consumed - start)
        raise
    if head is None:
        if sr.consumed + sr.remaining - start > limit:
            sr.rewind(sr.consumed - start)
            raise HttpError(431, "header block too large")
        sr.rewind(sr.consumed - start)
    return head


def _check_limits(fname: str, **limits: int) -> None:
    for name, value in limits.items():
        if not isinstance(value, int):
            raise TypeError(f"{fname}(): {name} must be an int, not {type(value).__name__}")
        if value < 0:
            raise ValueError(f"{fname}(): {name} must be >= 0, not {value}")


_NO_BODY: Final = BufferSequence()     # the body of every request without one (shared)


def py_parse_request(sr: PySequenceReader | SequenceReader, *, max_size: int = MAX_SIZE,
                     max_fields: int = MAX_FIELDS, max_body: int = MAX_BODY,
                     ) -> tuple[PyRequestHead, BufferSequence] | int:
    """Parse the request at ``sr``'s position: its head, then its body.

    Returns ``(head, body)`` with ``sr`` moved past the body, which is a
    zero-copy slice of ``head.content_length`` bytes (``sr.try_read_exact``;
    one shared empty sequence without a body).  While the request has not all
    arrived, returns an int with ``sr`` where it was: ``NEED_HEAD`` (0) while
    the head is incomplete, else how many body bytes are still missing.
    Raises ``HttpError`` with ``sr`` where it was: the head's errors, and 413
    for a body over ``max_body`` bytes (as soon as the head says so).

    One call per request instead of a function around ``parse_request_head``
    and ``try_read_exact``: with the C extension this is one C function, and
    a server's Python per request is its routing.
    """
    _check_limits("parse_request", max_size=max_size, max_fields=max_fields,
                  max_body=max_body)
    start = sr.consumed
    head = py_parse_request_head(sr, max_size=max_size, max_fields=max_fields)
    if head is None:
        return NEED_HEAD
    length = head.content_length
    if length > max_body:
        sr.rewind(sr.consumed - start)
        raise HttpError(413, "body too large")
    if not length:
        return head, _NO_BODY
    body = sr.try_read_exact(length)
    if body is None:
        missing = length - sr.remaining
        sr.rewind(sr.consumed - start)
        return missing
    return head, body


if speedups is not None and not TYPE_CHECKING:
    speedups.bind_http(HttpError, _NO_BODY)
    RequestHead = speedups.RequestHead
    parse_request_head = speedups.parse_request_head
    parse_request = speedups.parse_request
else:
    RequestHead = PyRequestHead
    parse_request_head = py_parse_request_head
    parse_request = py_parse_request
