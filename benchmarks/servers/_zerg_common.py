"""Start a zerg engine for a benchmark server and print the ready line."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from _common import BACKLOG, parse_args, raise_nofile, ready

import zerg


def serve(handler: Any, description: str, worker_threads: int | None = None,
          reactor: zerg.ReactorConfig | None = None, workers: int = 1) -> None:
    """Serve ``handler`` (async def, def, or a ``zerg.Protocol``) on one reactor
    with zerg's default configuration (or ``reactor``), in ``workers`` processes."""
    args = parse_args(description)
    raise_nofile()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    extra: dict[str, Any] = {}
    if worker_threads is not None:
        extra["worker_threads"] = worker_threads
    if reactor is not None:
        extra["reactor"] = reactor
    opts = zerg.EngineOptions(ip=args.host, port=args.port, backlog=BACKLOG, reactor_count=1,
                              workers=workers, **extra)
    with zerg.Engine(opts) as engine:
        engine.listen()
        if workers == 1:
            ready(engine.port)
        else:
            threading.Thread(target=_ready_when_workers_listen, args=(engine, workers),
                             daemon=True).start()
        engine.serve(handler)


def _ready_when_workers_listen(engine: zerg.Engine, workers: int) -> None:
    deadline = time.monotonic() + 30
    while len(engine.worker_pids()) < workers and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.5)                 # let each worker reach listen()
    ready(engine.port)
