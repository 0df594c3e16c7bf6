"""Side-by-side benchmarks of zerg and its peers (issue 5): ``make bench``.

    python benchmarks/run.py                       # full run, <= 10 minutes
    python benchmarks/run.py --quick               # 1 round of 1 s: a smoke test
    python benchmarks/run.py --scenarios E1,E2 --servers uvloop_protocol,zerg_level1
    python benchmarks/run.py --quick --baseline HEAD --scenarios E1 --servers zerg_fast

Method: every server is a small program (``benchmarks/servers/``) pinned to
one CPU, the load generator (``benchmarks/loadgen.c``, built here with gcc) or
wrk pinned to another.  Each scenario runs every server once per round, the
order rotated each round; a fresh server process per measurement, started,
waited for (``ready <port>``), warmed up, measured.  Reported are the medians
over rounds and the ratios of those medians between every pair of servers of
the same run.  Outputs: ``results/latest.{json,md,png}`` (``--quick`` writes
``results/quick.*`` instead), server logs in ``results/raw/``.

Baseline (``--baseline REV``): git revision REV is checked out into a worktree
``/tmp/zerg-baseline-<sha>`` and its native module built there (both kept and
reused for that sha; ``git worktree remove --force <dir>`` drops one).  Every
selected zerg server (``zerg_*``, ``http_zerg``) gets a twin ``<name>@base``:
REV's copy of the same server script (the current one if REV lacks it) with
``import zerg`` resolving to the worktree (see ``baseline.py``; the run stops
if a twin loads zerg from anywhere else).  Twins run in the same rounds and
rotation, right after their originals; the report adds a "baseline comparison"
(current/baseline ratio of the medians, and of user CPU µs per message) and
goes to ``results/baseline.*`` (``results/quick-baseline.*`` with ``--quick``).

Saturation check: the plain C io_uring server is the practical limit of the
machine; if any Python server matches or beats it, the load generator (or the
machine) is the bottleneck and the table says so with a WARNING line.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import baseline as bl

HERE: Final = Path(__file__).resolve().parent
ROOT: Final = HERE.parent
SERVERS_DIR: Final = HERE / "servers"
BIN: Final = HERE / "bin"
LIBURING_A: Final = Path("/usr/lib/x86_64-linux-gnu/liburing.a")
HOST: Final = "127.0.0.1"
READY_TIMEOUT: Final = 30.0
NOISY: Final = 0.25         # other processes' CPUs (of the pinned two) that make a run noisy
STOP_TIMEOUT: Final = 5.0

Kind = Literal["echo", "http", "idle", "resp", "proxy"]
Json = dict[str, Any]


# ---------------------------------------------------------------- the registry


@dataclass(frozen=True)
class Server:
    """A benchmark server: ``argv`` gets ``--host H --port 0`` appended and must
    print ``ready <port>`` (examples/http.py prints its URL instead)."""

    name: str
    label: str
    protocol: Literal["echo", "http", "resp", "proxy"]
    argv: tuple[str, ...]
    c_source: Path | None = None        # built into bin/ first
    probe: str | None = None            # Python code that must exit 0, else skip
    skip_note: str = ""
    not_in: tuple[tuple[str, str], ...] = ()    # (scenario, why) pairs it sits out
    tree: Path | None = None            # zerg from this worktree (an @base twin), not ROOT
    tls: bool = False                   # serves HTTPS: only in the scenarios with tls=True

    @property
    def zerg(self) -> bool:
        return self.name.startswith(("zerg_", "http_zerg", "resp_zerg", "proxy_zerg"))


def _py(script: Path) -> tuple[str, ...]:
    return (sys.executable, str(script))


def _py_reference(script: Path) -> tuple[str, ...]:
    """``script`` on zerg's pure-Python reference (``env`` execs: the pid is Python's)."""
    return ("env", "ZERG_NO_EXTENSIONS=1", sys.executable, str(script))


_REF = " [Python reference]"
_ONLY_THROUGHPUT: Final = (("C1", "a row for throughput only"),)


SERVERS: Final[tuple[Server, ...]] = (
    Server("asyncio_streams", "asyncio streams", "echo", _py(SERVERS_DIR / "asyncio_streams.py")),
    Server("asyncio_protocol", "asyncio Protocol", "echo",
           _py(SERVERS_DIR / "asyncio_protocol.py")),
    Server("asyncio_buffered", "asyncio BufferedProtocol", "echo",
           _py(SERVERS_DIR / "asyncio_buffered.py")),
    Server("uvloop_streams", "uvloop streams", "echo", _py(SERVERS_DIR / "uvloop_streams.py")),
    Server("uvloop_protocol", "uvloop Protocol", "echo", _py(SERVERS_DIR / "uvloop_protocol.py")),
    Server("c_uring", "C liburing (reference)", "echo", (str(BIN / "c_uring_echo"),),
           c_source=SERVERS_DIR / "c_uring_echo.c"),
    Server("zerg_level1", "zerg level 1 (ring items)", "echo",
           _py(SERVERS_DIR / "zerg_level1.py")),
    Server("zerg_level2", "zerg level 2 (BufferSequence)", "echo",
           _py(SERVERS_DIR / "zerg_level2.py")),
    Server("zerg_pipereader", "zerg PipeReader", "echo", _py(SERVERS_DIR / "zerg_pipereader.py")),
    # ---- The same servers on the pure-Python reference (ZERG_NO_EXTENSIONS=1):
    # ---- what the C extension buys at each level.
    Server("zerg_level1_py", "zerg level 1" + _REF, "echo",
           _py_reference(SERVERS_DIR / "zerg_level1.py"), not_in=_ONLY_THROUGHPUT),
    Server("zerg_level2_py", "zerg level 2" + _REF, "echo",
           _py_reference(SERVERS_DIR / "zerg_level2.py"), not_in=_ONLY_THROUGHPUT),
    Server("zerg_pipereader_py", "zerg PipeReader" + _REF, "echo",
           _py_reference(SERVERS_DIR / "zerg_pipereader.py"), not_in=_ONLY_THROUGHPUT),
    Server("zerg_stream", "zerg ConnectionStream (threads)", "echo",
           _py(SERVERS_DIR / "zerg_stream.py"),
           probe="import zerg.adapters; zerg.adapters.ConnectionStream",
           skip_note="zerg.adapters.ConnectionStream does not exist yet",
           not_in=(("C1", "a thread per connection: 10,000 connections would need 10,000 "
                          "worker threads (zerg allows 4096)"),)),
    # ---- SLOT: zerg's fast path (issue 5).  Skipped until zerg.Protocol exists;
    # ---- benchmarks/servers/zerg_fast.py must then be matched to its final API.
    Server("zerg_fast", "zerg fast path (zerg.Protocol)", "echo",
           _py(SERVERS_DIR / "zerg_fast.py"),
           probe="import zerg; zerg.Protocol",
           skip_note="zerg.Protocol (the fast path) does not exist yet"),
    Server("zerg_fast_py", "zerg fast path" + _REF, "echo",
           _py_reference(SERVERS_DIR / "zerg_fast.py"), not_in=_ONLY_THROUGHPUT),
    Server("zerg_fast_sqpoll", "zerg fast path, SQPOLL", "echo",
           _py(SERVERS_DIR / "zerg_fast_sqpoll.py"), probe="import zerg; zerg.Protocol",
           skip_note="zerg.Protocol does not exist yet",
           not_in=(("C1", "a row for throughput only"),)),
    Server("zerg_fast_workers2", "zerg fast path, workers=2", "echo",
           _py(SERVERS_DIR / "zerg_fast_workers2.py"), probe="import zerg; zerg.Protocol",
           skip_note="zerg.Protocol does not exist yet",
           not_in=(("C1", "RSS of the supervisor only; workers are separate processes"),)),
    # ---- HTTP/1.1 (H1): the same parser (examples/http.py) on both transports.
    Server("http_zerg", "zerg examples/http.py", "http", _py(ROOT / "examples" / "http.py")),
    Server("http_zerg_py", "zerg examples/http.py" + _REF, "http",
           _py_reference(ROOT / "examples" / "http.py")),
    # The same example with its async handler over PipeReader instead of its Protocol.
    Server("http_zerg_pipereader", "zerg examples/http.py --pipereader", "http",
           (*_py(ROOT / "examples" / "http.py"), "--pipereader")),
    Server("http_uvloop", "uvloop Protocol, same parser", "http",
           _py(SERVERS_DIR / "http_uvloop.py")),
    # ---- HTTP/1.1 over TLS (T1): the same two, with the stdlib's ssl and one certificate recipe.
    Server("http_zerg_tls", "zerg examples/http.py, EngineOptions.ssl", "http",
           _py(SERVERS_DIR / "http_zerg_tls.py"), probe="import trustme",
           skip_note="trustme not installed (pip install -e '.[dev]')", tls=True),
    Server("http_uvloop_tls", "uvloop Protocol + ssl, same parser", "http",
           _py(SERVERS_DIR / "http_uvloop_tls.py"), probe="import trustme",
           skip_note="trustme not installed (pip install -e '.[dev]')", tls=True),
    # ---- HTTP servers a user would pick instead (installed by the [bench] extra).
    Server("http_uvicorn", "uvicorn + uvloop + httptools (ASGI)", "http",
           _py(SERVERS_DIR / "http_uvicorn.py"), probe="import uvicorn, httptools, uvloop",
           skip_note="uvicorn/httptools not installed (pip install -e '.[bench]')"),
    Server("http_granian", "granian RSGI, 1 runtime thread", "http",
           _py(SERVERS_DIR / "http_granian.py"), probe="import granian.server.embed",
           skip_note="granian not installed (pip install -e '.[bench]')"),
    # ---- RESP (Redis protocol): examples/resp.py beside redis-server itself.
    Server("resp_zerg", "zerg examples/resp.py", "resp", _py(ROOT / "examples" / "resp.py")),
    Server("resp_zerg_py", "zerg examples/resp.py" + _REF, "resp",
           _py_reference(ROOT / "examples" / "resp.py")),
    Server("resp_redis", "redis-server (C, one thread)", "resp",
           _py(SERVERS_DIR / "resp_redis.py"), probe="import shutil, sys; "
           "sys.exit(shutil.which('redis-server') is None)",
           skip_note="redis-server not installed (apt install redis-server)"),
    # ---- TCP proxies (P1): each starts its own upstream, the C echo server, pinned
    # ---- away from the proxy (benchmarks/servers/_upstream.py).
    Server("proxy_zerg", "zerg examples/proxy.py (forward, zerg.connect)", "proxy",
           _py(SERVERS_DIR / "proxy_zerg.py")),
    Server("proxy_zerg_py", "zerg examples/proxy.py" + _REF, "proxy",
           _py_reference(SERVERS_DIR / "proxy_zerg.py")),
    Server("proxy_uvloop", "uvloop Protocol proxy, same structure", "proxy",
           _py(SERVERS_DIR / "proxy_uvloop.py")),
    Server("proxy_haproxy", "haproxy (TCP mode, one thread)", "proxy",
           _py(SERVERS_DIR / "proxy_haproxy.py"), probe="import shutil, sys; "
           "sys.exit(shutil.which('haproxy') is None)",
           skip_note="haproxy not installed (apt install haproxy)"),
)
BY_NAME: Final[dict[str, Server]] = {s.name: s for s in SERVERS}     # + the @base twins


def twin(server: Server, base: bl.Baseline) -> tuple[Server, Path]:
    """``server``'s @base twin, registered in BY_NAME, and the script it runs:
    the baseline's copy of the server's script, or the current one if it has none."""
    at = max(i for i, arg in enumerate(server.argv) if arg.endswith(".py"))
    script, options = Path(server.argv[at]), server.argv[at + 1:]   # e.g. --pipereader
    script_then = base.tree / script.relative_to(ROOT)
    if script_then.exists():
        script = script_then
    argv = (*bl.boot_argv(sys.executable, base.tree, str(script)), *options)
    if server.argv[0] == "env":         # keep the environment (the Python-reference rows)
        argv = (*server.argv[:server.argv.index(sys.executable)], *argv)
    tw = Server(server.name + bl.SUFFIX, f"{server.label} [base {base.short}]", server.protocol,
                argv, probe=server.probe,
                skip_note=server.skip_note, not_in=server.not_in, tree=base.tree, tls=server.tls)
    BY_NAME[tw.name] = tw
    return tw, script


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: Kind
    title: str
    conns: int
    depth: int = 1
    size: int = 64
    baseline: str = "uvloop_protocol"   # "ratio to uvloop Protocol"
    reference: str | None = "c_uring"   # "ratio to C server"; must win (saturation check)
    tls: bool = False                   # wrk over https://, against the tls=True servers


SCENARIOS: Final[tuple[Scenario, ...]] = (
    Scenario("E1", "echo", "echo 64 B, 100 connections, depth 1", 100, 1, 64),
    Scenario("E2", "echo", "echo 64 B, 100 connections, depth 16", 100, 16, 64),
    Scenario("E3", "echo", "echo 16 KiB, 50 connections, depth 1", 50, 1, 16384),
    Scenario("H1", "http", "HTTP/1.1 plaintext (wrk), 100 connections, pipelined 16",
             100, 16, 0, baseline="http_uvloop", reference=None),
    Scenario("H2", "http", "HTTP/1.1 plaintext (wrk), 100 connections, no pipelining",
             100, 1, 0, baseline="http_uvloop", reference=None),
    Scenario("T1", "http", "HTTP/1.1 over TLS (wrk, https://), 100 connections, no pipelining",
             100, 1, 0, baseline="http_uvloop_tls", reference=None, tls=True),
    Scenario("R1", "resp", "RESP GET+SET (redis-benchmark), 50 connections, pipelined 16",
             50, 16, 3, baseline="resp_redis", reference=None),
    Scenario("R2", "resp", "RESP GET+SET (redis-benchmark), 50 connections, no pipelining",
             50, 1, 3, baseline="resp_redis", reference=None),
    Scenario("P1", "proxy", "TCP proxy: echo 64 B through it to the C echo server, "
             "100 connections, depth 16", 100, 16, 64, baseline="proxy_uvloop", reference=None),
    Scenario("C1", "idle", "10,000 idle connections: server RSS per connection",
             10_000, 1, 64),
)
BY_SCENARIO: Final = {s.name: s for s in SCENARIOS}

# The metric each kind is ranked by, and whether more is better.
METRIC: Final[dict[Kind, tuple[str, bool]]] = {
    "echo": ("msgs_per_s", True),
    "http": ("msgs_per_s", True),
    "resp": ("msgs_per_s", True),
    "proxy": ("msgs_per_s", True),
    "idle": ("rss_per_conn_bytes", False),
}


def servers_for(sc: Scenario) -> list[Server]:
    """The scenario's servers, each @base twin right after its original."""
    proto = sc.kind if sc.kind in ("http", "resp", "proxy") else "echo"
    twins = (BY_NAME.get(s.name + bl.SUFFIX) for s in SERVERS)
    return [x for s, t in zip(SERVERS, twins, strict=True)
            if s.protocol == proto and s.tls == sc.tls for x in (s, t) if x is not None]


