"""The listening socket: TCP, a UNIX socket path, or a socket from outside.

Why: behind a load balancer or a supervisor, zerg often must not bind its own
TCP port.  nginx and haproxy reach it over a UNIX socket (no port, file
permissions); systemd hands it a socket it bound itself (socket activation:
the socket exists before the service starts, and outlives restarts).

What: ``open_listener(options)`` returns the socket an ``Engine`` serves and
whether it is *shared* (a UNIX socket or one from outside: the workers of
``workers > 1`` inherit it instead of binding a port each, and stopping must
not shut it down for the other holders).  ``systemd_listen_fds()`` is
``sd_listen_fds(3)``.
"""

from __future__ import annotations

import errno
import os
import socket
import stat

from zerg._config import EngineOptions

__all__ = ["open_listener", "systemd_listen_fds"]

SD_LISTEN_FDS_START = 3


def systemd_listen_fds(unset_environment: bool = True) -> list[int]:
    """The sockets systemd passed this process (socket activation).

    Like ``sd_listen_fds(3)``: when ``LISTEN_PID`` is this process, the fds
    ``3 .. 3 + LISTEN_FDS - 1``, marked close-on-exec; else ``[]``.  With
    ``unset_environment`` the three variables are removed, so child processes
    do not take the sockets for theirs.  Serve one with
    ``EngineOptions(listen_fd=fd)``.
    """
    pid, count = os.environ.get("LISTEN_PID", ""), os.environ.get("LISTEN_FDS", "")
    if unset_environment:
        for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
            os.environ.pop(name, None)
    if not pid.isdigit() or int(pid) != os.getpid() or not count.isdigit():
        return []
    fds = list(range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + int(count)))
    for fd in fds:
        os.set_inheritable(fd, False)
    return fds


def open_listener(options: EngineOptions) -> tuple[socket.socket, bool]:
    """The socket ``options`` describe, listening (but for a TCP port shared by
    ``workers > 1``, which is only bound), and whether it is shared."""
    if options.listen_fd is not None:
        return _adopt(options.listen_fd, options.backlog), True
    if options.unix_path is not None:
        return _listen_unix(options.unix_path, options.backlog), True
    return _listen_tcp(options), False


def _adopt(fd: int, backlog: int) -> socket.socket:
    """A duplicate of ``fd``, which must be a stream socket; listening."""
    try:
        sock = socket.socket(fileno=os.dup(fd))
    except OSError as exc:
        what = "an open file descriptor" if exc.errno == errno.EBADF else "a socket"
        raise OSError(exc.errno, f"listen_fd {fd} is not {what}") from None
    try:
        if sock.type != socket.SOCK_STREAM:
            raise ValueError(f"listen_fd {fd} is not a stream socket ({sock.type!r})")
        if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def _listen_unix(path: str, backlog: int) -> socket.socket:
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(mode):
            raise FileExistsError(errno.EEXIST, f"unix_path {path!r} exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except (ConnectionRefusedError, FileNotFoundError):
            os.unlink(path)         # left by a server that is gone
        else:
            raise OSError(errno.EADDRINUSE, f"unix_path {path!r} is in use by another server")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on unix_path {path!r}: {exc.strerror}") from None
    return sock


def _listen_tcp(opts: EngineOptions) -> socket.socket:
    v6 = opts.acceptor.ip_version != "ipv4"
    sock = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if opts.reuse_port or opts.workers > 1:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if v6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY,
                            1 if opts.acceptor.ip_version == "ipv6" else 0)
        # Accepted sockets inherit TCP_NODELAY from the listener on Linux.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.bind((opts.ip, opts.port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise OSError(errno.EADDRINUSE,
                              f"port {opts.port} on {opts.ip} is already in use") from None
            raise OSError(exc.errno, f"cannot bind {opts.ip}:{opts.port}: "
                                     f"{exc.strerror}") from None
        if opts.workers == 1:
            sock.listen(opts.backlog)
        # With workers > 1 this socket only reserves the port (bound, not
        # listening); each worker listens on its own SO_REUSEPORT socket.
    except BaseException:
        sock.close()
        raise
    return sock
