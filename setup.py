"""setuptools reads ``cffi_modules`` and ``ext_modules`` from setup() alone.

Two native modules, both linking liburing statically (no runtime dependency):
``zerg._uring`` (the cffi shim) and ``zerg._speedups`` (the hot path on the
CPython C API, built from the same uringshim.c so it knows the ring's layout).
"""

import sys
from pathlib import Path

from setuptools import Extension, setup

sys.path.insert(0, str(Path(__file__).resolve().parent / "native"))
from build_shim import find_static_liburing  # noqa: E402

_static = find_static_liburing()

speedups = Extension(
    "zerg._speedups",
    sources=["native/speedups.c", "native/connfast.c", "native/loopfast.c", "native/seqfast.c",
             "native/readerfast.c", "native/httpfast.c", "native/wake.c", "native/counters.c",
             "native/tlsfast.c", "native/conntable.c", "native/selectfast.c",
             "native/readwaiter.c", "native/conntask.c", "native/uringshim.c"],
    include_dirs=["native"],
    depends=["native/speedups.h", "native/uringshim.h", "native/uringshim_compat.h"],
    extra_compile_args=["-O2", "-Wall", "-Wextra", "-fvisibility=hidden"],
    extra_objects=[_static] if _static else [],
    libraries=[] if _static else ["uring"],
    extra_link_args=["-Wl,--exclude-libs,ALL"] if _static else [],
)

setup(cffi_modules=["native/build_shim.py:ffibuilder"], ext_modules=[speedups])
