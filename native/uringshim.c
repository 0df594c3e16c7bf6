/*
 * uringshim.c -- see uringshim.h for the contract.
 *
 * Plan: one zu_ring wraps a struct io_uring plus at most one provided buffer
 * ring.  Preparation helpers fill exactly one SQE.  zu_harvest walks the CQ
 * once and advances it once; zu_bufring_return adds many buffers and
 * publishes them with a single tail store.  Nothing here decides anything.
 *
 * Errors: every liburing or kernel result is either returned or, for the
 * four "come back later" errnos of io_uring_enter, mapped to 0 in exactly
 * one place (enter_result); see uringshim.h for that contract.
 *
 * Compatibility: what liburing 2.3 (Debian 12) lacks is in uringshim_compat.h,
 * shared with the cffi module's preamble.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <signal.h>
#include <stdint.h>

#include "uringshim_compat.h"
#include "uringshim.h"

struct zu_ring {
    struct io_uring ring;
    struct io_uring_buf_ring *br;   /* NULL until zu_bufring_setup */
    size_t br_bytes;
    char *buf_base;
    unsigned buf_size;
    int br_mask;                    /* liburing's type for it */
    unsigned bgid;
    unsigned long long sqes;
    unsigned long long enters;     /* waits issued by zu_submit_and_wait / zu_enter_ext */
};

zu_ring *zu_ring_new(unsigned entries, unsigned cq_entries, unsigned flags,
                     int sq_thread_cpu, unsigned sq_thread_idle_ms, int *err)
{
    struct io_uring_params p;
    zu_ring *r = calloc(1, sizeof(*r));
    int ret;

    if (!r) {
        *err = -ENOMEM;
        return NULL;
    }
    memset(&p, 0, sizeof(p));
    p.flags = flags;
    if (cq_entries) {
        p.flags |= IORING_SETUP_CQSIZE;
        p.cq_entries = cq_entries;
    }
    if (sq_thread_cpu >= 0)
        p.sq_thread_cpu = (unsigned)sq_thread_cpu;
    p.sq_thread_idle = sq_thread_idle_ms;
    ret = io_uring_queue_init_params(entries, &r->ring, &p);
    if (ret < 0) {
        free(r);
        *err = ret;
        return NULL;
    }
    *err = 0;
    return r;
}

void zu_ring_free(zu_ring *r)
{
    if (!r)
        return;
    /* Closing the ring drops the buffer ring registration with it; the
     * kernel pinned the ring's pages at registration, so unmapping after the
     * close is safe even while the ring is torn down asynchronously.  No
     * separate unregister, hence no error to drop on the floor here. */
    io_uring_queue_exit(&r->ring);
    if (r->br)
        munmap(r->br, r->br_bytes);
    free(r);
}

int zu_ring_fd(zu_ring *r) { return r->ring.ring_fd; }
unsigned zu_ring_setup_flags(zu_ring *r) { return r->ring.flags; }
unsigned zu_ring_features(zu_ring *r) { return r->ring.features; }
unsigned zu_ring_sq_entries(zu_ring *r) { return r->ring.sq.ring_entries; }
unsigned zu_ring_cq_entries(zu_ring *r) { return r->ring.cq.ring_entries; }
unsigned long long zu_sqes_prepared(zu_ring *r) { return r->sqes; }

unsigned zu_sq_need_wakeup(zu_ring *r)
{
    return (IO_URING_READ_ONCE(*r->ring.sq.kflags) & IORING_SQ_NEED_WAKEUP) != 0;
}

