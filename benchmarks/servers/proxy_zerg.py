"""TCP proxy (P1): examples/proxy.py -- zerg.Protocol on both sides,
``zerg.connect`` upstream, bytes forwarded from the receive slots (no copy)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from _common import BACKLOG, load_example, parse_args, raise_nofile, ready
from _upstream import start_echo

import zerg


def main() -> None:
    args = parse_args(__doc__ or "")
    raise_nofile()
    logging.basicConfig(level=logging.WARNING)
    front: Callable[[str, int], zerg.Protocol] = load_example("proxy").Front
    port, upstream = start_echo(args.host)
    opts = zerg.EngineOptions(ip=args.host, port=args.port, backlog=BACKLOG, reactor_count=1)
    try:
        with zerg.Engine(opts) as engine:
            engine.listen()
            ready(engine.port)
            engine.serve(front(args.host, port))
    finally:
        upstream.kill()


if __name__ == "__main__":
    main()
