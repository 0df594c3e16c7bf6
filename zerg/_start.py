"""Start strategies: how a reactor serves a newly accepted connection.

The engine resolves the user's handler once, at ``serve``, into one of
these; the reactor only calls ``start(host, conn_id, fd) -> sink`` and, at
shutdown, ``drain(timeout)``.  So the reactor has no notion of handlers,
executors or Protocols, and no ``if protocol`` on the hot path.

- ``TaskStart``: ``async def handler(conn)`` runs as a Task on the reactor loop.
- ``ThreadStart``: a plain ``def handler(conn)`` runs on a worker thread.
- ``ProtocolStart``: a ``zerg.Protocol`` instance is called from completion
  dispatch (``ProtocolConnection``).

Either way the connection closes when the handler returns or raises; an
exception is logged and never stops the reactor.

Each strategy separates *making* the connection (``_make``: a plain one, or
with ``tls`` a ``zerg._tls`` one whose handshake starts now) from *serving*
it (``_serve``: run the handler, or ``connection_made``).  Over TLS serving
waits for the handshake: a handler starts once ``conn.handshake`` is done and
never for a connection whose handshake failed (that one is already closing
and counted); a Protocol's ``connection_made`` is called by the TLS
connection itself the moment the handshake finishes, before any byte is
delivered.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import inspect
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, cast

from zerg._connection import Connection, ProtocolConnection
from zerg._conntask import ConnTask
from zerg._native import speedups
from zerg._protocol import Protocol
from zerg._ratelog import ErrorLog
from zerg._seam import CompletionSink, ConnectionHost
from zerg._tls import TlsConnection, TlsProtocolConnection
from zerg._tlssession import TlsOptions

log = logging.getLogger("zerg")

# Handlers run in a ConnTask with the extension (its step is C there), in
# an asyncio.Task without it (a step in Python would be slower than asyncio's).
_CONN_TASKS = speedups is not None

AsyncHandler = Callable[[Connection], Awaitable[None]]
SyncHandler = Callable[[Connection], None]
Handler = AsyncHandler | SyncHandler | Protocol


async def _awaited(awaitable: Awaitable[None]) -> None:
    await awaitable


class _HandlerStart:
    """Shared by the task and thread strategies: tracks running handlers."""

    def __init__(self, tls: TlsOptions | None = None) -> None:
        # Each running handler and its connection: what its done callback
        # needs, without a closure (function + cells) per connection.
        self._tasks: dict[asyncio.Future[None], Connection] = {}
        self._done_callback = self._done      # bound once, not once per connection
        # The context done callbacks run in: they read no context variable,
        # and a callback added without one copies the current context (an
        # object per connection while its handler runs).  One per strategy,
        # that is per reactor thread: a context is entered by one thread at
        # a time.
        self._done_context = contextvars.Context()
        self._errors = ErrorLog()
        self._tls = tls

    def _launch(self, conn: Connection) -> asyncio.Future[None]:
        raise NotImplementedError

    def start(self, host: ConnectionHost, conn_id: int, fd: int) -> CompletionSink:
        conn = self._make(host, conn_id, fd)
        if isinstance(conn, TlsConnection):
            conn.handshake.add_done_callback(functools.partial(self._handshaken, conn))
        else:
            self._serve(conn)
        return conn

    def _make(self, host: ConnectionHost, conn_id: int, fd: int) -> Connection:
        """The connection, started (over TLS: its handshake under way)."""
        tls = self._tls
        conn = (Connection(host, conn_id, fd) if tls is None
                else TlsConnection(host, conn_id, fd, tls.context, server_side=True,
                                   handshake_timeout=tls.handshake_timeout))
        conn.start()
        return conn

    def _handshaken(self, conn: Connection, fut: asyncio.Future[None]) -> None:
        """Serve ``conn`` if its handshake finished (a failed one is closing
        and counted already; retrieving the exception keeps asyncio quiet)."""
        if not fut.cancelled() and fut.exception() is None:
            self._serve(conn)

    def _serve(self, conn: Connection) -> None:
        try:
            task = self._launch(conn)
        except Exception:
            log.exception("zerg: handler could not be started for %r", conn)
            conn.close()
            return
        self._tasks[task] = conn
        task.add_done_callback(self._done_callback, context=self._done_context)

    def _done(self, task: asyncio.Future[None]) -> None:
        """The handler returned or raised: its connection closes."""
        conn = self._tasks.pop(task)
        if not task.cancelled():
            exc = task.exception()
            if exc is not None:
                self._errors.error("zerg: handler for %r raised; closing it", conn, exc=exc)
        conn.close()

    async def drain(self, timeout: float) -> None:
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
        for t in pending:
            t.cancel()
        if pending:
            log.warning("zerg: %d handler(s) still running after %.1fs; cancelled",
                        len(pending), timeout)
            await asyncio.wait(pending, timeout=1.0)


class TaskStart(_HandlerStart):
    """``async def handler(conn)`` as a Task on the reactor's loop."""

    def __init__(self, handler: AsyncHandler, tls: TlsOptions | None = None) -> None:
        super().__init__(tls)
        self._handler = handler

    def _launch(self, conn: Connection) -> asyncio.Future[None]:
        result = self._handler(conn)
        if not inspect.isawaitable(result):
            raise TypeError(f"the async handler {self._handler!r} returned {result!r}, "
                            "not an awaitable")
        loop = conn.loop
        if _CONN_TASKS and asyncio.iscoroutine(result) and loop.get_task_factory() is None:
            return ConnTask(result, loop=loop)      # its reads resume it in C (zerg._conntask)
        return asyncio.ensure_future(cast(Coroutine[Any, Any, None], result), loop=loop)


