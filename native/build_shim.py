"""cffi API-mode builder for ``zerg._uring`` (see uringshim.h for the why).

liburing is linked statically from ``liburing.a`` so the built module needs
nothing at run time; its symbols are kept private to the module.  Constants
older liburing headers lack come from ``uringshim_compat.h``, which both the
shim and this module's preamble include.
"""

from __future__ import annotations

import os
import pathlib

from cffi import FFI

HERE = pathlib.Path(__file__).resolve().parent

# Kernel ABI constants the Python side uses (and only those); values come
# from the headers, or uringshim_compat.h's fallbacks, at build time.
CONSTANTS = """
#define IORING_SETUP_SQPOLL ...
#define IORING_SETUP_SQ_AFF ...
#define IORING_SETUP_SINGLE_ISSUER ...
#define IORING_SETUP_DEFER_TASKRUN ...
#define IORING_CQE_F_BUFFER ...
#define IORING_CQE_F_MORE ...
#define IORING_CQE_F_BUF_MORE ...
#define IOU_PBUF_RING_INC ...
#define IORING_OP_ACCEPT ...
#define IORING_OP_RECV ...
#define IORING_OP_SEND ...
#define IORING_OP_ASYNC_CANCEL ...
#define IORING_OP_POLL_ADD ...
#define IORING_OP_POLL_REMOVE ...
#define IORING_OP_CONNECT ...
"""


def find_static_liburing() -> str | None:
    for cand in (
        os.environ.get("ZERG_LIBURING_A", ""),
        "/usr/lib/x86_64-linux-gnu/liburing.a",
        "/usr/lib/aarch64-linux-gnu/liburing.a",
        "/usr/lib64/liburing.a",
        "/usr/lib/liburing.a",
        "/usr/local/lib/liburing.a",
    ):
        if cand and os.path.exists(cand):
            return cand
    return None


ffibuilder = FFI()
ffibuilder.cdef((HERE / "uringshim.h").read_text() + CONSTANTS)

_static = find_static_liburing()
ffibuilder.set_source(
    "zerg._uring",
    '#include "uringshim_compat.h"\n#include "uringshim.h"\n',
    sources=[str((HERE / "uringshim.c").relative_to(HERE.parent))],
    depends=[str((HERE / h).relative_to(HERE.parent))
             for h in ("uringshim.h", "uringshim_compat.h")],
    include_dirs=[str(HERE)],
    extra_compile_args=["-O2", "-Wall", "-Wextra"],
    extra_objects=[_static] if _static else [],
    libraries=[] if _static else ["uring"],
    extra_link_args=["-Wl,--exclude-libs,ALL"] if _static else [],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
