"""The public API's types, checked the way users check them: ``mypy --strict``.

``tests/typing/good_usage.py`` uses the whole public API correctly and pins the
promised types with ``assert_type``: mypy must accept it with no error, so
loosening a type (an ``Any``, a lost ``| None``) is caught.
``tests/typing/bad_usage.py`` plants one mistake per line, marked
``# E: <error-code>``: mypy must report exactly those codes on exactly those
lines, and nothing anywhere else.  ``# E-pending: <code>`` marks a mistake the
current types cannot catch yet; see ``test_pending_mistakes``.

Errors inside ``zerg/`` itself are ``make lint``'s business: imports are
followed silently here, so only the usage files are judged.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

REPO = Path(__file__).resolve().parents[1]
TYPING = REPO / "tests" / "typing"
GOOD = TYPING / "good_usage.py"
BAD = TYPING / "bad_usage.py"

_ERROR = re.compile(r"^(?P<path>[^:\n]+):(?P<line>\d+): error: (?P<msg>.*?)  \[(?P<code>[\w-]+)\]$")
_MARK = re.compile(r"#\s*(?P<kind>E|E-pending):\s*(?P<codes>[\w-]+(?:\s*,\s*[\w-]+)*)\s*$")


class MypyError(NamedTuple):
    line: int
    code: str
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: [{self.code}] {self.message}"


def run_mypy(path: Path, cache_dir: Path) -> list[MypyError]:
    """mypy --strict with the project's config on one file; its errors in that file."""
    proc = subprocess.run(
        [
            sys.executable, "-m", "mypy", "--strict", "--config-file", "pyproject.toml",
            "--cache-dir", str(cache_dir), "--follow-imports", "silent",
            "--show-error-codes", "--no-error-summary", "--no-pretty", "--no-color-output",
            "--hide-error-context", str(path.relative_to(REPO)),
        ],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode in (0, 1), f"mypy failed to run:\n{proc.stdout}\n{proc.stderr}"
    errors: list[MypyError] = []
    for raw in proc.stdout.splitlines():
        if ": note: " in raw:
            continue
        m = _ERROR.match(raw)
        assert m is not None, f"unexpected mypy output line: {raw!r}\n{proc.stdout}"
        assert Path(m["path"]).resolve() == path, f"error outside {path.name}: {raw}"
        errors.append(MypyError(int(m["line"]), m["code"], m["msg"]))
    assert (proc.returncode == 1) == bool(errors), proc.stdout + proc.stderr
    return errors


def markers(path: Path, kind: str) -> dict[int, set[str]]:
    """Line number -> the error codes marked on it with ``# <kind>: code[, code]``."""
    found: dict[int, set[str]] = {}
    for number, text in enumerate(path.read_text().splitlines(), start=1):
        m = _MARK.search(text)
        if m is not None and m["kind"] == kind:
            found[number] = {c.strip() for c in m["codes"].split(",")}
    return found


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mypy-cache")


@pytest.fixture(scope="module")
def bad_errors(cache_dir: Path) -> list[MypyError]:
    return run_mypy(BAD, cache_dir)


def test_good_usage_passes_strict(cache_dir: Path) -> None:
    errors = run_mypy(GOOD, cache_dir)
    assert not errors, "mypy --strict rejects correct use of the public API:\n" + "\n".join(
        map(str, errors))


def test_bad_usage_errors_exactly_where_marked(bad_errors: list[MypyError]) -> None:
    expected = markers(BAD, "E")
    pending = markers(BAD, "E-pending")
    assert len(expected) >= 30, "the markers of bad_usage.py were not found"
    reported: dict[int, set[str]] = {}
    for err in bad_errors:
        reported.setdefault(err.line, set()).add(err.code)
    missed = [f"line {line}: expected [{code}], mypy said "
              f"{sorted(reported.get(line, ())) or 'nothing'}"
              for line, codes in sorted(expected.items())
              for code in sorted(codes - reported.get(line, set()))]
    unmarked = [str(err) for err in bad_errors
                if err.code not in expected.get(err.line, set()) | pending.get(err.line, set())]
    report = []
    if missed:
        report += ["planted mistakes mypy no longer catches (did a type get looser?):", *missed]
    if unmarked:
        report += ["errors on lines without that marker:", *unmarked]
    assert not report, "\n".join(report)


def test_pending_mistakes(bad_errors: list[MypyError]) -> None:
    """Mistakes the current types let through (a parameter typed ``Any``).

    They are expected to pass unnoticed today.  Once a type is made precise
    mypy catches one: turn its ``# E-pending:`` marker into ``# E:`` so that the
    precision is kept from then on.
    """
    pending = markers(BAD, "E-pending")
    caught = [str(err) for err in bad_errors if err.code in pending.get(err.line, set())]
    assert not caught, (
        "mypy now catches these mistakes marked `# E-pending:` in tests/typing/bad_usage.py; "
        "change their markers to `# E:`:\n" + "\n".join(caught))
