"""HTTP/1.1 over TLS on uvloop: http_uvloop.py's Protocol with ``create_server(ssl=...)``.

The peer of ``http_zerg_tls.py`` in scenario T1: the same parser
(examples/http.py, through http_uvloop.py's ``Http`` protocol), the same
certificate recipe (trustme, ECDSA P-256, made at start-up) and the same
stdlib ``ssl`` server settings; uvloop's own TLS layer (its ``sslproto``,
Cython over ``ssl.SSLObject`` and memory BIOs) does the rest.
"""

from __future__ import annotations

import asyncio

import uvloop
from _common import BACKLOG, parse_args, serve_asyncio
from http_uvloop import Http
from http_zerg_tls import server_context


async def start(host: str, port: int) -> asyncio.Server:
    return await asyncio.get_running_loop().create_server(Http, host, port, backlog=BACKLOG,
                                                          ssl=server_context())


def main() -> None:
    serve_asyncio(parse_args(__doc__ or ""), start, uvloop.new_event_loop)


if __name__ == "__main__":
    main()
