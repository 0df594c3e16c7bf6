"""Broadcast: every message a client sends goes to every connected client,
across reactors.

    python examples/broadcast.py --host 127.0.0.1 --port 7001

With ``reactor_count=2`` the connections live on two reactor threads.  A
connection may only be used on its own reactor thread (zerg raises
``RuntimeError`` otherwise), so each message is handed to every connection
with ``conn.call_soon_threadsafe(...)``, which runs the write on the right
thread.  A client too slow to keep up (its write buffer full) is aborted
rather than silently missing messages.
"""

from __future__ import annotations

import argparse
import logging
import threading

import zerg

_clients: set[zerg.Connection] = set()
_lock = threading.Lock()        # the set is shared by the reactor threads


def _deliver(conn: zerg.Connection, data: bytes) -> None:
    """On ``conn``'s own reactor thread."""
    if conn.is_closed:
        return
    try:
        conn.write(data)
    except zerg.WriteBufferFullError:
        conn.abort()            # too slow to keep up: better gone than silently lossy
        return
    except ConnectionError:
        return                  # closed meanwhile
    conn.flush_nowait()


async def broadcast(conn: zerg.Connection) -> None:
    with _lock:
        _clients.add(conn)
    try:
        while True:
            snap = await conn.read()
            if snap.is_closed:
                return
            seq = conn.get_sequence(snap)
            data = seq.tobytes()            # one copy: it outlives the slots
            seq.release()
            with _lock:
                targets = list(_clients)
            for target in targets:
                target.call_soon_threadsafe(_deliver, target, data)
    finally:
        with _lock:
            _clients.discard(conn)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=7001)
    ap.add_argument("--reactors", type=int, default=2)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    zerg.run(broadcast, zerg.EngineOptions(ip=args.host, port=args.port,
                                           reactor_count=args.reactors))


if __name__ == "__main__":
    main()
