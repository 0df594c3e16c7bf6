"""zerg installed the ways users install it, then type-checked the way they check it.

Two fresh virtual environments (no system site-packages, nothing of this one):

- one gets the wheel built from this tree (``pip wheel --no-build-isolation``);
  zerg must import there without a compiler in reach, and
- one gets an editable install in compat mode (what ``scripts/bootstrap.sh``
  and the README use), made from this tree's sdist unpacked into a temporary
  directory, so that the build does not rewrite the compiled modules of the
  tree running these tests.

In each, ``mypy --strict`` (installed there) checks a small user program from a
directory outside any source tree: ``import zerg`` must resolve through the
installed package (``py.typed``), ``zerg._uring`` and ``zerg._speedups``
through the stubs shipped next to them, and the ``# type: ignore`` on a planted
mistake must be needed (strict warns about unused ones), which proves that the
types are zerg's and not ``Any``.

Packages come from the machine's pip configuration, pinned to the versions this
environment runs, so pip's cache usually answers.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import zipfile
from importlib.metadata import version
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHIPPED = {"zerg/py.typed", "zerg/_uring.pyi", "zerg/_speedups.pyi"}
TIMEOUT = 300

USER_PROGRAM = '''\
"""A user's server, checked against the installed zerg."""

from __future__ import annotations

from typing import assert_type

import zerg
import zerg._speedups
import zerg._uring
from zerg.adapters import PipeReader, ReadResult


class Upper(zerg.Protocol):
    def data_received(self, conn: zerg.Connection, seq: zerg.BufferSequence) -> int | None:
        nl = seq.find(b"\\n")
        if nl < 0:
            return 0
        conn.write(seq[: nl + 1].tobytes().upper())
        return nl + 1

    def connection_lost(self, conn: zerg.Connection, exc: BaseException | None) -> None:
        pass


async def lines(conn: zerg.Connection) -> None:
    reader = PipeReader(conn)
    try:
        while True:
            result = await reader.read()
            assert_type(result, ReadResult)
            buf = result.buffer
            assert_type(buf, zerg.BufferSequence)
            nl = buf.find(b"\\n")
            if nl >= 0:
                conn.write(buf[: nl + 1])
                reader.advance_to(nl + 1)
                await conn.flush()
            else:
                reader.advance_to(0, len(buf))
            if result.is_completed:
                return
    finally:
        reader.complete()


def main() -> int:
    opts = zerg.EngineOptions(ip="127.0.0.1", port=0)
    with zerg.Engine(opts) as engine:
        engine.listen()
        port = engine.port
        assert_type(port, int)
        engine.serve(lines)
    zerg.run(Upper(), zerg.EngineOptions(port=8081))
    wrong: str = engine.port  # type: ignore[assignment]
    return port + len(wrong)


def native(slots: zerg._speedups.RecvSlots) -> int:
    assert_type(zerg._uring.lib.IORING_CQE_F_MORE, int)
    assert_type(slots.in_use, int)
    return zerg._uring.lib.IORING_CQE_F_MORE | slots.in_use
