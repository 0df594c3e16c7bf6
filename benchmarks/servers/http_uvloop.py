"""HTTP/1.1 server: a uvloop ``Protocol`` running examples/http.py's own parser.

The peer of ``examples/http.py`` in scenario H1.  examples/http.py is loaded
by path, and every received chunk is wrapped in a ``zerg.BufferSequence``, so
``parse_request``, ``respond`` and ``response_head`` are literally the same
code on both sides (``parse_request`` is ``zerg.http``'s, called with the
example's limits); only the transport differs (uvloop here, zerg there).
As there, all replies to one received chunk leave in one write, and the bytes
of an incomplete request wait for the next chunk.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Final, cast

import uvloop
from _common import BACKLOG, load_example, parse_args, serve_asyncio

import zerg

_http: Final = load_example("http")
parse_request: Final[Callable[..., Any]] = _http.parse_request     # zerg.http's
MAX_HEADER: Final[int] = _http.MAX_HEADER
MAX_HEADERS: Final[int] = _http.MAX_HEADERS
MAX_BODY: Final[int] = _http.MAX_BODY
respond: Final[Callable[[Any, Any, Any], None]] = _http.respond
response_head: Final[Callable[[int, int, bool], bytes]] = _http.response_head
HttpError: Final[type[Exception]] = _http.HttpError


class _Out:
    """Stands in for ``zerg.Connection`` in ``respond``: collects the writes."""

    __slots__ = ("chunks",)

    def __init__(self) -> None:
        self.chunks: list[bytes | memoryview] = []

    def write(self, data: bytes | memoryview) -> None:
        self.chunks.append(data)


class Http(asyncio.Protocol):
    __slots__ = ("pending", "transport")

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)   # uvloop's is no subclass
        self.pending = b""

    def data_received(self, data: bytes) -> None:
        if self.pending:
            data = self.pending + data
        sr = zerg.SequenceReader(zerg.BufferSequence(data))
        out = _Out()
        close = False
        while not sr.end:
            try:
                parsed = parse_request(sr, max_size=MAX_HEADER, max_fields=MAX_HEADERS,
                                       max_body=MAX_BODY)
            except HttpError as err:
                msg = f"{err}\n".encode()
                out.write(response_head(getattr(err, "status", 400), len(msg), False))
                out.write(msg)
                close = True
                break
            if isinstance(parsed, int):
                break
            head, body = parsed
            respond(out, head, body)
            if not head.keep_alive:
                close = True
                break
        pos = sr.consumed
        self.pending = data[pos:] if pos < len(data) and not close else b""
        if out.chunks:
            self.transport.write(b"".join(out.chunks))
        if close:
            self.transport.close()


async def start(host: str, port: int) -> asyncio.Server:
    return await asyncio.get_running_loop().create_server(Http, host, port, backlog=BACKLOG)


def main() -> None:
    serve_asyncio(parse_args(__doc__ or ""), start, uvloop.new_event_loop)


if __name__ == "__main__":
    main()
