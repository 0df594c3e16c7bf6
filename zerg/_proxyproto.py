"""The PROXY protocol header (v1 text and v2 binary), parsed sans-IO.

Why: behind haproxy, nginx ``stream`` or a cloud load balancer, every
connection comes from the balancer; the PROXY protocol prepends one header
naming the original client (haproxy's ``send-proxy``/``send-proxy-v2``).
With ``EngineOptions(proxy_protocol=True)`` the reactor reads that header
before the connection starts, and ``conn.peername`` is the client.

What: ``parse(data)`` looks at the first bytes of a connection and returns
``(header length, address)`` once the whole header is there (address None
for ``LOCAL``/``UNKNOWN``: a health check of the balancer itself, where the
real peer stands), None while it is incomplete, and raises
``ProxyHeaderError`` for anything else: a missing or malformed header, an
unknown version or command, addresses that do not parse, or a header longer
than ``MAX_HEADER``.  Bounded: a v1 line has at most 107 bytes (the spec's
limit); a v2 header at most ``MAX_HEADER``.
"""

from __future__ import annotations

import ipaddress
import struct
from typing import Final

__all__ = ["MAX_HEADER", "ProxyHeaderError", "parse"]

V1_PREFIX: Final = b"PROXY "
V1_MAX: Final = 107                     # including the CRLF (spec, 2.1)
V2_SIGNATURE: Final = b"\r\n\r\n\x00\r\nQUIT\n"
MAX_HEADER: Final = 16 + 1024           # v2: fixed part + addresses + TLVs we accept

Address = tuple[str, int] | tuple[str, int, int, int]


class ProxyHeaderError(ValueError):
    """The connection does not start with a valid PROXY protocol header."""


def parse(data: bytes) -> tuple[int, Address | None] | None:
    """``(length, address)`` of the complete header at the start of ``data``,
    None while it may still become one, ``ProxyHeaderError`` otherwise."""
    if data[:1] == b"P":
        return _v1(data)
    if data[:1] == b"\r":
        return _v2(data)
    if data:
        raise ProxyHeaderError("the connection does not start with a PROXY header")
    return None


def _v1(data: bytes) -> tuple[int, Address | None] | None:
    n = min(len(data), len(V1_PREFIX))
    if data[:n] != V1_PREFIX[:n]:
        raise ProxyHeaderError("the connection does not start with a PROXY header")
    end = data.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if len(data) >= V1_MAX:
            raise ProxyHeaderError(f"PROXY v1 line longer than {V1_MAX} bytes")
        return None
    parts = data[len(V1_PREFIX):end].split(b" ")
    if parts[0] == b"UNKNOWN":
        return end + 2, None
    if len(parts) != 5 or parts[0] not in (b"TCP4", b"TCP6"):
        raise ProxyHeaderError(f"malformed PROXY v1 line {data[:end]!r}")
    src, _dst, sport, dport = parts[1:]
    try:
        ip = ipaddress.ip_address(src.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise ProxyHeaderError(f"bad source address in PROXY v1 line {data[:end]!r}") from None
    if (ip.version == 4) != (parts[0] == b"TCP4"):
        raise ProxyHeaderError(f"address family mismatch in PROXY v1 line {data[:end]!r}")
    port = _port(sport)
    if port is None or _port(dport) is None:
        raise ProxyHeaderError(f"bad port in PROXY v1 line {data[:end]!r}")
    return end + 2, _address(ip, port)


def _port(text: bytes) -> int | None:
    """A decimal port 0..65535 without sign or leading zeros (spec, 2.1)."""
    if text.isdigit() and len(text) <= 5 and (text == b"0" or text[:1] != b"0"):
        port = int(text)
        if port <= 65535:
            return port
    return None


def _address(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> Address:
    return (str(ip), port) if ip.version == 4 else (str(ip), port, 0, 0)


def _v2(data: bytes) -> tuple[int, Address | None] | None:
    n = min(len(data), len(V2_SIGNATURE))
    if data[:n] != V2_SIGNATURE[:n]:
        raise ProxyHeaderError("the connection does not start with a PROXY header")
    if len(data) < 16:
        return None
    ver_cmd, fam, length = data[12], data[13], struct.unpack_from("!H", data, 14)[0]
    if ver_cmd >> 4 != 2:
        raise ProxyHeaderError(f"PROXY v2 header of version {ver_cmd >> 4}")
    if 16 + length > MAX_HEADER:
        raise ProxyHeaderError(f"PROXY v2 header of {16 + length} bytes (at most {MAX_HEADER})")
    if len(data) < 16 + length:
        return None
    cmd = ver_cmd & 0xF
    if cmd == 0:                        # LOCAL: the balancer's own connection
        return 16 + length, None
    if cmd != 1:
        raise ProxyHeaderError(f"PROXY v2 header with command {cmd}")
    body = data[16:16 + length]
    family, proto = fam >> 4, fam & 0xF
    if family == 0 or proto != 1:       # UNSPEC, or not a stream: the real peer stands
        return 16 + length, None
    if family == 1 and length >= 12:
        return 16 + length, _address(ipaddress.IPv4Address(body[:4]),
                                     struct.unpack_from("!H", body, 8)[0])
    if family == 2 and length >= 36:
        return 16 + length, _address(ipaddress.IPv6Address(body[:16]),
                                     struct.unpack_from("!H", body, 32)[0])
    if family == 3:                     # AF_UNIX: no address we can give as a peer
        return 16 + length, None
    raise ProxyHeaderError(f"PROXY v2 header with family {family} and {length} address bytes")
