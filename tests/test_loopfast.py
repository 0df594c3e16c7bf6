"""The reactor loop's scheduling in C (native/loopfast.c) against asyncio's.

With the extension, ``ReactorLoop.call_soon``, ``create_future``,
``get_debug`` and ``_run_once`` and ``zerg._reactor.Handle._run`` are C methods.  Hypothesis
plays the same random script -- callbacks with arguments, in a given context
or the current one, that raise, cancel themselves or others, schedule more,
timers due at once or never, enough cancelled ones for asyncio's purge,
debug mode turned on from a callback --
on a reactor loop with the C methods and with asyncio's put back, and
compares the order of the calls, what each saw, what the exception handler
got, and the handles' repr and state.  Closed loops and debug mode take
asyncio's own path; both are checked.

With ``ZERG_NO_EXTENSIONS=1`` the classes must carry asyncio's methods only,
and the comparison runs in a child process with the extension.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastpath_check import agree, assert_methods, run_with_extension, swapped
from hypothesis import given, settings
from hypothesis import strategies as st

import zerg
from zerg import _native
from zerg._reactor import Handle, ReactorLoop

REPLACED = {ReactorLoop: ("call_soon", "create_future", "get_debug", "_run_once"),
            Handle: ("_run",)}
var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="-")


@contextlib.contextmanager
def reference_methods() -> Iterator[None]:
    """asyncio's methods back (the classes inherit them again) for the duration."""
    with contextlib.ExitStack() as stack:
        for cls, names in REPLACED.items():
            for name in names:
                stack.enter_context(swapped(cls, name, None))
        yield


step = st.tuples(st.sampled_from(["soon", "soon", "ctx", "raise", "cancel", "chain", "future",
                                  "due", "later", "many", "debug"]),
                 st.integers(0, 30))


