"""TCP proxy (P1): haproxy in TCP mode, one thread, the peer a user would deploy.

The process execs haproxy (same pid, so the runner measures haproxy's CPU)
after starting the C echo upstream (which dies with it) and forking a watcher
that prints ``ready <port>`` once haproxy accepts connections.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

from _common import parse_args, raise_nofile
from _upstream import start_echo
from resp_redis import announce_when_up, free_port

CONFIG = """\
global
    nbthread 1
    maxconn 4000
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend front
    bind {host}:{port}
    default_backend back
backend back
    server echo {host}:{upstream}
"""


def main() -> None:
    args = parse_args(__doc__ or "")
    exe = shutil.which("haproxy")
    if exe is None:
        sys.exit("haproxy not found (apt install haproxy)")
    raise_nofile()
    upstream_port, _ = start_echo(args.host)
    port = args.port or free_port(args.host)
    fd, path = tempfile.mkstemp(prefix="zerg-bench-haproxy-", suffix=".cfg")
    with os.fdopen(fd, "w") as f:
        f.write(CONFIG.format(host=args.host, port=port, upstream=upstream_port))
    if os.fork() == 0:
        announce_when_up(args.host, port)
    os.execv(exe, [exe, "-f", path, "-db"])


if __name__ == "__main__":
    main()
