"""Start a zerg engine for a benchmark server and print the ready line."""

from __future__ import annotations

import logging
from typing import Any

from _common import BACKLOG, parse_args, raise_nofile, ready

import zerg


def serve(handler: Any, description: str, worker_threads: int | None = None) -> None:
    """Serve ``handler`` (async def, def, or a ``zerg.Protocol``) on one reactor
    with zerg's default configuration."""
    args = parse_args(description)
    raise_nofile()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    extra: dict[str, Any] = {}
    if worker_threads is not None:
        extra["worker_threads"] = worker_threads
    opts = zerg.EngineOptions(ip=args.host, port=args.port, backlog=BACKLOG, reactor_count=1,
                              **extra)
    with zerg.Engine(opts) as engine:
        engine.listen()
        ready(engine.port)
        engine.serve(handler)
