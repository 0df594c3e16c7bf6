"""HTTP/1.1 server: uvicorn with uvloop and httptools, one process, an ASGI app.

A peer a user would pick for HTTP from Python (issue 12).  ``GET /plaintext``
answers ``Hello, World!`` as examples/http.py does.  The listening socket is
bound here (port 0 picks a free one) and handed to uvicorn, so the runner's
``ready <port>`` contract holds; access logs are off.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import uvicorn
import uvloop
from _common import BACKLOG, parse_args, raise_nofile, ready

_HELLO = b"Hello, World!"
_HEADERS = [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(_HELLO))]
_NOT_FOUND = [(b"content-type", b"text/plain"), (b"content-length", b"0")]


async def app(scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]],
              send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
    if scope["type"] != "http":         # lifespan: nothing to set up
        return
    if scope["path"] in ("/", "/plaintext"):
        await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
        await send({"type": "http.response.body", "body": _HELLO})
    else:
        await send({"type": "http.response.start", "status": 404, "headers": _NOT_FOUND})
        await send({"type": "http.response.body", "body": b""})


def main() -> None:
    args = parse_args(__doc__ or "")
    raise_nofile()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(BACKLOG)
    config = uvicorn.Config(app, loop="none", http="httptools", lifespan="off",
                            access_log=False, log_level="warning", backlog=BACKLOG)
    server = uvicorn.Server(config)
    ready(sock.getsockname()[1])
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(server.serve(sockets=[sock]))


if __name__ == "__main__":
    main()
