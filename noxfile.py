"""make test-matrix: the suite against the installed wheel on every supported CPython.

Why: ``make test`` runs the suite on this tree with one interpreter; a user
installs a wheel on 3.11, 3.12 or 3.13.  Each session here installs the
repaired wheel ``make wheel`` put in ``dist/`` for its interpreter into a fresh
venv, checks that ``import zerg`` resolves to that installed package with no
compiler in reach and that its native modules do not link liburing dynamically
(``ldd``), and runs the whole suite from a copy of ``tests/`` (with
``examples/`` and ``benchmarks/``, which tests drive) that has no ``zerg/``
beside it -- so the package under test is the wheel's, never the source tree's
-- with the extension and again on the pure-Python reference.  3.12+ also
exercises what only it can (``RingItem``'s buffer protocol through
``__buffer__``).  ``tests/test_install.py`` is left out here: it builds from
the source tree, which the copy does not have (``make test`` runs it).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import nox

REPO = Path(__file__).resolve().parent
sys.path.insert(0, str(REPO / "scripts"))
from wheels import VERSIONS, find_python  # noqa: E402

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = False

TEST_DEPS = ("pytest", "hypothesis", "mypy", "uvloop", "prometheus-client", "trustme")


def _interpreters() -> list[str]:
    return [str(p) for v in VERSIONS if (p := find_python(v)) is not None]


@nox.session(python=_interpreters())
def installed(session: nox.Session) -> None:
    """The suite against the wheel of this interpreter, both implementations."""
    tag = session.run("python", "-c", "import sys; print(f'cp{sys.version_info[0]}"
                      "{sys.version_info[1]}')", silent=True)
    assert isinstance(tag, str)
    wheels = sorted((REPO / "dist").glob(f"zerg-*-{tag.strip()}-*manylinux*.whl"))
    if not wheels:
        session.error(f"no {tag.strip()} wheel in dist/: run `make wheel` first")
    session.install(str(wheels[-1]), *TEST_DEPS)
    work = Path(session.create_tmp()) / "suite"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    for part in ("tests", "examples", "benchmarks", "pyproject.toml"):
        src = REPO / part
        if src.is_dir():
            shutil.copytree(src, work / part, ignore=shutil.ignore_patterns(
                "__pycache__", "bin", "results"))
        else:
            shutil.copy2(src, work / part)
    session.chdir(work)
    venv_bin = str(Path(session.bin))
    # import zerg: the installed package, with nothing but the venv on PATH (no gcc).
    session.run("python", "-c",
                "import zerg, zerg._speedups, zerg._uring; "
                "assert '/site-packages/zerg/' in zerg.__file__, zerg.__file__",
                env={"PATH": venv_bin, "CC": "/nonexistent"}, external=False)
    # Nothing of the installed native modules links liburing dynamically.
    session.run("python", "-c",
                "import pathlib, subprocess, zerg\n"
                "mods = sorted(pathlib.Path(zerg.__file__).parent.glob('*.so'))\n"
                "assert len(mods) == 2, mods\n"
                "for m in mods:\n"
                "    out = subprocess.run(['ldd', str(m)], capture_output=True, text=True,\n"
                "                         check=True).stdout\n"
                "    assert 'liburing' not in out, (m, out)\n"
                "print('no liburing in ldd of', [m.name for m in mods])")
    args = ["-q", "-p", "no:cacheprovider", "tests", "--deselect", "tests/test_install.py"]
    session.run("python", "-m", "pytest", *args)
    session.run("python", "-m", "pytest", *args, env={"ZERG_NO_EXTENSIONS": "1"})
