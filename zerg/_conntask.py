"""``ConnTask``: the task an ``async def`` handler runs in, one per connection.

Why: a handler at levels 1-3 waits once per message, on its read, and
``asyncio.Task`` treats every future it does not know (anything but an exact
``asyncio.Future`` or ``Task``) through lookups by name: read
``_asyncio_future_blocking``, call ``get_loop()``, bind a new wake-up method and
pass it to ``add_done_callback`` with a ``context=`` keyword, write
``_asyncio_future_blocking`` back; when woken, call ``result()`` by name, then
step.  Callgrind counts about 2,800 instructions of that per message in the
level-1 echo, around a coroutine step of about 5,900.

What: a future (``asyncio.Future``'s C implementation is the base) that runs a
coroutine as ``asyncio.Task`` does -- the same step, the same cancellation
(``cancel``, ``uncancel``, ``cancelling``, a cancellation pending until the
next step), ``asyncio.current_task()`` and ``asyncio.all_tasks()`` see it, and
it has a task's ``get_coro``, ``get_context``, ``get_name``/``set_name``,
``get_stack``/``print_stack`` and repr, and logs "Task was destroyed but it is
pending!".  This class is the reference: with the C extension its ``_step``
and ``_wakeup`` are C (``native/conntask.c``), and a read that has to wait
keeps the task itself in its ``ReadWaiter`` instead of a bound method, so the
receive completion resumes the coroutine without any of the above.

Where it runs: ``zerg._start.TaskStart`` makes one per connection with the
extension, when the loop has no task factory (a factory the user set makes the
task, as for any ``create_task``).  Without the extension handlers run in an
``asyncio.Task``: a step in Python would only be slower than asyncio's C one.

What differs from ``asyncio.Task``: it is not one (``isinstance(t,
asyncio.Task)`` is False); a coroutine that raises ``CancelledError`` itself
leaves the task cancelled with the error's message, not with the error object
(what awaiting the task raises is a new ``CancelledError``); names are made on
first ``get_name()`` (``ConnTask-<n>``).
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import itertools
import sys
from asyncio import base_tasks
from collections.abc import Callable, Coroutine
from typing import Any, TextIO, cast

from zerg._native import speedups

# asyncio's registry of tasks (all_tasks) and of the task running on each
# loop (current_task): the functions its own tasks call, not typed for
# anything but an asyncio.Task.
_TaskHook = Callable[..., None]
_register_task = cast(_TaskHook, asyncio.tasks._register_task)
_enter_task = cast(_TaskHook, asyncio.tasks._enter_task)
_leave_task = cast(_TaskHook, asyncio.tasks._leave_task)
# The loop of a future-like object, as asyncio.Task asks it.
_future_loop = cast(Callable[[Any], object],
                    asyncio.futures._get_loop)  # type: ignore[attr-defined]
# What a task's repr and stack are made with (they read _coro, _fut_waiter
# and the future's state, which a ConnTask has under the same names).
_task_repr = cast(Callable[[Any], str], base_tasks._task_repr)
_task_get_stack = cast(Callable[[Any, "int | None"], list[Any]], base_tasks._task_get_stack)
_task_print_stack = cast(Callable[[Any, "int | None", "TextIO | None"], None],
                         base_tasks._task_print_stack)

# What a step of the coroutine ended with (_after_send's outcome).
YIELDED, RETURNED, RAISED = 0, 1, 2

_names = itertools.count(1)

# uncancel() clears a pending cancellation once the count is back to 0 from
# 3.13 on, as asyncio.Task does there.
_UNCANCEL_CLEARS = sys.version_info >= (3, 13)


def _cancel_message(exc: BaseException) -> Any:
    """The message a CancelledError was raised with, or None."""
    return exc.args[0] if len(exc.args) == 1 else None


class ConnTask(asyncio.Future[Any]):
    """A coroutine run on ``loop`` as ``asyncio.Task`` runs it (see the module)."""

    __slots__ = ("_context", "_coro", "_fut_waiter", "_must_cancel", "_name",
                 "_num_cancels_requested", "_task_loop")

    def __init__(self, coro: Coroutine[Any, Any, Any], *, loop: asyncio.AbstractEventLoop,
                 name: str | None = None, context: contextvars.Context | None = None) -> None:
        if not asyncio.iscoroutine(coro):
            raise TypeError(f"a coroutine was expected, got {coro!r}")
        super().__init__(loop=loop)
        self._coro = coro
        self._context = contextvars.copy_context() if context is None else context
        self._task_loop = loop
        self._fut_waiter: object = None
        self._must_cancel = False
        self._num_cancels_requested = 0
        self._name = None if name is None else str(name)
        loop.call_soon(self._step, context=self._context)
        _register_task(self)

    # ------------------------------------------------------------ the step

    def _step(self, exc: BaseException | None = None) -> None:
        """Run the coroutine to its next wait: send None, or throw ``exc``
        (a cancellation pending since the last step is thrown instead)."""
        if self.done():
            raise asyncio.InvalidStateError(f"_step(): already done: {self!r}, {exc!r}")
        if self._must_cancel:
            if not isinstance(exc, asyncio.CancelledError):
                msg = self._cancel_message
                exc = asyncio.CancelledError() if msg is None else asyncio.CancelledError(msg)
            self._must_cancel = False
        self._fut_waiter = None
        loop = self._task_loop
        _enter_task(loop, self)
        try:
            try:
                result = self._coro.send(None) if exc is None else self._coro.throw(exc)
            except StopIteration as stop:
                self._after_send(RETURNED, stop.value)
            except BaseException as error:
                self._after_send(RAISED, error)
            else:
                self._after_send(YIELDED, result)
        finally:
            _leave_task(loop, self)

    def _after_send(self, outcome: int, value: Any) -> None:
        """What a step of the coroutine ended with: ``RETURNED`` (the task's
        result), ``RAISED`` (the exception) or ``YIELDED`` (what it waits on).
        The C step calls this for everything but a read's wait."""
        if outcome == RETURNED:
            if self._must_cancel:       # cancelled during its last step
                self._must_cancel = False
                super().cancel(msg=self._cancel_message)
            else:
                super().set_result(value)
        elif outcome == RAISED:
            if isinstance(value, asyncio.CancelledError):
                super().cancel(msg=_cancel_message(value))
            else:
                super().set_exception(value)
                if isinstance(value, (KeyboardInterrupt, SystemExit)):
                    raise value
        else:
            self._wait_for(value)

    def _wait_for(self, result: Any) -> None:
        """Sleep until ``result`` (what the coroutine yielded) is done: a
        future of this loop, or None (a bare yield: one loop iteration);
        anything else is thrown back into the coroutine as a RuntimeError."""
        loop = self._task_loop
        blocking = getattr(result, "_asyncio_future_blocking", None)
        if blocking is not None:
            if _future_loop(result) is not loop:
                self._again(RuntimeError(
                    f"Task {self!r} got Future {result!r} attached to a different loop"))
            elif not blocking:
                self._again(RuntimeError(
                    f"yield was used instead of yield from in task {self!r} with {result!r}"))
            elif result is self:
                self._again(RuntimeError(f"Task cannot await on itself: {self!r}"))
            else:
                result._asyncio_future_blocking = False
                result.add_done_callback(self._wakeup, context=self._context)
                self._fut_waiter = result
                if self._must_cancel and result.cancel(msg=self._cancel_message):
                    self._must_cancel = False
        elif result is None:
            loop.call_soon(self._step, context=self._context)
        elif inspect.isgenerator(result):
            self._again(RuntimeError(
                "yield was used instead of yield from for generator in task "
                f"{self!r} with {result!r}"))
        else:
            self._again(RuntimeError(f"Task got bad yield: {result!r}"))

    def _again(self, exc: BaseException) -> None:
        """Throw ``exc`` into the coroutine at the next loop iteration."""
        self._task_loop.call_soon(self._step, exc, context=self._context)

    def _wakeup(self, future: asyncio.Future[Any]) -> None:
        """``future`` (what the task waited on) is done: step, throwing its
        exception (a cancellation, too) if it has one."""
        try:
            future.result()
        except BaseException as exc:
            self._step(exc)
        else:
            self._step()

    # ------------------------------------------------------- cancellation

    def cancel(self, msg: Any | None = None) -> bool:
        """Request cancellation: the future waited on is cancelled, or
        ``CancelledError`` is thrown into the coroutine at its next step.
        False once the task is done."""
        self._log_traceback = False
        if self.done():
            return False
        self._num_cancels_requested += 1
        waiter = self._fut_waiter
        if waiter is not None and waiter.cancel(msg=msg):    # type: ignore[attr-defined]
            return True
        self._must_cancel = True
        self._cancel_message = msg
        return True

    def cancelling(self) -> int:
        """How many cancellation requests are pending (``uncancel`` lowers it)."""
        return self._num_cancels_requested

    def uncancel(self) -> int:
        """One cancellation request fewer; the number left."""
        if self._num_cancels_requested > 0:
            self._num_cancels_requested -= 1
            if _UNCANCEL_CLEARS and self._num_cancels_requested == 0:
                self._must_cancel = False
        return self._num_cancels_requested

    # ----------------------------------------------------- what a task has

    def get_coro(self) -> Coroutine[Any, Any, Any]:
        return self._coro

    def get_context(self) -> contextvars.Context:
        return self._context

    def get_name(self) -> str:
        if self._name is None:
            self._name = f"ConnTask-{next(_names)}"
        return self._name

    def set_name(self, value: object) -> None:
        self._name = str(value)

    def get_stack(self, *, limit: int | None = None) -> list[Any]:
        return _task_get_stack(self, limit)

    def print_stack(self, *, limit: int | None = None, file: TextIO | None = None) -> None:
        _task_print_stack(self, limit, file)

    def set_result(self, result: Any) -> None:
        raise RuntimeError("ConnTask does not support set_result operation")

    def set_exception(self, exception: type | BaseException) -> None:
        raise RuntimeError("ConnTask does not support set_exception operation")

    def __repr__(self) -> str:
        return _task_repr(self)

    def __del__(self) -> None:
        if getattr(self, "_coro", None) is not None and not self.done():
            context: dict[str, Any] = {"task": self,
                                       "message": "Task was destroyed but it is pending!"}
            self._task_loop.call_exception_handler(context)
        super().__del__()


if speedups is not None:
    speedups.bind_conntask(ConnTask)
