/*
 * uringshim.h -- the thin C layer between zerg and liburing.
 *
 * Why it exists: Python must never touch an SQE or a CQE struct, and the
 * per-completion work (draining the CQ, returning provided buffers) must be
 * one C call per batch, not one per completion.
 *
 * Rules (liburing's habits): no policy, no hidden allocation on the hot path,
 * every function returns 0/count or a negative errno.  Decisions (what to
 * re-arm, when to close, what a result means) live in Python where they can
 * be read and tested.  This header is also the cffi cdef, so it must stay
 * plain C declarations without preprocessor logic.
 */

typedef struct zu_ring zu_ring;

/* Ring lifetime.  flags are IORING_SETUP_* bits; *err receives -errno. */
zu_ring *zu_ring_new(unsigned entries, unsigned cq_entries, unsigned flags,
                     int sq_thread_cpu, unsigned sq_thread_idle_ms, int *err);
void zu_ring_free(zu_ring *r);
int zu_ring_fd(zu_ring *r);
unsigned zu_ring_setup_flags(zu_ring *r);   /* flags as the kernel kept them */
unsigned zu_ring_features(zu_ring *r);      /* IORING_FEAT_* */
unsigned zu_ring_sq_entries(zu_ring *r);
unsigned zu_ring_cq_entries(zu_ring *r);
unsigned zu_sq_ready(zu_ring *r);           /* prepared, not yet submitted */
unsigned zu_sq_need_wakeup(zu_ring *r);     /* SQPOLL thread asleep? */
unsigned long long zu_sqes_prepared(zu_ring *r);

/* Provided buffer ring.  base..base+entries*buf_size is memory owned by the
 * caller (zerg's slab pool) and must outlive the registration.  reg_flags go
 * straight into io_uring_buf_reg (IOU_PBUF_RING_INC needs a 6.12 kernel). */
int zu_bufring_setup(zu_ring *r, unsigned bgid, unsigned entries,
                     unsigned reg_flags, char *base, unsigned buf_size);
int zu_bufring_free(zu_ring *r);
/* Give n buffers back to the kernel with one tail update. */
void zu_bufring_return(zu_ring *r, const unsigned short *ids, unsigned n);

/* SQE preparation.  Each returns 0, or -EBUSY if the SQ stayed full after a
 * submit.  user_data comes back unchanged in the CQE. */
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

/* Submit what is prepared; wait for min_complete CQEs at most timeout_ns
 * (-1: no limit, 0: do not wait, just flush and reap task work).
 * Returns >= 0, or -ETIME / -EINTR which callers treat as "nothing". */
int zu_submit(zu_ring *r);
int zu_submit_and_wait(zu_ring *r, unsigned min_complete, long long timeout_ns);

/* The other loop mode: publish the SQ tail and call io_uring_enter directly
 * with an extended argument carrying the timeout (IORING_ENTER_EXT_ARG,
 * Linux 5.11), instead of liburing's submit-and-wait.  Same return contract. */
int zu_enter_ext(zu_ring *r, unsigned min_complete, long long timeout_ns);
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
 * kernel's last opcode, or -errno when io_uring itself is unavailable. */
int zu_probe_ops(unsigned char *out, unsigned n);
