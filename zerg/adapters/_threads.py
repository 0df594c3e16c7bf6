"""Crossing from a worker thread to a connection's reactor thread.

A connection belongs to its reactor's loop; blocking adapters (the stream,
``BufferWriter.flush_sync``) run on worker threads and reach it only through
``call_soon_threadsafe``.  Called on the reactor thread itself, a blocking
call would wait for the very loop it blocks, so it raises instead.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from zerg._connection import Connection

T = TypeVar("T")


def on_reactor_thread(conn: Connection) -> bool:
    return conn.on_reactor_thread


def refuse_on_reactor(conn: Connection, what: str) -> None:
    if on_reactor_thread(conn):
        raise RuntimeError(
            f"{what} blocks, and this is the reactor thread that runs the event loop, so it "
            "would wait forever for itself. Call it from a plain `def handler(conn)` (zerg runs "
            "those on worker threads) or use the awaitable APIs (conn.read, PipeReader, "
            "BufferWriter.flush) in async handlers."
        )


def call(conn: Connection, fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn(*args)`` on the reactor thread; wait for and return its result."""
    fut: concurrent.futures.Future[T] = concurrent.futures.Future()

    def run() -> None:
        if not fut.set_running_or_notify_cancel():
            return
        try:
            fut.set_result(fn(*args))
        except BaseException as exc:
            fut.set_exception(exc)

    try:
        conn.loop.call_soon_threadsafe(run)
    except RuntimeError:
        raise ConnectionError(f"connection {conn.id}: its reactor has stopped") from None
    return fut.result()


def run(conn: Connection, coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on the reactor's loop and wait for its result."""
    try:
        cf = asyncio.run_coroutine_threadsafe(coro, conn.loop)
    except RuntimeError:
        coro.close()
        raise ConnectionError(f"connection {conn.id}: its reactor has stopped") from None
    return cf.result()


def post(conn: Connection, fn: Callable[..., Any], *args: Any) -> bool:
    """Fire-and-forget ``fn(*args)`` on the reactor thread; False if it stopped."""
    try:
        conn.loop.call_soon_threadsafe(fn, *args)
    except RuntimeError:
        return False
    return True
