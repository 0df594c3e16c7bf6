"""TCP proxy (P1): examples/proxy.py -- zerg.Protocol on both sides,
``zerg.connect`` upstream, bytes forwarded from the receive slots (no copy)."""

from __future__ import annotations

import importlib.util
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Final

from _common import BACKLOG, parse_args, raise_nofile, ready
from _upstream import start_echo

import zerg

EXAMPLE: Final = Path(__file__).resolve().parents[2] / "examples" / "proxy.py"


def _load_example() -> ModuleType:
    name = "zerg_examples_proxy"
    spec = importlib.util.spec_from_file_location(name, EXAMPLE)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {EXAMPLE}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def main() -> None:
    args = parse_args(__doc__ or "")
    raise_nofile()
    logging.basicConfig(level=logging.WARNING)
    front: Callable[[str, int], zerg.Protocol] = _load_example().Front
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