class ThreadStart(_HandlerStart):
    """A plain ``def handler(conn)`` on a worker thread of ``executor``."""

    def __init__(self, handler: SyncHandler, executor: concurrent.futures.Executor,
                 tls: TlsOptions | None = None) -> None:
        super().__init__(tls)
        self._handler = handler
        self._executor = executor
        self._warned = False

    def _launch(self, conn: Connection) -> asyncio.Future[None]:
        return conn.loop.run_in_executor(self._executor, self._call, conn)

    def _call(self, conn: Connection) -> None:
        """On a worker thread.  A handler that turns out to return an awaitable
        (a decorator without ``functools.wraps``) gets it run on the reactor,
        with a warning: never a coroutine that silently never runs."""
        result: object = self._handler(conn)
        if inspect.isawaitable(result):
            if not self._warned:
                self._warned = True
                log.warning("zerg: handler %r is a plain function that returned an "
                            "awaitable; running it on the reactor loop (decorate with "
                            "functools.wraps, or make it async def, to skip the worker "
                            "thread)", self._handler)
            awaitable = cast(Coroutine[Any, Any, None], result)
            asyncio.run_coroutine_threadsafe(_awaited(awaitable), conn.loop).result()


class ProtocolStart:
    """A ``zerg.Protocol`` instance, called straight from completion dispatch."""

    def __init__(self, protocol: Protocol, tls: TlsOptions | None = None) -> None:
        self._protocol = protocol
        self._tls = tls
        # Looked up once, when the server starts: every connection calls this
        # bound method (64 B less per connection than binding one each).
        self._data_received = protocol.data_received

    def start(self, host: ConnectionHost, conn_id: int, fd: int) -> CompletionSink:
        conn = self._make(host, conn_id, fd)
        if not isinstance(conn, TlsProtocolConnection):
            self._serve(conn)       # over TLS the connection calls connection_made itself
        return conn

    def _make(self, host: ConnectionHost, conn_id: int, fd: int) -> ProtocolConnection:
        """The connection, started (over TLS: its handshake under way; it calls
        ``connection_made`` the moment the handshake finished, before it
        delivers a byte)."""
        tls = self._tls
        conn = (ProtocolConnection(host, conn_id, fd, self._protocol, self._data_received)
                if tls is None
                else TlsProtocolConnection(host, conn_id, fd, self._protocol, tls.context,
                                           server_side=True,
                                           handshake_timeout=tls.handshake_timeout))
        conn.start()
        return conn

    def _serve(self, conn: ProtocolConnection) -> None:
        try:
            self._protocol.connection_made(conn)
        except Exception as exc:
            conn.fail_callback(exc)

    async def drain(self, timeout: float) -> None:
        """Protocol callbacks never outlive their completion: nothing to wait for."""
