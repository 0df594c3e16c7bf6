"""The stdlib's ``http.server.SimpleHTTPRequestHandler``, unchanged, over zerg.

    python examples/stdlib_http.py --host 127.0.0.1 --port 8000 --directory .

The handler is a plain ``def``: zerg runs it on a worker thread, where its
``rfile`` and ``wfile`` are buffered zerg ``ConnectionStream``s — exactly the
file objects it would get from a socket's ``makefile``.
"""

from __future__ import annotations

import os
import sys

# Run as a script, this folder comes first on sys.path, and its http.py would
# shadow the stdlib's http package.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import argparse  # noqa: E402
import functools  # noqa: E402
import io  # noqa: E402
import logging  # noqa: E402
from http.server import SimpleHTTPRequestHandler  # noqa: E402
from typing import Any  # noqa: E402

import zerg  # noqa: E402
from zerg.adapters import ConnectionStream  # noqa: E402


class ZergRequestHandler(SimpleHTTPRequestHandler):
    """``SimpleHTTPRequestHandler`` with zerg streams instead of a socket."""

    def setup(self) -> None:
        stream: ConnectionStream = self.request
        self.connection = stream
        self.rfile = io.BufferedReader(stream, 64 * 1024)
        self.wfile = io.BufferedWriter(stream, 64 * 1024)

    def log_message(self, format: str, *args: Any) -> None:
        logging.getLogger("stdlib_http").info("%s " + format, self.address_string(), *args)


class _Server:
    """The few attributes BaseHTTPRequestHandler reads from its server."""

    server_name = "zerg"
    server_port = 0


def make_handler(directory: str) -> zerg.SyncHandler:
    server = _Server()

    def handle(conn: zerg.Connection) -> None:
        stream = ConnectionStream(conn, timeout=30.0)
        peer = conn.peername or ("-", 0)
        try:
            ZergRequestHandler(stream, peer, server, directory=directory)  # type: ignore[arg-type]
        except (ConnectionError, TimeoutError):
            pass                    # the client went away or stalled; just close
        finally:
            stream.close()

    return handle


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="stdlib http.server over zerg")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--directory", default=os.getcwd())
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    opts = zerg.EngineOptions(ip=args.host, port=args.port)
    with zerg.Engine(opts) as engine:
        engine.listen()
        print(f"stdlib_http: serving {args.directory} on http://{args.host}:{engine.port}/",
              flush=True)
        engine.serve(functools.partial(make_handler(args.directory)))


if __name__ == "__main__":
    main()