int zu_bufring_setup(zu_ring *r, unsigned bgid, unsigned entries,
                     unsigned reg_flags, char *base, unsigned buf_size)
{
    struct io_uring_buf_reg reg;
    size_t bytes = (size_t)entries * sizeof(struct io_uring_buf);
    void *mem;
    unsigned i;
    int ret;

    if (r->br)
        return -EEXIST;
    if (entries == 0 || (entries & (entries - 1)) || entries > 32768)
        return -EINVAL;
    if (bgid > 0xffff || reg_flags > 0xffff)
        return -EINVAL;         /* would be truncated into __u16 fields */
    mem = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
               MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (mem == MAP_FAILED)
        return -errno;
    memset(&reg, 0, sizeof(reg));
    reg.ring_addr = (unsigned long long)(uintptr_t)mem;
    reg.ring_entries = entries;
    reg.bgid = (unsigned short)bgid;
    reg.ZU_BUF_REG_FLAGS = (unsigned short)reg_flags;
    ret = io_uring_register_buf_ring(&r->ring, &reg, 0);
    if (ret < 0) {
        munmap(mem, bytes);
        return ret;
    }
    r->br = mem;
    r->br_bytes = bytes;
    r->br_mask = io_uring_buf_ring_mask(entries);
    r->bgid = bgid;
    r->buf_base = base;
    r->buf_size = buf_size;
    io_uring_buf_ring_init(r->br);
    for (i = 0; i < entries; i++)
        io_uring_buf_ring_add(r->br, base + (size_t)i * buf_size, buf_size,
                              (unsigned short)i, r->br_mask, (int)i);
    io_uring_buf_ring_advance(r->br, (int)entries);
    return 0;
}

void zu_bufring_return(zu_ring *r, const unsigned short *ids, unsigned n)
{
    unsigned i;

    for (i = 0; i < n; i++)
        io_uring_buf_ring_add(r->br, r->buf_base + (size_t)ids[i] * r->buf_size,
                              r->buf_size, ids[i], r->br_mask, (int)i);
    io_uring_buf_ring_advance(r->br, (int)n);
}

/* One SQE, submitting first when the SQ is full.  On NULL, *err holds why:
 * that submit's own negative errno, or -EBUSY when it went through but the
 * SQ is still full (SQPOLL: the kernel thread has not consumed it yet). */
static struct io_uring_sqe *get_sqe(zu_ring *r, int *err)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ring);
    int ret;

    if (!sqe) {
        ret = io_uring_submit(&r->ring);
        if (ret < 0) {
            *err = ret;
            return NULL;
        }
        sqe = io_uring_get_sqe(&r->ring);
        if (!sqe) {
            *err = -EBUSY;
            return NULL;
        }
    }
    r->sqes++;
    return sqe;
}

int zu_prep_accept_multishot(zu_ring *r, int fd, unsigned long long ud)
{
    int err;
    struct io_uring_sqe *sqe = get_sqe(r, &err);

    if (!sqe)
        return err;
    io_uring_prep_multishot_accept(sqe, fd, NULL, NULL,
                                   SOCK_NONBLOCK | SOCK_CLOEXEC);
    io_uring_sqe_set_data64(sqe, ud);
    return 0;
}

