"""HTTP/1.1 over TLS on zerg: examples/http.py's own server with ``EngineOptions.ssl``.

The zerg side of scenario T1.  examples/http.py is loaded by path and its
``HttpProtocol`` served exactly as ``python examples/http.py`` serves it (one
reactor, its idle timeout), only over TLS: a self-signed certificate made
at start-up with trustme (ECDSA P-256; wrk does not verify it), the
stdlib's ``ssl`` with its default server settings -- the same certificate
kind, library and settings as ``http_uvloop_tls.py``.
"""

from __future__ import annotations

import logging
import ssl

import trustme
from _common import BACKLOG, load_example, parse_args, raise_nofile, ready

import zerg


def server_context() -> ssl.SSLContext:
    """A server context with a fresh self-signed certificate (shared recipe of T1)."""
    cert = trustme.CA().issue_cert("localhost", "127.0.0.1")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ctx)
    return ctx


def main() -> None:
    args = parse_args(__doc__ or "")
    raise_nofile()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    http = load_example("http")
    reactor = zerg.ReactorConfig(idle_timeout_s=http.IDLE_TIMEOUT)
    opts = zerg.EngineOptions(ip=args.host, port=args.port, backlog=BACKLOG, reactor=reactor,
                              ssl=server_context())
    with zerg.Engine(opts) as engine:
        engine.listen()
        ready(engine.port)
        engine.serve(http.HttpProtocol())


if __name__ == "__main__":
    main()