# ---------------------------------------------------------------- processes


@dataclass
class Settings:
    rounds: int
    duration: float
    warmup: float
    verify: bool
    server_cpu: str | None
    client_cpu: str | None
    raw_dir: Path
    env: dict[str, str]
    base: bl.Baseline | None = None
    live: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def env_for(self, server: Server) -> dict[str, str]:
        if server.tree is None:
            return self.env
        assert self.base is not None and server.tree == self.base.tree
        return self.base.env(self.env, ROOT)


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _pinned(cpu: str | None, argv: Sequence[str]) -> list[str]:
    """``argv`` pinned to ``cpu``; taskset execs, so the pid started is ``argv``'s."""
    return ["taskset", "-c", cpu, *argv] if cpu is not None else list(argv)


def _cpu_ticks(pid: int) -> tuple[int, int] | None:
    """utime, stime of a process (all its threads), in clock ticks."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[11]), int(fields[12])


def _tail(path: Path, lines: int = 12) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


_READY: Final = re.compile(r"^ready (\d+)\s*$|listening on \S*?:(\d+)/?\s*$", re.M)
_LOG_TROUBLE: Final = re.compile(r"Traceback|ERROR|Exception|Error:|CRITICAL")
_EXC_LINE: Final = re.compile(r"^[\w.]+(Error|Exception|Exit)\b.*")


class RunningServer:
    """One server process; ``stop()`` always kills what ``__init__`` started."""

    def __init__(self, server: Server, st: Settings, tag: str) -> None:
        self.server = server
        self.st = st
        self.out = st.raw_dir / f"{tag}.out"
        self.err = st.raw_dir / f"{tag}.err"
        argv = _pinned(st.server_cpu, [*server.argv, "--host", HOST, "--port", "0"])
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                         env=st.env_for(server), preexec_fn=_raise_nofile,
                                         cwd=server.tree or ROOT)
        st.live.append(self.proc)
        self.port = 0

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            m = _READY.search(self.out.read_text(errors="replace"))
            if m:
                self.port = int(m.group(1) or m.group(2))
                return
            if self.proc.poll() is not None:
                err = _tail(self.err, 6)
                if bl.WRONG_TREE in err:
                    raise bl.WrongTree(f"{self.server.name}: {err}")
                raise RuntimeError(f"exited with {self.proc.returncode} before ready: {err}")
            time.sleep(0.02)
        raise RuntimeError(f"no ready line within {READY_TIMEOUT:.0f} s")

    def stop(self) -> list[str]:
        """Stop the server; return notes about anything abnormal."""
        notes: list[str] = []
        proc = self.proc
        if proc.poll() is not None:
            notes.append(f"server exited by itself with code {proc.returncode}")
        else:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                notes.append(f"server ignored SIGTERM for {STOP_TIMEOUT:.0f} s; killed")
                proc.kill()
                proc.wait()
        if proc in self.st.live:
            self.st.live.remove(proc)
        log = self.err.read_text(errors="replace") if self.err.exists() else ""
        if _LOG_TROUBLE.search(log):
            lines = log.splitlines()
            raised = [ln for ln in lines if _EXC_LINE.match(ln)]
            first = raised[0] if raised else next(ln for ln in lines if _LOG_TROUBLE.search(ln))
            count = log.count("Traceback")
            notes.append(f"server log ({self.err.name}, {count} traceback(s)): "
                         f"{first.strip()[:200]}")
        return notes


def _run_json(argv: list[str], timeout: float) -> Json:
    res = subprocess.run(argv, capture_output=True, timeout=timeout, check=False, cwd=ROOT)
    text = res.stdout.decode(errors="replace").strip()
    try:
        data: Json = json.loads(text.splitlines()[-1])
    except (IndexError, json.JSONDecodeError) as exc:
        raise RuntimeError(f"loadgen exit {res.returncode}: {text[-300:]!r} "
                           f"{res.stderr.decode(errors='replace')[-300:]!r}") from exc
    if "error" in data:
        raise RuntimeError(f"loadgen: {data['error']}")
    return data


# ---------------------------------------------------------------- measurements


def measure_echo(sc: Scenario, srv: RunningServer, st: Settings) -> Json:
    argv = _pinned(st.client_cpu, [
        str(BIN / "loadgen"), "--host", HOST, "--port", str(srv.port),
        "--conns", str(sc.conns), "--depth", str(sc.depth), "--size", str(sc.size),
        "--duration", str(st.duration), "--warmup", str(st.warmup),
        "--server-pid", str(srv.pid), *(["--verify"] if st.verify else []),
    ])
    data = _run_json(argv, st.duration + st.warmup + 60)
    data["errors"] = int(data["errors"]) + int(data.get("verify_errors", 0))
    return data


def measure_idle(sc: Scenario, srv: RunningServer, st: Settings) -> Json:
    argv = _pinned(st.client_cpu, [
        str(BIN / "loadgen"), "--idle", "--host", HOST, "--port", str(srv.port),
        "--conns", str(sc.conns), "--size", str(sc.size), "--warmup", str(st.warmup),
        "--server-pid", str(srv.pid),
    ])
    return _run_json(argv, 180)


_WRK_REQS: Final = re.compile(r"(\d+) requests in ([\d.]+)(\w+),\s*([\d.]+)(\w+) read")
_WRK_SOCK: Final = re.compile(
    r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_WRK_NON2XX: Final = re.compile(r"Non-2xx or 3xx responses: (\d+)")
_UNITS: Final = {"B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40,
                 "us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def _wrk(sc: Scenario, port: int, seconds: int, st: Settings) -> str:
    argv = _pinned(st.client_cpu, [
        "wrk", "-t1", f"-c{sc.conns}", f"-d{seconds}s", "-s", str(HERE / "pipeline.lua"),
        f"{'https' if sc.tls else 'http'}://{HOST}:{port}/plaintext", "--", str(sc.depth),
    ])
    res = subprocess.run(argv, capture_output=True, timeout=seconds + 60, check=False, cwd=ROOT)
    out = res.stdout.decode(errors="replace")
    if res.returncode != 0 or not _WRK_REQS.search(out):
        raise RuntimeError(f"wrk exit {res.returncode}: {out[-300:]!r} "
                           f"{res.stderr.decode(errors='replace')[-300:]!r}")
    return out


def _server_cpu(c0: tuple[int, int] | None, c1: tuple[int, int] | None, seconds: float,
                msgs: int) -> Json:
    """The server's CPU over a measurement (ticks before/after), per message; {} when
    /proc could not tell."""
    if c0 is None or c1 is None:
        return {}
    tck = os.sysconf("SC_CLK_TCK")
    user, sys_ = (c1[0] - c0[0]) / tck, (c1[1] - c0[1]) / tck
    n = max(msgs, 1)
    return {
        "server_cpu_user_s": user, "server_cpu_sys_s": sys_,
        "server_cpu_util": (user + sys_) / seconds,
        "cpu_us_per_msg": {"user": user * 1e6 / n, "sys": sys_ * 1e6 / n,
                           "total": (user + sys_) * 1e6 / n},
    }


def measure_http(sc: Scenario, srv: RunningServer, st: Settings) -> Json:
    seconds = max(1, round(st.duration))
    _wrk(sc, srv.port, max(1, round(st.warmup)), st)        # warm-up, not counted
    t0, c0 = time.monotonic(), _cpu_ticks(srv.pid)
    out = _wrk(sc, srv.port, seconds, st)
    t1, c1 = time.monotonic(), _cpu_ticks(srv.pid)
    m = _WRK_REQS.search(out)
    assert m is not None
    reqs = int(m.group(1))
    secs = float(m.group(2)) * _UNITS.get(m.group(3), 1.0)
    read_bytes = float(m.group(4)) * _UNITS.get(m.group(5), 1)
    sock = _WRK_SOCK.search(out)
    non2xx = _WRK_NON2XX.search(out)
    errors = sum(int(x) for x in sock.groups()) if sock else 0
    errors += int(non2xx.group(1)) if non2xx else 0
    data: Json = {
        "mode": "http", "conns": sc.conns, "pipeline": sc.depth, "duration_s": secs,
        "msgs": reqs, "msgs_per_s": reqs / secs, "mb_per_s": read_bytes / secs / 1e6,
        "errors": errors, "wrk_output": out,
    }
    data.update(_server_cpu(c0, c1, t1 - t0, reqs))
    return data


_RB_CSV: Final = re.compile(r'^"(\w+)","([\d.]+)"', re.M)


def _redis_benchmark(sc: Scenario, port: int, requests: int, st: Settings) -> dict[str, float]:
    """One redis-benchmark run of GET and SET; requests/s of each test."""
    argv = _pinned(st.client_cpu, [
        "redis-benchmark", "-h", HOST, "-p", str(port), "-t", "get,set", "-c", str(sc.conns),
        "-P", str(sc.depth), "-d", str(sc.size), "-n", str(requests), "--csv",
    ])
    res = subprocess.run(argv, capture_output=True, timeout=300, check=False, cwd=ROOT)
    out = res.stdout.decode(errors="replace")
    rps = {m.group(1).lower(): float(m.group(2)) for m in _RB_CSV.finditer(out)}
    if res.returncode != 0 or set(rps) != {"get", "set"}:
        raise RuntimeError(f"redis-benchmark exit {res.returncode}: {out[-300:]!r} "
                           f"{res.stderr.decode(errors='replace')[-300:]!r}")
    return rps


def measure_resp(sc: Scenario, srv: RunningServer, st: Settings) -> Json:
    """redis-benchmark has no duration option: a warm-up run sizes the measured one."""
    warm = _redis_benchmark(sc, srv.port, 20_000, st)
    per_test = max(10_000, int(min(warm.values()) * st.duration / 2))
    t0, c0 = time.monotonic(), _cpu_ticks(srv.pid)
    rps = _redis_benchmark(sc, srv.port, per_test, st)
    t1, c1 = time.monotonic(), _cpu_ticks(srv.pid)
    reqs = 2 * per_test
    busy = sum(per_test / r for r in rps.values())      # seconds spent in the two tests
    data: Json = {
        "mode": "resp", "conns": sc.conns, "pipeline": sc.depth, "duration_s": busy,
        "msgs": reqs, "msgs_per_s": reqs / busy, "get_per_s": rps["get"],
        "set_per_s": rps["set"], "errors": 0,
    }
    data.update(_server_cpu(c0, c1, t1 - t0, reqs))
    return data


MEASURE: Final[dict[Kind, Callable[[Scenario, RunningServer, Settings], Json]]] = {
    "echo": measure_echo, "http": measure_http, "idle": measure_idle, "resp": measure_resp,
    "proxy": measure_echo,     # the echo load, through the proxy to its echo upstream
}


class CpuWatch:
    """How much CPU the rest of the machine took while one measurement ran.

    Busy time of the pinned CPUs (all CPUs when unpinned) from /proc/stat,
    minus the server's own time and the load generator's (children rusage),
    per wall second: ``other_cpu`` is in CPUs (0.3 = 30% of one CPU).  Other
    engineers' test runs show up here; steal time is reported apart.
    """

    def __init__(self, cpus: set[int] | None, pid: int) -> None:
        self.cpus = cpus
        self.pid = pid
        self.t0 = time.monotonic()
        self.busy0, self.steal0 = self._stat()
        self.srv0 = _cpu_ticks(pid)
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.kids0 = ru.ru_utime + ru.ru_stime

    def _stat(self) -> tuple[int, int]:
        busy = steal = 0
        for line in Path("/proc/stat").read_text().splitlines():
            name, *vals = line.split()
            if not name.startswith("cpu") or name == "cpu":
                continue
            if self.cpus is not None and int(name[3:]) not in self.cpus:
                continue
            v = [int(x) for x in vals]
            busy += v[0] + v[1] + v[2] + v[5] + v[6]    # user nice system irq softirq
            steal += v[7] if len(v) > 7 else 0
        return busy, steal

    def done(self) -> Json:
        wall = time.monotonic() - self.t0
        busy1, steal1 = self._stat()
        srv1 = _cpu_ticks(self.pid)
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        tck = os.sysconf("SC_CLK_TCK")
        srv = (sum(srv1) - sum(self.srv0)) / tck if srv1 and self.srv0 else 0.0
        kids = ru.ru_utime + ru.ru_stime - self.kids0
        other = (busy1 - self.busy0) / tck - srv - kids
        return {"other_cpu": max(other, 0.0) / wall,
                "steal_cpu": (steal1 - self.steal0) / tck / wall}


def _pinned_cpus(st: Settings) -> set[int] | None:
    if st.server_cpu is None or st.client_cpu is None:
        return None
    return {int(st.server_cpu), int(st.client_cpu)}


def _fits(started: float, t_one: float, done: int, total: int, deadline: float) -> bool:
    """Whether one more attempt (as long as the last) still leaves time for the
    rest of the plan (at the average pace so far) before ``deadline``."""
    now = time.monotonic()
    pace = (t_one - started) / done if done else now - t_one
    return now + (now - t_one) + (total - done - 1) * pace < deadline


def _noise(result: Json) -> float:
    noise = result.get("noise")
    return float(noise["other_cpu"]) if isinstance(noise, dict) else 0.0


def run_one(sc: Scenario, server: Server, rnd: int, st: Settings) -> Json:
    tag = f"{sc.name}-{server.name}-r{rnd}"
    result: Json = {"server": server.name, "round": rnd, "ok": False, "notes": []}
    srv = RunningServer(server, st, tag)
    try:
        srv.wait_ready()
        if server.zerg:
            _check_zerg(server, srv, result)
        watch = CpuWatch(_pinned_cpus(st), srv.pid)
        data = MEASURE[sc.kind](sc, srv, st)
        data["noise"] = watch.done()
        result.update(data)
        result["ok"] = True
        if data.get("errors"):
            result["notes"].append(f"{data['errors']} errors")
    except bl.WrongTree:            # a twin measuring the current tree must end it
        raise
    except Exception as exc:        # one failed server must not end the run
        result["error"] = str(exc)
        result["notes"].append(f"failed: {exc}")
    finally:
        result["notes"].extend(srv.stop())
    return result


def _check_zerg(server: Server, srv: RunningServer, result: Json) -> None:
    """Record which zerg the server process loaded; a twin must have its worktree's."""
    result["zerg_so"] = bl.native_module(srv.pid)
    if server.tree is None:
        if result["zerg_so"] is not None and not bl.inside(result["zerg_so"], ROOT):
            result["notes"].append(f"zerg not from {ROOT}: {result['zerg_so']}")
        return
    result["zerg_file"] = bl.imported_from(srv.out.read_text(errors="replace"))
    for what in ("zerg_file", "zerg_so"):
        if not bl.inside(result[what], server.tree):
            raise bl.WrongTree(f"{server.name} (pid {srv.pid}) loaded {what} "
                               f"{result[what]}, not from {server.tree}")


