/*
 * uringshim.h -- the thin C layer between zerg and liburing.
 *
 * Why it exists: Python must never touch an SQE or a CQE struct, and the
 * per-completion work (draining the CQ, returning provided buffers) must be
 * one C call per batch, not one per completion.
 *
 * Rules (liburing's habits): no policy, no hidden allocation on the hot path,
 * every function returns 0/count or a negative errno, and a negative errno
 * is never swallowed on the way up.  Decisions (what to re-arm, when to
 * close, what a result means) live in Python where they can be read and
 * tested.  This header is also the cffi cdef, so it must stay plain C
 * declarations without preprocessor logic (a #define to an integer literal
 * is fine); fallbacks for old liburing headers live in uringshim_compat.h.
 */

typedef struct zu_ring zu_ring;

/* Ring lifetime.  flags are IORING_SETUP_* bits; *err receives -errno.
 * zu_ring_free also drops the provided buffer ring, if any: closing the
 * ring unregisters it in the kernel, then its memory is unmapped. */
zu_ring *zu_ring_new(unsigned entries, unsigned cq_entries, unsigned flags,
                     int sq_thread_cpu, unsigned sq_thread_idle_ms, int *err);
void zu_ring_free(zu_ring *r);
int zu_ring_fd(zu_ring *r);
unsigned zu_ring_setup_flags(zu_ring *r);   /* flags as the kernel kept them */
unsigned zu_ring_features(zu_ring *r);      /* IORING_FEAT_* */
unsigned zu_ring_sq_entries(zu_ring *r);
unsigned zu_ring_cq_entries(zu_ring *r);
unsigned zu_sq_need_wakeup(zu_ring *r);     /* SQPOLL thread asleep? */
unsigned long long zu_sqes_prepared(zu_ring *r);

/* Provided buffer ring, at most one per zu_ring.  base..base+entries*buf_size
 * is memory owned by the caller (zerg's slab pool) and must outlive the ring.
 * reg_flags go straight into io_uring_buf_reg (IOU_PBUF_RING_INC needs a
 * 6.12 kernel).  Returns 0; -EEXIST if one is set up already; -EINVAL for
 * entries not a power of two in 1..32768, or bgid / reg_flags above 16 bits;
 * or the mmap / registration errno, after undoing what it did (the ring is
 * then as before and may try again). */
int zu_bufring_setup(zu_ring *r, unsigned bgid, unsigned entries,
                     unsigned reg_flags, char *base, unsigned buf_size);
/* Give n buffers back to the kernel with one tail update. */
void zu_bufring_return(zu_ring *r, const unsigned short *ids, unsigned n);

/* SQE preparation.  Each returns 0 or a negative errno.  When the SQ is full
 * it submits first (as zu_submit); if that submit fails its errno is
 * returned as is (a transient one too: it is the reason nothing could be
 * prepared), and -EBUSY means the submit went through yet the SQ stayed full
 * (SQPOLL: the kernel thread has not caught up).  On error nothing was
 * prepared.  user_data comes back unchanged in the CQE. */
int zu_prep_accept_multishot(zu_ring *r, int fd, unsigned long long ud);
int zu_prep_recv_multishot(zu_ring *r, int fd, unsigned long long ud);
int zu_prep_send(zu_ring *r, int fd, char *base, unsigned long long off,
                 unsigned len, unsigned long long ud);
int zu_prep_cancel(zu_ring *r, unsigned long long target,
                   unsigned long long ud);
int zu_prep_poll_add(zu_ring *r, int fd, unsigned mask,
                     unsigned long long ud);
int zu_prep_poll_remove(zu_ring *r, unsigned long long target,
                        unsigned long long ud);
int zu_prep_msg_ring(zu_ring *r, int target_ring_fd, unsigned res,
                     unsigned long long data, unsigned long long ud);
int zu_prep_nop(zu_ring *r, unsigned long long ud);
/* A gathered send (sendmsg over an iovec array): state is caller memory of
 * zu_sendv_size(n) bytes holding the msghdr and n iovecs, filled with
 * zu_sendv_set, and kept valid until the completion. */
