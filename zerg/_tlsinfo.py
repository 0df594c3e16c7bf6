"""``Connection.tls``: what a TLS handshake agreed, as one immutable record.

Why a module of its own: ``Connection`` names the type (``conn.tls``) and
the TLS layer fills it in; neither should import the other for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class TlsInfo:
    """The outcome of a finished TLS handshake (``Connection.tls``)."""

    version: str | None
    """The protocol version, e.g. ``"TLSv1.3"``."""
    cipher: str | None
    """The cipher suite's name."""
    alpn_protocol: str | None
    """The application protocol ALPN selected (e.g. ``"http/1.1"``), or None."""
    server_name: str | None
    """On a server: the name the client asked for (SNI); on a client: the
    ``server_hostname`` it was checked against."""
    peer_certificate: dict[str, Any] | None
    """The peer's certificate as ``ssl.SSLObject.getpeercert()`` gives it
    (None when the peer sent none, or when it was not verified)."""
    peer_certificate_der: bytes | None
    """The peer's certificate in DER form, verified or not (None when it sent none)."""
