"""Echo server: zerg level 2 (conn.get_sequence -> BufferSequence, advance/release)."""

from __future__ import annotations

from _zerg_common import serve

import zerg


async def echo(conn: zerg.Connection) -> None:
    while True:
        snap = await conn.read()
        if snap.is_closed:
            return
        seq = conn.get_sequence(snap)
        for segment in seq:
            conn.write(segment)
        seq.advance(len(seq))       # every slot is consumed: all go back
        seq.release()               # nothing left; kept for the contract
        await conn.flush()


if __name__ == "__main__":
    serve(echo, __doc__ or "")
