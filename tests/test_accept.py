"""The reactor's accept watchdog: a multishot accept that stays silent while
connections wait in the listen queue is armed again (Reactor._check_accept).

The kernel fault it answers (an armed accept that never reports, seen about
once in 700 bursts of 10,000 connections) cannot be caused on purpose; these
tests make the two states it leaves the reactor in, on a real ring, and check
that connections are served again."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable

import pytest
from conftest import RunningServer, echo_handler, recv_exact, serving, wait_for

from zerg import _acceptwatch
from zerg._acceptor import AcceptorStats
from zerg._acceptwatch import AcceptWatch
from zerg._reactor import _UD_ACCEPT, _UD_CANCEL, Reactor
from zerg._uring import lib

_NO_STATS = AcceptorStats(0, 0, 0, 0)


def on_reactor(reactor: Reactor, fn: Callable[[], None]) -> None:
    """Run ``fn()`` on the reactor's thread and wait for it."""
    done = threading.Event()

    def call() -> None:
        try:
            fn()
        finally:
            done.set()

    reactor.loop.call_soon_threadsafe(call)
    assert done.wait(5)


def echo_once(srv: RunningServer, msg: bytes) -> None:
    with srv.connect() as s:
        s.sendall(msg)
        assert recv_exact(s, len(msg)) == msg


def test_an_accept_the_kernel_lost_is_armed_again(monkeypatch: pytest.MonkeyPatch,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    """The reactor believes an accept is armed and none is in the kernel: the
    watchdog's cancel finds nothing, and the next check arms a new one."""
    monkeypatch.setattr(_acceptwatch, "CHECK_S", 0.05)
    caplog.set_level(logging.WARNING, logger="zerg")
    with serving(echo_handler) as srv:
        reactor = srv.engine._reactors[0]
        echo_once(srv, b"before")

        def lose_the_accept() -> None:
            def armed_in_name_only() -> None:
                del reactor._arm_accept
                reactor._accept_armed = True
            reactor._arm_accept = armed_in_name_only    # type: ignore[method-assign]
            # Its end re-arms it (after the back-off) through the stand-in.
            reactor.ring.check(lib.zu_prep_cancel(reactor._ptr, _UD_ACCEPT, _UD_CANCEL),
                               "cancel accept")

        on_reactor(reactor, lose_the_accept)
        wait_for(lambda: "_arm_accept" not in vars(reactor) and reactor._accept_armed)
        echo_once(srv, b"after")      # waits in the listen queue until the watchdog acts
        assert reactor.stats().accept_rearms >= 2      # the cancel, then the plain arm
    assert "still silent after its cancel" in caplog.text


def test_an_accept_that_stays_silent_is_canceled_and_armed_again(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """An accept in the kernel that reports nothing while the listen queue
    looks full: it is canceled, its end arms the next one at once, and
    connections are served."""
    monkeypatch.setattr(_acceptwatch, "CHECK_S", 0.05)
    caplog.set_level(logging.WARNING, logger="zerg")
    with serving(echo_handler) as srv:
        reactor = srv.engine._reactors[0]
        echo_once(srv, b"before")
        watch = reactor._accept_watch
        assert watch is not None
        with monkeypatch.context() as patch:      # the listen queue looks full
            patch.setattr(AcceptWatch, "listen_ready", lambda self: True)
            wait_for(lambda: watch.rearms >= 2)
        wait_for(lambda: reactor._accept_armed)
        for i in range(5):
            echo_once(srv, b"after %d" % i)
        stats = reactor.stats()
        assert stats.accept_rearms >= 2 and stats.accepted == 6
    assert "canceling and arming it again" in caplog.text


def test_an_idle_listener_and_a_busy_one_are_left_alone(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """No connection waiting, or accepts completing: nothing is re-armed."""
    monkeypatch.setattr(_acceptwatch, "CHECK_S", 0.02)
    with serving(echo_handler) as srv:
        reactor = srv.engine._reactors[0]
        time.sleep(0.2)                 # idle: ten checks
        end = time.monotonic() + 0.3
        i = 0
        while time.monotonic() < end:   # busy
            echo_once(srv, b"m%d" % i)
            i += 1
        assert reactor.stats().accept_rearms == 0


def test_the_watch_decides_as_its_docstring_says() -> None:
    """AcceptWatch alone, over a real listening socket: silent twice with a
    connection waiting -> cancel; its end -> re-arm at once; silent twice more
    without an end (the cancel found nothing) -> arm; any completion, an idle
    queue or an unarmed accept reset it."""
    with socket.create_server(("127.0.0.1", 0)) as lsock:
        watch = AcceptWatch(lsock.fileno())
        assert watch.check(armed=True) is None              # nothing waits
        assert not watch.listen_ready()
        with socket.create_connection(lsock.getsockname()):
            wait_for(watch.listen_ready)
            assert watch.check(armed=False) is None         # not armed: not its fault
            assert watch.check(armed=True) is None          # once: maybe just arrived
            watch.events += 1                               # ... and it was
            assert watch.check(armed=True) is None
            assert watch.check(armed=True) is None
            assert watch.check(armed=True) == "cancel"
            assert watch.ended() is True                    # its end: arm now
            assert watch.ended() is False                   # only once
            assert watch.check(armed=True) is None
            assert watch.check(armed=True) == "cancel"      # the cancel's end never comes
            assert watch.check(armed=True) is None
            assert watch.check(armed=True) == "arm"
            assert watch.rearms == 3
            lsock.accept()[0].close()
        assert watch.check(armed=True) is None               # the queue is empty again


def test_the_acceptor_thread_rearms_a_silent_accept(monkeypatch: pytest.MonkeyPatch,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    """With several reactors the acceptor thread owns the accept; the same
    watch cancels it when it stays silent, and its end re-arms it."""
    monkeypatch.setattr(_acceptwatch, "CHECK_S", 0.05)
    caplog.set_level(logging.WARNING, logger="zerg")
    with serving(echo_handler, reactor_count=2) as srv:
        echo_once(srv, b"before")
        with monkeypatch.context() as patch:      # the listen queue looks full
            patch.setattr(AcceptWatch, "listen_ready", lambda self: True)
            wait_for(lambda: (srv.engine.acceptor_stats() or _NO_STATS).accept_rearms >= 2)
        for i in range(5):
            echo_once(srv, b"after %d" % i)
        stats = srv.engine.acceptor_stats()
        assert stats is not None and stats.accepted == 6
    assert "zerg acceptor: connections wait on the listening socket" in caplog.text


def test_a_socket_passed_in_is_not_watched() -> None:
    """A listening socket from outside (``listen_fd``: systemd, or the socket
    workers share) may have other processes accepting on it: its queue is
    theirs to drain as much as ours, so no watchdog acts on it (a rolling
    restart of workers on a shared socket saw it cancel live accepts)."""
    with (socket.create_server(("127.0.0.1", 0)) as own,
          serving(echo_handler, listen_fd=own.fileno()) as srv):
        echo_once(srv, b"served")
        reactor = srv.engine._reactors[0]
        assert reactor._accept_watch is None
        assert reactor.stats().accept_rearms == 0
