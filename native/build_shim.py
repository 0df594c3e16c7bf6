"""cffi API-mode builder for ``zerg._uring`` (see uringshim.h for the why).

liburing is linked statically from ``liburing.a`` so the built module needs
nothing at run time; its symbols are kept private to the module.
"""

from __future__ import annotations

import os
import pathlib

from cffi import FFI

HERE = pathlib.Path(__file__).resolve().parent

# Kernel ABI constants the Python side needs; values come from the headers
# (or the shim's #ifndef fallbacks) at build time.
CONSTANTS = """
#define IORING_SETUP_SQPOLL ...
#define IORING_SETUP_SQ_AFF ...
#define IORING_SETUP_COOP_TASKRUN ...
#define IORING_SETUP_SINGLE_ISSUER ...
#define IORING_SETUP_DEFER_TASKRUN ...
#define IORING_SETUP_SUBMIT_ALL ...
#define IORING_FEAT_EXT_ARG ...
#define IORING_FEAT_FAST_POLL ...
#define IORING_FEAT_NODROP ...
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
#define IORING_OP_PROVIDE_BUFFERS ...
#define IORING_OP_MSG_RING ...
#define IORING_OP_LAST ...
"""


def _find_static_liburing() -> str | None:
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

_static = _find_static_liburing()
ffibuilder.set_source(
    "zerg._uring",
    "#include <liburing.h>\n"
    "#ifndef IORING_CQE_F_BUF_MORE\n#define IORING_CQE_F_BUF_MORE (1U << 4)\n#endif\n"
    "#ifndef IOU_PBUF_RING_INC\n#define IOU_PBUF_RING_INC 2\n#endif\n"
    "#ifndef IORING_SETUP_SINGLE_ISSUER\n#define IORING_SETUP_SINGLE_ISSUER (1U << 12)\n#endif\n"
    "#ifndef IORING_SETUP_DEFER_TASKRUN\n#define IORING_SETUP_DEFER_TASKRUN (1U << 13)\n#endif\n"
    '#include "uringshim.h"\n',
    sources=[str((HERE / "uringshim.c").relative_to(HERE.parent))],
    include_dirs=[str(HERE)],
    extra_compile_args=["-O2", "-Wall", "-Wno-unused-function"],
    extra_objects=[_static] if _static else [],
    libraries=[] if _static else ["uring"],
    extra_link_args=["-Wl,--exclude-libs,ALL"] if _static else [],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
