"""Shared bits of the benchmark servers: arguments, the ready line, fd limit.

Every server takes ``--host``/``--port`` (port 0 picks a free one) and prints
exactly one line ``ready <port>`` (flushed) once it is listening; the runner
waits for that line before it starts the load generator.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import resource
import sys
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import ModuleType
from typing import Final

EXAMPLES: Final = Path(__file__).resolve().parents[2] / "examples"
BACKLOG: Final = 4096
READ_SIZE: Final = 256 * 1024


def parse_args(description: str) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    return ap.parse_args()


def load_example(stem: str) -> ModuleType:
    """``examples/<stem>.py`` of this tree as a module (examples/ is no package)."""
    name = f"zerg_examples_{stem}"
    path = EXAMPLES / f"{stem}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module          # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


def raise_nofile() -> None:
    """Raise the soft RLIMIT_NOFILE to the hard limit (C1 opens 10,000 sockets)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def ready(port: int) -> None:
    if os.environ.get("BENCH_COUNT_ALLOCS"):
        _count_allocations()
    print(f"ready {port}", flush=True)


def serve_asyncio(args: argparse.Namespace,
                  start: Callable[[str, int], Awaitable[asyncio.Server]],
                  loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None) -> None:
    """The main of every asyncio/uvloop server: the fd limit raised, then on a
    fresh loop (``loop_factory``; asyncio's own when None) ``start(host,
    port)``, the ready line with the port it got, and serve forever."""
    raise_nofile()

    async def run() -> None:
        server = await start(args.host, args.port)
        ready(server.sockets[0].getsockname()[1])
        await server.serve_forever()

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(run())


def _count_allocations() -> None:
    """For benchmarks/allocations.py: count every object allocation from now
    on; each line read from stdin is answered with ``allocs <count>``."""
    import zerg._speedups as counter  # the C module, loaded or not as zerg's hot path

    counter.count_allocations()

    def answer() -> None:
        for _ in sys.stdin:
            print(f"allocs {counter.allocations()}", flush=True)

    threading.Thread(target=answer, daemon=True).start()
