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


def counters(name: str, fields: tuple[str, ...]) -> type:
    """A base class whose int attributes ``fields`` the C extension updates in
    place: C integers (``zerg._speedups.counters``), so a per-message counter
    costs no int object.  Without the extension, a plain class with these
    ``__slots__``.  Either way they read 0 until set.  Derive the class that
    keeps the counters from it, and leave them out of its own ``__slots__``."""
    if speedups is not None:
        base: type = speedups.counters(name, fields)
        return base

    def __new__(cls: type, *args: object, **kwargs: object) -> object:
        self: object = object.__new__(cls)
        for field in fields:
            object.__setattr__(self, field, 0)
        return self

    return type(name, (), {"__slots__": fields, "__module__": __name__, "__new__": __new__})