def play(script: list[tuple[str, int]]) -> list[Any]:
    loop = zerg.new_event_loop()
    trace: list[Any] = []
    handles: list[asyncio.Handle] = []

    def handler(_: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        trace.append(("handler", context["message"], type(context.get("exception")).__name__,
                      context.get("handle") in handles))

    def record(tag: int, *extra: object) -> None:
        trace.append(("ran", tag, extra, var.get()))

    def boom(tag: int) -> None:
        raise ValueError(tag)

    def chain(tag: int) -> None:
        trace.append(("chain", tag))
        handles.append(loop.call_soon(record, tag + 1000))

    loop.set_exception_handler(handler)
    try:
        for op, n in script:
            if op == "soon":
                handles.append(loop.call_soon(record, n, "x" * (n % 3)))
            elif op == "ctx":
                ctx = contextvars.copy_context()
                ctx.run(var.set, f"v{n}")
                handles.append(loop.call_soon(record, n, context=ctx))
            elif op == "raise":
                handles.append(loop.call_soon(boom, n))
            elif op == "cancel" and handles:
                handles[n % len(handles)].cancel()
            elif op == "chain":
                handles.append(loop.call_soon(chain, n))
            elif op == "future":
                fut = loop.create_future()
                fut.add_done_callback(lambda f: trace.append(("done", f.result())))
                fut.set_result(n)
            elif op == "due":               # a timer already due: runs this iteration
                handles.append(loop.call_at(loop.time() - 1 - n, record, n))
            elif op == "later":             # one never due (cancel may hit it)
                handles.append(loop.call_later(100 + n, record, n))
            elif op == "many":              # enough cancelled timers for asyncio's purge
                for i in range(120):
                    h = loop.call_later(200 + i, record, i)
                    if i % 4:
                        h.cancel()
            elif op == "debug":             # debug mode from a callback, mid-iteration
                handles.append(loop.call_soon(loop.set_debug, True))
        trace.append(("reprs", [re.sub(r"when=[-\d.e]+", "when=T", repr(h)) for h in handles
                                if not loop.get_debug()]))
        loop.run_until_complete(asyncio.sleep(0))
        loop.run_until_complete(asyncio.sleep(0))
        trace.append(("after", [(h.cancelled(), isinstance(h, asyncio.Handle))
                                for h in handles]))
        scheduled: list[asyncio.TimerHandle] = getattr(loop, "_scheduled")   # noqa: B009
        trace.append(("timers", len(scheduled), getattr(loop, "_timer_cancelled_count"),  # noqa: B009
                      loop.get_debug()))
    finally:
        loop.close()
    return trace


@settings(max_examples=200, deadline=None)
@given(st.lists(step, max_size=25))
def test_c_scheduling_agrees_with_asyncio(script: list[tuple[str, int]]) -> None:
    agree(play, script, reference_methods, REPLACED)


def test_closed_loop_and_debug_mode_take_asyncios_path() -> None:
    loop = zerg.new_event_loop()
    loop.set_debug(True)
    handle = loop.call_soon(print)
    assert loop.get_debug() is True
    assert "created at" in repr(handle)          # debug mode: asyncio's call_soon ran
    handle.cancel()
    loop.set_debug(False)
    assert loop.get_debug() is False
    loop.close()
    with pytest.raises(RuntimeError, match="closed"):
        loop.call_soon(print)
    fut = loop.create_future()                  # as asyncio: a future of a closed loop
    assert fut.get_loop() is loop and not fut.done()


def test_a_slow_callback_after_debug_mode_turned_on_is_reported(
        caplog: pytest.LogCaptureFixture) -> None:
    """Debug mode switched on by a callback applies to the handles after it in
    the same iteration, as in asyncio's _run_once: a slow one is logged."""
    import time

    loop = zerg.new_event_loop()
    loop.slow_callback_duration = 0.01
    ran: list[str] = []
    try:
        loop.call_soon(loop.set_debug, True)
        def slow() -> None:
            time.sleep(0.03)
            ran.append("slow")

        loop.call_soon(slow)
        with caplog.at_level("WARNING", logger="asyncio"):
            loop.run_until_complete(asyncio.sleep(0))
    finally:
        loop.set_debug(False)
        loop.close()
    assert ran == ["slow"]
    assert any("Executing" in r.getMessage() and "took" in r.getMessage()
               for r in caplog.records), caplog.text


def test_asyncios_loop_state_lives_in_slots_and_a_subclass_may_shadow_it() -> None:
    """What asyncio's loop keeps and the C loop reads per callback lives in
    ReactorLoop's slots, where asyncio's own code stores it; a subclass that
    turns one into a property is read by name (the slot is not looked at)."""
    loop = zerg.new_event_loop()
    try:
        for name in ("_closed", "_debug", "_ready", "_scheduled", "_stopping", "_selector",
                     "_clock_resolution", "_future_kw"):
            assert name not in vars(loop), name
        loop.set_debug(True)
        assert loop.get_debug() is True
        assert vars(ReactorLoop)["_debug"].__get__(loop) is True     # the slot itself
        loop.set_debug(False)
        assert loop.run_until_complete(asyncio.sleep(0, "done")) == "done"
    finally:
        loop.close()

    class Shadowing(ReactorLoop):
        @property
        def _debug(self) -> bool:           # always in debug mode, whatever the slot says
            return True

        @_debug.setter
        def _debug(self, value: bool) -> None:
            pass

    shadow = zerg.new_event_loop()
    shadow.__class__ = Shadowing                # same layout: the class may change
    try:
        handle = shadow.call_soon(print)
        assert shadow.get_debug() is True
        assert "created at" in repr(handle)     # debug mode seen: asyncio's call_soon
        handle.cancel()
    finally:
        shadow.__class__ = ReactorLoop
        shadow.close()


def test_the_comparison_runs_with_the_extension() -> None:
    """Under ZERG_NO_EXTENSIONS=1 the comparison above runs in a child with it."""
    assert_methods(REPLACED)
    if _native.speedups is None:
        run_with_extension(__file__, passed=5)
