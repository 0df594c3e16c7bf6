"""``run.py --baseline REV``: the zerg servers once more, from another git revision.

``prepare`` checks REV out into a worktree ``/tmp/zerg-baseline-<sha>`` and
builds its cffi module there (``setup.py build_ext --inplace`` with the
runner's Python); both are reused by later runs for the same sha.  Each
selected zerg server gets a twin ``<name>@base`` whose process runs ``BOOT``:

    python -c BOOT <worktree> <script> --host H --port 0

``BOOT`` drops the editable install's import finder (it would fill in any
``zerg.*`` submodule the baseline lacks from the current tree), puts the
script's directory and the worktree first on ``sys.path``, imports zerg,
prints ``zerg-import <zerg.__file__>``, refuses to go on if any loaded
``zerg*`` module is not from the worktree, and runs the script as
``__main__``.  The runner checks that line and, in every measured process,
which ``_uring*.so`` ``/proc/PID/maps`` shows (``native_module``).
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

Json = dict[str, Any]

SUFFIX: Final = "@base"

BOOT: Final = r"""
import os, sys
tree, target = os.path.realpath(sys.argv[1]), sys.argv[2]
sys.meta_path[:] = [f for f in sys.meta_path
                    if not str(getattr(f, "__module__", "")).startswith("__editable__")]
here = tree if target == "-c" else os.path.dirname(os.path.abspath(target))
sys.path[0:1] = [here, tree] if here != tree else [tree]
import zerg
print("zerg-import", os.path.realpath(zerg.__file__), flush=True)
bad = sorted(n for n, m in list(sys.modules.items())
             if (n == "zerg" or n.startswith("zerg.")) and getattr(m, "__file__", None)
             and not os.path.realpath(m.__file__).startswith(tree + os.sep))
if bad:
    sys.exit("zerg-wrong-tree: " + ", ".join(bad) + " not from " + tree)
if target == "-c":
    exec(compile(sys.argv[3], "<probe>", "exec"), {"__name__": "__main__"})
else:
    import runpy
    sys.argv = sys.argv[2:]
    runpy.run_path(target, run_name="__main__")
