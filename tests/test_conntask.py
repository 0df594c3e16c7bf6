"""``ConnTask``, the task a connection's ``async def`` handler runs in.

It must behave as ``asyncio.Task`` does for everything a handler can do: the
hypothesis test drives both with the same random coroutine scripts (reads,
other futures, bare yields, cancellation from inside and outside, swallowed
cancellations, uncancel, errors, returns) and compares every observation.
With the extension ``_step``/``_wakeup`` are C and a read's wait parks the
task in its ``ReadWaiter``; without it the same tests run the Python
reference.  The socket tests check what the engine does with it.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import io
import time
from collections.abc import Callable, Coroutine, Generator
from typing import Any

from conftest import recv_exact, serving
from hypothesis import given, settings
from hypothesis import strategies as st

import zerg
from zerg import _native
from zerg._conntask import ConnTask

OPS = ("read", "future", "sleep0", "cancel_self", "uncancel", "raise", "return")

TaskFactory = Callable[[Coroutine[Any, Any, Any], asyncio.AbstractEventLoop], "asyncio.Future[Any]"]


def make_conntask(coro: Coroutine[Any, Any, Any],
                  loop: asyncio.AbstractEventLoop) -> asyncio.Future[Any]:
    return ConnTask(coro, loop=loop)


def make_task(coro: Coroutine[Any, Any, Any],
              loop: asyncio.AbstractEventLoop) -> asyncio.Future[Any]:
    return loop.create_task(coro)


def read_waiter(loop: asyncio.AbstractEventLoop) -> asyncio.Future[None]:
    """What a waiting read yields: a ReadWaiter with the extension (which a
    ConnTask parks on), an asyncio Future without."""
    if _native.speedups is not None:
        waiter: asyncio.Future[None] = _native.speedups.ReadWaiter(loop)
        return waiter
    return loop.create_future()


def finish(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def run_script(factory: TaskFactory, ops: list[tuple[str, bool]],
               cancel_after: int | None) -> list[object]:
    """Run a coroutine doing ``ops`` in a task from ``factory``, cancelled
    from outside after ``cancel_after`` loop iterations; everything it and
    its task showed, in order."""
    loop = asyncio.new_event_loop()
    trace: list[object] = []

    async def script() -> str:
        me = asyncio.current_task()
        for i, (op, swallow) in enumerate(ops):
            try:
                if op == "read":
                    waiter = read_waiter(loop)
                    loop.call_soon(finish, waiter)
                    await waiter
                elif op == "future":
                    fut = loop.create_future()
                    loop.call_soon(fut.set_result, i)
                    trace.append(("future", await fut))
                elif op == "sleep0":
                    await asyncio.sleep(0)
                elif op == "cancel_self":
                    assert me is not None
                    trace.append(("cancel_self", me.cancel(f"self-{i}")))
                    await asyncio.sleep(0)
                elif op == "uncancel":
                    assert me is not None
                    trace.append(("uncancel", me.uncancel()))
                elif op == "raise":
                    raise ValueError(f"raised-{i}")
                else:
                    return f"returned-{i}"
            except asyncio.CancelledError as exc:
                assert me is not None
                trace.append(("cancelled", i, exc.args, me.cancelling(), swallow))
                if not swallow:
                    raise
            trace.append(("step", i, asyncio.current_task() is me))
        return "end"

    def tick(n: int, task: asyncio.Future[Any]) -> None:
        if n > 0:
            loop.call_soon(tick, n - 1, task)
        else:
            trace.append(("external_cancel", task.cancel("external"), task.done()))

    try:
        task = factory(script(), loop)
        if cancel_after is not None:
            loop.call_soon(tick, cancel_after, task)
        loop.run_until_complete(asyncio.wait([task]))
        if task.cancelled():
            try:
                task.result()
            except asyncio.CancelledError as exc:
                trace.append(("end_cancelled", exc.args))
        elif (error := task.exception()) is not None:
            trace.append(("end_raised", type(error).__name__, error.args))
        else:
            trace.append(("end_result", task.result()))
        trace.append(("cancelling", task.cancelling(), task.done()))   # type: ignore[attr-defined]
    finally:
        loop.close()
    return trace


@settings(max_examples=300, deadline=None)
@given(ops=st.lists(st.tuples(st.sampled_from(OPS), st.booleans()), max_size=10),
       cancel_after=st.none() | st.integers(0, 12))
def test_conntask_agrees_with_asyncio_task(ops: list[tuple[str, bool]],
                                           cancel_after: int | None) -> None:
    """The same script, in a ConnTask and in an asyncio.Task: the same
    observations in the same order, the same outcome."""
    assert run_script(make_conntask, ops, cancel_after) == run_script(make_task, ops,
                                                                       cancel_after)


def test_a_read_wait_parks_the_task_in_its_waiter() -> None:
    """With the extension the ReadWaiter keeps the task itself: no done
    callback is registered through add_done_callback, yet finishing it
    resumes the task; remove_done_callback still finds the task's wake-up."""
    loop = asyncio.new_event_loop()
    try:
        waiter = read_waiter(loop)
        got: list[str] = []

        async def wait() -> None:
            await waiter
            got.append("woken")

        task = ConnTask(wait(), loop=loop)
        loop.run_until_complete(asyncio.sleep(0))
        assert task._fut_waiter is waiter
        assert not got
        loop.call_soon(finish, waiter)
        loop.run_until_complete(task)
        assert got == ["woken"]
        assert task._fut_waiter is None

        other = read_waiter(loop)

        async def wait_other() -> None:
            await other

        parked = ConnTask(wait_other(), loop=loop)
        loop.run_until_complete(asyncio.sleep(0))
        assert other.remove_done_callback(parked._wakeup) == 1
        assert other.remove_done_callback(parked._wakeup) == 0
        other.add_done_callback(parked._wakeup)
        loop.call_soon(finish, other)
        loop.run_until_complete(parked)
        assert parked.done() and not parked.cancelled()
    finally:
        loop.close()


