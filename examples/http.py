"""Keep-alive HTTP/1.1 server on zerg, with a zero-copy parser -- written twice.

    python examples/http.py --host 127.0.0.1 --port 8080 [--header-timeout 10] [--idle-timeout 60]
        [--pipereader]

``HttpProtocol`` (what the script serves) is a ``zerg.Protocol``: called from
completion dispatch with the received bytes, it parses them and writes the replies
straight into the send segment -- no Task, no await per request.  ``handle``
(``--pipereader``) is the same server as an ``async def`` handler over a
``PipeReader``: the level-3 style, slower per request (a task wake-up, the reader's
bookkeeping), simpler to extend with awaits.  Both answer alike; the tests run every
case against both.

Routes: ``GET /`` and ``GET /plaintext`` answer ``Hello, World!``; ``POST /echo``
answers with the request body.

Pipelining: requests are answered in order, the replies to one read batch in one
send.  Once the staged replies pass the connection's high-water mark, parsing stops
and goes on where it stopped once they went out (``HttpProtocol``: ``pause_writing``
pauses reading, ``resume_writing`` resumes it and the unparsed requests come back;
``handle``: ``await conn.flush()``): a client can pipeline any number of requests and
memory stays bounded (this also lets other connections run).

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

The parser is ``zerg.http.parse_request`` on a ``zerg.SequenceReader`` over the
received bytes (the ``Protocol``'s sequence, or the ``PipeReader`` buffer): the
head (the rules above, in C, a copy of the head only) and the body as a zero-copy
slice, in one call.  What is left in Python per request is the routing
(``respond``) and the loop around it.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import time
from typing import Final, Protocol

import zerg
from zerg.adapters import PipeReader
from zerg.http import NEED_HEAD, HttpError, RequestHead, parse_request

MAX_HEADER: Final = 8192
MAX_BODY: Final = 1024 * 1024
MAX_HEADERS: Final = 100
HEADER_TIMEOUT: Final = 10.0    # seconds from a request's first byte to its blank line
IDLE_TIMEOUT: Final = 60.0      # seconds a connection may receive nothing

_REASONS: Final = {
    200: b"OK", 400: b"Bad Request", 404: b"Not Found", 405: b"Method Not Allowed",
    408: b"Request Timeout", 413: b"Content Too Large",
    431: b"Request Header Fields Too Large", 501: b"Not Implemented",
    505: b"HTTP Version Not Supported",
}


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
_NOT_FOUND: Final = b"not found\n"


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


_canned_until = 0.0     # when the canned responses' Date goes stale (the next second)
_canned: list[list[list[bytes | None]]] = []    # [keep_alive][head_only][http10]
_now: Final = time.time


def hello_response(keep_alive: bool, head_only: bool, http10: bool = False) -> bytes:
    """The whole ``Hello, World!`` response, made again each second (its Date).

    Every request of the benchmarks ends here, so it is written for that: one
    clock read and three list indexes (bools index as 0 and 1, cheaper than
    arithmetic on them) once the response of this second is made."""
    global _canned_until
    if _now() >= _canned_until:
        _canned_until = float(int(_now()) + 1)
        _canned[:] = [[[None, None], [None, None]], [[None, None], [None, None]]]
    resp = _canned[keep_alive][head_only][http10]
    if resp is None:
        resp = (response_head(200, len(_HELLO), keep_alive, http10=http10)
                + (b"" if head_only else _HELLO))
        _canned[keep_alive][head_only][http10] = resp
    return resp


def respond(conn: Writer, head: RequestHead, body: zerg.BufferSequence) -> None:
    """Stage the reply to the request (the caller flushes)."""
    method = head.method
    path = head.path            # the target without its query
    keep_alive = head.keep_alive
    http10 = head.version == b"HTTP/1.0"
    if path == b"/plaintext" or path == b"/":
        if method == b"GET":
            conn.write(hello_response(keep_alive, False, http10))
        elif method == b"HEAD":
            conn.write(hello_response(keep_alive, True, http10))
        else:
            conn.write(response_head(405, 0, keep_alive, http10=http10))
    elif path == b"/echo":
        if method != b"POST":
            conn.write(response_head(405, 0, keep_alive, http10=http10))
            return
        conn.write(response_head(200, len(body), keep_alive,
                                 b"application/octet-stream", http10))
        for segment in body:            # zero-copy slices of the receive slots
            conn.write(segment)
    else:
        conn.write(response_head(404, len(_NOT_FOUND), keep_alive, http10=http10))
        if method != b"HEAD":
            conn.write(_NOT_FOUND)


async def handle(conn: zerg.Connection, header_timeout: float = HEADER_TIMEOUT) -> None:
    """Serve one connection: pipelined requests in order, with back-pressure.
    ``functools.partial(handle, header_timeout=...)`` sets another header timeout."""
    reader = PipeReader(conn)
    high_water = conn.get_write_buffer_limits()[1]
    loop = conn.loop
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
            sr = zerg.SequenceReader(buf)
            out = Replies()
            room = high_water - conn.pending_write_bytes
            close = backlog = head_wait = False
            while not sr.end:
                if out.size > room:     # past the high-water mark: send, then parse on
                    backlog = True
                    break
                try:
                    parsed = parse_request(sr, max_size=MAX_HEADER, max_fields=MAX_HEADERS,
                                           max_body=MAX_BODY)
                except HttpError as err:
                    out.write(error_response(err.status, str(err)))
                    close = True
                    break
                if isinstance(parsed, int):     # incomplete: wait for more bytes
                    head_wait = parsed == NEED_HEAD
                    break
                head, body = parsed
                respond(out, head, body)
                if not head.keep_alive:
                    close = True
                    break
            pos = sr.consumed
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


class HttpProtocol(zerg.Protocol):
    """The same server as ``handle`` on ``zerg.Protocol``: what ``python
    examples/http.py`` serves.  ``data_received`` is called from completion
    dispatch with the received bytes -- no Task, no await, no reader per
    connection -- and writes each reply straight into the connection's send
    segment; the replies of one call leave in one send.

    What ``handle`` does with its loop, it does with the Protocol contract:
    the bytes of an incomplete request are left unconsumed (``return pos``)
    and come back with the next bytes; past the high-water mark
    (``pause_writing``) reading pauses and parsing stops where it was, and
    ``resume_writing`` resumes reading, which delivers the unparsed requests
    again.  The header deadline is a timer per connection (``conn.context``)
    while a request's header section is incomplete."""

    def __init__(self, header_timeout: float = HEADER_TIMEOUT) -> None:
        self.header_timeout = header_timeout
        # The connections whose writing is paused: while there are none, the
        # parse loop skips asking its connection (a property call per request).
        self.paused: set[zerg.Connection] = set()

    def connection_made(self, conn: zerg.Connection) -> None:
        conn.context = None         # the header deadline's timer, while one runs

    def data_received(self, conn: zerg.Connection, seq: zerg.BufferSequence) -> int | None:
        sr = zerg.SequenceReader(seq)
        head_wait = False
        while not sr.end:
            try:
                parsed = parse_request(sr, max_size=MAX_HEADER, max_fields=MAX_HEADERS,
                                       max_body=MAX_BODY)
            except HttpError as err:
                conn.write(error_response(err.status, str(err)))
                self._close(conn)
                return None
            if isinstance(parsed, int):     # incomplete: wait for more bytes
                head_wait = parsed == NEED_HEAD
                break
            head, body = parsed
            respond(conn, head, body)
            if not head.keep_alive:
                self._close(conn)
                return None
            if self.paused and not conn.is_reading:     # past the high-water mark:
                break                                   # parse on once resumed
        pos = sr.consumed
        # The header deadline runs from a request's first bytes until its
        # header section is complete.
        timer: asyncio.TimerHandle | None = conn.context
        if head_wait:
            if timer is None or pos:    # the first bytes of a new request
                if timer is not None:
                    timer.cancel()
                conn.context = conn.loop.call_later(self.header_timeout, self._too_slow, conn)
        elif timer is not None:
            timer.cancel()
            conn.context = None
        return pos

    def pause_writing(self, conn: zerg.Connection) -> None:
        self.paused.add(conn)
        conn.pause_reading()

    def resume_writing(self, conn: zerg.Connection) -> None:
        self.paused.discard(conn)
        conn.resume_reading()

    def connection_lost(self, conn: zerg.Connection, exc: BaseException | None) -> None:
        self.paused.discard(conn)
        self._close(conn)

    def _too_slow(self, conn: zerg.Connection) -> None:
        conn.context = None
        if not conn.is_closed:
            conn.write(error_response(408, "request header timeout"))
            conn.close()

    @staticmethod
    def _close(conn: zerg.Connection) -> None:
        """Close after the staged replies; the header deadline goes with it."""
        timer: asyncio.TimerHandle | None = conn.context
        if timer is not None:
            timer.cancel()
            conn.context = None
        conn.close()


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
    ap.add_argument("--pipereader", action="store_true",
                    help="serve with the async handler over PipeReader (handle) instead of "
                         "the zerg.Protocol (HttpProtocol)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    reactor = zerg.ReactorConfig(idle_timeout_s=args.idle_timeout or None)
    opts = zerg.EngineOptions(ip=args.host, port=args.port, reactor_count=args.reactors,
                              reactor=reactor)
    with zerg.Engine(opts) as engine:
        engine.listen()
        print(f"http: listening on http://{args.host}:{engine.port}/", flush=True)
        if args.pipereader:
            engine.serve(functools.partial(handle, header_timeout=args.header_timeout))
        else:
            engine.serve(HttpProtocol(header_timeout=args.header_timeout))


if __name__ == "__main__":
    main()
