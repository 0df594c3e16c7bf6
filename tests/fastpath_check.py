"""Shared checks of the C fast paths against their Python references.

``tests/test_connfast.py`` and ``tests/test_loopfast.py`` put C methods and
the Python methods they replaced side by side: with the extension, each
random script runs twice (C, then the reference put back) and must give the
same trace; with ``ZERG_NO_EXTENSIONS=1`` the classes must carry the Python
methods only, and the comparisons run in a child process with the extension.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from zerg import _native

Replaced = dict[type, tuple[str, ...]]
T = TypeVar("T")


def assert_methods(replaced: Replaced) -> None:
    """C method descriptors with the extension, Python functions without."""
    want = "function" if _native.speedups is None else "method_descriptor"
    for cls, names in replaced.items():
        for name in names:
            got = type(inspect.getattr_static(cls, name)).__name__
            assert got == want, (cls, name, got)


def agree(play: Callable[[T], list[Any]], script: T,
          reference: Callable[[], contextlib.AbstractContextManager[None]],
          replaced: Replaced) -> None:
    """With the extension: ``play(script)`` with the C methods equals it with
    the reference's.  Without: the reference is what the classes carry."""
    if _native.speedups is None:
        assert_methods(replaced)
        return
    fast = play(script)
    with reference():
        ref = play(script)
    assert fast == ref


@contextlib.contextmanager
def swapped(cls: type, name: str, value: Any) -> Iterator[None]:
    """``cls.name`` is ``value`` for the duration (None: inherited)."""
    saved = cls.__dict__[name]
    try:
        if value is None:
            delattr(cls, name)
        else:
            setattr(cls, name, value)
        yield
    finally:
        setattr(cls, name, saved)


def run_with_extension(test_file: str, passed: int) -> None:
    """Under ZERG_NO_EXTENSIONS=1: run ``test_file``'s tests in a child
    process that loads the extension; all ``passed`` of them must pass."""
    assert _native.speedups is None
    env = dict(os.environ, ZERG_NO_EXTENSIONS="")
    here = Path(test_file).resolve()
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(here)],
        env=env, cwd=here.parent.parent, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert f"{passed} passed" in out.stdout, out.stdout[-2000:]
