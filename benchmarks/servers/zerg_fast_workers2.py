"""Echo server: the zerg fast path in ``workers=2`` processes (SO_REUSEPORT).

On this 2-core machine the runner pins the server to one CPU, so both workers
share it: this row shows the cost of the process model, not extra cores.  The
CPU column counts the supervising process only (workers are its children).
"""

from __future__ import annotations

from _zerg_common import serve
from zerg_fast import Echo

if __name__ == "__main__":
    serve(Echo(), __doc__ or "", workers=2)
