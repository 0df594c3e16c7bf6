#!/usr/bin/env bash
# Install what `make demo` / `make test` need on a fresh Debian/Ubuntu machine:
# system packages through apt (only the missing ones), then .venv with zerg
# installed in editable mode.  Safe to run again; it skips what is present.
set -euo pipefail

PY="${PY:-python3}"
VENV="${VENV:-.venv}"
EXTRAS="${EXTRAS:-dev}"

need=()
dpkg -s liburing-dev >/dev/null 2>&1 || [ -f /usr/include/liburing.h ] || need+=(liburing-dev)
command -v gcc >/dev/null 2>&1 || need+=(gcc)
command -v curl >/dev/null 2>&1 || need+=(curl)
"$PY" -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
"$PY" - <<'PYEOF' >/dev/null 2>&1 || need+=(python3-dev)
import os, sysconfig
assert os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h"))
PYEOF
# CPython's own asyncio tests (the conformance test runs them on zerg loops);
# Debian splits them out of the interpreter into libpython3.X-testsuite.
"$PY" -c 'import test.test_asyncio' >/dev/null 2>&1 \
    || need+=("libpython$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')-testsuite")
for tool in ${EXTRA_APT:-}; do
    command -v "${tool%%:*}" >/dev/null 2>&1 || need+=("${tool##*:}")
done

if [ ${#need[@]} -gt 0 ]; then
    echo "bootstrap: installing ${need[*]} with apt"
    if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

[ -n "${APT_ONLY:-}" ] && exit 0

if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip setuptools wheel
# editable_mode=compat: the .pth names the source tree itself, which mypy and
# other static checkers follow (setuptools' default editable mode installs an
# import hook that only the interpreter understands: `import zerg` would not
# resolve for a user's `mypy --strict`).  The stubs of the compiled modules sit
# in zerg/ next to them.
"$VENV/bin/python" -m pip install -q -e ".[$EXTRAS]" --config-settings editable_mode=compat
# Prove the native modules import (the editable install builds both).
"$VENV/bin/python" -c "import zerg._uring, zerg._speedups"
