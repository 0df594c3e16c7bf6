"""Echo server: an asyncio ``BufferedProtocol`` (receives into a reused buffer)."""

from __future__ import annotations

import asyncio
from typing import Final, cast

from _common import BACKLOG, parse_args, raise_nofile, ready

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
