"""Echo server on zerg's level-1 API: raw ring items, zero-copy reads.

    python examples/echo.py --host 127.0.0.1 --port 7000
"""

from __future__ import annotations

import argparse
import logging

import zerg


async def echo(conn: zerg.Connection) -> None:
    while True:
        snap = await conn.read()
        if snap.is_closed:
            return
        while (item := conn.try_get_ring(snap)) is not None:
            conn.write(item.view)       # one copy, into the write segment
            conn.return_ring(item)      # the slot goes back to the kernel
        conn.reset_read()
        await conn.flush()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=7000)
    ap.add_argument("--reactors", type=int, default=1)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    opts = zerg.EngineOptions(ip=args.host, port=args.port, reactor_count=args.reactors)
    with zerg.Engine(opts) as engine:
        engine.listen()
        print(f"echo: listening on {args.host}:{engine.port}", flush=True)
        engine.serve(echo)


if __name__ == "__main__":
    main()
