"""Noticing a multishot accept that has gone silent (the reactor's and the
acceptor thread's).

Why: on this machine's kernel (6.18), about once in 700 bursts of 10,000
connections, a reactor's multishot accept stayed armed -- in the ring's poll
list, no task work pending -- while connections waited in the listen queue,
and no completion ever came: the server stopped accepting for good, its loop
idle on a ring with nothing to say.  Whatever the kernel's cause, the owner of
an accept asks an ``AcceptWatch`` every ``CHECK_S`` whether to act.

What: the accept is taken for silent when no accept completed since the last
check, it is armed, and the listening socket polls readable -- on two checks
in a row, since once may be a connection that arrived a moment ago.  Then the
owner cancels it; the accept's last completion tells the owner to arm the next
one at once (``ended``).  A cancel that found nothing (no last completion by
the next silent check) is followed by a plain arm.  An idle listener costs one
``poll`` system call per check; a busy one, none.
"""

from __future__ import annotations

import logging
import select
from typing import Literal

CHECK_S = 1.0
"""How often an owner checks its armed accept (seconds)."""

Action = Literal["cancel", "arm"] | None

log = logging.getLogger("zerg")


def warn(owner: str, action: Action) -> None:
    """Log what ``owner`` (``"zerg reactor 0"``, ``"zerg acceptor"``) does for
    ``action``, in the words both owners use."""
    if action == "cancel":
        log.warning("%s: connections wait on the listening socket but the accept "
                    "reported none for %.0f s; canceling and arming it again",
                    owner, 2 * CHECK_S)
    elif action == "arm":
        log.warning("%s: the accept is still silent after its cancel; arming a new one",
                    owner)


class AcceptWatch:
    """One listening socket's accept, as its owner reports it."""

    __slots__ = ("_canceled", "_fd", "_poll", "_seen", "_suspect", "events", "rearms")

    def __init__(self, listen_fd: int) -> None:
        self._fd = listen_fd
        self._poll: select.poll | None = None
        self.events = 0
        """Accept completions so far; the owner adds one per completion."""
        self._seen = 0
        self._suspect = False
        self._canceled = False
        self.rearms = 0
        """Times the accept was found silent and canceled or armed anew."""

    def check(self, armed: bool) -> Action:
        """Called every ``CHECK_S``: ``"cancel"`` the armed accept (its end
        re-arms it: ``ended``), ``"arm"`` a new one (the cancel found nothing
        to cancel: take the accept for ended and arm), or nothing to do."""
        if self.events != self._seen or not armed or not self.listen_ready():
            self._seen = self.events
            self._suspect = False
            return None
        if not self._suspect:
            self._suspect = True
            return None
        self._suspect = False
        self.rearms += 1
        if self._canceled:
            self._canceled = False
            return "arm"
        self._canceled = True
        return "cancel"

    def ended(self) -> bool:
        """The accept ended: whether this watch canceled it (then arm the next
        one at once, whatever the completion's result)."""
        canceled, self._canceled = self._canceled, False
        return canceled

    def listen_ready(self) -> bool:
        """Whether connections wait in the listen queue (a poll, no wait)."""
        if self._poll is None:
            self._poll = select.poll()
            self._poll.register(self._fd, select.POLLIN)
        try:
            return any(ev & select.POLLIN for _, ev in self._poll.poll(0))
        except OSError:
            return False
