"""A TCP reverse proxy on zerg: both directions forwarded from the receive slots.

    python examples/proxy.py --port 7001 --upstream 127.0.0.1:6379
    python examples/proxy.py --port 8443 --upstream 127.0.0.1:8080 \\
        --tls-cert cert.pem --tls-key key.pem          # a TLS front

Every accepted client gets its own upstream connection (``zerg.connect``, an
io_uring connect on the same reactor), and each side is a ``zerg.Protocol``:
bytes are handed over from completion dispatch with ``conn.forward(seq)``,
which sends them straight from the receive slots they arrived in -- no
copy, no task wake-up.  What a careful proxy must also do:

- back-pressure: when one side's send queue passes its high-water mark
  (``pause_writing``), the other side stops reading until it drains
  (``resume_writing``), so a slow peer slows its partner and memory stays
  bounded (about the high-water mark per direction);
- half-close: a FIN from one side becomes a ``write_eof`` on the other once
  the bytes before it are out; the connection pair closes when both
  directions ended;
- resets: a peer that resets gets its partner reset too (``abort``); any
  other end closes the partner gracefully (staged bytes still go out);
- an upstream that cannot be reached (refused, timeout) closes the client.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import ssl

import zerg

log = logging.getLogger("proxy")

CONNECT_TIMEOUT = 5.0


class Side(zerg.Protocol):
    """Either side of a pair: what arrives is forwarded to the other side.
    ``conn.context`` is the partner connection (None until the upstream is
    connected, and again once either side is gone)."""

    def data_received(self, conn: zerg.Connection, seq: zerg.BufferSequence) -> None:
        other = conn.context
        if other is not None:
            try:
                other.forward(seq)      # from the slots, no copy; sent this iteration
            except ConnectionError:
                pass                    # the partner closed meanwhile: nowhere to deliver

    def pause_writing(self, conn: zerg.Connection) -> None:
        if conn.context is not None:
            conn.context.pause_reading()    # it writes faster than we can send

    def resume_writing(self, conn: zerg.Connection) -> None:
        if conn.context is not None:
            conn.context.resume_reading()

    def eof_received(self, conn: zerg.Connection) -> bool:
        other: zerg.Connection | None = conn.context
        if other is None:
            return False
        if conn.error is not None:      # a reset, not an orderly end: pass it on
            other.abort()
            return False
        if other.is_closed:             # its peer ended too: both directions are over
            other.close()
            return False
        if other.can_write_eof():
            other.write_eof()           # after the bytes before it
            return True                 # keep sending the other direction to conn
        other.close()                   # a side that cannot half-close (TLS)
        return False

    def connection_lost(self, conn: zerg.Connection, exc: BaseException | None) -> None:
        other: zerg.Connection | None = conn.context
        conn.context = None
        if other is None:
            return
        other.context = None
        if isinstance(exc, ConnectionResetError):
            other.abort()               # pass the reset on
        else:
            other.close()


class Front(Side):
    """The listening side: each client starts its upstream connection."""

    def __init__(self, upstream_host: str, upstream_port: int, *,
                 upstream_ssl: ssl.SSLContext | None = None,
                 connect_timeout: float = CONNECT_TIMEOUT) -> None:
        self.host = upstream_host
        self.port = upstream_port
        self.upstream_ssl = upstream_ssl
        self.connect_timeout = connect_timeout
        self.back = Side()
        self.connecting: set[asyncio.Task[None]] = set()
        self.waiting: set[int] = set()  # clients whose upstream is being connected
        self.failed = 0                 # upstream connects that failed

    def connection_made(self, conn: zerg.Connection) -> None:
        conn.pause_reading()            # hold the client's bytes until upstream is up
        self.waiting.add(conn.id)
        task = asyncio.get_running_loop().create_task(self._connect(conn))
        self.connecting.add(task)
        task.add_done_callback(self.connecting.discard)

    async def _connect(self, client: zerg.Connection) -> None:
        try:
            upstream = await zerg.connect(self.host, self.port, ssl=self.upstream_ssl,
                                          timeout=self.connect_timeout, protocol=self.back)
        except (OSError, TimeoutError) as exc:
            self.failed += 1
            self.waiting.discard(client.id)
            log.debug("proxy: upstream %s:%d unreachable for %r: %s", self.host, self.port,
                      client, exc)
            client.close()
            return
        if client.id not in self.waiting:   # the client left while we connected
            upstream.close()
            return
        self.waiting.discard(client.id)
        upstream.context = client
        client.context = upstream
        client.resume_reading()

    def connection_lost(self, conn: zerg.Connection, exc: BaseException | None) -> None:
        self.waiting.discard(conn.id)
        super().connection_lost(conn, exc)

    def shutdown_requested(self, conn: zerg.Connection) -> None:
        conn.close()                    # its partner follows (connection_lost)


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    return ctx


def upstream_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=7001)
    ap.add_argument("--upstream", type=upstream_address, required=True, metavar="HOST:PORT")
    ap.add_argument("--reactors", type=int, default=1)
    ap.add_argument("--connect-timeout", type=float, default=CONNECT_TIMEOUT, metavar="S")
    ap.add_argument("--tls-cert", help="serve TLS to clients with this certificate (PEM)")
    ap.add_argument("--tls-key", help="... and this private key (PEM)")
    args = ap.parse_args(argv)
    if bool(args.tls_cert) != bool(args.tls_key):
        ap.error("--tls-cert and --tls-key go together")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    front = Front(*args.upstream, connect_timeout=args.connect_timeout)
    opts = zerg.EngineOptions(ip=args.host, port=args.port, reactor_count=args.reactors,
                              ssl=tls_context(args.tls_cert, args.tls_key)
                              if args.tls_cert else None)
    with zerg.Engine(opts) as engine:
        engine.listen()
        print(f"proxy: listening on {args.host}:{engine.port} -> "
              f"{args.upstream[0]}:{args.upstream[1]}", flush=True)
        engine.serve(front)


if __name__ == "__main__":
    main()
