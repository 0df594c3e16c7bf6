"""Engine: the listening socket, the reactors, and their lifetime.

``serve`` runs reactor 0 on the calling thread (so Ctrl-C reaches it) and
reactors 1..N-1 on threads of their own, each created *on* its thread because
``IORING_SETUP_SINGLE_ISSUER`` binds a ring to the thread that made it.  With
one reactor, accepts run on the reactor's own ring; with several, an
``Acceptor`` thread deals them out.

``stop`` only sets flags and posts a wake-up to each loop, so it is safe from
any thread and from a signal handler; the reactors then shut down gracefully:
stop accepting, close connections, give back every slot, close ring and fds.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import inspect
import json
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any, Self, cast

from zerg._acceptor import Acceptor, AcceptorStats
from zerg._config import EngineOptions
from zerg._listen import open_listener
from zerg._probe import probe, require
from zerg._protocol import Protocol
from zerg._reactor import Reactor, ReactorStats
from zerg._seam import StartStrategy
from zerg._start import AsyncHandler, Handler, ProtocolStart, SyncHandler, TaskStart, ThreadStart
from zerg._tlssession import TlsOptions, server_context
from zerg._workers import REPORT_EVERY_S, WorkerPool

log = logging.getLogger("zerg")

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _is_async_handler(handler: Callable[..., Any]) -> bool:
    """An ``async def`` function, a ``functools.partial`` of one, a decorator's
    wrapper that says what it wraps (``functools.wraps``), or an object with
    ``async def __call__``."""
    for fn in (handler, inspect.unwrap(handler),
               getattr(handler, "__call__", None)):  # noqa: B004
        if fn is not None and inspect.iscoroutinefunction(fn):
            return True
    return False


def _strategy(handler: Handler, executor: concurrent.futures.Executor | None,
              tls: TlsOptions | None) -> StartStrategy:
    """The start strategy for ``handler`` (one per reactor: it tracks that
    reactor's running handlers); ``tls``: serve TLS (``EngineOptions.ssl``)."""
    if isinstance(handler, Protocol):
        return ProtocolStart(handler, tls)
    if executor is not None:
        return ThreadStart(cast(SyncHandler, handler), executor, tls)
    return TaskStart(cast(AsyncHandler, handler), tls)


class Engine:
    """A TCP server on io_uring: a listening socket and the reactors serving it.

    ``listen()`` binds, ``serve(handler)`` blocks until ``stop()``; usable as a
    context manager (leaving it stops serving and closes the socket).
    """

    options: EngineOptions
    """The configuration this engine was built with."""

    def __init__(self, options: EngineOptions | None = None) -> None:
        if options is None:
            options = EngineOptions()
        if not isinstance(options, EngineOptions):
            raise TypeError(f"options must be an EngineOptions, got {type(options).__name__}")
        self.options = options
        self._sock: socket.socket | None = None
        self._shared = False    # a UNIX socket or one from outside (zerg._listen)
        self._reactors: list[Reactor] = []
        self._acceptor: Acceptor | None = None
        self._lock = threading.Lock()
        self._stop_requested = False
        self._serving = False
        self._final_stats: list[ReactorStats] = []
        self._workers: WorkerPool | None = None
        self._acceptor_stats: AcceptorStats | None = None

    # ------------------------------------------------------------- binding
    def listen(self) -> None:
        """Bind and listen now (or take the socket ``listen_fd`` names); ``port``
        then gives the real port."""
        if self._sock is not None:
            return
        self._sock, self._shared = open_listener(self.options)

    @property
    def port(self) -> int:
        """The bound TCP port (call ``listen()`` first)."""
        if self._sock is None:
            raise RuntimeError("Engine.port is known after listen()")
        if self._sock.family == socket.AF_UNIX:
            raise RuntimeError(f"Engine.port: this engine listens on the UNIX socket "
                               f"{self.address!r}, not on a TCP port")
        return int(self._sock.getsockname()[1])

    @property
    def address(self) -> str | tuple[str, int] | tuple[str, int, int, int]:
        """Where the engine listens, as ``getsockname()`` gives it: ``(ip, port)``,
        or the path of a UNIX socket (call ``listen()`` first)."""
        if self._sock is None:
            raise RuntimeError("Engine.address is known after listen()")
        addr: str | tuple[str, int] | tuple[str, int, int, int] = self._sock.getsockname()
        return addr

    # ------------------------------------------------------------- serving
    def serve(self, handler: Handler) -> None:
        """Serve connections with ``handler`` until ``stop()``.

        ``async def handler(conn)`` runs on the reactor's asyncio loop; a plain
        ``def handler(conn)`` runs on a worker thread (``worker_threads``), for
        blocking code and ``ConnectionStream``.  Either way the connection
        closes when the handler returns or raises.  A ``zerg.Protocol``
        instance is the callback fast path (see ``zerg.Protocol``).
        """
        if isinstance(handler, type) and issubclass(handler, Protocol):
            raise TypeError(f"pass an instance of {handler.__name__}, not the class")
        handler = cast(Handler, handler)
        if not callable(handler) and not isinstance(handler, Protocol):
            raise TypeError(f"handler must be a function taking the connection, got {handler!r}")
        executor: concurrent.futures.ThreadPoolExecutor | None = None
        if not isinstance(handler, Protocol) and not _is_async_handler(handler):
            executor = concurrent.futures.ThreadPoolExecutor(
                self.options.worker_threads, thread_name_prefix="zerg-worker")
        with self._lock:
            if self._serving:
                raise RuntimeError("Engine.serve() is already running")
            if self._stop_requested:
                if executor is not None:
                    executor.shutdown(wait=False)
                raise RuntimeError(
                    "Engine.serve() after stop(): this engine has been stopped; "
                    "make a new Engine to serve again")
            self._serving = True
        try:
            feats = probe()
            require(feats, self.options.reactor,
                    msg_ring=self.options.reactor_count > 1
                    and self.options.acceptor.handoff == "msg_ring")
            self.listen()
            if self.options.workers > 1:
                self._serve_workers(handler)
            else:
                self._serve(handler, executor)
        finally:
            if executor is not None:
                # Handlers still blocked after the grace period cannot be
                # interrupted; do not wait for them.
                executor.shutdown(wait=False, cancel_futures=True)
            with self._lock:
                self._serving = False
                if self.options.workers == 1:   # else _serve_workers kept the workers'
                    self._final_stats = [r.stats() for r in self._reactors]
                self._reactors = []
            self._close_socket()

    def _serve(self, handler: Handler,
               executor: concurrent.futures.Executor | None) -> None:
        opts = self.options
        assert self._sock is not None
        fd = self._sock.fileno()
        n = opts.reactor_count
        single = n == 1
        # A socket passed in (listen_fd: systemd, or the workers' shared one) may
        # have other processes accepting on it: no silent-accept watchdog there.
        own_socket = opts.listen_fd is None
        reactor0 = Reactor(0, opts.reactor, _strategy(handler, executor, self._tls()),
                           listen_fd=fd if single else None,
                           shutdown_timeout_s=opts.shutdown_timeout_s,
                           proxy_timeout_s=self._proxy_timeout(), watch_accept=own_socket)
        reactors = [reactor0]
        threads: list[threading.Thread] = []
        errors: list[BaseException] = []
        try:
            for i in range(1, n):
                ready = threading.Event()
                box: list[Reactor] = []
                t = threading.Thread(target=self._reactor_thread,
                                     args=(i, handler, executor, ready, box, errors),
                                     name=f"zerg-reactor-{i}", daemon=True)
                t.start()
                ready.wait()
                if errors:
                    raise errors[0]
                reactors.append(box[0])
                threads.append(t)
            with self._lock:
                self._reactors = reactors
            if not single:
                self._acceptor = Acceptor(fd, reactors, opts.acceptor, watch_accept=own_socket)
                self._acceptor.start()
                self._acceptor.ready.wait()
                if self._acceptor.error is not None:
                    raise self._acceptor.error
            if self._stop_requested:
                self._stop_all()
            restore = self._install_signals()
            try:
                reactor0.run()
            finally:
                restore()
        finally:
            self._stop_all()
            if self._acceptor is not None:
                self._acceptor.join()
                self._acceptor_stats = self._acceptor.stats()
                self._acceptor = None
            for t in threads:
                t.join()
            if not reactor0.ring.closed:
                reactor0.ring.close()

    def _tls(self) -> TlsOptions | None:
        """What the strategies need to serve TLS, None without ``ssl``."""
        opts = self.options
        if opts.ssl is None:
            return None
        return server_context(opts.ssl, opts.tls_handshake_timeout_s)

    def _proxy_timeout(self) -> float | None:
        """The PROXY header timeout the reactors apply, None without proxy_protocol."""
        opts = self.options
        return opts.proxy_header_timeout_s if opts.proxy_protocol else None

    def _serve_workers(self, handler: Handler) -> None:
        opts = self.options
        assert self._sock is not None
        if self._shared:    # a UNIX socket or one from outside: every worker inherits it
            each = dataclasses.replace(opts, listen_fd=self._sock.fileno(), unix_path=None,
                                       workers=1)
        else:               # a TCP port: every worker binds its own SO_REUSEPORT socket
            each = dataclasses.replace(opts, port=self.port, reuse_port=True, workers=1)
        pool = WorkerPool(opts, each, functools.partial(_run_worker, handler))
        self._workers = pool
        restore = self._install_signals(hup=pool.request_restart)
        try:
            if self._stop_requested:
                pool.stop()
            pool.run()
        finally:
            restore()
            self._final_stats = [ReactorStats(**d) for d in pool.stats()]
            self._workers = None

    def restart_workers(self) -> None:
        """Replace the worker processes one at a time (``workers > 1``; what SIGHUP
        does): each replacement serves before the worker it replaces stops, and
        that one drains gracefully.  Over a socket every worker shares
        (``unix_path``, ``listen_fd``) no connection is lost; with a TCP port each
        worker listens on its own ``SO_REUSEPORT`` socket, whose queued connections
        the kernel resets when it closes unless ``net.ipv4.tcp_migrate_req=1``.
        Safe from any thread and from signal handlers; ignored when not serving
        workers."""
        pool = self._workers
        if pool is not None:
            pool.request_restart()

    def worker_pids(self) -> list[int]:
        """Pids of the running worker processes (``workers > 1``)."""
        pool = self._workers
        return sorted(pool.pids) if pool is not None else []

    def _reactor_thread(self, index: int, handler: Handler,
                        executor: concurrent.futures.Executor | None, ready: threading.Event,
                        box: list[Reactor], errors: list[BaseException]) -> None:
        try:
            reactor = Reactor(index, self.options.reactor,
                              _strategy(handler, executor, self._tls()),
                              listen_fd=None,
                              shutdown_timeout_s=self.options.shutdown_timeout_s,
                              proxy_timeout_s=self._proxy_timeout())
        except BaseException as exc:
            errors.append(exc)
            ready.set()
            return
        box.append(reactor)
        if self._stop_requested:
            reactor.request_stop()
        ready.set()
        try:
            reactor.run()
        except BaseException:
            log.exception("zerg reactor %d failed", index)
            self.stop()

    def _install_signals(self, hup: Callable[[], None] | None = None) -> Callable[[], None]:
        """SIGINT/SIGTERM stop; with ``hup``, SIGHUP calls it (a rolling restart)."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous: dict[int, Any] = {}

        def on_signal(signum: int, frame: FrameType | None) -> None:
            if signum == signal.SIGHUP and hup is not None:
                hup()
            else:
                self.stop()

        for sig in (*_SIGNALS, signal.SIGHUP) if hup is not None else _SIGNALS:
            try:
                previous[sig] = signal.signal(sig, on_signal)
            except (ValueError, OSError):
                pass

        def restore() -> None:
            for sig, old in previous.items():
                try:
                    signal.signal(sig, old)
                except (ValueError, OSError):
                    pass

        return restore

    # ------------------------------------------------------------- stopping
    def stop(self) -> None:
        """Ask ``serve`` to return, draining gracefully.  Safe from any thread
        and from signal handlers; a second call is harmless.

        The listener stops at once (new connections are refused); idle
        connections close; a handler in the middle of a request finishes it
        (``conn.stopping`` is True, its writes and flushes work) until it
        returns or ``shutdown_timeout_s`` passed; staged bytes are sent; what
        is left then is aborted.
        """
        self._stop_requested = True
        self._stop_listening()
        self._stop_all()

    def _stop_listening(self) -> None:
        """Refuse new connections now: a listening socket shut down drops its
        backlog (those peers get a reset) and answers new SYNs with RST."""
        sock = self._sock
        if sock is None or self.options.workers > 1 or self.options.listen_fd is not None:
            # The supervisor's socket only reserves the port, or serves the workers; a
            # socket from outside is shared with its owner (the reactors stop accepting).
            return
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass                # not listening yet, or already shut down

    def _stop_all(self) -> None:
        if self._workers is not None:
            self._workers.stop()
        if self._acceptor is not None:
            self._acceptor.stop()
        for r in list(self._reactors):
            r.request_stop()

    def _close_socket(self) -> None:
        sock, self._sock = self._sock, None
        if sock is None:
            return
        sock.close()
        path = self.options.unix_path
        if path is not None:            # the socket file this engine made
            try:
                os.unlink(path)
            except OSError:
                pass

    def close(self) -> None:
        """Stop serving (if running) and release the listening socket."""
        self.stop()
        if not self._serving:
            self._close_socket()

    def stats(self) -> list[ReactorStats]:
        """Counters per reactor (the last values once ``serve`` returned).  With
        ``workers > 1``, every worker's reactors as the workers last reported
        them (twice a second; ``ReactorStats.worker`` says whose)."""
        pool = self._workers
        if pool is not None:
            return [ReactorStats(**d) for d in pool.stats()]
        with self._lock:
            reactors = list(self._reactors)
        if reactors:
            return [r.stats() for r in reactors]
        return list(self._final_stats)

    def acceptor_stats(self) -> AcceptorStats | None:
        """The acceptor thread's counters (None with one reactor)."""
        acc = self._acceptor
        return acc.stats() if acc is not None else self._acceptor_stats

    @property
    def is_serving(self) -> bool:
        """True while ``serve`` runs."""
        return self._serving

    # ------------------------------------------------------ context manager
    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def run(handler: Handler, options: EngineOptions | None = None) -> None:
    """Listen and serve ``handler`` until Ctrl-C / SIGTERM / ``stop()``."""
    with Engine(options) as engine:
        engine.listen()
        engine.serve(handler)


def _run_worker(handler: Handler, options: EngineOptions, index: int, ready: int) -> None:
    """Body of one worker process (see ``zerg._workers``): serve, and write one
    byte to ``ready`` once the reactors run (the supervisor's rolling restart
    waits for it before it stops the worker this one replaces)."""
    with Engine(options) as engine:
        engine.listen()

        def announce() -> None:
            # stats() lists the reactors once they exist (each arms its accept as it
            # runs; a connection that comes first waits in the listen queue).
            while not (engine.is_serving and engine.stats()):
                time.sleep(0.005)
            try:
                os.write(ready, b"r\n")
                while engine.is_serving:    # then the stats, for the supervisor's stats()
                    _report(ready, engine)
                    time.sleep(REPORT_EVERY_S)
            except OSError:
                pass                        # the supervisor is gone

        threading.Thread(target=announce, name="zerg-ready", daemon=True).start()
        try:
            engine.serve(handler)
        finally:
            try:
                _report(ready, engine)      # the final counters, as this worker exits
            except OSError:
                pass
            os.close(ready)


def _report(fd: int, engine: Engine) -> None:
    line = json.dumps([dataclasses.asdict(st) for st in engine.stats()])
    os.write(fd, line.encode() + b"\n")
