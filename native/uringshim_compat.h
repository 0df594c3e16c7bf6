/*
 * uringshim_compat.h -- what older liburing headers lack, in one place.
 *
 * Why it exists: Debian 12 ships liburing 2.3, whose io_uring.h predates some
 * kernel features zerg uses.  The kernel ABI values are fixed, so a missing
 * name is defined here with that value.  Both uringshim.c and the cffi
 * module's preamble (native/build_shim.py) include this file; no other file
 * carries a fallback.
 *
 * Rules: include this instead of <liburing.h>, never before it.
 * IOU_PBUF_RING_INC is an enum constant in newer headers, invisible to
 * #ifndef: the macro below then shadows it with the same value, which is
 * only harmless once the enum has been seen.
 */
#ifndef ZU_URINGSHIM_COMPAT_H
#define ZU_URINGSHIM_COMPAT_H

#include <liburing.h>

/* Linux 6.0 / 6.1 ring setup flags; liburing has them from 2.3 on. */
#ifndef IORING_SETUP_SINGLE_ISSUER
#define IORING_SETUP_SINGLE_ISSUER (1U << 12)
#endif
#ifndef IORING_SETUP_DEFER_TASKRUN
#define IORING_SETUP_DEFER_TASKRUN (1U << 13)
#endif

/* Linux 5.19 send/recv flag: poll for readiness before the first attempt. */
#ifndef IORING_RECVSEND_POLL_FIRST
#define IORING_RECVSEND_POLL_FIRST (1U << 0)
#endif

/* Linux 6.12 incremental buffer consumption; liburing has it from 2.8 on. */
#ifndef IOU_PBUF_RING_INC
#define IOU_PBUF_RING_INC 2
#endif
#ifndef IORING_CQE_F_BUF_MORE
#define IORING_CQE_F_BUF_MORE (1U << 4)
#endif

/* struct io_uring_buf_reg's 16 bits after bgid: 'pad' in liburing 2.3,
 * 'flags' from 2.4 (Linux 6.4), the first release that also ships
 * liburing/io_uring_version.h.  Same offset and width either way. */
#ifdef IO_URING_VERSION_MAJOR
#define ZU_BUF_REG_FLAGS flags
#else
#define ZU_BUF_REG_FLAGS pad
#endif

#endif /* ZU_URINGSHIM_COMPAT_H */
