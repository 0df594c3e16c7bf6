"""UringSelector: asyncio's selector contract, answered by io_uring.

asyncio's ``SelectorEventLoop`` asks its selector one question per loop
iteration: "what is ready?".  This selector answers it with one
``io_uring_enter`` that also submits everything zerg prepared and waits for
completions.  zerg's own completions (accept, recv, send, cancel) are handed
to the reactor's dispatcher inside ``select()``; only the fds asyncio itself
registered (its self-pipe, other libraries' sockets) come back as readiness.

Those fds are watched with one-shot ``IORING_OP_POLL_ADD`` requests that are
re-armed at the next ``select()`` after they fire, which gives asyncio the
level-triggered semantics it was written for: a callback that did not drain
its fd is told again.  A changed or removed registration gets a fresh token,
so a late CQE for the old one is recognised and dropped.  The ready list is
built when ``select()`` returns, from the registrations alive *then*: zerg's
own callbacks (a ``zerg.Protocol``) run inside ``select()`` and may remove or
replace a registration whose poll already fired in the same harvest; that
event is dropped (asyncio would take it for the new registration's).

Where io_uring differs from epoll, the selector makes up the difference,
because asyncio code is written against epoll:

* A pending poll request holds a reference to its *file*, not just the fd
  number: closing the fd does not end the poll, and the socket stays alive
  (a peer sees no EOF, a listener keeps accepting) until the request ends.
  So ``unregister`` submits its ``POLL_REMOVE`` at once and lets the kernel
  finish the cancellation (one ``io_uring_enter`` that also reaps task work)
  before it returns: when asyncio closes the socket right after
  ``remove_reader`` (``server.close()``, a transport's close), the close is
  final, as with epoll.  (With SQPOLL the kernel thread does the removal an
  instant later.)  Closed file objects are found by identity, as the stdlib
  selectors do, so ``remove_reader(sock)`` after ``sock.close()`` still
  unregisters -- otherwise the poll would pin the socket forever, and a new
  socket given the same fd number would inherit a registration that watches
  the dead one.
* ``io_uring`` accepts a poll on anything; epoll does not.  ``register``
  refuses what ``epoll_ctl`` refuses: a bad fd (``EBADF``) and files that
  cannot be polled -- regular files, directories, block devices (``EPERM``),
  which io_uring would report ready forever.
* A poll that completes with an error (the fd was closed before the request
  was submitted: ``-EBADF``) is reported as readiness for every event the
  registration asked for, so its callback runs and meets the error in its
  own syscall, and is logged at debug level; dropping it would leave the
  callback waiting forever.
"""

from __future__ import annotations

import errno
import logging
import os
import select as _select
import selectors
import stat
from collections.abc import Callable, Mapping
from typing import Any, Final

from zerg._native import speedups
from zerg._ring import Op, Ring, encode
from zerg._uring import lib

log = logging.getLogger("zerg")

_POLLIN: Final = _select.POLLIN | _select.POLLPRI
_POLLOUT: Final = _select.POLLOUT
_POLLERR: Final = _select.POLLERR | _select.POLLHUP
_EVENT_BOTH: Final = selectors.EVENT_READ | selectors.EVENT_WRITE
_UD_POLL_REMOVE: Final = encode(Op.POLL_REMOVE)


def _fileobj_to_fd(fileobj: Any) -> int:
    if isinstance(fileobj, int):
        fd = fileobj
    else:
        try:
            fd = int(fileobj.fileno())
        except (AttributeError, TypeError, ValueError):
            raise ValueError(f"Invalid file object: {fileobj!r}") from None
    if fd < 0:
        raise ValueError(f"Invalid file descriptor: {fd}")
    return fd


def _check_pollable(fd: int) -> None:
    """Raise what ``epoll_ctl(EPOLL_CTL_ADD)`` would: ``EBADF`` for an fd that
    is not open, ``EPERM`` for a file without readiness (io_uring would call
    it ready forever)."""
    mode = os.fstat(fd).st_mode          # OSError(EBADF) for a closed fd
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISBLK(mode):
        raise PermissionError(errno.EPERM, os.strerror(errno.EPERM))


def _events_check(events: int) -> None:
    if not events or events & ~_EVENT_BOTH:
        raise ValueError(f"Invalid events: {events!r}")


