"""The future a waiting read's task waits on (native/readwaiter.c).

With the extension, ``InputPipe.arm_waiter`` makes a ``ReadWaiter`` instead
of an ``asyncio.Future``: the task waits on it through asyncio's protocol for
future-like objects.  Whatever a task, ``wait_for`` or a user's callback does
with it must go as with a Future, so hypothesis drives a ReadWaiter and an
asyncio Future with the same operations and compares every result, every
error class and the callbacks run.  The module is built in both modes, so
these tests run in both.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zerg import _speedups

_OPS = st.lists(st.one_of(
    st.tuples(st.just("add"), st.integers(0, 2)),
    st.tuples(st.just("remove"), st.integers(0, 2)),
    st.tuples(st.just("cancel"), st.sampled_from([None, "why"])),
    st.tuples(st.just("cancel_kw"), st.sampled_from([None, "why"])),
    st.tuples(st.just("set_result"), st.sampled_from([None, 7])),
    st.tuples(st.just("done"), st.none()), st.tuples(st.just("cancelled"), st.none()),
    st.tuples(st.just("result"), st.none()), st.tuples(st.just("exception"), st.none()),
    st.tuples(st.just("blocking"), st.booleans()), st.tuples(st.just("run"), st.none()),
), max_size=25)


def _apply(obj: Any, op: str, arg: Any, cb: Callable[[Any], None],
           ctx: contextvars.Context) -> list[tuple[str, Any]]:
    """What op does on obj: its result or its error's class (and a
    cancellation's message), for each way of calling it."""
    calls: list[Callable[[], Any]]
    if op == "add":
        calls = [lambda: obj.add_done_callback(cb, context=ctx)]
    elif op == "remove":
        calls = [lambda: obj.remove_done_callback(cb)]
    elif op == "cancel":
        calls = [lambda: obj.cancel(arg)]
    elif op == "cancel_kw":
        calls = [lambda: obj.cancel(msg=arg)]
    elif op == "set_result":
        calls = [lambda: obj.set_result(arg)]
    elif op == "blocking":
        obj._asyncio_future_blocking = arg
        calls = [lambda: obj._asyncio_future_blocking]
    else:       # by attribute, and by a name made at run time (as asyncio.Task does)
        calls = [getattr(obj, op), lambda: getattr(obj, "".join(op))()]
    outs = []
    for call in calls:
        try:
            outs.append(("ok", call()))
        except BaseException as exc:
            cancelled = isinstance(exc, asyncio.CancelledError)
            outs.append(("raised", (type(exc), exc.args if cancelled else None)))
    return outs


@settings(max_examples=300, deadline=None)
@given(_OPS)
def test_a_read_waiter_behaves_as_an_asyncio_future(script: list[tuple[str, Any]]) -> None:
    """Each operation gives the same result or error class on both; the
    callbacks run in the same order, with the same argument and context,
    only when the loop runs them (never inside set_result or cancel)."""
    loop = asyncio.new_event_loop()
    try:
        waiter = _speedups.ReadWaiter(loop)
        future: asyncio.Future[Any] = loop.create_future()
        runs: dict[str, list[tuple[int, str]]] = {"w": [], "f": []}
        var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="-")

        def callback(side: str, i: int) -> Callable[[Any], None]:
            def cb(fut: Any) -> None:
                assert fut is (waiter if side == "w" else future)
                runs[side].append((i, var.get()))
            return cb

        cbs = {side: [callback(side, i) for i in range(3)] for side in "wf"}
        for op, arg in script:
            if op == "run":
                loop.run_until_complete(asyncio.sleep(0))
                continue
            ctx = contextvars.copy_context()
            if op == "add":
                ctx.run(var.set, f"ctx{arg}")
            index = arg if op in ("add", "remove") else 0
            got = _apply(waiter, op, arg, cbs["w"][index], ctx)
            want = _apply(future, op, arg, cbs["f"][index], ctx)
            assert got == want, (op, got, want)
            assert runs["w"] == runs["f"], op      # nothing ran inside the call
        loop.run_until_complete(asyncio.sleep(0))
        assert runs["w"] == runs["f"]
        assert waiter.get_loop() is loop
        assert asyncio.isfuture(waiter)
    finally:
        loop.close()


def test_a_task_waits_on_a_read_waiter_and_is_cancelled_through_it() -> None:
    """A task awaiting a ReadWaiter resumes with its result; cancelled while
    it waits, the waiter is cancelled (with the message) and the task gets
    CancelledError; the task's repr names what it waits for."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        waiter = _speedups.ReadWaiter(loop)

        async def wait() -> Any:
            return await waiter

        task = asyncio.create_task(wait())
        await asyncio.sleep(0)
        assert "wait_for=<ReadWaiter pending>" in repr(task)
        loop.call_soon(waiter.set_result, "done")
        assert await task == "done"
        assert waiter.result() == "done" and "finished" in repr(waiter)

        waiter = _speedups.ReadWaiter(loop)
        task = asyncio.create_task(wait())
        await asyncio.sleep(0)
        task.cancel("enough")
        with pytest.raises(asyncio.CancelledError):
            await task
        assert waiter.cancelled() and task.cancelled()
        with pytest.raises(asyncio.CancelledError, match="enough"):
            waiter.result()

        waiter = _speedups.ReadWaiter(loop)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(wait(), 0.01)
        assert waiter.cancelled()

        other = asyncio.new_event_loop()
        try:
            waiter = _speedups.ReadWaiter(other)
            with pytest.raises(RuntimeError, match="different loop"):
                await wait()
        finally:
            other.close()

    asyncio.run(main())


def test_a_read_waiter_refuses_bad_arguments() -> None:
    """Wrong calls raise TypeError naming the problem, as a Future's would."""
    loop = asyncio.new_event_loop()
    try:
        waiter = _speedups.ReadWaiter(loop)
        with pytest.raises(TypeError):
            _speedups.ReadWaiter()                          # type: ignore[call-arg]
        with pytest.raises(TypeError):
            _speedups.ReadWaiter(loop, loop=loop)           # type: ignore[call-arg]
        with pytest.raises(TypeError, match="unexpected keyword argument 'ctx'"):
            waiter.add_done_callback(print, ctx=None)       # type: ignore[call-arg]
        with pytest.raises(TypeError):
            waiter.add_done_callback()                      # type: ignore[call-arg]
        with pytest.raises(TypeError, match="multiple values"):
            waiter.cancel("a", msg="b")                     # type: ignore[misc]
        with pytest.raises(TypeError):
            waiter.cancel("a", "b")                         # type: ignore[call-arg]
        with pytest.raises(AttributeError):
            del waiter._asyncio_future_blocking
        with pytest.raises(asyncio.InvalidStateError):
            waiter.result()
        assert not waiter.done()
    finally:
        loop.close()
