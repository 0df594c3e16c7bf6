"""The sans-IO half of zerg's TLS: one ``ssl.SSLObject`` between two
``ssl.MemoryBIO``\\ s, and the server context's SNI recording.

Why a module of its own: this part knows nothing of connections, rings or
loops -- ciphertext in, plaintext out, plaintext in, ciphertext out -- so it
is tested without sockets (two sessions handing each other their output),
and ``zerg._tls`` (the layer over a connection) stays about connections.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from zerg._buffers import BytesLike
from zerg._tlsinfo import TlsInfo

__all__ = ["READ_SIZE", "TlsOptions", "TlsSession", "server_context"]

READ_SIZE: Final = 65536            # most plaintext one SSLObject.read returns
_SNI_ATTR: Final = "zerg_server_name"


# ------------------------------------------------------------------ settings
@dataclass(frozen=True, slots=True)
class TlsOptions:
    """What a start strategy needs to serve TLS (built once by ``Engine``)."""

    context: ssl.SSLContext
    """The server context (``EngineOptions.ssl``), SNI recording installed."""
    handshake_timeout: float | None
    """Seconds a new connection may take to finish its handshake."""


class _SniRecorder:
    """``sni_callback`` that records the name a client asked for on its
    ``SSLObject`` (the only way a server learns it), then calls the callback
    the context had before (which may still switch ``ssl_object.context``)."""

    __slots__ = ("inner",)

    def __init__(self, inner: Callable[..., int | None] | None) -> None:
        self.inner = inner

    def __call__(self, obj: Any, name: str | None, ctx: ssl.SSLContext) -> int | None:
        if name is not None:
            try:
                setattr(obj, _SNI_ATTR, name)
            except AttributeError:
                pass                # not an object of ours (the context is shared)
        inner = self.inner
        return inner(obj, name, ctx) if inner is not None else None


def server_context(context: ssl.SSLContext, handshake_timeout: float | None) -> TlsOptions:
    """``TlsOptions`` for serving with ``context``: its ``sni_callback`` is
    wrapped (once; a callback set later replaces the wrapper, and then
    ``conn.tls.server_name`` is None)."""
    if not isinstance(context.sni_callback, _SniRecorder):
        context.sni_callback = _SniRecorder(context.sni_callback)
    return TlsOptions(context, handshake_timeout)


# ------------------------------------------------------------------- sans-IO
class TlsSession:
    """One TLS session, sans-IO: ciphertext in (``feed``), plaintext out
    (``read``), plaintext in (``encrypt``), ciphertext out (``output``).

    Testable without sockets: two sessions talk by handing each other's
    ``output()`` to ``feed()``.
    """

    __slots__ = ("close_sent", "established", "incoming", "outgoing", "peer_closed",
                 "server_side", "sslobj")

    def __init__(self, context: ssl.SSLContext, *, server_side: bool,
                 server_hostname: str | None = None) -> None:
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.sslobj = context.wrap_bio(self.incoming, self.outgoing, server_side=server_side,
                                       server_hostname=server_hostname)
        self.server_side = server_side
        self.established = False
        self.peer_closed = False        # the peer's close_notify arrived
        self.close_sent = False         # ours was produced

    def feed(self, data: BytesLike) -> None:
        """Ciphertext from the peer."""
        self.incoming.write(data)

    def output(self) -> bytes:
        """Ciphertext to send (handshake messages, tickets, alerts, records)."""
        return self.outgoing.read()

    def handshake(self) -> bool:
        """Advance the handshake with what was fed: True once it finished.
        Raises ``ssl.SSLError`` when it failed (an alert may wait in ``output``)."""
        if not self.established:
            try:
                self.sslobj.do_handshake()
            except ssl.SSLWantReadError:
                return False
            self.established = True
        return True

    def read(self) -> bytes:
        """Every byte of plaintext the records fed so far hold (b"" if none);
        ``peer_closed`` is set once the peer's close_notify came.  Raises
        ``ssl.SSLError`` for a bad record."""
        sslobj = self.sslobj
        incoming = self.incoming
        chunks: list[bytes] = []
        while not self.peer_closed:
            try:
                data = sslobj.read(READ_SIZE)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                data = b""
            if not data:
                self.peer_closed = True
                break
            chunks.append(data)
            if not incoming.pending and not sslobj.pending():
                break                   # nothing left to decrypt: spare the exception
        if len(chunks) == 1:
            return chunks[0]
        return b"".join(chunks)

    def encrypt(self, data: BytesLike) -> bytes:
        """The records carrying ``data`` (after the handshake)."""
        self.sslobj.write(data)
        return self.outgoing.read()

    def close_notify(self) -> bytes:
        """Our close_notify, as ciphertext (we do not wait for the peer's)."""
        if not self.close_sent:
            self.close_sent = True
            try:
                self.sslobj.unwrap()
            except ssl.SSLWantReadError:
                pass                    # the peer's close_notify has not come: fine
            except (ssl.SSLError, ValueError):
                pass                    # a broken session: nothing to say
        return self.outgoing.read()

    def info(self) -> TlsInfo:
        """What the finished handshake agreed."""
        obj = self.sslobj
        cipher = obj.cipher()
        if self.server_side:
            name: str | None = getattr(obj, _SNI_ATTR, None)
        else:
            name = obj.server_hostname
        return TlsInfo(
            version=obj.version(),
            cipher=cipher[0] if cipher else None,
            alpn_protocol=obj.selected_alpn_protocol(),
            server_name=name,
            peer_certificate=obj.getpeercert() or None,
            peer_certificate_der=obj.getpeercert(True),
        )