# ---------------------------------------------------------------- set-up


def build(source: Path, target: Path) -> None:
    if target.exists() and target.stat().st_mtime >= source.stat().st_mtime:
        return
    BIN.mkdir(exist_ok=True)
    cmd = ["gcc", "-O2", "-Wall", "-o", str(target), str(source), str(LIBURING_A)]
    print("build:", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def available(server: Server, env: dict[str, str]) -> str | None:
    """None if the server can run, else why it is skipped."""
    if server.probe is not None:
        res = subprocess.run([sys.executable, "-c", server.probe], env=env, cwd=ROOT,
                             capture_output=True, timeout=60, check=False)
        if res.returncode != 0:
            return _why(server, res.stderr.decode(errors="replace").strip())
    return None


def _why(server: Server, err: str) -> str:
    """Why a probe failed: the server's note, with the error's last line, which tells
    a missing API from a tree that does not import at all."""
    last = err.splitlines()[-1][:160] if err else ""
    return f"{server.skip_note} ({last})" if server.skip_note else err[-200:]


def available_twin(server: Server, st: Settings) -> tuple[str | None, str | None]:
    """(why it is skipped or None, zerg.__file__) for an @base twin: its probe, run
    the way the twin runs (``baseline.BOOT``, zerg from the worktree, checked)."""
    assert server.tree is not None
    argv = bl.boot_argv(sys.executable, server.tree, "-c", server.probe or "pass")
    res = subprocess.run(argv, env=st.env_for(server), cwd=server.tree, capture_output=True,
                         timeout=60, check=False)
    err = res.stderr.decode(errors="replace").strip()
    zerg_file = bl.imported_from(res.stdout.decode(errors="replace"))
    if bl.WRONG_TREE in err or (zerg_file is not None and not bl.inside(zerg_file, server.tree)):
        raise bl.WrongTree(f"{server.name}: zerg {zerg_file} is not from {server.tree}: {err}")
    if res.returncode != 0:
        return f"baseline: {_why(server, err)}", zerg_file
    return None, zerg_file


def machine_info(argv: list[str]) -> Json:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass

    def _cmd(*args: str) -> str:
        try:
            res = subprocess.run(args, capture_output=True, timeout=10, check=False, cwd=ROOT)
            return (res.stdout or res.stderr).decode(errors="replace").strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "unknown"

    def _lines(*args: str) -> list[str]:
        try:
            res = subprocess.run(args, capture_output=True, timeout=10, check=False, cwd=ROOT)
            return res.stdout.decode(errors="replace").split("\n")[:-1]
        except (OSError, subprocess.TimeoutExpired):
            return []

    try:
        from importlib.metadata import version
        uv = version("uvloop")
    except ImportError:
        uv = "not installed"
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "kernel": platform.release(),
        "cpu_model": cpu,
        "nproc": os.cpu_count(),
        "python": sys.version.split()[0],
        "python_full": sys.version,
        "uvloop": uv,
        "wrk": _cmd("wrk", "--version"),
        "gcc": _cmd("gcc", "--version"),
        "git_commit": _cmd("git", "rev-parse", "HEAD"),
        "git_modified": _lines("git", "status", "--porcelain", "--untracked-files=no"),
        "command": " ".join(["python", "benchmarks/run.py", *argv]),
        "loadavg_start": Path("/proc/loadavg").read_text().strip(),
    }


