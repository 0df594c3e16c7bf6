"""Echo server: the zerg fast path with SQPOLL (a kernel thread submits).

``sqpoll=True`` needs ``defer_taskrun=False``; the SQ thread runs on the
server's CPU here (the runner pins the server, and the thread inherits it).
"""

from __future__ import annotations

from _zerg_common import serve
from zerg_fast import Echo

import zerg

if __name__ == "__main__":
    cfg = zerg.ReactorConfig(sqpoll=True, defer_taskrun=False, sq_thread_idle_ms=1000)
    serve(Echo(), __doc__ or "", reactor=cfg)