class _KeyMap(Mapping[Any, selectors.SelectorKey]):
    __slots__ = ("_sel",)

    def __init__(self, sel: UringSelector) -> None:
        self._sel = sel

    def __len__(self) -> int:
        return len(self._sel._keys)

    def __getitem__(self, fileobj: Any) -> selectors.SelectorKey:
        try:
            return self._sel._keys[self._sel._fd_lookup(fileobj)]
        except ValueError:
            raise KeyError(fileobj) from None

    def __iter__(self) -> Any:
        return iter(self._sel._keys)


class UringSelector(selectors.BaseSelector):
    """A selector whose ``select`` is one ``submit_and_wait`` on a zerg ring.

    ``on_select(timeout_ns)`` is the reactor's hook: it submits, waits,
    harvests and dispatches, and calls :meth:`poll_fired` for poll CQEs.
    """

    def __init__(self, ring: Ring, on_select: Callable[[int], None]) -> None:
        self._ring = ring
        self._on_select = on_select
        self._keys: dict[int, selectors.SelectorKey] = {}
        self._token_of: dict[int, int] = {}      # fd -> live poll token
        self._fd_of: dict[int, int] = {}         # live poll token -> fd
        self._next_token = 1
        self._rearm: list[int] = []
        self._fired: list[tuple[int, int]] = []  # (token, events) of this select()
        self._map = _KeyMap(self)
        self.max_wait_ns = 50_000_000

    def hook(self, on_select: Callable[[int], None]) -> None:
        """Call ``on_select`` from now on (the reactor's C step, once its
        dispatcher exists)."""
        self._on_select = on_select

    # -- registration -------------------------------------------------------
    def _fd_lookup(self, fileobj: Any) -> int:
        """``fileobj``'s fd; for a closed file object (no fileno any more), the
        fd it was registered with (``selectors._BaseSelectorImpl`` does the same)."""
        try:
            return _fileobj_to_fd(fileobj)
        except ValueError:
            for key in self._keys.values():
                if key.fileobj is fileobj:
                    return key.fd
            raise

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        _events_check(events)
        fd = _fileobj_to_fd(fileobj)
        if fd in self._keys:
            raise KeyError(f"{fileobj!r} (FD {fd}) is already registered")
        _check_pollable(fd)
        self._arm(fd, events)
        key = selectors.SelectorKey(fileobj, fd, events, data)
        self._keys[fd] = key
        return key

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        try:
            fd = self._fd_lookup(fileobj)
            key = self._keys.pop(fd)
        except KeyError:
            raise KeyError(f"{fileobj!r} is not registered") from None
        self._forget(fd)
        return key

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        try:
            fd = self._fd_lookup(fileobj)
            key = self._keys[fd]
        except KeyError:
            raise KeyError(f"{fileobj!r} is not registered") from None
        if events != key.events:
            _events_check(events)
            removed = False
            try:
                # As epoll's EPOLL_CTL_MOD: it fails for an fd closed meanwhile,
                # and the registration is then dropped (EpollSelector.modify).
                if not isinstance(key.fileobj, int):
                    try:
                        stale = _fileobj_to_fd(key.fileobj) != fd
                    except ValueError:
                        stale = True
                    if stale:
                        raise OSError(errno.EBADF, os.strerror(errno.EBADF))
                _check_pollable(fd)
                removed = self._disarm(fd)
                self._arm(fd, events)
            except BaseException:
                del self._keys[fd]
                self._forget(fd, removed)
                raise
            key = key._replace(events=events, data=data)
            self._keys[fd] = key
        elif data is not key.data:
            key = key._replace(data=data)
            self._keys[fd] = key
        return key

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._map

    def close(self) -> None:
        removed = False
        for fd in list(self._keys):
            removed = self._disarm(fd) or removed
        self._keys.clear()
        self._rearm.clear()
        self._fired = []
        if removed:
            self._release()

    # -- io_uring side ------------------------------------------------------
    def _arm(self, fd: int, events: int) -> None:
        token = self._next_token
        self._submit_poll(fd, events, token)
        self._next_token = token + 1
        self._token_of[fd] = token
        self._fd_of[token] = fd

    def _submit_poll(self, fd: int, events: int, token: int) -> None:
        mask = 0
        if events & selectors.EVENT_READ:
            mask |= _POLLIN
        if events & selectors.EVENT_WRITE:
            mask |= _POLLOUT
        self._ring.check(lib.zu_prep_poll_add(self._ring.ptr, fd, mask, encode(Op.POLL, token)),
                         "poll_add")

    def _disarm(self, fd: int) -> bool:
        """Forget ``fd``'s token; True when a ``POLL_REMOVE`` was prepared."""
        token = self._token_of.pop(fd, None)
        if token is None:
            return False
        del self._fd_of[token]
        if self._ring.closed:
            return False
        self._ring.check(lib.zu_prep_poll_remove(self._ring.ptr, encode(Op.POLL, token),
                                                 _UD_POLL_REMOVE), "poll_remove")
        return True

    def _forget(self, fd: int, removed: bool = False) -> None:
        """End ``fd``'s poll for good (its key is gone already)."""
        if self._disarm(fd) or removed:
            self._release()

    def _release(self) -> None:
        """Submit what is prepared (the ``POLL_REMOVE``) and reap task work, so
        the cancelled poll drops its reference to the file before we return:
        the caller may close the fd next, and the close must be final."""
        ring = self._ring
        if ring.closed:
            return
        ret = lib.zu_submit_and_wait(ring.ptr, 0, 0)
        if ret < 0:     # the POLL_REMOVE stays queued for the next select()
            log.debug("zerg: submitting a poll removal failed: %s", os.strerror(-ret))

    def poll_fired(self, token: int, res: int) -> None:
        """A poll CQE arrived (called by the reactor's dispatcher)."""
        fd = self._fd_of.get(token)
        if fd is None:
            return                      # removed or changed registration: a late CQE
        self._rearm.append(token)       # one-shot: re-armed at the next select()
        if res < 0:
            if res == -errno.ECANCELED:
                return                  # not by us (our removals retire the token first)
            log.debug("zerg: poll of fd %d failed (%s); reporting it ready",
                      fd, os.strerror(-res))
            self._fired.append((token, _EVENT_BOTH))
            return
        events = 0
        if res & (_POLLIN | _POLLERR):
            events |= selectors.EVENT_READ
        if res & (_POLLOUT | _POLLERR):
            events |= selectors.EVENT_WRITE
        if events:
            self._fired.append((token, events))

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        # With the extension, a C select (native/selectfast.c) takes the common
        # case -- nothing to re-arm, a plain number or None -- and calls this
        # reference for the rest; _ready_of is shared.
        if self._rearm:
            self._rearm_polls()
        if timeout is None:
            ns = self.max_wait_ns
        elif timeout <= 0:
            ns = 0
        else:   # min(..., max_wait_ns) or 1, without min's argument tuple and iterator
            wait = timeout * 1e9        # compared first: a huge timeout waits the most
            ns = self.max_wait_ns if wait > self.max_wait_ns else int(wait) or 1
        fired: list[tuple[int, int]] = []
        self._fired = fired
        self._on_select(ns)
        if not fired:
            return []               # the common case (zerg's own completions only)
        return self._ready_of(fired)

    def _rearm_polls(self) -> None:
        """Submit again the one-shot polls that fired last time."""
        fd_of = self._fd_of
        for token in self._rearm:
            fd = fd_of.get(token)
            if fd is not None:
                self._submit_poll(fd, self._keys[fd].events, token)
        self._rearm.clear()

    def _ready_of(self, fired: list[tuple[int, int]]) -> list[tuple[selectors.SelectorKey, int]]:
        """The (key, events) of the polls that fired.  The registrations alive
        now decide: a token removed or replaced while dispatching (a zerg
        callback ran) takes its event with it."""
        fd_of = self._fd_of
        keys = self._keys
        ready: list[tuple[selectors.SelectorKey, int]] = []
        for token, events in fired:
            fd = fd_of.get(token)
            if fd is not None:
                key = keys[fd]
                events &= key.events
                if events:
                    ready.append((key, events))
        return ready


if speedups is not None:
    # select()'s common case in C, this module's select() kept as the reference.
    speedups.bind_selector(UringSelector)
