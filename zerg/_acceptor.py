"""Acceptor: with several reactors, one thread accepts and deals connections.

It owns a small ring of its own with one multishot accept, and hands each new
fd to the next reactor round-robin with ``IORING_OP_MSG_RING`` — a CQE posted
straight into the target reactor's ring, lock-free, which wakes that reactor
if it sleeps.  If the kernel refuses a message (target CQ full, or MSG_RING
missing) the fd goes through the fallback: the reactor's thread-safe queue
plus self-pipe wake-up (``Reactor.hand_off``).
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from zerg import _acceptwatch as acceptwatch
from zerg._acceptwatch import AcceptWatch
from zerg._config import AcceptorConfig
from zerg._reactor import Reactor
from zerg._ring import CQE_F_MORE, Op, Ring, encode, msg_key, split_msg_key
from zerg._uring import lib

log = logging.getLogger("zerg")

_UD_ACCEPT = encode(Op.ACCEPT)
_UD_MSG = encode(Op.MSG)
_UD_CANCEL = encode(Op.CANCEL)


@dataclass(frozen=True, slots=True)
class AcceptorStats:
    """Counters of the acceptor thread (``reactor_count > 1``)."""

    accepted: int
    """Connections accepted."""
    handed_by_msg_ring: int
    """Hand-offs the target reactor's ring confirmed (``IORING_OP_MSG_RING``)."""
    handed_by_queue: int
    """Hand-offs through the thread-safe queue + wake-up."""
    sqes: int
    """SQEs the acceptor prepared (one multishot accept serves many connections)."""
    accept_rearms: int = 0
    """Times the multishot accept was found silent with connections waiting on
    the listening socket and was canceled or armed anew (each one is logged)."""


class Acceptor(threading.Thread):
    """Accept on ``listen_fd`` and spread connections over ``reactors``."""

    def __init__(self, listen_fd: int, reactors: Sequence[Reactor], cfg: AcceptorConfig,
                 watch_accept: bool = True) -> None:
        super().__init__(name="zerg-acceptor", daemon=True)
        self._fd = listen_fd
        self._reactors = list(reactors)
        self._cfg = cfg
        self._use_msg_ring = cfg.handoff == "msg_ring"
        self._stop_flag = threading.Event()
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.accepted = 0
        # A silent accept is re-armed, unless other processes accept on the
        # socket too (then a readable queue is theirs to drain as much as ours).
        self._watch = AcceptWatch(listen_fd) if watch_accept else None
        self.handed_by_msg_ring = 0
        self.handed_by_queue = 0
        self.sqes = 0
        self.submits = 0            # early submits forced by batch_sqes

    def stop(self) -> None:
        self._stop_flag.set()

    def stats(self) -> AcceptorStats:
        return AcceptorStats(self.accepted, self.handed_by_msg_ring, self.handed_by_queue,
                             self.sqes, 0 if self._watch is None else self._watch.rearms)

    def run(self) -> None:
        try:
            flags = 0
            if self._cfg.sqpoll:
                flags |= lib.IORING_SETUP_SQPOLL
            ring = Ring(self._cfg.ring_entries, setup_flags=flags, batch=256)
        except BaseException as exc:      # reported to Engine.serve
            self.error = exc
            self.ready.set()
            return
        self.ready.set()
        self._ring = ring
        try:
            self._loop(ring)
        except BaseException as exc:
            self.error = exc
            log.exception("zerg acceptor failed")
        finally:
            self.sqes = ring.sqes_prepared
            ring.close()

    def _loop(self, ring: Ring) -> None:
        ptr = ring.ptr
        targets = self._reactors
        n_targets = len(targets)
        nxt = 0
        armed = False
        retry_at = 0
        batch = self._cfg.batch_sqes
        watch = self._watch
        next_check = time.monotonic() + acceptwatch.CHECK_S
        while not self._stop_flag.is_set():
            prepared = 0
            if not armed and retry_at <= 0:
                ring.check(lib.zu_prep_accept_multishot(ptr, self._fd, _UD_ACCEPT), "accept")
                armed = True
            ring.enter_result(lib.zu_submit_and_wait(ptr, 1, self._cfg.cq_timeout_ns),
                              "acceptor wait")
            retry_at -= 1
            self.sqes = ring.sqes_prepared
            if watch is not None and (now := time.monotonic()) >= next_check:
                next_check = now + acceptwatch.CHECK_S
                action = watch.check(armed)
                acceptwatch.warn("zerg acceptor", action)
                if action == "cancel":      # its end (ECANCELED) re-arms it below
                    ring.check(lib.zu_prep_cancel(ptr, _UD_ACCEPT, _UD_CANCEL), "cancel accept")
                elif action == "arm":       # the cancel found nothing to cancel
                    armed = False
                    retry_at = 0
            for op, key, res, f, _ in ring.completions():
                if op == Op.ACCEPT:
                    if watch is not None:
                        watch.events += 1
                    if not f & CQE_F_MORE:
                        armed = False
                        if watch is not None and watch.ended():
                            retry_at = 0    # the watch canceled it: arm the next one now
                    if res < 0:
                        if res == -errno.EINVAL:
                            # The listener was shut down (Engine.stop): nothing to
                            # accept any more; the stop flag follows at once.
                            retry_at = 1 << 30
                        elif res != -errno.ECANCELED:
                            log.warning("zerg acceptor: accept failed (%s); backing off",
                                        os.strerror(-res))
                            retry_at = 1      # wait one cq_timeout before re-arming
                        continue
                    self.accepted += 1
                    index = nxt
                    target = targets[index]
                    nxt = nxt + 1 if nxt + 1 < n_targets else 0
                    if self._use_msg_ring and not target.ring.closed:
                        # The target sees user_data encode(MSG) with the fd as res.
                        ret = lib.zu_prep_msg_ring(ptr, target.ring.fd, res, _UD_MSG,
                                                   encode(Op.MSG, msg_key(index, res)))
                        if ret == 0:
                            prepared += 1
                            if prepared >= batch:   # a burst: do not hold them back
                                ring.enter_result(lib.zu_submit(ptr), "acceptor burst")
                                self.submits += 1
                                prepared = 0
                            continue
                    self.handed_by_queue += 1
                    target.hand_off(res)
                elif op == Op.MSG:
                    index, fd = split_msg_key(key)
                    if res < 0:
                        # The message did not arrive: the same reactor gets it
                        # by the fallback path.
                        self.handed_by_queue += 1
                        self._reactors[index].hand_off(fd)
                    else:
                        self.handed_by_msg_ring += 1
        if armed:
            ring.check(lib.zu_prep_cancel(ptr, _UD_ACCEPT, _UD_CANCEL), "cancel accept")
            ring.enter_result(lib.zu_submit_and_wait(ptr, 0, 0), "acceptor stop")
