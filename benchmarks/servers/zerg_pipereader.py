"""Echo server: zerg level 3, ``PipeReader`` (System.IO.Pipelines' reader contract)."""

from __future__ import annotations

from _zerg_common import serve

import zerg
from zerg.adapters import PipeReader


async def echo(conn: zerg.Connection) -> None:
    reader = PipeReader(conn)
    try:
        while True:
            result = await reader.read()
            buf = result.buffer
            for segment in buf:
                conn.write(segment)
            reader.advance_to(len(buf))
            if conn.pending_write_bytes:
                await conn.flush()
            if result.is_completed:
                return
    finally:
        reader.complete()


if __name__ == "__main__":
    serve(echo, __doc__ or "")
