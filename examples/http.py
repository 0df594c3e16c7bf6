"""Keep-alive HTTP/1.1 server on zerg's PipeReader, with a zero-copy parser.

    python examples/http.py --host 127.0.0.1 --port 8080 [--header-timeout 10] [--idle-timeout 60]

Routes: ``GET /`` and ``GET /plaintext`` answer ``Hello, World!``; ``POST /echo``
answers with the request body.

Pipelining: requests are answered in order, the replies to one read batch in one
write.  Once the staged replies pass the connection's high-water mark
(``conn.get_write_buffer_limits()``), parsing stops, ``await conn.flush()`` sends
them, and parsing goes on where it stopped: a client can pipeline any number of
requests and memory stays bounded (this also lets other connections run).

Strict parsing (RFC 9112): malformed requests get 400, header blocks over
``MAX_HEADER`` bytes 431, bodies over ``MAX_BODY`` 413, ``Transfer-Encoding`` 501;
after an error the connection closes cleanly.  Lines end with CRLF, or with a bare
LF throughout (RFC 9112 2.2 lets a server accept that), never a mix; a bare CR, a
NUL or any other control character in the request line or a field value is a 400,
so ``X: a<LF>Content-Length: 5`` cannot smuggle a second field in.  An HTTP/1.1
request needs exactly one ``Host``.  ``Connection`` is a list of options:
``close`` closes after the reply; ``keep-alive`` keeps an HTTP/1.0 connection open
(answered with ``Connection: keep-alive``), which otherwise closes after the reply.

Timeouts: a request's header section must be complete ``--header-timeout`` seconds
after its first byte, else 408 and close (slow-header clients cannot hold
connections); a connection that receives nothing for ``--idle-timeout`` seconds
(an idle keep-alive connection, a stalled body) is closed by the engine
(``ReactorConfig.idle_timeout_s``; 0 disables it).

The parser (``parse_request``) works on any ``zerg.BufferSequence``: it finds
the end of the header block across segment boundaries without copying, never
rescans bytes it already examined, copies only the bounded header block to
split it, and hands the body on as a zero-copy slice.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import re
import time
from dataclasses import dataclass
from typing import Final, Protocol

import zerg
from zerg.adapters import PipeReader

MAX_HEADER: Final = 8192
MAX_BODY: Final = 1024 * 1024
MAX_HEADERS: Final = 100
HEADER_TIMEOUT: Final = 10.0    # seconds from a request's first byte to its blank line
IDLE_TIMEOUT: Final = 60.0      # seconds a connection may receive nothing

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TARGET = re.compile(rb"[\x21-\x7e]+")
_VERSION = re.compile(rb"HTTP/[0-9]\.[0-9]")
_DIGITS = re.compile(rb"[0-9]{1,19}")
_CTL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")    # control characters, HTAB excepted
_head_end: Final = re.compile(rb"\n\r?\n").search    # bound once, like those below
_token: Final = _TOKEN.fullmatch      # bound once: called for every field
_ctl: Final = _CTL.search
_digits: Final = _DIGITS.fullmatch
_CONTENT_LENGTH, _HOST, _CONNECTION, _TRANSFER_ENCODING = range(4)
_SPECIAL: Final = {b"content-length": _CONTENT_LENGTH, b"host": _HOST,
                   b"connection": _CONNECTION, b"transfer-encoding": _TRANSFER_ENCODING}
_REASONS: Final = {
    200: b"OK", 400: b"Bad Request", 404: b"Not Found", 405: b"Method Not Allowed",
    408: b"Request Timeout", 413: b"Content Too Large",
    431: b"Request Header Fields Too Large", 501: b"Not Implemented",
    505: b"HTTP Version Not Supported",
}


@dataclass(slots=True)
class Request:
    method: bytes
    target: bytes
    version: bytes
    headers: list[tuple[bytes, bytes]]
    body: zerg.BufferSequence
    keep_alive: bool
    size: int                   # bytes of the whole request in the buffer


_NO_BODY: Final = zerg.BufferSequence()    # shared by every request without a body


class HttpError(Exception):
    def __init__(self, status: int, why: str) -> None:
        super().__init__(why)
        self.status = status


def parse_request(buf: zerg.BufferSequence, pos: int, scanned: int,
                  view: memoryview | None = None) -> Request | int:
    """Parse the request starting at ``pos``.

    Returns the ``Request``, or, when it is incomplete, how many bytes from
    ``pos`` were examined (pass it back as ``scanned`` so nothing is rescanned):
    all of them (``len(buf) - pos``) while the header section is incomplete,
    fewer once only the body is missing.
    Raises ``HttpError`` for a request that must be refused.

    ``view``: ``buf.first`` when ``buf.is_single_segment`` (the caller asks
    once per read, not per request).  The header search and the copy of the
    header block then run on that memoryview directly -- the same bytes,
    without a sequence method per step, which is most of the parser's time
    on small pipelined requests.  Without it, the sequence's own ``find``
    works across segment boundaries.
    """
    # The header section ends with an empty line: "\n\r\n" when lines end with
    # CRLF, "\n\n" when they end with a bare LF, whichever comes first.  Search
    # on from where the last attempt stopped, less two bytes in case the
    # terminator was split.
    start = pos + max(scanned - 2, 0)
    limit = pos + MAX_HEADER + 3
    if view is not None:
        end = _head_end(view, start, limit)
        if end is None:
            if len(buf) - pos > MAX_HEADER + 2:
                raise HttpError(431, "header block too large")
            return len(buf) - pos
        nl, body_at = end.span()
        head = view[pos:nl + 1].tobytes()
    else:
        nl = buf.find(b"\n\r\n", start, limit)      # the LF that ends the last field line
        body_at = nl + 3
        if nl < 0:
            nl = buf.find(b"\n\n", start, limit)
            body_at = nl + 2
            if nl < 0:
                if len(buf) - pos > MAX_HEADER + 2:
                    raise HttpError(431, "header block too large")
                return len(buf) - pos
        head = buf[pos:nl + 1].tobytes()
        if (lf := head.find(b"\n\n", start - pos)) >= 0:  # an earlier end, bare LFs
            head = head[:lf + 1]
            nl = pos + lf
            body_at = nl + 2
    # CRLF line ends, or bare LF ones throughout (then a CR anywhere is a bare
    # CR).  A CR or LF left inside a line is refused below, with every other
    # control character, by the patterns of the request line and field values.
    crlf = len(head) > 1 and head[-2] == 13            # ends with CR LF
    lines = head[:-2].split(b"\r\n") if crlf else head[:-1].split(b"\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]) or not _TARGET.fullmatch(parts[1]):
        raise HttpError(400, "malformed request line")
    method, target, version = parts
    if version not in (b"HTTP/1.1", b"HTTP/1.0"):
        if _VERSION.fullmatch(version):
            raise HttpError(505, "unsupported HTTP version")
        raise HttpError(400, "malformed HTTP version")
    if len(lines) - 1 > MAX_HEADERS:
        raise HttpError(431, "too many header fields")
    headers: list[tuple[bytes, bytes]] = []
    length = 0
    seen_length = False
    hosts = 0
    close = keep = False
    for line in lines[1:]:
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
        elif special == _CONNECTION:        # a comma-separated list of options
            options = {opt.strip(b" \t") for opt in value.lower().split(b",")}
            close = close or b"close" in options
            keep = keep or b"keep-alive" in options
        else:
            raise HttpError(501, "Transfer-Encoding is not supported")
    if hosts > 1 or (hosts == 0 and version == b"HTTP/1.1"):
        raise HttpError(400, "an HTTP/1.1 request needs exactly one Host")
    if length > MAX_BODY:
        raise HttpError(413, "body too large")
    if len(buf) - body_at < length:
        return nl + 1 - pos         # next time the search starts right at the terminator
    keep_alive = not close and (version == b"HTTP/1.1" or keep)
    body = buf[body_at:body_at + length] if length else _NO_BODY
    return Request(method, target, version, headers, body, keep_alive, body_at + length - pos)


class _Date:
    """The Date header, rebuilt once a second."""

    __slots__ = ("_at", "_value")

    def __init__(self) -> None:
        self._at = 0
        self._value = b""

    def get(self) -> bytes:
        now = int(time.time())
        if now != self._at:
            self._at = now
            self._value = time.strftime("%a, %d %b %Y %H:%M:%S GMT",
                                        time.gmtime(now)).encode()
        return self._value


_date = _Date()
_HELLO: Final = b"Hello, World!"


def response_head(status: int, length: int, keep_alive: bool,
                  ctype: bytes = b"text/plain", http10: bool = False) -> bytes:
    """The status line and header fields.  ``http10``: the request was HTTP/1.0,
    whose connections close unless the reply says ``Connection: keep-alive``."""
    if not keep_alive:
        connection = b"Connection: close\r\n"
    else:
        connection = b"Connection: keep-alive\r\n" if http10 else b""
    return b"".join((
        b"HTTP/1.1 %d %s\r\n" % (status, _REASONS[status]),
        b"Server: zerg\r\nDate: ", _date.get(),
        b"\r\nContent-Type: ", ctype, b"\r\nContent-Length: %d\r\n" % length,
        connection, b"\r\n",
    ))


def error_response(status: int, why: str) -> bytes:
    """A whole reply that refuses a request; the connection closes after it."""
    msg = f"{why}\n".encode()
    return response_head(status, len(msg), False) + msg


class Writer(Protocol):
    """Where replies go: a ``zerg.Connection`` or a ``Replies`` collector."""

    def write(self, data: bytes | memoryview, /) -> None: ...


class Replies:
    """Collects the replies of one read batch; they leave as one write."""

    __slots__ = ("chunks", "size")

    def __init__(self) -> None:
        self.chunks: list[bytes | memoryview] = []
        self.size = 0

    def write(self, data: bytes | memoryview, /) -> None:
        self.chunks.append(data)
        self.size += len(data)


_canned_at = b""
_canned: dict[tuple[bool, bool, bool], bytes] = {}


def hello_response(keep_alive: bool, head_only: bool, http10: bool = False) -> bytes:
    """The whole ``Hello, World!`` response, rebuilt when the Date changes."""
    global _canned_at
    date = _date.get()
    if date is not _canned_at:
        _canned_at = date
        _canned.clear()
    key = (keep_alive, head_only, http10)
    resp = _canned.get(key)
    if resp is None:
        resp = (response_head(200, len(_HELLO), keep_alive, http10=http10)
                + (b"" if head_only else _HELLO))
        _canned[key] = resp
    return resp


def respond(conn: Writer, req: Request) -> None:
    """Stage the reply to ``req`` (the caller flushes)."""
    path = req.target.split(b"?", 1)[0]
    head_only = req.method == b"HEAD"
    keep_alive = req.keep_alive
    http10 = req.version == b"HTTP/1.0"
    if path in (b"/", b"/plaintext"):
        if req.method not in (b"GET", b"HEAD"):
            conn.write(response_head(405, 0, keep_alive, http10=http10))
            return
        conn.write(hello_response(keep_alive, head_only, http10))
    elif path == b"/echo":
        if req.method != b"POST":
            conn.write(response_head(405, 0, keep_alive, http10=http10))
            return
        conn.write(response_head(200, len(req.body), keep_alive,
                                 b"application/octet-stream", http10))
        for segment in req.body:        # zero-copy slices of the receive slots
            conn.write(segment)
    else:
        body = b"not found\n"
        conn.write(response_head(404, len(body), keep_alive, http10=http10))
        if not head_only:
            conn.write(body)


async def handle(conn: zerg.Connection, header_timeout: float = HEADER_TIMEOUT) -> None:
    """Serve one connection: pipelined requests in order, with back-pressure.
    ``functools.partial(handle, header_timeout=...)`` sets another header timeout."""
    reader = PipeReader(conn)
    high_water = conn.get_write_buffer_limits()[1]
    loop = conn.loop
    scanned = 0
    deadline: float | None = None   # set while a request's header section is incomplete
    try:
        while True:
            if deadline is None:
                result = await reader.read()
            else:
                try:
                    async with asyncio.timeout_at(deadline):
                        result = await reader.read()
                except TimeoutError:
                    conn.write(error_response(408, "request header timeout"))
                    return
            buf = result.buffer
            view = buf.first if buf.is_single_segment else None
            out = Replies()
            room = high_water - conn.pending_write_bytes
            pos = 0
            close = backlog = head_wait = False
            while pos < len(buf):
                if out.size > room:     # past the high-water mark: send, then parse on
                    backlog = True
                    break
                try:
                    parsed = parse_request(buf, pos, scanned, view)
                except HttpError as err:
                    out.write(error_response(err.status, str(err)))
                    close = True
                    break
                if isinstance(parsed, int):     # incomplete: wait for more bytes
                    scanned = parsed
                    head_wait = parsed == len(buf) - pos
                    break
                scanned = 0
                respond(out, parsed)
                pos += parsed.size
                if not parsed.keep_alive:
                    close = True
                    break
            # The header deadline runs from a request's first bytes until its
            # header section is complete.
            if not head_wait:
                deadline = None
            elif deadline is None or pos:       # the first bytes of a new request
                deadline = loop.time() + header_timeout
            chunks = out.chunks     # staged before advancing: body slices point into buf
            if len(chunks) == 1 or out.size > 65536:
                for chunk in chunks:
                    conn.write(chunk)
            elif chunks:
                conn.write(b"".join(chunks))    # many small replies: one write call
            # Everything examined, so the next read() waits for more bytes, unless
            # the backlog stopped us: then it returns the unparsed requests at once.
            reader.advance_to(pos, pos if backlog else len(buf))
            if conn.pending_write_bytes:
                await conn.flush()  # waits while more than the high-water mark is out
            if close or (result.is_completed and not backlog):
                return
    finally:
        reader.complete()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="zerg HTTP/1.1 example server")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--reactors", type=int, default=1)
    ap.add_argument("--header-timeout", type=float, default=HEADER_TIMEOUT, metavar="S",
                    help="seconds from a request's first byte to the end of its headers "
                         "(then 408)")
    ap.add_argument("--idle-timeout", type=float, default=IDLE_TIMEOUT, metavar="S",
                    help="close a connection that receives nothing for this long (0: never)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    reactor = zerg.ReactorConfig(idle_timeout_s=args.idle_timeout or None)
    opts = zerg.EngineOptions(ip=args.host, port=args.port, reactor_count=args.reactors,
                              reactor=reactor)
    with zerg.Engine(opts) as engine:
        engine.listen()
        print(f"http: listening on http://{args.host}:{engine.port}/", flush=True)
        engine.serve(functools.partial(handle, header_timeout=args.header_timeout))


if __name__ == "__main__":
    main()