'''


def _env(venv: Path | None = None) -> dict[str, str]:
    """This process's environment without anything that points into this tree."""
    env = {k: v for k, v in os.environ.items()
           if k not in {"PYTHONPATH", "PYTHONHOME", "MYPYPATH", "VIRTUAL_ENV",
                        "ZERG_NO_EXTENSIONS", "PYTHONSAFEPATH"}}
    if venv is not None:
        env["VIRTUAL_ENV"] = str(venv)
        env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT, check=False)
    assert proc.returncode == 0, (
        f"{' '.join(cmd)} failed with exit code {proc.returncode}\n"
        f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}")
    return proc.stdout


def _pin(*names: str) -> list[str]:
    return [f"{name}=={version(name)}" for name in names]


def _fresh_venv(path: Path, *packages: str) -> Path:
    """A new venv with ``packages`` installed (binary wheels only); its python."""
    _run([sys.executable, "-m", "venv", str(path)], cwd=path.parent, env=_env())
    python = path / "bin" / "python"
    _run([str(python), "-m", "pip", "install", "-q", "--only-binary", ":all:", *packages],
         cwd=path.parent, env=_env(path))
    return python


def _mypy_user_program(python: Path, workdir: Path) -> str:
    """mypy --strict, installed in the venv of ``python``, on USER_PROGRAM."""
    user = workdir / "user"
    user.mkdir()
    (user / "mypy.ini").write_text("[mypy]\n")  # no configuration from any parent
    (user / "server.py").write_text(USER_PROGRAM)
    proc = subprocess.run(
        [str(python), "-m", "mypy", "--strict", "--no-color-output", "--no-error-summary",
         "--cache-dir", str(workdir / "mypy-cache"), "server.py"],
        cwd=user, env=_env(python.parent.parent), capture_output=True, text=True,
        timeout=TIMEOUT, check=False)
    assert proc.returncode == 0, (
        f"mypy --strict rejects a correct user program against the installed zerg:\n"
        f"{proc.stdout}{proc.stderr}")
    return proc.stdout


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The wheel and the sdist of this tree, built with this interpreter.

    DIST_EXTRA_CONFIG (a setup.cfg that setuptools reads in addition) puts the
    build directory and the egg-info in a new temporary directory: the wheel
    then holds exactly what this tree builds, not stale files a build/ of the
    tree kept, and the tree is left alone.
    """
    out = tmp_path_factory.mktemp("dist")
    work = tmp_path_factory.mktemp("build")
    extra = work / "extra.cfg"
    extra.write_text(f"[build]\nbuild_base = {work / 'build'}\n[egg_info]\negg_base = {work}\n")
    env = _env() | {"DIST_EXTRA_CONFIG": str(extra)}
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
          "-w", str(out), str(REPO)], cwd=out, env=env)
    _run([sys.executable, "-c",
          "import sys; from setuptools import build_meta; build_meta.build_sdist(sys.argv[1])",
          str(out)], cwd=REPO, env=env)
    (wheel,) = out.glob("zerg-*.whl")
    (sdist,) = out.glob("zerg-*.tar.gz")
    return wheel, sdist


def test_wheel_and_sdist_carry_the_stubs(dists: tuple[Path, Path]) -> None:
    wheel, sdist = dists
    with zipfile.ZipFile(wheel) as zf:
        in_wheel = set(zf.namelist())
    assert not SHIPPED - in_wheel, f"missing from the wheel: {sorted(SHIPPED - in_wheel)}"
    with tarfile.open(sdist) as tf:
        in_sdist = {n.split("/", 1)[1] for n in tf.getnames() if "/" in n}
    needed = SHIPPED | {"native/build_shim.py", "native/uringshim.h", "setup.py"}
    assert not needed - in_sdist, f"missing from the sdist: {sorted(needed - in_sdist)}"


def test_wheel_install_imports_without_a_compiler_and_type_checks(
        dists: tuple[Path, Path], tmp_path: Path) -> None:
    wheel, _ = dists
    venv = tmp_path / "venv"
    python = _fresh_venv(venv, *_pin("mypy"), str(wheel))
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                     cwd=tmp_path, env=_env(venv)).strip())
    for name in SHIPPED:
        assert (site / name).is_file(), f"{name} is not installed"

    # Nothing but the venv on PATH and no usable CC: importing builds nothing.
    bare = _env(venv) | {"PATH": str(venv / "bin"), "CC": "/nonexistent/cc"}
    where = _run([str(python), "-c",
                  "import zerg, zerg._uring, zerg._speedups, zerg.adapters\n"
                  "print(zerg.__file__)"], cwd=tmp_path, env=bare).strip()
    assert Path(where).is_relative_to(site), f"zerg imported from {where}, not the venv"

    _mypy_user_program(python, tmp_path)


def test_editable_compat_install_type_checks(
        dists: tuple[Path, Path], tmp_path: Path) -> None:
    _, sdist = dists
    with tarfile.open(sdist) as tf:
        tf.extractall(tmp_path / "src", filter="data")
    (tree,) = (tmp_path / "src").iterdir()
    venv = tmp_path / "venv"
    python = _fresh_venv(venv, *_pin("mypy", "setuptools", "wheel", "cffi"))
    _run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
          "-e", str(tree), "--config-settings", "editable_mode=compat"],
         cwd=tmp_path, env=_env(venv))
    where = _run([str(python), "-c",
                  "import zerg, zerg._uring, zerg._speedups\nprint(zerg.__file__)"],
                 cwd=tmp_path, env=_env(venv)).strip()
    assert Path(where).is_relative_to(tree), f"zerg imported from {where}, not {tree}"

    _mypy_user_program(python, tmp_path)