"""

_IMPORT_LINE: Final = re.compile(r"^zerg-import (\S+)\s*$", re.M)
WRONG_TREE: Final = "zerg-wrong-tree"


class WrongTree(Exception):
    """A baseline server imported zerg from somewhere else than its worktree."""


@dataclass(frozen=True)
class Baseline:
    rev: str            # as given: HEAD~1, a tag, a sha...
    sha: str
    tree: Path          # the worktree

    @property
    def short(self) -> str:
        return self.sha[:9]

    def env(self, base: dict[str, str], root: Path) -> dict[str, str]:
        """``base`` with the worktree first on PYTHONPATH and the current tree off it."""
        env = dict(base)
        rest = [p for p in base.get("PYTHONPATH", "").split(os.pathsep)
                if p and Path(p).resolve() != root.resolve()]
        env["PYTHONPATH"] = os.pathsep.join([str(self.tree), *rest])
        return env

    def info(self) -> Json:
        return {"rev": self.rev, "sha": self.sha, "tree": str(self.tree)}


def _git(root: Path, *args: str) -> str:
    res = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                         check=False, timeout=120)
    if res.returncode != 0:
        raise SystemExit(f"--baseline: git {' '.join(args)}: {res.stderr.strip()}")
    return res.stdout.strip()


def native_so(tree: Path) -> list[Path]:
    return sorted((tree / "zerg").glob("_uring*.so"))


def prepare(rev: str, root: Path, python: str) -> Baseline:
    """The worktree of ``rev`` with its native module built (cached per sha)."""
    sha = _git(root, "rev-parse", "--verify", f"{rev}^{{commit}}")
    tree = Path(tempfile.gettempdir()) / f"zerg-baseline-{sha}"
    if tree.exists():
        head = _git(tree, "rev-parse", "HEAD") if (tree / ".git").exists() else ""
        if head != sha:
            raise SystemExit(f"--baseline: {tree} exists but is not a worktree at {sha}; "
                             f"remove it (git worktree remove --force {tree}) and run again")
        print(f"baseline {rev} = {sha[:9]}: reusing worktree {tree}", flush=True)
    else:
        print(f"baseline {rev} = {sha[:9]}: git worktree add --detach {tree}", flush=True)
        res = subprocess.run(["git", "-C", str(root), "worktree", "add", "--detach", str(tree),
                              sha], capture_output=True, text=True, check=False, timeout=300)
        if res.returncode != 0 and "already registered" in res.stderr:
            # a worktree whose directory vanished (/tmp cleaned): register it afresh
            _git(root, "worktree", "add", "--force", "--detach", str(tree), sha)
        elif res.returncode != 0:
            raise SystemExit(f"--baseline: git worktree add: {res.stderr.strip()}")
    if not native_so(tree):
        cmd = [python, "setup.py", "build_ext", "--inplace"]
        print(f"baseline {sha[:9]}: {' '.join(cmd)} (in {tree})", flush=True)
        res = subprocess.run(cmd, cwd=tree, capture_output=True, text=True, check=False,
                             timeout=600)
        if res.returncode != 0 or not native_so(tree):
            tail = "\n".join((res.stdout + res.stderr).splitlines()[-25:])
            raise SystemExit(f"--baseline: building {sha[:9]}'s native module failed "
                             f"(exit {res.returncode}):\n{tail}")
    print(f"baseline {sha[:9]}: native module {', '.join(map(str, native_so(tree)))}",
          flush=True)
    link_tools(root, tree)
    return Baseline(rev, sha, tree)


# The C programs run.py builds into benchmarks/bin (untracked, so a worktree has none).
TOOLS: Final = ("loadgen", "c_uring_echo")


def link_tools(root: Path, tree: Path) -> None:
    """Give the worktree the current tree's C tools: a baseline proxy starts its
    upstream, the C echo server, from its own ``benchmarks/bin``, and the
    upstream must be the same program for both sides anyway.  The links may
    point at binaries run.py builds just after this."""
    dst = tree / "benchmarks" / "bin"
    dst.mkdir(parents=True, exist_ok=True)
    for name in TOOLS:
        link = dst / name
        if not os.path.lexists(link):
            link.symlink_to(root / "benchmarks" / "bin" / name)


def boot_argv(python: str, tree: Path, target: str, *rest: str) -> tuple[str, ...]:
    """Run ``target`` (a script, or ``-c`` and code) with zerg from ``tree``."""
    return (python, "-c", BOOT, str(tree), target, *rest)


def imported_from(stdout: str) -> str | None:
    """The ``zerg.__file__`` that ``BOOT`` reported, if it did."""
    m = _IMPORT_LINE.search(stdout)
    return m.group(1) if m else None


def native_module(pid: int) -> str | None:
    """The zerg ``_uring*.so`` mapped into process ``pid``, if any."""
    try:
        maps = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return None
    for line in maps.splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and re.search(r"/zerg/_uring[^/]*\.so$", fields[5]):
            return fields[5]
    return None


def inside(path: str | None, tree: Path) -> bool:
    return path is not None and Path(path).resolve().is_relative_to(tree.resolve())


# ---------------------------------------------------------------- the report


def compare(report: Json) -> Json:
    """Per zerg server and scenario: current over baseline, from the medians."""
    out: Json = {}
    for sc_name, entry in report["scenarios"].items():
        summ = entry["summary"]
        med, metric = summ["medians"], summ["metric"]
        per_round = summ.get("ratios_per_round_median", {})
        for twin in entry["servers"]:
            if not twin.endswith(SUFFIX):
                continue
            name = twin[: -len(SUFFIX)]
            row: Json = {"metric": metric, "higher_is_better": summ["higher_is_better"],
                         "current": med.get(name, {}).get(metric),
                         "baseline": med.get(twin, {}).get(metric)}
            row["ratio"] = _ratio(row["current"], row["baseline"])
            row["ratio_per_round"] = per_round.get(name, {}).get(twin)
            for key in ("cpu_us_per_msg_user", "cpu_us_per_msg_total"):
                cur, base = med.get(name, {}).get(key), med.get(twin, {}).get(key)
                if cur is not None or base is not None:
                    row[key] = {"current": cur, "baseline": base, "ratio": _ratio(cur, base)}
            out.setdefault(name, {})[sc_name] = row
    return out


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _f(v: float | None, spec: str) -> str:
    return "—" if v is None else format(v, spec)


def markdown(report: Json) -> str:
    base = report["baseline"]
    lines = [f"### Baseline comparison: current tree vs `{base['rev']}` ({base['sha'][:9]})", "",
             "Each zerg server against its `@base` twin (the same server script and zerg from "
             f"the baseline's worktree `{base['tree']}`), measured in the same rounds. "
             "*current/baseline* is the ratio of the medians (>1: the current tree has more of "
             "the metric; for C1's bytes per connection lower is better); *per round* is the "
             "median of the per-round ratios.", "",
             "| server | scenario | metric | current | baseline | current/baseline | per round "
             "| user µs/msg current | baseline | current/baseline | total µs/msg cur/base |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, rows in base.get("comparison", {}).items():
        for sc_name, r in rows.items():
            user = r.get("cpu_us_per_msg_user", {})
            total = r.get("cpu_us_per_msg_total", {})
            lines.append(
                f"| `{name}` | {sc_name} | {r['metric']} | {_f(r['current'], ',.0f')} | "
                f"{_f(r['baseline'], ',.0f')} | {_f(r['ratio'], '.3f')} | "
                f"{_f(r['ratio_per_round'], '.3f')} | {_f(user.get('current'), '.3f')} | "
                f"{_f(user.get('baseline'), '.3f')} | {_f(user.get('ratio'), '.3f')} | "
                f"{_f(total.get('ratio'), '.3f')} |")
    lines.append("")
    for twin, t in base.get("twins", {}).items():
        loaded = t.get("zerg_measured") or [t.get("zerg_file") or "?"]
        lines.append(f"`{twin}`: script `{t['script']}` ({t['script_from']}); zerg loaded: "
                     + ", ".join(f"`{x}`" for x in loaded) + "  ")
    return "\n".join(lines).rstrip() + "\n"
