"""Python objects allocated per message: the "zero-allocation hot path" check.

Each echo server runs E1 (64 B, 100 connections, depth 1) with
``BENCH_COUNT_ALLOCS=1``: its ``ready()`` turns on zerg._speedups'
allocation counter, a hook on the interpreter's object allocator that counts
every block allocated (gross; ``sys.getallocatedblocks()`` is net and shows
only leaks).  While the load is steady the runner asks the server for the
count twice, two seconds apart, over its stdin; allocations per message are
the difference over the messages the load generator saw in between (its
steady rate times the interval).  Server on CPU 0, load generator on CPU 1,
medians of ``--rounds`` rounds, servers alternating.

    python benchmarks/allocations.py [--rounds 3] [--out benchmarks/results]

The counter is process-wide, so the uvloop server is counted the same way
(uvloop's own C allocations through PyMem_Malloc are not object-domain and,
like zerg's PyMem ones, are not counted; Python objects are).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SERVERS = HERE / "servers"
LOADGEN = HERE / "bin" / "loadgen"

# name, label, script, extra environment
CASES: tuple[tuple[str, str, str, dict[str, str]], ...] = (
    ("zerg_fast", "zerg.Protocol", "zerg_fast.py", {}),
    ("zerg_fast_py", "zerg.Protocol [Python reference]", "zerg_fast.py",
     {"ZERG_NO_EXTENSIONS": "1"}),
    ("zerg_level1", "zerg level 1", "zerg_level1.py", {}),
    ("zerg_level2", "zerg level 2", "zerg_level2.py", {}),
    ("zerg_pipereader", "zerg PipeReader", "zerg_pipereader.py", {}),
    ("uvloop_protocol", "uvloop Protocol", "uvloop_protocol.py", {}),
)


def _ask(proc: subprocess.Popen[str]) -> int:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write("\n")
    proc.stdin.flush()
    line = proc.stdout.readline().split()
    if len(line) != 2 or line[0] != "allocs":
        raise RuntimeError(f"unexpected answer from the server: {line!r}")
    return int(line[1])


def measure(script: str, env_extra: dict[str, str], cpus: tuple[str, str]) -> dict[str, float]:
    env = dict(os.environ, BENCH_COUNT_ALLOCS="1", **env_extra)
    proc = subprocess.Popen(
        ["taskset", "-c", cpus[0], sys.executable, str(SERVERS / script), "--port", "0"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=SERVERS)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().split()
        if len(first) != 2 or first[0] != "ready":
            raise RuntimeError(f"{script} did not start: {first!r}")
        port = first[1]
        load = subprocess.Popen(
            ["taskset", "-c", cpus[1], str(LOADGEN), "--host", "127.0.0.1", "--port", port,
             "--conns", "100", "--depth", "1", "--size", "64", "--duration", "4",
             "--warmup", "0.5"], stdout=subprocess.PIPE, text=True)
        time.sleep(1.5)
        a0, t0 = _ask(proc), time.monotonic()
        time.sleep(2.0)
        a1, t1 = _ask(proc), time.monotonic()
        out, _ = load.communicate(timeout=30)
        rate = float(json.loads(out)["msgs_per_s"])
        msgs = rate * (t1 - t0)
        return {"allocs_per_msg": (a1 - a0) / msgs, "msgs_per_s": rate}
    finally:
        proc.kill()
        proc.wait()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--server-cpu", default="0")
    ap.add_argument("--client-cpu", default="1")
    args = ap.parse_args(argv)
    if not LOADGEN.exists():
        print("build the load generator first: python benchmarks/run.py --list", file=sys.stderr)
        return 2
    runs: dict[str, list[dict[str, float]]] = {name: [] for name, *_ in CASES}
    for _ in range(args.rounds):
        for name, _label, script, env in CASES:
            runs[name].append(measure(script, env, (args.server_cpu, args.client_cpu)))
    rows: list[dict[str, Any]] = []
    for name, label, _script, _env in CASES:
        per = [r["allocs_per_msg"] for r in runs[name]]
        rate = [r["msgs_per_s"] for r in runs[name]]
        rows.append({"server": name, "label": label, "allocs_per_msg": statistics.median(per),
                     "rounds": per, "msgs_per_s": statistics.median(rate)})
    lines = [
        f"### Allocations per message (E1 echo), {time.strftime('%Y-%m-%d')}, "
        f"{args.rounds} round(s), medians",
        "",
        "| server | objects allocated / msg | msgs/s while counting |",
        "| --- | ---: | ---: |",
    ]
    for row in rows:
        lines.append(f"| `{row['server']}` {row['label']} | {row['allocs_per_msg']:.2f} | "
                     f"{row['msgs_per_s']:,.0f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "allocations.md").write_text(text)
    (out / "allocations.json").write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
