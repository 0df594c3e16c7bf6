"""Run CPython's own test.test_asyncio modules on zerg loops.

Every loop those tests make comes from ``zerg.new_event_loop()``: through an
event-loop policy (``asyncio.new_event_loop()``), through the
``asyncio.SelectorEventLoop(...)`` the per-selector test classes construct
(epoll, poll, select -- all become zerg loops), and through one more
``test_events`` class of our own.  Prints ``RESULT <run> <failures>
<errors> <skipped> <zerg loops>`` last; exits non-zero on any failure.

    python tests/conformance/run_asyncio_suite.py [module ...]
"""

from __future__ import annotations

import asyncio
import importlib
import selectors
import sys
import unittest
from typing import Any

import zerg

MODULES = [
    "test.test_asyncio.test_events",
    "test.test_asyncio.test_streams",
    "test.test_asyncio.test_sock_lowlevel",
    "test.test_asyncio.test_sendfile",
    "test.test_asyncio.test_subprocess",
    "test.test_asyncio.test_server",
    "test.test_asyncio.test_tasks",
]

_made = 0


def _zerg_loop() -> asyncio.AbstractEventLoop:
    global _made
    _made += 1
    return zerg.new_event_loop()


class _ZergPolicy(asyncio.DefaultEventLoopPolicy):
    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        return _zerg_loop()


_Original = asyncio.SelectorEventLoop


class _LooksLikeSelectorLoop(type):
    """isinstance/issubclass against the patched name still mean the real class."""

    def __instancecheck__(cls, obj: object) -> bool:
        return isinstance(obj, _Original)

    def __subclasscheck__(cls, sub: type) -> bool:
        return issubclass(sub, _Original)


class _ZergSelectorEventLoop(metaclass=_LooksLikeSelectorLoop):
    """``asyncio.SelectorEventLoop(selector)`` as the tests call it: a zerg loop."""

    def __new__(cls, selector: selectors.BaseSelector | None = None) -> Any:
        if selector is not None:
            selector.close()
        return _zerg_loop()


def main(argv: list[str]) -> int:
    setattr(asyncio, "SelectorEventLoop", _ZergSelectorEventLoop)  # noqa: B010
    asyncio.set_event_loop_policy(_ZergPolicy())
    # CPython's test package has no stubs: import it dynamically.
    test_events: Any = importlib.import_module("test.test_asyncio.test_events")
    test_utils: Any = importlib.import_module("test.test_asyncio.utils")
    zerg_tests = type("ZergEventLoopTests",
                      (test_events.UnixEventLoopTestsMixin, test_utils.TestCase),
                      {"create_event_loop": lambda self: _zerg_loop()})

    loader = unittest.TestLoader()
    suite = unittest.TestSuite()
    suite.addTests(loader.loadTestsFromTestCase(zerg_tests))
    for name in argv or MODULES:
        suite.addTests(loader.loadTestsFromName(name))
    result = unittest.TextTestRunner(verbosity=1).run(suite)
    print("RESULT", result.testsRun, len(result.failures), len(result.errors),
          len(result.skipped), _made, flush=True)
    return 0 if result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
