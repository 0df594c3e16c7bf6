"""The receive state machine of a connection, as one table.

Why a table: the multishot receive of a connection can be armed, being
cancelled because the handler fell behind, paused, parked for lack of slots,
ended by the peer, or stopping because the connection closes -- and the
completions that end it race with our own cancels.  Spread over booleans
these states were hard to reason about; here every (state, event) pair has
one row, and anything not in the table is a bug that raises.

Events are what happened; the table answers the next state and the one
action the transport must take (arm a receive, cancel it, park it until
slots are back, or report the end of the stream).
"""

from __future__ import annotations

import enum
import errno
from typing import Final


class RecvState(enum.Enum):
    IDLE = "idle"                   # never armed yet
    ARMED = "armed"                 # a multishot recv is in the kernel
    CANCELLING = "cancelling"       # armed; our cancel is in flight (pausing)
    REARMING = "rearming"           # armed; cancel in flight, but resumed since
    PAUSED = "paused"               # not armed: the handler holds max_read_buffer
    PARKED = "parked"               # not armed: the ring had no free slot (ENOBUFS)
    ENDED = "ended"                 # the peer finished (or reset): never re-armed
    STOPPING = "stopping"           # closing; the recv is still in the kernel
    STOPPED = "stopped"             # closing or closed; nothing in the kernel


class RecvEvent(enum.Enum):
    START = "start"                 # the connection opened
    PAUSE = "pause"                 # unconsumed bytes passed max_read_buffer
    RESUME = "resume"               # they fell back under the resume mark
    SLOTS = "slots"                 # slots are free again (after PARKED)
    CLOSE = "close"                 # the connection closes
    # The multishot recv ended (a CQE without IORING_CQE_F_MORE), by kind:
    END_RETRY = "end-retry"         # the kernel just stopped (res > 0), or our cancel landed
    END_NOBUFS = "end-nobufs"       # no free slot
    END_EOF = "end-eof"             # 0: orderly shutdown; < 0: reset or other error


class RecvAction(enum.Enum):
    NONE = "none"
    ARM = "arm"                     # prepare a multishot recv
    CANCEL = "cancel"               # prepare a cancel of the armed recv
    PARK = "park"                   # hand the connection to RecvSlots.park
    EOF = "eof"                     # the stream ended: tell the input pipe
    FINISHED = "finished"           # nothing of ours is left in the kernel (closing)


S, E, A = RecvState, RecvEvent, RecvAction

_TABLE: Final[dict[tuple[RecvState, RecvEvent], tuple[RecvState, RecvAction]]] = {
    (S.IDLE, E.START): (S.ARMED, A.ARM),
    (S.IDLE, E.CLOSE): (S.STOPPED, A.FINISHED),

    (S.ARMED, E.PAUSE): (S.CANCELLING, A.CANCEL),
    (S.ARMED, E.RESUME): (S.ARMED, A.NONE),
    (S.ARMED, E.SLOTS): (S.ARMED, A.NONE),
    (S.ARMED, E.CLOSE): (S.STOPPING, A.CANCEL),
    (S.ARMED, E.END_RETRY): (S.ARMED, A.ARM),
    (S.ARMED, E.END_NOBUFS): (S.PARKED, A.PARK),
    (S.ARMED, E.END_EOF): (S.ENDED, A.EOF),

    (S.CANCELLING, E.PAUSE): (S.CANCELLING, A.NONE),
    (S.CANCELLING, E.RESUME): (S.REARMING, A.NONE),
    (S.CANCELLING, E.SLOTS): (S.CANCELLING, A.NONE),
    (S.CANCELLING, E.CLOSE): (S.STOPPING, A.NONE),      # the cancel is already on its way
    (S.CANCELLING, E.END_RETRY): (S.PAUSED, A.NONE),
    (S.CANCELLING, E.END_NOBUFS): (S.PAUSED, A.NONE),
    (S.CANCELLING, E.END_EOF): (S.ENDED, A.EOF),

    (S.REARMING, E.PAUSE): (S.CANCELLING, A.NONE),
    (S.REARMING, E.RESUME): (S.REARMING, A.NONE),
    (S.REARMING, E.SLOTS): (S.REARMING, A.NONE),
    (S.REARMING, E.CLOSE): (S.STOPPING, A.NONE),
    (S.REARMING, E.END_RETRY): (S.ARMED, A.ARM),
    (S.REARMING, E.END_NOBUFS): (S.ARMED, A.ARM),
    (S.REARMING, E.END_EOF): (S.ENDED, A.EOF),

    (S.PAUSED, E.PAUSE): (S.PAUSED, A.NONE),
    (S.PAUSED, E.RESUME): (S.ARMED, A.ARM),
    (S.PAUSED, E.SLOTS): (S.PAUSED, A.NONE),
    (S.PAUSED, E.CLOSE): (S.STOPPED, A.FINISHED),

    (S.PARKED, E.PAUSE): (S.PAUSED, A.NONE),
    (S.PARKED, E.RESUME): (S.PARKED, A.NONE),
    (S.PARKED, E.SLOTS): (S.ARMED, A.ARM),
    (S.PARKED, E.CLOSE): (S.STOPPED, A.FINISHED),

    (S.ENDED, E.PAUSE): (S.ENDED, A.NONE),
    (S.ENDED, E.RESUME): (S.ENDED, A.NONE),
    (S.ENDED, E.SLOTS): (S.ENDED, A.NONE),
    (S.ENDED, E.CLOSE): (S.STOPPED, A.FINISHED),

    (S.STOPPING, E.PAUSE): (S.STOPPING, A.NONE),
    (S.STOPPING, E.RESUME): (S.STOPPING, A.NONE),
    (S.STOPPING, E.SLOTS): (S.STOPPING, A.NONE),
    (S.STOPPING, E.CLOSE): (S.STOPPING, A.NONE),
    (S.STOPPING, E.END_RETRY): (S.STOPPED, A.FINISHED),
    (S.STOPPING, E.END_NOBUFS): (S.STOPPED, A.FINISHED),
    (S.STOPPING, E.END_EOF): (S.STOPPED, A.FINISHED),

    (S.STOPPED, E.PAUSE): (S.STOPPED, A.NONE),
    (S.STOPPED, E.RESUME): (S.STOPPED, A.NONE),
    (S.STOPPED, E.SLOTS): (S.STOPPED, A.NONE),
    (S.STOPPED, E.CLOSE): (S.STOPPED, A.NONE),
    (S.STOPPED, E.END_RETRY): (S.STOPPED, A.NONE),
    (S.STOPPED, E.END_NOBUFS): (S.STOPPED, A.NONE),
    (S.STOPPED, E.END_EOF): (S.STOPPED, A.NONE),
}

ARMED_STATES: Final = frozenset({S.ARMED, S.CANCELLING, S.REARMING, S.STOPPING})
"""States in which a receive request of ours is in the kernel."""


def end_event(res: int, state: RecvState) -> RecvEvent:
    """Classify the final completion of a multishot recv."""
    if res > 0:
        return E.END_RETRY
    if res == -errno.ENOBUFS:
        return E.END_NOBUFS
    if res == -errno.ECANCELED and state in (S.CANCELLING, S.REARMING):
        return E.END_RETRY          # our pause cancel landed
    return E.END_EOF


def transition(state: RecvState, event: RecvEvent) -> tuple[RecvState, RecvAction]:
    """The next state and the action for ``event`` in ``state``."""
    try:
        return _TABLE[(state, event)]
    except KeyError:
        raise RuntimeError(
            f"zerg bug: receive event {event.value!r} in state {state.value!r}"
        ) from None
