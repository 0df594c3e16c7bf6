"""Length-prefixed framing server on zerg's parsing toolkit.

    python examples/frames.py --host 127.0.0.1 --port 8090

A frame is a 4-byte big-endian length, then that many payload bytes; the
server answers every frame with the same frame.  Frames over ``MAX_FRAME``
bytes close the connection (nothing of that frame is echoed), so a client
cannot make the server buffer without bound.

The parser is a ``zerg.SequenceReader`` over the ``PipeReader`` buffer:
``try_read_int(4)`` reads the length across any segment boundary, copying
only those four bytes; ``try_read_exact(n)`` hands the payload on as a
zero-copy slice, whose segments are written straight into the reply.  An
incomplete frame is rewound and left unconsumed, and
``advance_to(consumed, examined)`` makes the next read wait for more bytes.
Replies to pipelined frames are staged up to the connection's high-water
mark, then flushed, so memory stays bounded.
"""

from __future__ import annotations

import argparse
import logging
from typing import Final

import zerg
from zerg.adapters import PipeReader

MAX_FRAME: Final = 1 << 20


async def handle(conn: zerg.Connection) -> None:
    """Echo every frame of one connection, in order."""
    reader = PipeReader(conn)
    high_water = conn.get_write_buffer_limits()[1]
    try:
        while True:
            res = await reader.read()
            sr = zerg.SequenceReader(res.buffer)
            backlog = False
            while (size := sr.try_read_int(4)) is not None:
                if size > MAX_FRAME:
                    return                          # refuse it: close, echo nothing
                payload = sr.try_read_exact(size)
                if payload is None:                 # not all here yet: keep the length
                    sr.rewind(4)
                    break
                conn.write(size.to_bytes(4, "big"))
                for segment in payload:             # zero-copy slices of the slots
                    conn.write(segment)
                if conn.pending_write_bytes > high_water:
                    backlog = True                  # send these before parsing on
                    break
            reader.advance_to(sr.consumed, sr.consumed if backlog else sr.examined)
            if conn.pending_write_bytes:
                await conn.flush()
            if res.is_completed and not backlog:
                return
    finally:
        reader.complete()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="zerg length-prefixed framing example")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8090)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    opts = zerg.EngineOptions(ip=args.host, port=args.port)
    with zerg.Engine(opts) as engine:
        engine.listen()
        print(f"frames: listening on {args.host}:{engine.port}", flush=True)
        engine.serve(handle)


if __name__ == "__main__":
    main()
