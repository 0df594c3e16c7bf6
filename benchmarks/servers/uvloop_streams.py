"""Echo server: asyncio streams (StreamReader/StreamWriter) on uvloop."""

from __future__ import annotations

import asyncio

import uvloop
from _common import BACKLOG, READ_SIZE, parse_args, serve_asyncio


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(READ_SIZE):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def start(host: str, port: int) -> asyncio.Server:
    return await asyncio.start_server(echo, host, port, backlog=BACKLOG)


def main() -> None:
    serve_asyncio(parse_args(__doc__ or ""), start, uvloop.new_event_loop)


if __name__ == "__main__":
    main()
