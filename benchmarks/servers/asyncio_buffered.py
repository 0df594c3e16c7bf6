"""Echo server: an asyncio ``BufferedProtocol`` (receives into a reused buffer)."""

from __future__ import annotations

import asyncio
from typing import Final, cast

from _common import BACKLOG, parse_args, serve_asyncio

# Per-connection receive buffer: the size of zerg's receive slots (C1 counts it).
BUFFER_SIZE: Final = 16 * 1024


class Echo(asyncio.BufferedProtocol):
    __slots__ = ("transport", "view")

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)   # uvloop's is no subclass
        self.view = memoryview(bytearray(BUFFER_SIZE))

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.view

    def buffer_updated(self, nbytes: int) -> None:
        transport = self.transport
        transport.write(self.view[:nbytes])
        if transport.get_write_buffer_size():
            # The transport kept what the kernel did not take, possibly by
            # reference (Python >= 3.12 does): receive into a fresh buffer.
            self.view = memoryview(bytearray(BUFFER_SIZE))


async def start(host: str, port: int) -> asyncio.Server:
    return await asyncio.get_running_loop().create_server(Echo, host, port, backlog=BACKLOG)


def main() -> None:
    serve_asyncio(parse_args(__doc__ or ""), start)


if __name__ == "__main__":
    main()
