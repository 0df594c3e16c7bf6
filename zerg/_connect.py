"""zerg.connect: an outbound TCP connection on the current reactor.

Why: a handler that calls another service (a proxy's upstream, a cache, a
database) should get the same ``Connection`` as an accepted one -- the same
three read levels, adapters, ``forward`` and flow control -- fed by the
same multishot receive into the same buffer ring, not a second I/O stack
through poll readiness.  ``asyncio.open_connection`` still works on a
reactor loop; this is the io_uring way.

How: the name is resolved with the loop's ``getaddrinfo``; each address is
tried in turn with one ``IORING_OP_CONNECT`` (``Reactor.connect_fd``); the
first that connects becomes a ``Connection`` (or, given a ``zerg.Protocol``,
a ``ProtocolConnection`` whose ``connection_made`` is called) registered
with the reactor like an accepted one.  A failed connect raises the
``OSError`` subclass of its errno (``ConnectionRefusedError``, ...), as
``socket.connect`` would; ``timeout`` bounds resolution and connect
together and raises ``TimeoutError``.
"""

from __future__ import annotations

import asyncio
import socket
import ssl as _ssl
import struct
from typing import Any

from zerg._connection import Connection, ProtocolConnection
from zerg._protocol import Protocol
from zerg._reactor import Reactor
from zerg._tls import TlsConnection, TlsProtocolConnection

__all__ = ["connect"]


def sockaddr(family: int, address: Any) -> bytes:
    """``address`` (as ``getaddrinfo`` gives it) as the kernel's ``struct sockaddr``."""
    if family == socket.AF_INET:
        host, port = address[0], address[1]
        return (struct.pack("=H", socket.AF_INET) + struct.pack("!H", port)
                + socket.inet_pton(socket.AF_INET, host) + bytes(8))
    if family == socket.AF_INET6:
        host, port = address[0], address[1]
        flowinfo = address[2] if len(address) > 2 else 0
        scope_id = address[3] if len(address) > 3 else 0
        host = host.split("%", 1)[0]            # a scope rides in scope_id
        return (struct.pack("=H", socket.AF_INET6) + struct.pack("!HI", port, flowinfo)
                + socket.inet_pton(socket.AF_INET6, host) + struct.pack("=I", scope_id))
    raise ValueError(f"zerg.connect: address family {family!r} is not supported")


def _reactor() -> Reactor:
    loop = asyncio.get_running_loop()
    reactor = getattr(loop, "reactor", None)
    if not isinstance(reactor, Reactor):
        raise RuntimeError(
            "zerg.connect() must run on a zerg reactor loop: in a handler, or on a loop "
            f"from zerg.new_event_loop(); the running loop is {type(loop).__name__}")
    return reactor


async def connect(host: str, port: int, *, ssl: _ssl.SSLContext | None = None,
                  server_hostname: str | None = None, timeout: float | None = None,
                  family: int = 0, protocol: Protocol | None = None) -> Connection:
    """Open a TCP connection to ``host``:``port`` on the running zerg loop.

    Returns a ``Connection`` like an accepted one (read it with any level or
    adapter; close it when done).  Given ``protocol`` (a ``zerg.Protocol``),
    the connection is served by it from completion dispatch, as on a
    listener: ``connection_made`` is called before this returns.

    ``ssl``: an ``ssl.SSLContext`` (client side) to speak TLS; the handshake
    is done before this returns and ``conn.tls`` tells its outcome.
    ``server_hostname``: the name to check the certificate against and send
    as SNI (default: ``host``).  ``timeout``: seconds for resolution,
    connect and handshake together (``TimeoutError``).  ``family``:
    ``socket.AF_INET`` or ``AF_INET6`` to use only that family.

    Raises ``ConnectionRefusedError`` and the other ``OSError`` subclasses of
    the failed connect (the first address's error when every one failed),
    ``socket.gaierror`` when the name does not resolve, ``ssl.SSLError`` for
    a failed handshake, ``RuntimeError`` off a zerg loop.
    """
    if ssl is not None and not isinstance(ssl, _ssl.SSLContext):
        raise TypeError(f"ssl must be an ssl.SSLContext or None, got {type(ssl).__name__}")
    if server_hostname is not None and ssl is None:
        raise ValueError("server_hostname is only meaningful with ssl")
    if timeout is not None and not (isinstance(timeout, (int, float)) and timeout > 0):
        raise ValueError(f"timeout must be a positive number of seconds or None, got {timeout!r}")
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise ValueError(f"port must be an int in 1..65535, got {port!r}")
    if protocol is not None and not isinstance(protocol, Protocol):
        raise TypeError(f"protocol must be a zerg.Protocol, got {type(protocol).__name__}")
    reactor = _reactor()
    async with asyncio.timeout(timeout):
        return await _open(reactor, host, port, ssl, server_hostname or host, family, protocol)


async def _open(reactor: Reactor, host: str, port: int, ssl: _ssl.SSLContext | None,
                server_hostname: str, family: int, protocol: Protocol | None) -> Connection:
    loop = reactor.loop
    infos = await loop.getaddrinfo(host, port, family=family, type=socket.SOCK_STREAM,
                                   proto=socket.IPPROTO_TCP)
    errors: list[OSError] = []
    for fam, _, _, _, address in infos:
        if fam not in (socket.AF_INET, socket.AF_INET6):
            continue
        sock = socket.socket(fam, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            addr = sockaddr(fam, address)
        except BaseException:
            sock.close()
            raise
        fd = sock.detach()
        try:
            cid = await reactor.connect_fd(fd, addr)
        except OSError as exc:
            errors.append(exc)
            continue
        return await _serve(reactor, cid, fd, ssl, server_hostname, protocol)
    if not errors:
        raise OSError(f"zerg.connect: {host!r} resolved to no IPv4 or IPv6 address")
    if len(errors) == 1 or len({str(e) for e in errors}) == 1:
        raise errors[0]
    raise OSError(f"Multiple exceptions: {', '.join(str(e) for e in errors)}") from errors[0]


async def _serve(reactor: Reactor, cid: int, fd: int, ssl: _ssl.SSLContext | None,
                 server_hostname: str, protocol: Protocol | None) -> Connection:
    """The connected socket as a registered, receiving connection."""
    conn: Connection
    if ssl is not None:
        if protocol is None:
            conn = TlsConnection(reactor, cid, fd, ssl, server_side=False,
                                 server_hostname=server_hostname, handshake_timeout=None)
        else:
            conn = TlsProtocolConnection(reactor, cid, fd, protocol, ssl, server_side=False,
                                         server_hostname=server_hostname,
                                         handshake_timeout=None)
        conn.start()
        try:
            await conn.handshake        # a Protocol's connection_made comes with it
        except BaseException:
            conn.abort()
            raise
    elif protocol is None:
        conn = Connection(reactor, cid, fd)
        conn.start()
    else:
        conn = ProtocolConnection(reactor, cid, fd, protocol)
        conn.start()
        try:
            protocol.connection_made(conn)
        except Exception as exc:
            conn.fail_callback(exc)
    return conn
