"""Echo server: zerg's callback fast path, ``zerg.Protocol`` (issue 5).

``data_received(conn, seq)`` is called straight from completion dispatch (no
Task, no future); returning None consumes every byte of ``seq``, and what it
writes leaves in one send per connection per loop iteration.  The runner skips
this server (with a note) when ``zerg.Protocol`` does not exist.
"""

from __future__ import annotations

from _zerg_common import serve

import zerg


class Echo(zerg.Protocol):
    def data_received(self, conn: zerg.Connection, seq: zerg.BufferSequence) -> None:
        conn.write(seq)     # copied into the write segment; 4 KiB+ in one slot (E3) lent


if __name__ == "__main__":
    serve(Echo(), __doc__ or "")
