"""TCP proxy (P1) on uvloop with the structure of examples/proxy.py: a
Protocol per side, the upstream opened with ``loop.create_connection``,
``data_received`` writing to the partner, pause/resume reading for
back-pressure, half-close passed on with ``write_eof``."""

from __future__ import annotations

import asyncio
from typing import cast

import uvloop
from _common import BACKLOG, parse_args, raise_nofile, serve_asyncio
from _upstream import start_echo


class Side(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.partner: Side | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        partner = self.partner
        if partner is not None and partner.transport is not None:
            partner.transport.write(data)

    def pause_writing(self) -> None:
        if self.partner is not None and self.partner.transport is not None:
            self.partner.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.partner is not None and self.partner.transport is not None:
            self.partner.transport.resume_reading()

    def eof_received(self) -> bool:
        partner = self.partner
        if partner is not None and partner.transport is not None:
            if partner.transport.can_write_eof():
                partner.transport.write_eof()
                return True
            partner.transport.close()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        partner, self.partner = self.partner, None
        if partner is not None and partner.transport is not None:
            partner.partner = None
            if isinstance(exc, ConnectionResetError):
                partner.transport.abort()
            else:
                partner.transport.close()


class Front(Side):
    upstream: tuple[str, int] = ("127.0.0.1", 0)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        cast(asyncio.Transport, transport).pause_reading()
        asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, back = await loop.create_connection(Side, *self.upstream)
        except OSError:
            if self.transport is not None:
                self.transport.close()
            return
        if self.transport is None or self.transport.is_closing():
            assert back.transport is not None
            back.transport.close()
            return
        back.partner, self.partner = self, back
        self.transport.resume_reading()


async def start(host: str, port: int) -> asyncio.Server:
    return await asyncio.get_running_loop().create_server(Front, host, port, backlog=BACKLOG)


def main() -> None:
    args = parse_args(__doc__ or "")
    raise_nofile()
    upstream_port, upstream = start_echo(args.host)
    Front.upstream = (args.host, upstream_port)
    try:
        serve_asyncio(args, start, uvloop.new_event_loop)
    finally:
        upstream.kill()


if __name__ == "__main__":
    main()