# ---------------------------------------------------------------- statistics


def _flatten(d: Json) -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in d.items():
        if isinstance(v, bool) or k in ("round",):
            continue
        if isinstance(v, (int, float)):
            out[k] = float(v)
        elif isinstance(v, dict):
            for k2, v2 in v.items():
                if isinstance(v2, (int, float)) and not isinstance(v2, bool):
                    out[f"{k}_{k2}"] = float(v2)
    return out


def summarize(sc: Scenario, rounds: list[Json], names: list[str]) -> Json:
    metric, higher = METRIC[sc.kind]
    medians: dict[str, dict[str, float]] = {}
    failures: dict[str, list[str]] = {}
    for name in names:
        runs = [r["results"][name] for r in rounds if name in r["results"]]
        good = [_flatten(x) for x in runs if x.get("ok")]
        notes = sorted({n for x in runs for n in x.get("notes", [])})
        if notes:
            failures[name] = notes
        if good:
            keys = set.intersection(*(set(g) for g in good))
            medians[name] = {k: statistics.median(g[k] for g in good) for k in sorted(keys)}
            medians[name]["rounds_ok"] = float(len(good))
    ratios: dict[str, dict[str, float]] = {}
    per_round: dict[str, dict[str, float]] = {}
    for a in medians:
        ratios[a] = {}
        per_round[a] = {}
        for b in medians:
            if b == a or not medians[b].get(metric):
                continue
            ratios[a][b] = medians[a][metric] / medians[b][metric]
            rs = [r["results"][a][metric] / r["results"][b][metric] for r in rounds
                  if r["results"].get(a, {}).get("ok") and r["results"].get(b, {}).get("ok")
                  and r["results"][b].get(metric)]
            if rs:
                per_round[a][b] = statistics.median(rs)
    warnings: list[str] = []
    ref = sc.reference
    if ref is not None and ref in medians:
        refv = medians[ref][metric]
        for name, med in medians.items():
            if name == ref:
                continue
            beaten = med[metric] >= refv if higher else med[metric] <= refv
            if beaten:
                warnings.append(
                    f"WARNING: {name} {'>=' if higher else '<='} the C server on {metric} "
                    f"({med[metric]:,.1f} vs {refv:,.1f}): the instrument is saturated or the "
                    f"machine too noisy; {sc.name}'s numbers mean nothing")
    elif ref is not None and ref in names:
        warnings.append(f"WARNING: the C reference server has no result in {sc.name}; "
                        "saturation could not be checked")
    for name, med in medians.items():
        lg, srv = med.get("loadgen_cpu_util", 0.0), med.get("server_cpu_util", 1.0)
        if lg > 0.9 and srv < 0.85:
            warnings.append(f"WARNING: against {name} the load generator was busy ({lg:.0%} of "
                            f"its CPU) while the server was not ({srv:.0%}): the load generator "
                            "is the bottleneck")
    noisy = {n: m["noise_other_cpu"] for n, m in medians.items()
             if m.get("noise_other_cpu", 0.0) > NOISY}
    if noisy and sc.kind != "idle":                 # RSS does not care about CPU noise
        warnings.append(f"WARNING: noisy: other processes took more than {NOISY} of the two "
                        "pinned CPUs (median) while measuring " +
                        ", ".join(f"{n} ({v:.2f})" for n, v in noisy.items()))
    for name, notes in failures.items():
        if any(n.startswith(("failed", "server exited", "server ignored")) for n in notes):
            warnings.append(f"WARNING: {name}: " + "; ".join(notes))
    return {"metric": metric, "higher_is_better": higher, "medians": medians,
            "ratios": ratios, "ratios_per_round_median": per_round, "notes": failures,
            "warnings": warnings}


