"""Which implementation of the hot path runs: the C extension or the reference.

``zerg._speedups`` (native/speedups.c) carries the per-completion work of the
reactor in C; the pure-Python modules it mirrors stay as the reference and
are what runs with ``ZERG_NO_EXTENSIONS=1`` in the environment (the switch
aiohttp, multidict and yarl use).  The test suite runs against both.

The extension is built by every install (``pip install``, ``make``); if it
is missing anyway, importing zerg fails with a message that says how to run
without it, instead of silently running slower.
"""

from __future__ import annotations

import os
from types import ModuleType

NO_EXTENSIONS: bool = os.environ.get("ZERG_NO_EXTENSIONS", "") not in ("", "0")
"""True when ``ZERG_NO_EXTENSIONS`` asks for the pure-Python reference."""


def _load() -> ModuleType | None:
    if NO_EXTENSIONS:
        return None
    try:
        import zerg._speedups as _speedups  # not via the package: no import cycle
    except ImportError as exc:
        raise ImportError(
            f"zerg's C extension zerg._speedups is not built ({exc}); reinstall zerg "
            "(pip install -e . builds it), or set ZERG_NO_EXTENSIONS=1 to run the "
            "pure-Python reference"
        ) from exc
    return _speedups


speedups: ModuleType | None = _load()
"""The extension module, or None when the reference runs."""
