"""Keep-alive HTTP/1.1 server on zerg's PipeReader, with a zero-copy parser.

    python examples/http.py --host 127.0.0.1 --port 8080

Routes: ``GET /`` and ``GET /plaintext`` answer ``Hello, World!``; ``POST /echo``
answers with the request body.  Pipelined requests are answered in order, all
replies of one read batch leave in one flush.  Malformed requests get 400,
header blocks over ``MAX_HEADER`` bytes 431, bodies over ``MAX_BODY`` 413,
``Transfer-Encoding`` 501; after an error the connection closes cleanly.

The parser (``parse_request``) works on any ``zerg.BufferSequence``: it finds
the end of the header block across segment boundaries without copying, never
rescans bytes it already examined, copies only the bounded header block to
split it, and hands the body on as a zero-copy slice.
"""

from __future__ import annotations

import argparse
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

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TARGET = re.compile(rb"[\x21-\x7e]+")
_DIGITS = re.compile(rb"[0-9]{1,19}")
_REASONS: Final = {
    200: b"OK", 400: b"Bad Request", 404: b"Not Found", 405: b"Method Not Allowed",
    413: b"Content Too Large", 431: b"Request Header Fields Too Large",
    501: b"Not Implemented", 505: b"HTTP Version Not Supported",
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


class HttpError(Exception):
    def __init__(self, status: int, why: str) -> None:
        super().__init__(why)
        self.status = status


def parse_request(buf: zerg.BufferSequence, pos: int, scanned: int) -> Request | int:
    """Parse the request starting at ``pos``.

    Returns the ``Request``, or, when it is incomplete, how many bytes from
    ``pos`` were examined (pass it back as ``scanned`` so nothing is rescanned).
    Raises ``HttpError`` for a request that must be refused.
    """
    end = buf.find(b"\r\n\r\n", pos + max(scanned - 3, 0), pos + MAX_HEADER + 4)
    if end < 0:
        if len(buf) - pos > MAX_HEADER:
            raise HttpError(431, "header block too large")
        return len(buf) - pos
    head = buf[pos:end].tobytes()
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]) or not _TARGET.fullmatch(parts[1]):
        raise HttpError(400, "malformed request line")
    method, target, version = parts
    if version == b"HTTP/1.1":
        keep_alive = True
    elif version == b"HTTP/1.0":
        keep_alive = False
    elif version.startswith(b"HTTP/"):
        raise HttpError(505, "unsupported HTTP version")
    else:
        raise HttpError(400, "malformed HTTP version")
    if len(lines) - 1 > MAX_HEADERS:
        raise HttpError(431, "too many header fields")
    headers: list[tuple[bytes, bytes]] = []
    length = 0
    seen_length = False
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not _TOKEN.fullmatch(name):
            raise HttpError(400, "malformed header field")
        value = value.strip(b" \t")
        lname = name.lower()
        if lname == b"content-length":
            if not _DIGITS.fullmatch(value) or (seen_length and int(value) != length):
                raise HttpError(400, "bad Content-Length")
            length = int(value)
            seen_length = True
        elif lname == b"transfer-encoding":
            raise HttpError(501, "Transfer-Encoding is not supported")
        elif lname == b"connection":
            tokens = value.lower()
            if b"close" in tokens:
                keep_alive = False
            elif b"keep-alive" in tokens:
                keep_alive = True
        headers.append((name, value))
    if length > MAX_BODY:
        raise HttpError(413, "body too large")
    body_at = end + 4
    if len(buf) - body_at < length:
        return end + 3 - pos        # next time the search starts right at the terminator
    return Request(method, target, version, headers, buf[body_at:body_at + length],
                   keep_alive, body_at + length - pos)


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
                  ctype: bytes = b"text/plain") -> bytes:
    return b"".join((
        b"HTTP/1.1 %d %s\r\n" % (status, _REASONS[status]),
        b"Server: zerg\r\nDate: ", _date.get(),
        b"\r\nContent-Type: ", ctype, b"\r\nContent-Length: %d\r\n" % length,
        b"" if keep_alive else b"Connection: close\r\n",
        b"\r\n",
    ))


class Writer(Protocol):
    """Where replies go: a ``zerg.Connection`` or a ``Replies`` collector."""

    def write(self, data: bytes | memoryview, /) -> None: ...


class Replies:
    """Collects the replies of one read batch; they leave as one write."""

    __slots__ = ("chunks",)

    def __init__(self) -> None:
        self.chunks: list[bytes | memoryview] = []

    def write(self, data: bytes | memoryview, /) -> None:
        self.chunks.append(data)


_canned_at = b""
_canned: dict[tuple[bool, bool], bytes] = {}


def hello_response(keep_alive: bool, head_only: bool) -> bytes:
    """The whole ``Hello, World!`` response, rebuilt when the Date changes."""
    global _canned_at
    date = _date.get()
    if date is not _canned_at:
        _canned_at = date
        _canned.clear()
    key = (keep_alive, head_only)
    resp = _canned.get(key)
    if resp is None:
        resp = response_head(200, len(_HELLO), keep_alive) + (b"" if head_only else _HELLO)
        _canned[key] = resp
    return resp


def respond(conn: Writer, req: Request) -> None:
    """Stage the reply to ``req`` (the caller flushes)."""
    path = req.target.split(b"?", 1)[0]
    head_only = req.method == b"HEAD"
    if path in (b"/", b"/plaintext"):
        if req.method not in (b"GET", b"HEAD"):
            conn.write(response_head(405, 0, req.keep_alive))
            return
        conn.write(hello_response(req.keep_alive, head_only))
    elif path == b"/echo":
        if req.method != b"POST":
            conn.write(response_head(405, 0, req.keep_alive))
            return
        conn.write(response_head(200, len(req.body), req.keep_alive,
                                 b"application/octet-stream"))
        for segment in req.body:        # zero-copy slices of the receive slots
            conn.write(segment)
    else:
        body = b"not found\n"
        conn.write(response_head(404, len(body), req.keep_alive))
        if not head_only:
            conn.write(body)


async def handle(conn: zerg.Connection) -> None:
    reader = PipeReader(conn)
    scanned = 0
    try:
        while True:
            result = await reader.read()
            buf = result.buffer
            out = Replies()
            pos = 0
            close = False
            while pos < len(buf):
                try:
                    parsed = parse_request(buf, pos, scanned)
                except HttpError as err:
                    msg = f"{err}\n".encode()
                    out.write(response_head(err.status, len(msg), False))
                    out.write(msg)
                    close = True
                    break
                if isinstance(parsed, int):
                    scanned = parsed
                    break
                scanned = 0
                respond(out, parsed)
                pos += parsed.size
                if not parsed.keep_alive:
                    close = True
                    break
            chunks = out.chunks     # staged before advancing: body slices point into buf
            if len(chunks) == 1 or sum(map(len, chunks)) > 65536:
                for chunk in chunks:
                    conn.write(chunk)
            elif chunks:
                conn.write(b"".join(chunks))    # many small replies: one write call
            reader.advance_to(pos, len(buf))
            if conn.pending_write_bytes:
                await conn.flush()
            if close or result.is_completed:
                return
    finally:
        reader.complete()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="zerg HTTP/1.1 example server")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--reactors", type=int, default=1)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    opts = zerg.EngineOptions(ip=args.host, port=args.port, reactor_count=args.reactors)
    with zerg.Engine(opts) as engine:
        engine.listen()
        print(f"http: listening on http://{args.host}:{engine.port}/", flush=True)
        engine.serve(handle)


if __name__ == "__main__":
    main()
