"""Echo server: zerg level 1 (raw ring items), like examples/echo.py."""

from __future__ import annotations

from _zerg_common import serve

import zerg


async def echo(conn: zerg.Connection) -> None:
    while True:
        snap = await conn.read()
        if snap.is_closed:
            return
        while (item := conn.try_get_ring(snap)) is not None:
            conn.write(item.view)
            conn.return_ring(item)
        conn.reset_read()
        await conn.flush()


if __name__ == "__main__":
    serve(echo, __doc__ or "")