def test_what_a_task_has() -> None:
    """Name, coroutine, context, stack, repr, registration in all_tasks, and
    no set_result/set_exception from outside."""
    loop = asyncio.new_event_loop()
    try:
        ctx = contextvars.copy_context()
        gate = loop.create_future()

        async def body() -> Any:
            await gate
            return 7

        coro = body()
        task = ConnTask(coro, loop=loop, context=ctx)
        assert task.get_coro() is coro
        assert task.get_context() is ctx
        name = task.get_name()
        assert name.startswith("ConnTask-") and task.get_name() == name
        task.set_name(12)
        assert task.get_name() == "12"
        loop.run_until_complete(asyncio.sleep(0))
        tasks: set[object] = set(asyncio.all_tasks(loop))
        assert task in tasks
        assert "ConnTask pending name='12'" in repr(task) and "wait_for=" in repr(task)
        frames = task.get_stack()
        assert frames and frames[0].f_code is getattr(coro, "cr_code", None)
        out = io.StringIO()
        task.print_stack(file=out)
        assert "body" in out.getvalue()
        calls: list[Callable[[], None]] = [lambda: task.set_result(1),
                                           lambda: task.set_exception(ValueError())]
        for call in calls:
            try:
                call()
            except RuntimeError as exc:
                assert "ConnTask does not support" in str(exc)
            else:
                raise AssertionError("set_result/set_exception from outside must raise")
        gate.set_result(None)
        assert loop.run_until_complete(task) == 7
        tasks = set(asyncio.all_tasks(loop))
        assert task not in tasks
        try:
            ConnTask(gate, loop=loop)  # type: ignore[arg-type]
        except TypeError as exc:
            assert "a coroutine was expected" in str(exc)
        else:
            raise AssertionError("ConnTask of a non-coroutine must raise TypeError")
    finally:
        loop.close()


class Yields:
    """Yields value to the task: what no awaitable of asyncio yields."""

    def __init__(self, value: object) -> None:
        self.value = value

    def __await__(self) -> Generator[object, None, None]:
        yield self.value


def _gen() -> Generator[int, None, None]:
    yield 1


async def bad_waits(foreign: asyncio.Future[None], errors: list[str]) -> None:
    me = asyncio.current_task()
    for awaitable in (me, foreign, Yields(42), Yields(_gen())):
        try:
            await awaitable     # type: ignore[misc]
        except RuntimeError as exc:
            errors.append(str(exc).split(":")[0].split(" <")[0])


