"""Sockets from outside (issue 16): UNIX sockets, a listening fd passed in, and
systemd socket activation -- through real sockets, curl and redis-cli."""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import echo_handler, recv_exact, serving, wait_for
from examples_loader import load_example

import zerg

REPO = Path(__file__).resolve().parents[1]


def unix_connect(path: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(str(path))
    return s


def test_unix_socket_serves_and_its_file_goes_away(sock_dir: Path) -> None:
    path = sock_dir / "zerg.sock"
    seen: list[object] = []

    async def handler(conn: zerg.Connection) -> None:
        seen.append(conn.peername)
        await echo_handler(conn)

    with serving(handler, unix_path=str(path)) as srv:
        assert srv.engine.address == str(path)
        with pytest.raises(RuntimeError, match="UNIX socket"):
            _ = srv.engine.port
        for _ in range(3):
            with unix_connect(path) as s:
                s.sendall(b"ping over a unix socket")
                assert recv_exact(s, 23) == b"ping over a unix socket"
        srv.stop()
    assert seen == ["", "", ""]                 # an unnamed client's address
    srv.engine.close()
    assert not path.exists()


def test_curl_and_redis_cli_over_unix_sockets(sock_dir: Path) -> None:
    http, resp = load_example("http"), load_example("resp")
    hpath, rpath = sock_dir / "http.sock", sock_dir / "redis.sock"
    with serving(http.handle, unix_path=str(hpath)), serving(resp.handle, unix_path=str(rpath)):
        out = subprocess.run(["curl", "-s", "--unix-socket", str(hpath), "http://zerg/"],
                             capture_output=True, text=True, timeout=30, check=True)
        assert out.stdout == "Hello, World!"
        cli = ["redis-cli", "-s", str(rpath)]
        assert subprocess.run([*cli, "set", "k", "over unix"], capture_output=True, text=True,
                              timeout=30, check=True).stdout.strip() == "OK"
        assert subprocess.run([*cli, "get", "k"], capture_output=True, text=True,
                              timeout=30, check=True).stdout.strip() == "over unix"


def test_a_stale_socket_file_is_replaced_and_a_live_one_refused(sock_dir: Path) -> None:
    path = sock_dir / "s.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))                        # a file nobody listens on
    dead.close()
    assert path.exists()
    with serving(echo_handler, unix_path=str(path)):
        with unix_connect(path) as s:
            s.sendall(b"x")
            assert recv_exact(s, 1) == b"x"
        second = zerg.Engine(zerg.EngineOptions(unix_path=str(path)))
        with pytest.raises(OSError, match="in use by another server") as err:
            second.listen()
        assert err.value.errno == errno.EADDRINUSE
        with unix_connect(path) as s:           # the live server was left alone
            s.sendall(b"y")
            assert recv_exact(s, 1) == b"y"
    plain = sock_dir / "plain"
    plain.write_text("not a socket")
    with pytest.raises(FileExistsError, match="exists and is not a socket"):
        zerg.Engine(zerg.EngineOptions(unix_path=str(plain))).listen()
    assert plain.read_text() == "not a socket"


def test_bad_options_name_the_problem(sock_dir: Path) -> None:
    with pytest.raises(ValueError, match="at most 107"):
        zerg.EngineOptions(unix_path="/tmp/" + "x" * 120)
    with pytest.raises(ValueError, match="unix_path must be a file path"):
        zerg.EngineOptions(unix_path="")
    with pytest.raises(ValueError, match="not both"):
        zerg.EngineOptions(unix_path=str(sock_dir / "a"), listen_fd=3)
    with pytest.raises(ValueError, match="listen_fd"):
        zerg.EngineOptions(listen_fd=-1)
    r, w = os.pipe()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        with pytest.raises(OSError, match=f"listen_fd {r} is not a socket"):
            zerg.Engine(zerg.EngineOptions(listen_fd=r)).listen()
        with pytest.raises(ValueError, match="not a stream socket"):
            zerg.Engine(zerg.EngineOptions(listen_fd=udp.fileno())).listen()
        closed = os.dup(r)
        os.close(closed)
        with pytest.raises(OSError, match=f"listen_fd {closed} is not an open file"):
            zerg.Engine(zerg.EngineOptions(listen_fd=closed)).listen()
    finally:
        os.close(r)
        os.close(w)
        udp.close()


def test_a_listening_fd_from_outside_is_served_and_left_open() -> None:
    """A bound socket passed in: the engine listens on it (a duplicate); after the
    engine stopped, the caller's socket is still open and still listening."""
    own = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    own.bind(("127.0.0.1", 0))                  # bound, not listening
    port = own.getsockname()[1]
    try:
        with serving(echo_handler, listen_fd=own.fileno()) as srv:
            assert srv.engine.port == port
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(b"through an fd passed in")
                assert recv_exact(s, 23) == b"through an fd passed in"
        own.settimeout(5)
        with socket.create_connection(("127.0.0.1", port), timeout=10):
            peer, _ = own.accept()              # still listening: not shut down
            peer.close()
    finally:
        own.close()


def test_systemd_listen_fds_is_empty_unless_the_fds_are_ours(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LISTEN_PID", str(os.getpid() + 1))
    monkeypatch.setenv("LISTEN_FDS", "1")
    assert zerg.systemd_listen_fds() == []
    assert "LISTEN_PID" not in os.environ and "LISTEN_FDS" not in os.environ
    monkeypatch.setenv("LISTEN_PID", "garbage")
    monkeypatch.setenv("LISTEN_FDS", "1")
    assert zerg.systemd_listen_fds(unset_environment=False) == []
    assert os.environ["LISTEN_FDS"] == "1"


SERVER = textwrap.dedent('''
    import os, sys
    sys.path.insert(0, sys.argv[1])
    import zerg
    from conftest import echo_handler as echo
    fds = zerg.systemd_listen_fds()
    left = [os.environ.get(k) for k in ("LISTEN_PID", "LISTEN_FDS")]
    print("fds", fds, "env left", left, flush=True)
    zerg.run(echo, zerg.EngineOptions(listen_fd=fds[0], shutdown_timeout_s=1.0))
''')


def test_systemd_socket_activation() -> None:
    """As systemd starts a socket-activated service: the listening socket at fd 3,
    LISTEN_FDS=1 and LISTEN_PID=the service's pid (the shell's, which execs)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    port = sock.getsockname()[1]
    fd = sock.fileno()
    code = ("LISTEN_PID=$$ LISTEN_FDS=1 exec " + " ".join(
        [sys.executable, "-c", _shell_quote(SERVER), str(Path(__file__).parent)]))
    proc = subprocess.Popen(["sh", "-c", code], stdout=subprocess.PIPE, text=True,
                            preexec_fn=lambda: os.dup2(fd, 3), close_fds=False, cwd=REPO,
                            env={k: v for k, v in os.environ.items()
                                 if not k.startswith("LISTEN_")})
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "fds [3] env left [None, None]"
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(b"activated")
                assert recv_exact(s, 9) == b"activated"
    finally:
        proc.terminate()
        assert proc.wait(15) == 0
        if proc.stdout is not None:
            proc.stdout.close()
        sock.close()


def _shell_quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


def test_workers_share_one_unix_socket(sock_dir: Path) -> None:
    path = sock_dir / "w.sock"
    with serving(echo_handler, unix_path=str(path), workers=2) as srv:
        wait_for(lambda: len(srv.engine.worker_pids()) == 2)
        time.sleep(0.3)                         # the workers' reactors arm their accepts
        for i in range(20):
            with unix_connect(path) as s:
                msg = b"worker round %d" % i
                s.sendall(msg)
                assert recv_exact(s, len(msg)) == msg
    assert not path.exists()


def test_rolling_restart_under_load_loses_no_request() -> None:
    """workers=2 on one shared TCP socket (a bound fd passed in), wrk opening a
    connection per request all along: restart_workers() (SIGHUP) replaces both
    workers one at a time and wrk sees no error of any kind."""
    http = load_example("http")
    own = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    own.bind(("127.0.0.1", 0))
    port = own.getsockname()[1]
    try:
        with serving(http.handle, listen_fd=own.fileno(), workers=2) as srv:
            engine = srv.engine
            wait_for(lambda: len(engine.worker_pids()) == 2, timeout=10)
            before = set(engine.worker_pids())
            wrk = subprocess.Popen(
                ["wrk", "-t1", "-c8", "-d5s", "-H", "Connection: close",
                 f"http://127.0.0.1:{port}/"],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            time.sleep(1.0)
            engine.restart_workers()
            wait_for(lambda: len(engine.worker_pids()) == 2
                     and not before & set(engine.worker_pids()), timeout=20,
                     what="both workers replaced")
            out, _ = wrk.communicate(timeout=60)
            after = set(engine.worker_pids())
    finally:
        own.close()
    assert wrk.returncode == 0, out
    assert "Socket errors" not in out and "Non-2xx" not in out, out
    done = int(out.split(" requests in ")[0].split()[-1])
    assert done > 1000, out
    assert len(after) == 2 and not before & after


SUPERVISOR = textwrap.dedent('''
    import sys
    sys.path.insert(0, sys.argv[1])
    import zerg
    from conftest import echo_handler as echo
    zerg.run(echo, zerg.EngineOptions(unix_path=sys.argv[2], workers=2,
                                      shutdown_timeout_s=1.0))
''')


def _children(pid: int) -> set[int]:
    """The live child processes of ``pid`` (from /proc: no procps needed)."""
    kids = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue                            # exited meanwhile
        if int(fields[1]) == pid and fields[0] != "Z":
            kids.add(int(stat.parent.name))
    return kids


def test_sighup_replaces_the_workers_of_a_supervisor(sock_dir: Path) -> None:
    """SIGHUP to a supervisor (zerg.run in a main thread): every worker is
    replaced, the socket keeps serving; SIGTERM then stops everything."""
    path = sock_dir / "hup.sock"
    proc = subprocess.Popen([sys.executable, "-c", SUPERVISOR, str(Path(__file__).parent),
                             str(path)], cwd=REPO)
    try:
        wait_for(lambda: len(_children(proc.pid)) == 2 and path.exists(), timeout=15,
                 what="two workers")
        before = _children(proc.pid)
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: len(_children(proc.pid)) == 2 and not before & _children(proc.pid),
                 timeout=20, what="both workers replaced")
        with unix_connect(path) as s:
            s.sendall(b"after SIGHUP")
            assert recv_exact(s, 12) == b"after SIGHUP"
    finally:
        proc.terminate()
        assert proc.wait(20) == 0
    assert not path.exists()


def test_the_supervisor_reports_every_workers_stats(sock_dir: Path) -> None:
    path = sock_dir / "stats.sock"
    with serving(echo_handler, unix_path=str(path), workers=2) as srv:
        engine = srv.engine
        wait_for(lambda: {st.worker for st in engine.stats()} == {0, 1}, timeout=10,
                 what="both workers' stats")
        for i in range(10):
            with unix_connect(path) as s:
                s.sendall(b"%d" % i)
                assert recv_exact(s, 1) == b"%d" % i
        wait_for(lambda: sum(st.accepted for st in engine.stats()) == 10
                 and sum(st.closed_by.get("peer_eof", 0) for st in engine.stats()) == 10,
                 timeout=10, what="ten connections counted")
        assert sum(st.bytes_in for st in engine.stats()) == 10
    final = srv.engine.stats()                  # what the workers last reported
    assert {st.worker for st in final} == {0, 1}
    assert sum(st.accepted for st in final) == 10
