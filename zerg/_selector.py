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
so a late CQE for the old one is recognised and dropped.
"""

from __future__ import annotations

import select as _select
import selectors
from collections.abc import Callable, Mapping
from typing import Any, Final

from zerg._ring import Op, Ring, encode
from zerg._uring import lib

_POLLIN: Final = _select.POLLIN | _select.POLLPRI
_POLLOUT: Final = _select.POLLOUT
_POLLERR: Final = _select.POLLERR | _select.POLLHUP
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


class _KeyMap(Mapping[Any, selectors.SelectorKey]):
    __slots__ = ("_sel",)

    def __init__(self, sel: UringSelector) -> None:
        self._sel = sel

    def __len__(self) -> int:
        return len(self._sel._keys)

    def __getitem__(self, fileobj: Any) -> selectors.SelectorKey:
        try:
            return self._sel._keys[_fileobj_to_fd(fileobj)]
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
        self._ready: list[tuple[selectors.SelectorKey, int]] = []
        self._map = _KeyMap(self)
        self.max_wait_ns = 50_000_000

    # -- registration -------------------------------------------------------
    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        if not events or events & ~(selectors.EVENT_READ | selectors.EVENT_WRITE):
            raise ValueError(f"Invalid events: {events!r}")
        fd = _fileobj_to_fd(fileobj)
        if fd in self._keys:
            raise KeyError(f"{fileobj!r} (FD {fd}) is already registered")
        key = selectors.SelectorKey(fileobj, fd, events, data)
        self._keys[fd] = key
        self._arm(fd, events)
        return key

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        fd = _fileobj_to_fd(fileobj)
        try:
            key = self._keys.pop(fd)
        except KeyError:
            raise KeyError(f"{fileobj!r} is not registered") from None
        self._disarm(fd)
        return key

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        fd = _fileobj_to_fd(fileobj)
        try:
            key = self._keys[fd]
        except KeyError:
            raise KeyError(f"{fileobj!r} is not registered") from None
        if events != key.events:
            self.unregister(fileobj)
            return self.register(fileobj, events, data)
        if data is not key.data:
            key = key._replace(data=data)
            self._keys[fd] = key
        return key

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._map

    def close(self) -> None:
        for fd in list(self._keys):
            self._disarm(fd)
        self._keys.clear()

    # -- io_uring side ------------------------------------------------------
    def _arm(self, fd: int, events: int) -> None:
        token = self._next_token
        self._next_token += 1
        self._token_of[fd] = token
        self._fd_of[token] = fd
        self._submit_poll(fd, events, token)

    def _submit_poll(self, fd: int, events: int, token: int) -> None:
        mask = 0
        if events & selectors.EVENT_READ:
            mask |= _POLLIN
        if events & selectors.EVENT_WRITE:
            mask |= _POLLOUT
        self._ring.check(lib.zu_prep_poll_add(self._ring.ptr, fd, mask, encode(Op.POLL, token)),
                         "poll_add")

    def _disarm(self, fd: int) -> None:
        token = self._token_of.pop(fd, None)
        if token is None:
            return
        del self._fd_of[token]
        if not self._ring.closed:
            self._ring.check(lib.zu_prep_poll_remove(self._ring.ptr, encode(Op.POLL, token),
                                                     _UD_POLL_REMOVE), "poll_remove")

    def poll_fired(self, token: int, res: int) -> None:
        """A poll CQE arrived (called by the reactor's dispatcher)."""
        fd = self._fd_of.get(token)
        if fd is None or res < 0:
            return                      # stale token or cancelled request
        key = self._keys[fd]
        events = 0
        if res & (_POLLIN | _POLLERR):
            events |= selectors.EVENT_READ
        if res & (_POLLOUT | _POLLERR):
            events |= selectors.EVENT_WRITE
        events &= key.events
        if events:
            self._ready.append((key, events))
        self._rearm.append(token)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if self._rearm:
            fd_of = self._fd_of
            for token in self._rearm:
                fd = fd_of.get(token)
                if fd is not None:
                    self._submit_poll(fd, self._keys[fd].events, token)
            self._rearm.clear()
        if timeout is None:
            ns = self.max_wait_ns
        elif timeout <= 0:
            ns = 0
        else:
            ns = min(int(timeout * 1e9), self.max_wait_ns) or 1
        ready: list[tuple[selectors.SelectorKey, int]] = []
        self._ready = ready
        self._on_select(ns)
        return ready