def test_bad_waits_are_thrown_back_into_the_coroutine() -> None:
    """Awaiting itself, a future of another loop, a plain yielded value or a
    generator: a RuntimeError raised in the coroutine at its next step, as
    asyncio.Task raises it."""

    other_loop = asyncio.new_event_loop()
    for factory in (make_conntask, make_task):
        foreign = other_loop.create_future()    # a new one: a failed await leaves it blocking
        loop = asyncio.new_event_loop()
        errors: list[str] = []
        try:
            loop.run_until_complete(factory(bad_waits(foreign, errors), loop))
        finally:
            loop.close()
        assert errors == ["Task cannot await on itself", "Task", "Task got bad yield",
                          "yield was used instead of yield from for generator in task"], errors
    other_loop.close()


def test_a_task_destroyed_while_pending_is_reported() -> None:
    """As asyncio.Task: a pending task that is garbage is reported to the
    loop's exception handler."""
    loop = asyncio.new_event_loop()
    seen: list[str] = []
    loop.set_exception_handler(lambda _loop, context: seen.append(context["message"]))
    try:
        async def forever() -> None:
            await loop.create_future()

        task = ConnTask(forever(), loop=loop)
        loop.run_until_complete(asyncio.sleep(0))
        del task
        gc.collect()
        assert "Task was destroyed but it is pending!" in seen
    finally:
        loop.close()


# ------------------------------------------------------------ the engine


async def echo_once(conn: zerg.Connection) -> None:
    """One read's ring items written back, then flushed."""
    snap = await conn.read()
    while (item := conn.try_get_ring(snap)) is not None:
        conn.write(item.view)
        conn.return_ring(item)
    conn.reset_read()
    await conn.flush()


def test_handlers_run_in_a_conntask_with_the_extension() -> None:
    """A handler's task is a ConnTask with the extension (an asyncio.Task
    without); current_task() and all_tasks() see it; a handler cancelled
    while its read waits gets CancelledError there, and its connection
    closes."""
    seen: list[tuple[str, bool, bool]] = []
    cancelled: list[str] = []

    async def handler(conn: zerg.Connection) -> None:
        me = asyncio.current_task()
        assert me is not None
        seen.append((type(me).__name__, me in asyncio.all_tasks(), me.get_name() != ""))
        await echo_once(conn)
        asyncio.get_running_loop().call_later(0.05, me.cancel, "stop")
        try:
            await conn.read()
        except asyncio.CancelledError as exc:
            cancelled.append(str(exc))
            raise

    with serving(handler) as srv, srv.connect() as sock:
        sock.settimeout(5)
        sock.sendall(b"ping")
        assert recv_exact(sock, 4) == b"ping"
        assert sock.recv(16) == b""         # cancelled: the engine closed it
    expected = "ConnTask" if _native.speedups is not None else "Task"
    assert seen == [(expected, True, True)]
    assert cancelled == ["stop"]


def test_a_task_factory_set_on_the_loop_makes_handler_tasks() -> None:
    """A task factory the user set on the reactor's loop is honoured: the
    next connection's handler runs in the task it makes."""
    kinds: list[str] = []
    made: list[int] = []

    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> Any:
        made.append(1)
        return asyncio.Task(coro, loop=loop, **kwargs)

    async def handler(conn: zerg.Connection) -> None:
        me = asyncio.current_task()
        kinds.append(type(me).__name__)
        asyncio.get_running_loop().set_task_factory(factory)
        conn.write(b"k")
        await conn.flush()

    with serving(handler) as srv:
        for _ in range(2):
            with srv.connect() as sock:
                sock.settimeout(5)
                assert recv_exact(sock, 1) == b"k"
    assert kinds[1] == "Task" and made


def test_timeouts_and_task_groups_inside_a_handler() -> None:
    """asyncio.timeout and TaskGroup use the current task's cancel,
    uncancel and cancelling: a read that times out inside asyncio.timeout,
    then a TaskGroup, then the echo still works."""
    events: list[str] = []

    async def handler(conn: zerg.Connection) -> None:
        try:
            async with asyncio.timeout(0.05):
                await conn.read()
        except TimeoutError:
            events.append("timeout")
        me = asyncio.current_task()
        assert me is not None
        events.append(f"cancelling={me.cancelling()}")

        async def child() -> int:
            await asyncio.sleep(0)
            return 1

        async with asyncio.TaskGroup() as group:
            results = [group.create_task(child()) for _ in range(3)]
        events.append(f"group={sum(r.result() for r in results)}")
        await echo_once(conn)

    with serving(handler) as srv, srv.connect() as sock:
        sock.settimeout(5)
        time.sleep(0.2)
        sock.sendall(b"late")
        assert recv_exact(sock, 4) == b"late"
    assert events == ["timeout", "cancelling=0", "group=3"]
