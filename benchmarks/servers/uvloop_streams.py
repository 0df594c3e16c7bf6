"""Echo server: asyncio streams (StreamReader/StreamWriter) on uvloop."""

from __future__ import annotations

import asyncio

import uvloop
from _common import BACKLOG, READ_SIZE, parse_args, raise_nofile, ready


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(READ_SIZE):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def serve(host: str, port: int) -> None:
    server = await asyncio.start_server(echo, host, port, backlog=BACKLOG)
    ready(server.sockets[0].getsockname()[1])
    await server.serve_forever()


def main() -> None:
    args = parse_args(__doc__ or "")
    raise_nofile()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