int zu_prep_recv_multishot(zu_ring *r, int fd, unsigned long long ud)
{
    int err;
    struct io_uring_sqe *sqe = get_sqe(r, &err);

    if (!sqe)
        return err;
    io_uring_prep_recv_multishot(sqe, fd, NULL, 0, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = (unsigned short)r->bgid;
    io_uring_sqe_set_data64(sqe, ud);
    return 0;
}

static int prep_send(zu_ring *r, int fd, char *base, unsigned long long off, unsigned len,
                     unsigned long long ud, unsigned ioprio)
{
    int err;
    struct io_uring_sqe *sqe = get_sqe(r, &err);

    if (!sqe)
        return err;
    io_uring_prep_send(sqe, fd, base + off, len, MSG_NOSIGNAL);
    sqe->ioprio |= ioprio;
    io_uring_sqe_set_data64(sqe, ud);
    return 0;
}

int zu_prep_send(zu_ring *r, int fd, char *base, unsigned long long off,
                 unsigned len, unsigned long long ud)
{
    return prep_send(r, fd, base, off, len, ud, 0);
}

int zu_prep_cancel(zu_ring *r, unsigned long long target,
                   unsigned long long ud)
{
    int err;
    struct io_uring_sqe *sqe = get_sqe(r, &err);

    if (!sqe)
        return err;
    io_uring_prep_cancel64(sqe, target, 0);
    io_uring_sqe_set_data64(sqe, ud);
    return 0;
}

int zu_prep_poll_add(zu_ring *r, int fd, unsigned mask,
                     unsigned long long ud)
{
    int err;
    struct io_uring_sqe *sqe = get_sqe(r, &err);

    if (!sqe)
        return err;
    io_uring_prep_poll_add(sqe, fd, mask);
    io_uring_sqe_set_data64(sqe, ud);
    return 0;
}

int zu_prep_poll_remove(zu_ring *r, unsigned long long target,
                        unsigned long long ud)
{
    int err;
    struct io_uring_sqe *sqe = get_sqe(r, &err);

    if (!sqe)
        return err;
    io_uring_prep_poll_remove(sqe, target);
    io_uring_sqe_set_data64(sqe, ud);
    return 0;
}

int zu_prep_msg_ring(zu_ring *r, int target_ring_fd, unsigned res,
                     unsigned long long data, unsigned long long ud)
{
    int err;
    struct io_uring_sqe *sqe = get_sqe(r, &err);

    if (!sqe)
        return err;
    io_uring_prep_msg_ring(sqe, target_ring_fd, res, data, 0);
    io_uring_sqe_set_data64(sqe, ud);
    return 0;
}

unsigned long long zu_sendv_size(unsigned n)
{
    return sizeof(struct msghdr) + (unsigned long long)n * sizeof(struct iovec);
}

void zu_sendv_set(void *state, unsigned i, char *base, unsigned long long off, unsigned len)
{
    struct iovec *iov = (struct iovec *)((struct msghdr *)state + 1);

    iov[i].iov_base = base + off;
    iov[i].iov_len = len;
}

static int prep_sendv(zu_ring *r, int fd, void *state, unsigned n, unsigned long long ud,
                      unsigned ioprio)
{
    int err;
    struct msghdr *msg = state;
    struct io_uring_sqe *sqe = get_sqe(r, &err);

    if (!sqe)
        return err;
    memset(msg, 0, sizeof(*msg));
    msg->msg_iov = (struct iovec *)(msg + 1);
    msg->msg_iovlen = n;
    io_uring_prep_sendmsg(sqe, fd, msg, MSG_NOSIGNAL);
    sqe->ioprio |= ioprio;
    io_uring_sqe_set_data64(sqe, ud);
    return 0;
}

int zu_prep_sendv(zu_ring *r, int fd, void *state, unsigned n, unsigned long long ud)
{
    return prep_sendv(r, fd, state, n, ud, 0);
}

int zu_prep_send_when_writable(zu_ring *r, int fd, char *base, unsigned long long off,
                               unsigned len, unsigned long long ud)
{
    return prep_send(r, fd, base, off, len, ud, IORING_RECVSEND_POLL_FIRST);
}

int zu_prep_sendv_when_writable(zu_ring *r, int fd, void *state, unsigned n,
                                unsigned long long ud)
{
    return prep_sendv(r, fd, state, n, ud, IORING_RECVSEND_POLL_FIRST);
}

int zu_prep_connect(zu_ring *r, int fd, const void *addr, unsigned addrlen,
                    unsigned long long ud)
{
    int err;
    struct io_uring_sqe *sqe = get_sqe(r, &err);

    if (!sqe)
        return err;
    io_uring_prep_connect(sqe, fd, (const struct sockaddr *)addr, (socklen_t)addrlen);
    io_uring_sqe_set_data64(sqe, ud);
    return 0;
}

int zu_prep_nop(zu_ring *r, unsigned long long ud)
{
    int err;
    struct io_uring_sqe *sqe = get_sqe(r, &err);

    if (!sqe)
        return err;
    io_uring_prep_nop(sqe);
    io_uring_sqe_set_data64(sqe, ud);
    return 0;
}

/* The one place where io_uring_enter results are judged (see uringshim.h):
 * four errnos that mean "harvest and come back" become 0, every other
 * negative value is passed up unchanged for the caller to raise. */
static int enter_result(int ret)
{
    if (ret == -ETIME || ret == -EINTR || ret == -EAGAIN || ret == -EBUSY)
        return 0;
    return ret;
}

int zu_submit(zu_ring *r)
{
    return enter_result(io_uring_submit(&r->ring));
}

int zu_submit_and_wait(zu_ring *r, unsigned min_complete, long long timeout_ns)
{
    struct __kernel_timespec ts;
    struct io_uring_cqe *cqe;
    int ret;

    r->enters++;
    if (timeout_ns == 0 || min_complete == 0) {
        ret = io_uring_submit_and_get_events(&r->ring);
    } else if (timeout_ns < 0) {
        ret = io_uring_submit_and_wait(&r->ring, min_complete);
    } else {
        ts.tv_sec = timeout_ns / 1000000000LL;
        ts.tv_nsec = timeout_ns % 1000000000LL;
        ret = io_uring_submit_and_wait_timeout(&r->ring, &cqe, min_complete,
                                               &ts, NULL);
    }
    /* io_uring_submit_and_wait_timeout returns -ETIME on timeout. */
    return enter_result(ret);
}

/* What liburing's internal __io_uring_flush_sq does: make prepared SQEs
 * visible to the kernel; returns how many are waiting to be consumed. */
static unsigned flush_sq(struct io_uring *ring)
{
    struct io_uring_sq *sq = &ring->sq;
    unsigned tail = sq->sqe_tail;

    if (sq->sqe_head != tail) {
        sq->sqe_head = tail;
        io_uring_smp_store_release(sq->ktail, tail);
    }
    return tail - IO_URING_READ_ONCE(*sq->khead);
}

int zu_enter_ext(zu_ring *r, unsigned min_complete, long long timeout_ns)
{
    struct io_uring *ring = &r->ring;
    struct io_uring_getevents_arg arg;
    struct __kernel_timespec ts;
    unsigned flags = IORING_ENTER_GETEVENTS | IORING_ENTER_EXT_ARG;
    unsigned to_submit = flush_sq(ring);
    int ret;

    memset(&arg, 0, sizeof(arg));
    arg.sigmask_sz = _NSIG / 8;
    if (timeout_ns > 0) {
        ts.tv_sec = timeout_ns / 1000000000LL;
        ts.tv_nsec = timeout_ns % 1000000000LL;
        arg.ts = (unsigned long long)(uintptr_t)&ts;
    }
    if (timeout_ns == 0)
        min_complete = 0;
    if (ring->flags & IORING_SETUP_SQPOLL) {
        if (IO_URING_READ_ONCE(*ring->sq.kflags) & IORING_SQ_NEED_WAKEUP)
            flags |= IORING_ENTER_SQ_WAKEUP;
        to_submit = 0;      /* the SQ thread submits */
    }
    r->enters++;
    /* liburing's raw syscall wrapper returns -errno (it does not set errno). */
    ret = io_uring_enter2((unsigned)ring->ring_fd, to_submit, min_complete, flags,
                          (sigset_t *)&arg, sizeof(arg));
    return enter_result(ret);
}

unsigned long long zu_enter_calls(zu_ring *r) { return r->enters; }

unsigned zu_flush_sq(zu_ring *r) { return flush_sq(&r->ring); }

unsigned zu_harvest(zu_ring *r, unsigned max, unsigned char *op,
                    unsigned long long *key, int *res, unsigned *flags,
                    unsigned short *bid)
{
    struct io_uring_cqe *cqe;
    unsigned head, n = 0;

    io_uring_for_each_cqe(&r->ring, head, cqe) {
        if (n == max)
            break;
        op[n] = (unsigned char)(cqe->user_data & ZU_UD_OP_MASK);
        key[n] = cqe->user_data >> ZU_UD_OP_BITS;
        res[n] = cqe->res;
        flags[n] = cqe->flags;
        bid[n] = (cqe->flags & IORING_CQE_F_BUFFER)
                 ? (unsigned short)(cqe->flags >> IORING_CQE_BUFFER_SHIFT) : 0;
        n++;
    }
    if (n)
        io_uring_cq_advance(&r->ring, n);
    return n;
}

int zu_probe_ops(unsigned char *out, unsigned n)
{
    const unsigned nr_ops = 256;    /* opcodes are one byte */
    struct io_uring ring;
    struct io_uring_probe *p;
    unsigned op;
    int ret;

    /* Set a ring up ourselves so the caller learns *why* io_uring is
     * unavailable (ENOSYS, EPERM from seccomp or io_uring_disabled, ...). */
    ret = io_uring_queue_init(2, &ring, 0);
    if (ret < 0)
        return ret;
    /* Not io_uring_get_probe_ring: it turns every failure into NULL. */
    p = calloc(1, sizeof(*p) + nr_ops * sizeof(struct io_uring_probe_op));
    if (!p) {
        io_uring_queue_exit(&ring);
        return -ENOMEM;
    }
    ret = io_uring_register_probe(&ring, p, nr_ops);
    if (ret >= 0) {
        for (op = 0; op < n; op++)
            out[op] = (unsigned char)io_uring_opcode_supported(p, (int)op);
        ret = p->last_op;
    }
    free(p);
    io_uring_queue_exit(&ring);
    return ret;
}
