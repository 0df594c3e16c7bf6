"""Echo server: an asyncio ``Protocol`` (data_received -> transport.write) on uvloop."""

from __future__ import annotations

import asyncio
from typing import cast

import uvloop
from _common import BACKLOG, parse_args, serve_asyncio


class Echo(asyncio.Protocol):
    __slots__ = ("transport",)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)   # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


async def start(host: str, port: int) -> asyncio.Server:
    return await asyncio.get_running_loop().create_server(Echo, host, port, backlog=BACKLOG)


def main() -> None:
    serve_asyncio(parse_args(__doc__ or ""), start, uvloop.new_event_loop)


if __name__ == "__main__":
    main()