unsigned long long zu_sendv_size(unsigned n);
void zu_sendv_set(void *state, unsigned i, char *base, unsigned long long off, unsigned len);
int zu_prep_sendv(zu_ring *r, int fd, void *state, unsigned n, unsigned long long ud);
/* The retry of a send the kernel answered with -EAGAIN (a full buffer of a
 * non-blocking socket): the same requests with IORING_RECVSEND_POLL_FIRST,
 * so the kernel waits until the socket is writable before trying again. */
int zu_prep_send_when_writable(zu_ring *r, int fd, char *base, unsigned long long off,
                               unsigned len, unsigned long long ud);
int zu_prep_sendv_when_writable(zu_ring *r, int fd, void *state, unsigned n,
                                unsigned long long ud);
/* connect(fd, addr): addr (a struct sockaddr of addrlen bytes) must stay
 * valid until the completion (the kernel reads it when the SQE is issued). */
int zu_prep_connect(zu_ring *r, int fd, const void *addr, unsigned addrlen,
                    unsigned long long ud);

/* Entering the kernel.  zu_submit only submits what is prepared.
 * zu_submit_and_wait submits and waits for min_complete CQEs at most
 * timeout_ns (< 0: no limit; 0, or min_complete 0: do not wait, just submit
 * and reap task work).  zu_enter_ext is the other loop mode: it publishes
 * the SQ tail and calls io_uring_enter itself with the timeout in an extended
 * argument (IORING_ENTER_EXT_ARG, Linux 5.11) instead of liburing's
 * submit-and-wait.
 *
 * Return contract, the same for all three:
 *   >= 0   success (the count of SQEs submitted when liburing reports one;
 *          0 is plain success too).
 *   0 is also what these four errnos become, each meaning "nothing is wrong:
 *   harvest the CQ and come back"; SQEs not yet submitted stay queued:
 *     -ETIME   the timeout expired before min_complete CQEs arrived (the
 *              kernel's answer, passed on by io_uring_submit_and_wait_timeout);
 *     -EINTR   a signal interrupted the wait (Python runs its handler next);
 *     -EAGAIN  the kernel lacked resources for the submission just now;
 *     -EBUSY   the CQ overflowed and its backlog could not be flushed yet.
 *   < 0    any other value is a real error the caller must raise (-EBADF,
 *          -EEXIST from a second task on a SINGLE_ISSUER ring, -EBADR when
 *          CQEs were dropped, -EOWNERDEAD when the SQPOLL thread is gone,
 *          ...), returned exactly as the kernel or liburing gave it. */
int zu_submit(zu_ring *r);
int zu_submit_and_wait(zu_ring *r, unsigned min_complete, long long timeout_ns);
int zu_enter_ext(zu_ring *r, unsigned min_complete, long long timeout_ns);
/* How many times zu_submit_and_wait / zu_enter_ext ran (not zu_submit). */
unsigned long long zu_enter_calls(zu_ring *r);
/* Only publish the SQ tail (no syscall): with SQPOLL the kernel thread picks
 * the entries up by itself.  Returns how many wait to be consumed. */
unsigned zu_flush_sq(zu_ring *r);

/* user_data codec: the low ZU_UD_OP_BITS bits are zerg's operation, the
 * rest a key (connection id, poll token, ...).  zerg._ring encodes with
 * these values; zu_harvest decodes, so Python never shifts. */
#define ZU_UD_OP_BITS 8
#define ZU_UD_OP_MASK 255

/* Drain up to max CQEs into flat arrays, user_data already split into op
 * and key, and the provided-buffer id taken out of the flags (0 when
 * IORING_CQE_F_BUFFER is not set).  Returns the count taken. */
unsigned zu_harvest(zu_ring *r, unsigned max, unsigned char *op,
                    unsigned long long *key, int *res, unsigned *flags,
                    unsigned short *bid);

/* Opcode probe: out[op] = 1 when supported, for op < n.  Returns the
 * kernel's last opcode, or -errno when io_uring itself is unavailable (from
 * io_uring_setup) or the probe failed (from io_uring_register). */
int zu_probe_ops(unsigned char *out, unsigned n);
