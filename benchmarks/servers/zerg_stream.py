"""Echo server: zerg ``ConnectionStream`` (an ``io.RawIOBase``) on worker threads.

A plain ``def`` handler runs on a worker thread per connection and uses
blocking ``readinto``/``write``.  Thread per connection: the runner
skips it in C1 (10,000 connections would need 10,000 threads) and when
``zerg.adapters.ConnectionStream`` does not exist.
"""

from __future__ import annotations

from typing import Final

from _zerg_common import serve

import zerg
from zerg.adapters import ConnectionStream

CHUNK: Final = 64 * 1024
THREADS: Final = 128                # >= the connections of E1..E3


def echo(conn: zerg.Connection) -> None:
    view = memoryview(bytearray(CHUNK))
    with ConnectionStream(conn) as stream:
        try:
            while n := stream.readinto(view):
                stream.write(view[:n])     # sends at once; flush() would only wait
        except ConnectionError:
            pass                           # the load generator hung up mid-echo


if __name__ == "__main__":
    serve(echo, __doc__ or "", worker_threads=THREADS)