# ---------------------------------------------------------------- report


def _fmt(v: float | None, spec: str = ",.0f") -> str:
    return "—" if v is None else format(v, spec)


def table(sc: Scenario, summary: Json, names: list[str], skipped: dict[str, str]) -> str:
    med: dict[str, dict[str, float]] = summary["medians"]
    ratios: dict[str, dict[str, float]] = summary["ratios"]
    base = BY_NAME[sc.baseline].label
    lines = [f"### {sc.name}: {sc.title}", ""]
    if sc.kind == "idle":
        lines += [f"| server | RSS before (MiB) | RSS after (MiB) | bytes / connection | "
                  f"vs {base} | vs C server | errors |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    else:
        unit = "req" if sc.kind in ("http", "resp") else "msg"
        lines += [f"| server | {unit}s/s | MB/s | p50 µs | p99 µs | CPU µs/{unit} (user+sys) | "
                  f"vs {base} | vs C server | server CPU | other load | errors |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    order = sorted((n for n in names if n in med), key=lambda n: -med[n][summary["metric"]]
                   if summary["higher_is_better"] else med[n][summary["metric"]])
    for name in order:
        m = med[name]
        rb = ratios.get(name, {}).get(sc.baseline, 1.0 if name == sc.baseline else None)
        rr = (ratios.get(name, {}).get(sc.reference, 1.0 if name == sc.reference else None)
              if sc.reference else None)
        label = f"`{name}` {BY_NAME[name].label}"
        errs = _fmt(m.get("errors"))
        other = _fmt(m.get("noise_other_cpu"), ".2f")
        if sc.kind == "idle":
            lines.append(f"| {label} | {_fmt(m.get('rss_before_kb', 0) / 1024, '.1f')} | "
                         f"{_fmt(m.get('rss_after_kb', 0) / 1024, '.1f')} | "
                         f"{_fmt(m.get('rss_per_conn_bytes'))} | {_fmt(rb, '.2f')}x | "
                         f"{_fmt(rr, '.2f')}{'x' if rr is not None else ''} | {errs} |")
        else:
            cpu = (f"{m['cpu_us_per_msg_total']:.2f} ({m['cpu_us_per_msg_user']:.2f}+"
                   f"{m['cpu_us_per_msg_sys']:.2f})" if "cpu_us_per_msg_total" in m else "—")
            p50 = None if sc.kind in ("http", "resp") else m.get("p50_us")
            p99 = None if sc.kind in ("http", "resp") else m.get("p99_us")
            lines.append(f"| {label} | {_fmt(m.get('msgs_per_s'))} | "
                         f"{_fmt(m.get('mb_per_s'), '.1f')} | {_fmt(p50)} | {_fmt(p99)} | {cpu} | "
                         f"{_fmt(rb, '.2f')}{'x' if rb is not None else ''} | "
                         f"{_fmt(rr, '.2f')}{'x' if rr is not None else ''} | "
                         f"{_fmt(m.get('server_cpu_util'), '.0%')} | {other} | {errs} |")
    for name in names:
        if name in skipped:
            lines.append(f"| `{name}` {BY_NAME[name].label} | skipped: {skipped[name]} |")
        elif name not in med:
            why = " ".join("; ".join(summary["notes"].get(name, ["no result"])).split())
            lines.append(f"| `{name}` {BY_NAME[name].label} | failed: {why[:160]} |")
    lines.append("")
    if sc.kind == "http":
        lines.append("Latency: not reported (wrk's latency under pipelining is per batch and "
                     "unreliable; throughput and CPU per request are the measures of both "
                     "HTTP scenarios). No C peer: the C server speaks only echo.")
    if sc.kind == "resp":
        lines.append("redis-benchmark runs GET, then SET (3-byte values), the same number of "
                     "each; req/s is both over the time of both. No latency: redis-benchmark's "
                     "is per pipelined batch.")
    if sc.kind == "idle":
        lines.append("Lower is better: ratios are this server's bytes per connection over the "
                     "peer's. Each connection did one 64 B echo round trip, then stayed idle.")
    for w in summary["warnings"]:
        lines.append(f"**{' '.join(w.split())}**  ")
    for name, notes in summary["notes"].items():
        rest = [n for n in notes if not n.startswith(("failed", "server exited",
                                                      "server ignored"))]
        if rest:
            lines.append(f"Note, `{name}`: {'; '.join(rest)[:300]}  ")
    return "\n".join(lines).rstrip() + "\n"


def plot(report: Json, path: Path) -> bool:
    """Draw the chart; False if there is none (no matplotlib, or no results)."""
    try:
        import matplotlib
    except ImportError:             # the [bench] extra is not installed: tables only
        print(f"no matplotlib: {path.name} not drawn")
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scen = [s for s in report["scenarios"] if report["scenarios"][s]["summary"]["medians"]]
    if not scen:
        return False
    counts = [len(report["scenarios"][s]["summary"]["medians"]) for s in scen]
    fig, axes = plt.subplots(len(scen), 1, figsize=(9, 1.2 + sum(0.9 + 0.28 * c for c in counts)),
                             squeeze=False, gridspec_kw={"height_ratios": counts})
    for ax, name in zip(axes[:, 0], scen, strict=True):
        sc = BY_SCENARIO[name]
        summ = report["scenarios"][name]["summary"]
        ratios = summ["ratios"]
        names = [n for n in summ["medians"] if n == sc.baseline or sc.baseline in ratios[n]]
        vals = [1.0 if n == sc.baseline else ratios[n][sc.baseline] for n in names]
        pairs = sorted(zip(vals, names, strict=True), reverse=not summ["higher_is_better"])
        colors = ["tab:orange" if n.endswith(bl.SUFFIX) else
                  "tab:red" if n.startswith(("zerg", "http_zerg")) else
                  "tab:green" if n == "c_uring" else "tab:gray" for _, n in pairs]
        noisy = [sc.kind != "idle" and summ["medians"][n].get("noise_other_cpu", 0.0) > NOISY
                 for _, n in pairs]
        bars = ax.barh([f"{n}" for _, n in pairs], [v for v, _ in pairs], color=colors)
        for bar, hatched in zip(bars, noisy, strict=True):
            if hatched:
                bar.set_hatch("//")
        ax.axvline(1.0, color="black", linewidth=0.8)
        for i, (v, _) in enumerate(pairs):
            ax.text(v, i, f" {v:.2f}", va="center", fontsize=8)
        better = "higher" if summ["higher_is_better"] else "lower"
        ax.set_title(f"{name}: {sc.title} — {summ['metric']} / {BY_NAME[sc.baseline].label} "
                     f"({better} is better)", fontsize=9)
        ax.tick_params(labelsize=8)
    m = report["machine"]
    twins = f"orange: zerg at {report['baseline']['sha'][:9]}; " if "baseline" in report else ""
    fig.suptitle(f"zerg benchmarks {m['date'][:10]} — {m['cpu_model']}, {m['nproc']} CPUs, "
                 f"Linux {m['kernel']}, Python {m['python']}\nred: zerg, green: C reference; "
                 f"{twins}hatched: noisy (other processes took > {NOISY} CPU)", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(str(path), dpi=110)
    plt.close(fig)
    return True


# ---------------------------------------------------------------- main


def _cpu_pins(args: argparse.Namespace) -> tuple[str | None, str | None]:
    if args.no_pin:
        return None, None
    cpus = sorted(os.sched_getaffinity(0))
    if shutil.which("taskset") is None or len(cpus) < 2:
        print("note: fewer than 2 CPUs or no taskset: server and load generator not pinned")
        return None, None
    return args.server_cpu or str(cpus[0]), args.client_cpu or str(cpus[1])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="1 round of 1 s (smoke test)")
    ap.add_argument("--scenarios", default=",".join(s.name for s in SCENARIOS),
                    help="comma-separated, e.g. E1,E2")
    ap.add_argument("--servers", default="", help="comma-separated server names (default: all)")
    ap.add_argument("--rounds", type=int, help="rounds (default 3; --quick 1)")
    ap.add_argument("--duration", type=float, help="seconds measured (default 2; --quick 1)")
    ap.add_argument("--warmup", type=float, help="seconds of warm-up (default 0.5; --quick 0.3)")
    ap.add_argument("--verify", action="store_true",
                    help="check every echoed byte (always on with --quick)")
    ap.add_argument("--server-cpu", help="CPU for servers (default: the first one allowed)")
    ap.add_argument("--client-cpu", help="CPU for loadgen/wrk (default: the second)")
    ap.add_argument("--no-pin", action="store_true", help="do not use taskset")
    ap.add_argument("--retry-noisy", type=int, metavar="N",
                    help=f"measure again up to N times when other processes took > {NOISY} "
                         "CPU (default 2; --quick 0)")
    ap.add_argument("--budget", type=float, default=540.0, metavar="S",
                    help="re-measure only while the whole run still fits in S seconds "
                         "(default 540)")
    ap.add_argument("--out", type=Path, default=HERE / "results", help="results directory")
    ap.add_argument("--baseline", metavar="REV",
                    help="also run every selected zerg server from git revision REV (built in "
                         "a worktree /tmp/zerg-baseline-<sha>) as <name>@base, and compare")
    ap.add_argument("--list", action="store_true", help="list scenarios and servers, then exit")
    ap.add_argument("--render", type=Path, metavar="JSON",
                    help="only rewrite the .md and .png next to a results JSON, then exit")
    args = ap.parse_args(argv)

    if args.render is not None:
        return render(args.render)
    if args.list:
        for sc in SCENARIOS:
            print(f"{sc.name}: {sc.title}")
        for s in SERVERS:
            print(f"{s.name:18} {s.protocol:5} {s.label}")
        return 0
    scen = [x.strip() for x in args.scenarios.split(",") if x.strip()]
    bad = [x for x in scen if x not in BY_SCENARIO]
    want = [x.strip() for x in args.servers.split(",") if x.strip()]
    bad += [x for x in want if x not in BY_NAME]
    if bad:
        ap.error(f"unknown scenario/server: {', '.join(bad)} (see --list)")
    rounds = args.rounds or (1 if args.quick else 3)
    if args.retry_noisy is None:
        args.retry_noisy = 0 if args.quick else 2
    server_cpu, client_cpu = _cpu_pins(args)
    out_dir: Path = args.out
    raw_dir = out_dir / "raw"
    raw_dir.mkdir(parents=True, exist_ok=True)
    for old in [*raw_dir.glob("*.out"), *raw_dir.glob("*.err")]:
        old.unlink()                    # raw/ holds the logs of the last run only
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    base = bl.prepare(args.baseline, ROOT, sys.executable) if args.baseline else None
    st = Settings(rounds=rounds,
                  duration=args.duration or (1.0 if args.quick else 2.0),
                  warmup=args.warmup if args.warmup is not None else (0.3 if args.quick else 0.5),
                  verify=args.verify or args.quick, server_cpu=server_cpu, client_cpu=client_cpu,
                  raw_dir=raw_dir, env=env, base=base)
    _raise_nofile()

    build(HERE / "loadgen.c", BIN / "loadgen")
    if any(BY_SCENARIO[sc].kind == "proxy" for sc in scen):
        build(SERVERS_DIR / "c_uring_echo.c", BIN / "c_uring_echo")     # the proxies' upstream
    needed = {s.name for sc in scen for s in servers_for(BY_SCENARIO[sc])}
    if want:
        needed &= set(want)
    twins: Json = {}
    if base is not None:
        for s in SERVERS:
            if s.name in needed and s.zerg:
                tw, script = twin(s, base)
                needed.add(tw.name)
                twins[tw.name] = {"script": str(script),
                                  "script_from": "baseline" if bl.inside(str(script), base.tree)
                                  else "current (the baseline has no such script)"}
    skipped: dict[str, str] = {}
    for s in [*SERVERS, *(BY_NAME[n] for n in twins)]:
        if s.name not in needed:
            continue
        if s.c_source is not None:
            build(s.c_source, Path(s.argv[0]))
        if s.tree is None:
            why = available(s, env)
        else:
            try:
                why, twins[s.name]["zerg_file"] = available_twin(s, st)
            except bl.WrongTree as exc:
                raise SystemExit(f"FATAL: --baseline: {exc}") from exc
            print(f"{s.name}: {twins[s.name]['script']} ({twins[s.name]['script_from']}), "
                  f"zerg {twins[s.name]['zerg_file']}", flush=True)
        if why is not None:
            skipped[s.name] = why
            print(f"skip {s.name}: {why}", flush=True)

    report: Json = {"machine": machine_info(argv),
                    "config": {"rounds": rounds, "duration_s": st.duration,
                               "warmup_s": st.warmup, "verify": st.verify,
                               "server_cpu": server_cpu, "client_cpu": client_cpu,
                               "retry_noisy": args.retry_noisy,
                               "scenarios": scen, "servers": sorted(needed)},
                    "skipped": skipped, "scenarios": {}}
    if base is not None:
        report["baseline"] = {**base.info(), "twins": twins}
    plan = {sc: [s.name for s in servers_for(BY_SCENARIO[sc]) if s.name in needed]
            for sc in scen}
    sc_skipped = {sc: {n: skipped.get(n) or dict(BY_NAME[n].not_in)[sc] for n in names
                       if n in skipped or sc in dict(BY_NAME[n].not_in)}
                  for sc, names in plan.items()}
    runnable = {sc: [n for n in names if n not in sc_skipped[sc]] for sc, names in plan.items()}
    total = sum(len(v) for v in runnable.values()) * rounds
    print(f"{total} measurements: {rounds} round(s) x {', '.join(scen)}; "
          f"server on CPU {server_cpu}, load on CPU {client_cpu}", flush=True)
    if base is not None and not twins:
        print(f"note: --baseline {args.baseline}: no zerg server selected, nothing to compare",
              flush=True)
    all_rounds: dict[str, list[Json]] = {sc: [] for sc in scen}
    started = time.monotonic()
    deadline = started + args.budget
    done = 0
    try:
        for rnd in range(rounds):
            for sc_name in scen:
                sc = BY_SCENARIO[sc_name]
                names = runnable[sc_name]
                if not names:
                    continue
                k = rnd % len(names)
                order = names[k:] + names[:k]
                entry: Json = {"round": rnd, "order": order, "results": {}}
                for name in order:
                    t_one = time.monotonic()
                    res = run_one(sc, BY_NAME[name], rnd, st)
                    tries = [res]
                    # A measurement disturbed by other processes is taken again (up to
                    # --retry-noisy times, while the time budget allows); the least
                    # disturbed one counts and the others are kept in "discarded".
                    while (sc.kind != "idle" and len(tries) <= args.retry_noisy
                           and _noise(tries[-1]) > NOISY
                           and _fits(started, t_one, done, total, deadline)):
                        print(f"      noisy ({_noise(tries[-1]):.2f} CPUs of other load): "
                              f"again", flush=True)
                        tries.append(run_one(sc, BY_NAME[name], rnd, st))
                    good = [t for t in tries if t.get("ok")] or tries
                    res = min(good, key=_noise)
                    res["discarded"] = [{"noise": t.get("noise"), "ok": t.get("ok"),
                                         "metric": t.get(METRIC[sc.kind][0])}
                                        for t in tries if t is not res]
                    entry["results"][name] = res
                    done += 1
                    metric = METRIC[sc.kind][0]
                    shown = (f"{res[metric]:,.1f} {metric}" if res.get("ok")
                             else f"FAILED {res.get('error', '')[:120]}")
                    print(f"[{done}/{total} {time.monotonic() - started:5.0f}s] r{rnd} "
                          f"{sc_name} {name:18} {shown}", flush=True)
                all_rounds[sc_name].append(entry)
    except bl.WrongTree as exc:
        raise SystemExit(f"FATAL: --baseline: {exc}") from exc
    finally:
        for proc in list(st.live):
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    for sc_name in scen:
        summary = summarize(BY_SCENARIO[sc_name], all_rounds[sc_name], runnable[sc_name])
        report["scenarios"][sc_name] = {
            "title": BY_SCENARIO[sc_name].title,
            "params": {"conns": BY_SCENARIO[sc_name].conns, "depth": BY_SCENARIO[sc_name].depth,
                       "size": BY_SCENARIO[sc_name].size},
            "servers": plan[sc_name], "rounds": all_rounds[sc_name], "summary": summary,
            "skipped": sc_skipped[sc_name],
        }
    if base is not None:
        for name, t in twins.items():      # what each measured process loaded
            t["zerg_measured"] = sorted({str(r["results"][name].get(k)) for sc in scen
                                         for r in all_rounds[sc] if name in r["results"]
                                         for k in ("zerg_file", "zerg_so")
                                         if r["results"][name].get(k)})
        report["baseline"]["comparison"] = bl.compare(report)
    report["machine"]["loadavg_end"] = Path("/proc/loadavg").read_text().strip()
    report["elapsed_s"] = round(time.monotonic() - started, 1)
    stem = "quick" if args.quick else "latest"
    if base is not None:            # a comparison never replaces the plain run's results
        stem = "quick-baseline" if args.quick else "baseline"
    (out_dir / f"{stem}.json").write_text(json.dumps(report, indent=1) + "\n")
    return write_report(report, out_dir / stem)


def render(path: Path) -> int:
    """Rewrite the .md and .png of a results JSON (summaries re-derived from its rounds)."""
    report: Json = json.loads(path.read_text())
    if "baseline" in report:
        b = report["baseline"]
        base = bl.Baseline(b["rev"], b["sha"], Path(b["tree"]))
        for name in b["twins"]:
            twin(BY_NAME[name.removesuffix(bl.SUFFIX)], base)
    for name, entry in report["scenarios"].items():
        if "servers" not in entry:      # written before "servers" was recorded
            seen = {n for r in entry["rounds"] for n in r["order"]} | set(entry["skipped"])
            entry["servers"] = [s.name for s in SERVERS if s.name in seen]
        runnable = [n for n in entry["servers"] if n not in entry["skipped"]]
        entry["summary"] = summarize(BY_SCENARIO[name], entry["rounds"], runnable)
    if "baseline" in report:
        report["baseline"]["comparison"] = bl.compare(report)
    path.write_text(json.dumps(report, indent=1) + "\n")
    return write_report(report, path.with_suffix(""))


def write_report(report: Json, stem: Path) -> int:
    """Write ``stem``.md and ``stem``.png from a report and print the tables."""
    m, cfg = report["machine"], report["config"]
    md = [f"## zerg benchmarks — {m['date']}", "",
          f"Machine: {m['cpu_model']}, {m['nproc']} CPUs, Linux {m['kernel']}, "
          f"Python {m['python']}, uvloop {m['uvloop']}. Command: `{m['command']}`. "
          f"{cfg['rounds']} round(s) of {cfg['duration_s']:g} s after {cfg['warmup_s']:g} s "
          f"warm-up per server, medians; server on CPU {cfg['server_cpu']}, load generator on "
          f"CPU {cfg['client_cpu']}.", "",
          "Columns: *CPU µs/msg* is the server's CPU time per message (user+sys, from "
          "/proc/PID/stat), the number least disturbed by other load; *vs* columns are ratios "
          "of medians from this run; *server CPU* is the share of one CPU the server used; "
          "*other load* is how many CPUs other processes took on the two pinned CPUs "
          f"(> {NOISY} marks a noisy measurement).", ""]
    for sc_name, entry in report["scenarios"].items():
        md.append(table(BY_SCENARIO[sc_name], entry["summary"], entry["servers"],
                        entry["skipped"]))
    if "baseline" in report:
        md.append(bl.markdown(report))
    md.append(f"Elapsed: {report['elapsed_s']:.0f} s; load average at start "
              f"`{m['loadavg_start']}`, at end `{m['loadavg_end']}`.\n")
    text = "\n".join(md)
    stem.with_suffix(".md").write_text(text)
    drawn = plot(report, stem.with_suffix(".png"))
    print()
    print(text)
    print(f"wrote {stem}.json, .md{', .png' if drawn else ''}")
    return 0

if __name__ == "__main__":
    sys.exit(main())
