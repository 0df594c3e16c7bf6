"""Echo server: an asyncio ``Protocol`` (data_received -> transport.write)."""

from __future__ import annotations

import asyncio
from typing import cast

from _common import BACKLOG, parse_args, raise_nofile, ready


class Echo(asyncio.Protocol):
    __slots__ = ("transport",)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)   # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Echo, host, port, backlog=BACKLOG)
    ready(server.sockets[0].getsockname()[1])
    await server.serve_forever()


def main() -> None:
    args = parse_args(__doc__ or "")
    raise_nofile()
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
