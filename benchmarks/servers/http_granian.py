"""HTTP/1.1 server: granian (Rust, hyper) with an RSGI app, one runtime thread.

A peer a user would pick for HTTP from Python (issue 12).  granian's
embedded server runs in this process (its Rust runtime on one thread beside
the Python one), so the runner's CPU accounting of this pid covers all of
it, and ``taskset`` pins all of it.  ``GET /plaintext`` answers
``Hello, World!`` as examples/http.py does.  granian binds by port number:
port 0 is resolved to a free port first.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import uvloop
from _common import BACKLOG, parse_args, raise_nofile, ready
from granian.constants import HTTPModes, Interfaces
from granian.log import LogLevels
from granian.server.embed import Server

_HELLO = b"Hello, World!"
_HEADERS = [("content-type", "text/plain")]


async def app(scope: Any, proto: Any) -> None:
    if scope.path in ("/", "/plaintext"):
        proto.response_bytes(200, _HEADERS, _HELLO)
    else:
        proto.response_bytes(404, _HEADERS, b"")


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


async def serve(host: str, port: int) -> None:
    server = Server(app, address=host, port=port, interface=Interfaces.RSGI,
                    runtime_threads=1, http=HTTPModes.http1, backlog=BACKLOG,
                    log_level=LogLevels.warning, websockets=False)
    task = asyncio.create_task(server.serve())
    for _ in range(200):                # ready once it accepts
        try:
            _, writer = await asyncio.open_connection(host, port)
            writer.close()
            break
        except OSError:
            await asyncio.sleep(0.05)
    ready(port)
    await task


def main() -> None:
    args = parse_args(__doc__ or "")
    raise_nofile()
    port = args.port or _free_port(args.host)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve(args.host, port))


if __name__ == "__main__":
    main()
