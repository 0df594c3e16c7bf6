/*
 * connfast.c -- the connection fast path of zerg._speedups.
 *
 * Why: with harvest and dispatch in C (speedups.c), the Python work left per
 * message on the zerg.Protocol path is the connection's own: on_recv and the
 * settling of what data_received consumed, write (one copy into a send
 * segment), preparing the send and accounting its completion -- a dozen
 * Python frames around the one call that matters, data_received.  This file
 * carries the common case of each in C, so a message costs one Python call.
 *
 * How: the Python classes (zerg._connection.Connection/ProtocolConnection,
 * zerg._outputpipe.OutputPipe, zerg._slab.WriteSegment/SlabPool, ...) stay
 * the reference and their __slots__ stay the one definition of their
 * layout.  bind_connection() looks each field's member descriptor up once and
 * keeps its offset; the C code then reads and writes the fields where
 * CPython's own LOAD_ATTR_SLOT/STORE_ATTR_SLOT do.  Every C method handles
 * the common case and otherwise calls the Python method it replaced (kept at
 * bind time) *before changing anything*, so each rare path -- partial
 * consumption, limits, pauses, closing, failures, a stand-in submitter of the
 * sans-IO tests -- runs the reference's code.  Exact type checks guard every
 * object the C code looks into.
 *
 * Rules: as speedups.c -- reference counts written out on every path, every
 * error propagated, the GIL held throughout (nothing here waits).
 */
#include "speedups.h"

#include <structmember.h>
#include <string.h>

/* del lst[:n].  When that empties the list (n == len, up to 64 items) its
 * storage stays: the queues here (received items, staged segments) empty
 * and refill once per message, and PyList_SetSlice would free the item
 * array each time for the next append to allocate it again.  The items are
 * out of the list before their references go (a destructor may look at it). */
int
list_drop_front(PyObject *list, Py_ssize_t n)
{
    PyObject *gone[64];
    Py_ssize_t size = PyList_GET_SIZE(list);
    if (n != size || n > 64)
        return PyList_SetSlice(list, 0, n, NULL);
    for (Py_ssize_t i = 0; i < n; i++) {
        gone[i] = PyList_GET_ITEM(list, i);
        PyList_SET_ITEM(list, i, NULL);
    }
    Py_SET_SIZE(list, 0);
    for (Py_ssize_t i = 0; i < n; i++)
        Py_DECREF(gone[i]);
    return 0;
}

/* ---------------------------------------------------------------- fields */

static inline int
field_set_ssize(PyObject *o, Py_ssize_t off, Py_ssize_t v)
{
    if (off & SSIZE_FIELD) {
        SSIZE_AT(o, off) = v;
        return 0;
    }
    PyObject *n = PyLong_FromSsize_t(v);
    if (n == NULL)
        return -1;
    field_set(o, off, n);
    return 0;
}

/* The classes bound, and the offsets of the fields used. */
static PyTypeObject *conn_type, *out_type, *seg_type, *pool_type, *traffic_type, *in_type,
    *sub_type, *ring_type, *item_type, *base_type, *result_type;
static PyTypeObject *loan_type;     /* zerg._outputpipe.LoanSegment (bind_forward) */

/* write(seq) lends a receive slot to the send, instead of copying it, from
 * this many bytes on (zerg._outputpipe.LEND_MIN, the module's LEND_MIN): a
 * 16 KiB copy costs more than the loan's bookkeeping, a short one less, and
 * short replies coalesce in one write segment. */
#define LEND_MIN 4096
static PyObject *empty_seq;         /* zerg._inputpipe._EMPTY_SEQ */

static struct {
    /* Connection, ProtocolConnection */
    Py_ssize_t state, in, out, buf, reading_paused, slots, give_back, data_received, host,
        last_rx, unread, bytes_in, owner, dirty, want_send, writing_paused, sub, fd, id,
        traffic, send, stopping;
    /* OutputPipe */
    Py_ssize_t o_pending, o_max, o_pause_at, o_budget, o_cur, o_staged, o_granted, o_pool,
        o_exc, o_sending, o_bytes_out, o_flush_w, o_drain_w, o_refused, o_over_budget, o_eof,
        o_loans, o_pin_limit;
    /* WriteSegment, LoanSegment */
    Py_ssize_t s_view, s_fill, s_sent, s_jumbo, s_resident, s_ptr, s_off, s_chunk, l_key,
        l_slots, t_forwarded, t_lent;
    /* SlabPool, Traffic, InputPipe, RingSubmitter, Ring */
    Py_ssize_t p_free, p_room_waiters, t_sends, t_bytes_out, i_discarding, i_paused,
        r_ring, r_address, g_closed;
    /* InputPipe (levels 1-3), RingItem */
    Py_ssize_t i_slots, i_plain, i_held, i_items, i_ipos, i_head, i_tail, i_unread, i_waiter, i_give,
        i_opts, i_mark, it_key, it_live, it_bid, it_length, it_view, it_held_at;
    /* InputPipe, PipeReader's side */
    Py_ssize_t i_completed, i_handed, i_cancel, i_ended, i_buffer, i_movable, i_examined_all,
        i_loop, i_backlog;
} F;

/* The replaced Python methods: the reference paths (ref_c_*: Connection's,
 * the others ProtocolConnection's). */
static PyObject *ref_on_recv, *ref_write, *ref_send_pending, *ref_on_send, *ref_forward;
static PyObject *ref_c_write, *ref_c_kick_send, *ref_c_on_send, *ref_c_on_recv,
    *ref_c_try_get_ring, *ref_c_return_ring, *ref_c_flush, *ref_c_forward, *ref_c_reset_read;
static PyObject *ref_i_try_read, *ref_i_advance_to, *ref_i_arm_waiter;
static PyObject *ref_c_get_sequence, *ref_seq_advance, *ref_seq_release, *ref_seq_iter;
static PyObject *fn_drop_tokens;    /* InputPipe._drop_tokens, the function */

static PyObject *s_failed, *s_settle, *s_pause_writing, *s_maybe_resume_writing,
    *s_maybe_resume_protocol, *s_maybe_finish, *s_new_segment,
    *s_wake_flushers, *s_check, *s_now, *s_view, *s_give_back, *s_send_what, *s_sends,
    *s_bytes_out, *s_pause, *s_maybe_resume, *s_move_off, *s_release,
    *s_max_read_buffer, *s_max_held_slots, *s_read_chunk_items, *s_out, *s_drop_tokens, *s_pull,
    *s_relieve, *s_forwarded, *s_lent, *s_result, *s_blocking;

/* Call a reference function with self first (at most 3 more arguments). */
PyObject *
ref_call(PyObject *func, PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *stack[4];
    if (nargs > 3) {
        PyErr_SetString(PyExc_TypeError, "too many arguments");
        return NULL;
    }
    stack[0] = self;
    for (Py_ssize_t i = 0; i < nargs; i++)
        stack[i + 1] = args[i];
    return PyObject_Vectorcall(func, stack, (size_t)nargs + 1, NULL);
}

/* Call a reference function with self first, any arguments and keywords
 * (args: nargs positional values, then the values of kwnames). */
PyObject *
ref_call_kw(PyObject *func, PyObject *self, PyObject *const *args, Py_ssize_t nargs,
            PyObject *kwnames)
{
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    Py_ssize_t total = 1 + nargs + nkw;
    PyObject *small[8];
    PyObject **stack = total <= 8 ? small : PyMem_New(PyObject *, total);
    if (stack == NULL)
        return PyErr_NoMemory();
    stack[0] = self;
    for (Py_ssize_t i = 0; i < nargs + nkw; i++)
        stack[i + 1] = args[i];
    PyObject *r = PyObject_Vectorcall(func, stack, (size_t)(nargs + 1), kwnames);
    if (stack != small)
        PyMem_Free(stack);
    return r;
}

/* A writable, contiguous byte view's memory, or NULL (not an error). */
static inline Py_buffer *
plain_buffer(PyObject *view, int writable)
{
    if (view == NULL || !PyMemoryView_Check(view))
        return NULL;
    if (((PyMemoryViewObject *)view)->flags & _Py_MEMORYVIEW_RELEASED)
        return NULL;
    Py_buffer *b = PyMemoryView_GET_BUFFER(view);
    /* _Py_MEMORYVIEW_C: the memoryview's own record of being C-contiguous,
     * set when it was made (PyBuffer_IsContiguous walks shape and strides,
     * about 35 instructions, several times a message). */
    if ((writable && b->readonly) || b->ndim > 1 || b->itemsize != 1
            || !(((PyMemoryViewObject *)view)->flags & _Py_MEMORYVIEW_C))
        return NULL;
    return b;
}

/* x += d on an int field of an object of type tp (its field off), or by
 * name on any other object (a stand-in of the tests).  0 or -1. */
static int
bump(PyObject *o, PyTypeObject *tp, Py_ssize_t off, PyObject *name, Py_ssize_t d)
{
    Py_ssize_t v;
    if (Py_IS_TYPE(o, tp) && field_ssize(o, off, &v) == 0)
        return field_set_ssize(o, off, v + d);
    PyObject *cur = PyObject_GetAttr(o, name);
    if (cur == NULL)
        return -1;
    PyObject *delta = PyLong_FromSsize_t(d);
    PyObject *sum = delta == NULL ? NULL : PyNumber_Add(cur, delta);
    Py_DECREF(cur);
    Py_XDECREF(delta);
    if (sum == NULL)
        return -1;
    int rc = PyObject_SetAttr(o, name, sum);
    Py_DECREF(sum);
    return rc;
}

/* ----------------------------------------------------------- the sending */

/* OutputPipe._new_segment: a pool segment becomes the one writes append to. */
static int
new_segment(PyObject *out)
{
    PyObject *pool = FIELD(out, F.o_pool), *staged = FIELD(out, F.o_staged);
    PyObject *freelist = pool != NULL && Py_IS_TYPE(pool, pool_type) ? FIELD(pool, F.p_free)
                                                                       : NULL;
    Py_ssize_t last = freelist != NULL && PyList_CheckExact(freelist)
                          ? PyList_GET_SIZE(freelist) - 1 : -1;
    if (last < 0 || staged == NULL || !PyList_CheckExact(staged)
            || !Py_IS_TYPE(PyList_GET_ITEM(freelist, last), seg_type))
        return call_method(out, s_new_segment, NULL, NULL);   /* grows the pool */
    /* freelist.pop(), keeping the list's storage (a pop that shrinks it
     * frees memory the next give-back allocates again) */
    PyObject *seg = PyList_GET_ITEM(freelist, last);     /* the list's reference, ours */
    PyList_SET_ITEM(freelist, last, NULL);
    Py_SET_SIZE(freelist, last);
    field_set(seg, F.s_resident, Py_NewRef(Py_True));
    if (PyList_Append(staged, seg) < 0) {
        /* back where it came from: nothing changed */
        int rc = PyList_Append(freelist, seg);
        (void)rc;
        Py_DECREF(seg);
        return -1;
    }
    field_set(out, F.o_cur, seg);
    return field_set_ssize(out, F.o_granted, 0);
}

/* OutputPipe.write's common case: n bytes fit the current segment (or a
 * fresh one) and no limit is near.  1 staged, 0 take the reference, -1. */
static int
out_stage(PyObject *out, const char *buf, Py_ssize_t n)
{
    Py_ssize_t pending, maxw, pause_at, budget, fill;
    if (field_ssize(out, F.o_pending, &pending) || field_ssize(out, F.o_max, &maxw)
            || field_ssize(out, F.o_pause_at, &pause_at) || field_ssize(out, F.o_budget, &budget))
        return 0;
    if (n == 0)
        return 1;
    if (n > maxw - pending || (budget && n > pause_at - pending))
        return 0;
    PyObject *seg = FIELD(out, F.o_cur);
    if (seg == Py_None) {
        if (new_segment(out) < 0)
            return -1;
        seg = FIELD(out, F.o_cur);
    }
    if (seg == NULL || !Py_IS_TYPE(seg, seg_type) || field_ssize(seg, F.s_fill, &fill))
        return 0;
    Py_buffer *b = plain_buffer(FIELD(seg, F.s_view), 1);
    if (b == NULL || fill < 0 || b->len - fill < n)
        return 0;           /* spans segments: the reference splits it */
    memmove((char *)b->buf + fill, buf, (size_t)n);
    if (field_set_ssize(seg, F.s_fill, fill + n) < 0
            || field_set_ssize(out, F.o_pending, pending + n) < 0)
        return -1;
    return 1;
}

/* Connection._kick_send: put the first unsent segment in flight.  0 or -1. */
static int
kick_send(PyObject *self, PyObject *out)
{
    PyObject *sending = FIELD(out, F.o_sending), *staged = FIELD(out, F.o_staged);
    if (sending == Py_None && staged != NULL && PyList_CheckExact(staged)
            && PyList_GET_SIZE(staged) == 0)
        return 0;
    if (sending != Py_None || staged == NULL || !PyList_CheckExact(staged)
            || PyList_GET_SIZE(staged) > 1)     /* several segments: the gathered send */
        return sending == Py_None ? call_ok(ref_call(ref_c_kick_send, self, NULL, 0)) : 0;
    PyObject *seg = PyList_GET_ITEM(staged, 0);
    Py_ssize_t fill, sent, fd;
    unsigned long long ud;
    PyObject *ido = FIELD(self, F.id), *sub = FIELD(self, F.sub);
    int is_loan = loan_type != NULL && Py_IS_TYPE(seg, loan_type);
    if (!(is_loan || Py_IS_TYPE(seg, seg_type)) || field_ssize(seg, F.s_fill, &fill)
            || field_ssize(seg, F.s_sent, &sent) || sent >= fill || sent < 0
            || fill - sent > (Py_ssize_t)UINT_MAX
            || field_ssize(self, F.fd, &fd) || fd < 0 || fd > INT_MAX
            || ido == NULL || !PyLong_CheckExact(ido) || sub == NULL)
        return call_ok(ref_call(ref_c_kick_send, self, NULL, 0));
    ud = PyLong_AsUnsignedLongLong(ido);    /* encode(Op.SEND, id) */
    if (ud == (unsigned long long)-1 && PyErr_Occurred())
        return -1;
    if (ud >> (64 - ZU_UD_OP_BITS))
        return call_ok(ref_call(ref_c_kick_send, self, NULL, 0));   /* over 64 bits */
    ud = (ud << ZU_UD_OP_BITS) | OP_SEND;
    Py_ssize_t len = fill - sent;
    int ret;
    Py_INCREF(seg);
    field_set(out, F.o_sending, Py_NewRef(seg));
    PyObject *ring = Py_IS_TYPE(sub, sub_type) ? FIELD(sub, F.r_ring) : NULL;
    Py_buffer *b = plain_buffer(FIELD(seg, F.s_view), 0);
    Py_ssize_t addr;
    if (ring != NULL && Py_IS_TYPE(ring, ring_type) && FIELD(ring, F.g_closed) == Py_False
            && b != NULL && b->len >= fill && field_ssize(sub, F.r_address, &addr) == 0
            && addr != 0) {
        ret = zu_prep_send((zu_ring *)(uintptr_t)addr, (int)fd, (char *)b->buf,
                           (unsigned long long)sent, (unsigned)len, ud);
    } else {
        /* A stand-in submitter (the sans-IO tests): send(fd, base, off, len, ud). */
        PyObject *send = FIELD(self, F.send), *ptr = FIELD(seg, F.s_ptr);
        Py_ssize_t off;
        if (is_loan || send == NULL || ptr == NULL || field_ssize(seg, F.s_off, &off)) {
            field_set(out, F.o_sending, Py_NewRef(Py_None));
            Py_DECREF(seg);
            return call_ok(ref_call(ref_c_kick_send, self, NULL, 0));
        }
        PyObject *r = PyObject_CallFunction(send, "nOnnK", fd, ptr, off + sent, len, ud);
        if (r == NULL) {
            Py_DECREF(seg);
            return -1;
        }
        long v = PyLong_AsLong(r);
        Py_DECREF(r);
        if (v == -1 && PyErr_Occurred()) {
            Py_DECREF(seg);
            return -1;
        }
        ret = (int)v;
    }
    Py_DECREF(seg);
    if (ret) {
        field_set(out, F.o_sending, Py_NewRef(Py_None));
        PyObject *code = PyLong_FromLong(ret);
        if (code == NULL)
            return -1;
        int rc = call_method(sub, s_check, code, s_send_what);
        Py_DECREF(code);
        if (rc < 0)
            return -1;
    }
    PyObject *traffic = FIELD(self, F.traffic);
    return traffic == NULL ? 0 : bump(traffic, traffic_type, F.t_sends, s_sends, 1);
}

/* ProtocolConnection.send_pending */
PyObject *
pc_send_pending(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *out = FIELD(self, F.out);
    Py_ssize_t pending;
    if (out == NULL || !Py_IS_TYPE(out, out_type) || field_ssize(out, F.o_pending, &pending))
        return ref_call(ref_send_pending, self, NULL, 0);
    field_set(self, F.dirty, Py_NewRef(Py_False));
    if (pending && FIELD(out, F.o_exc) == Py_None && kick_send(self, out) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static int protocol_staged(PyObject *self, PyObject *out);
static int lend_fast(PyObject *self, PyObject *data, int protocol, int write);
static int lend_view(PyObject *self, PyObject *view, Py_buffer *b, int protocol);

/* LoanSegments whose send is over, for the next loans: an echo or a relay
 * lends one per message, and making one costs more than filling its fields
 * again.  Only objects nothing else refers to come here.  Room for one
 * harvest's worth: the sends of a batch complete together (E3, 50
 * connections, overflowed 16 on every other message). */
#define LOAN_FREELIST_MAX 64
static PyObject *loan_freelist[LOAN_FREELIST_MAX];
static int loan_freelist_n;

static void
loan_recycle(PyObject *seg)     /* takes the reference */
{
    if (Py_REFCNT(seg) == 1 && loan_type != NULL && Py_IS_TYPE(seg, loan_type)
            && loan_freelist_n < LOAN_FREELIST_MAX) {
        loan_freelist[loan_freelist_n++] = seg;
        return;
    }
    Py_DECREF(seg);
}

/* 1 when the caller runs on the thread `owner` (a connection's _owner, an
 * int) names; 0 otherwise, or when it cannot tell (never an error). */
int
on_owner_thread(PyObject *owner)
{
    unsigned long tid = PyLong_AsUnsignedLong(owner);
    if (tid == (unsigned long)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    return tid == PyThread_get_thread_ident();
}

/* Connection.write (protocol: ProtocolConnection's, which also marks the
 * connection for the iteration's send and pauses a Protocol's writing). */
static int
write_fast(PyObject *self, PyObject *data, int protocol)
{
    PyObject *owner = FIELD(self, F.owner), *out = FIELD(self, F.out);
    Py_ssize_t state;
    if (owner == NULL || !PyLong_CheckExact(owner) || field_ssize(self, F.state, &state)
            || state != 0 || out == NULL || !Py_IS_TYPE(out, out_type)
            || FIELD(out, F.o_exc) != Py_None || FIELD(out, F.o_eof) != Py_False)
        return 0;
    if (!on_owner_thread(owner))
        return 0;                   /* the reference raises the right error */
    const char *buf;
    Py_ssize_t n;
    if (Py_IS_TYPE(data, seq_type)) {
        SeqObject *seq = (SeqObject *)data;
        Py_ssize_t start, stop;
        if (seq->segs == NULL || !PyList_CheckExact(seq->segs)
                || PyList_GET_SIZE(seq->segs) != 1)
            return 0;
        if (seq_check_alive(seq) < 0 || seq_bounds(seq, &start, &stop) < 0)
            return -1;
        if (stop - start >= LEND_MIN) {
            int lent = lend_fast(self, data, protocol, 1);
            if (lent != 0)
                return lent;
        }
        Py_buffer *b = plain_buffer(PyList_GET_ITEM(seq->segs, 0), 0);
        if (b == NULL || start < 0 || start > stop || stop > b->len)
            return 0;
        buf = (const char *)b->buf + start;
        n = stop - start;
    } else if (PyBytes_CheckExact(data)) {
        buf = PyBytes_AS_STRING(data);
        n = PyBytes_GET_SIZE(data);
    } else if (PyMemoryView_Check(data)) {
        /* A live, contiguous byte view (a ring item's, a slice of one): its
         * bytes, as memoryview.cast("B") would give them. */
        Py_buffer *b = plain_buffer(data, 0);
        if (b == NULL || b->ndim != 1)
            return 0;
        if (b->len >= LEND_MIN) {
            int lent = lend_view(self, data, b, protocol);
            if (lent != 0)
                return lent;
        }
        buf = (const char *)b->buf;
        n = b->len;
    } else if (PyByteArray_CheckExact(data)) {
        buf = PyByteArray_AS_STRING(data);
        n = PyByteArray_GET_SIZE(data);
    } else {
        return 0;
    }
    int r = out_stage(out, buf, n);
    if (r <= 0 || !protocol)
        return r;
    return protocol_staged(self, out);
}

/* A ProtocolConnection staged bytes: mark it for this iteration's send, and
 * pause the Protocol's writing past the mark.  1, or -1. */
static int
protocol_staged(PyObject *self, PyObject *out)
{
    if (FIELD(self, F.dirty) != Py_True) {
        PyObject *want_send = FIELD(self, F.want_send);
        field_set(self, F.dirty, Py_NewRef(Py_True));
        if (want_send == NULL) {
            PyErr_SetString(PyExc_AttributeError, "_want_send");
            return -1;
        }
        PyObject *res = PyObject_CallOneArg(want_send, self);
        if (res == NULL)
            return -1;
        Py_DECREF(res);
    }
    Py_ssize_t pending, pause_at, loans, pin_limit;
    if (field_ssize(out, F.o_pending, &pending) == 0
            && field_ssize(out, F.o_pause_at, &pause_at) == 0
            && field_ssize(out, F.o_loans, &loans) == 0
            && field_ssize(out, F.o_pin_limit, &pin_limit) == 0
            && (pending > pause_at || loans >= pin_limit)
            && FIELD(self, F.writing_paused) != Py_True)
        return call_method(self, s_pause_writing, NULL, NULL) < 0 ? -1 : 1;
    return 1;
}

/* write(data): the fast path, else the reference ref. */
static PyObject *
write_entry(PyObject *self, PyObject *const *args, Py_ssize_t nargs, int protocol,
            PyObject *ref)
{
    if (nargs == 1) {
        int r = write_fast(self, args[0], protocol);
        if (r < 0)
            return NULL;
        if (r > 0)
            Py_RETURN_NONE;
    }
    return ref_call(ref, self, args, nargs);
}

static PyObject *
pc_write(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    return write_entry(self, args, nargs, 1, ref_write);
}

static PyObject *
c_write(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    return write_entry(self, args, nargs, 0, ref_c_write);
}

/* Lending a receive slot of this reactor to the send: the slot is pinned and
 * a LoanSegment over the bytes is staged -- no copy.  forward() lends every
 * sequence it can; write() (`write`) lends only LEND_MIN bytes or more, only
 * while the connection has a pin to spare after this one (so lending never
 * pauses a Protocol: write copies instead), and counts them as lent, not
 * forwarded.  Each function returns 1 staged, 0 not lent (the caller
 * copies, or takes the reference), -1; everything is checked before anything
 * changes. */

typedef struct {
    PyObject *out, *slots;          /* borrowed */
    Py_ssize_t pending, maxw, loans;
} LendTo;

/* The connection can take a loan now: open, writable, on its thread, under
 * its pin limit; `to` gets its output pipe and the reactor's receive slots. */
static int
lend_ready(PyObject *self, int protocol, int write, LendTo *to)
{
    if (loan_type == NULL)
        return 0;
    PyObject *owner = FIELD(self, F.owner), *out = FIELD(self, F.out), *in = FIELD(self, F.in);
    Py_ssize_t state, pin_limit;
    if (owner == NULL || !PyLong_CheckExact(owner) || field_ssize(self, F.state, &state)
            || state != 0 || out == NULL || !Py_IS_TYPE(out, out_type)
            || FIELD(out, F.o_exc) != Py_None || FIELD(out, F.o_eof) != Py_False
            || field_ssize(out, F.o_pending, &to->pending) || field_ssize(out, F.o_max, &to->maxw)
            || field_ssize(out, F.o_loans, &to->loans)
            || field_ssize(out, F.o_pin_limit, &pin_limit)
            || to->loans >= pin_limit - write       /* the reference copies instead */
            || in == NULL)
        return 0;
    if (!on_owner_thread(owner))
        return 0;
    /* The reactor's receive slots: the input pipe's, or a Protocol
     * connection's own (it makes no input pipe to deliver). */
    PyObject *slots = Py_IS_TYPE(in, in_type) ? FIELD(in, F.i_slots)
                      : protocol ? FIELD(self, F.slots) : NULL;
    if (slots == NULL || !Py_IS_TYPE(slots, &RecvSlotsType))
        return 0;
    to->out = out;
    to->slots = slots;
    return 1;
}

/* Stage n bytes at buf, in the slot `key` (keyo: the same as an int) of
 * to->slots, as a pinned loan. */
static int
lend_stage(PyObject *self, const LendTo *to, PyObject *keyo, unsigned long key,
           const char *buf, Py_ssize_t n, int protocol, int write)
{
    PyObject *out = to->out, *slots = to->slots;
    if (write && n < LEND_MIN)
        return 0;
    if (n == 0)
        return 1;
    if (n > to->maxw - to->pending || n > (Py_ssize_t)UINT_MAX)
        return 0;                               /* the reference raises */
    PyObject *staged = FIELD(out, F.o_staged), *traffic = FIELD(self, F.traffic);
    if (staged == NULL || !PyList_CheckExact(staged))
        return 0;
    /* A view of its own, always: the input pipe releases the segment's view
     * when the slot is given back, and the pinned slot's memory outlives it
     * (the ring's, kept alive by `slots`, which the loan holds until the send
     * is over).  Bytes from the start of a slot (a whole message, the common
     * case) take the slot's kind of view, slots_view_c: the view a receive
     * left unseen, else a slice of the slot's own -- one object, where a view
     * over the memory is two (it and its managed buffer).  on_loan_sent gives
     * it back as the slot's unseen view, so a relay or an echo of large
     * messages makes no view per message once the ring has gone round.
     * Elsewhere, a view over the memory itself. */
    RecvSlotsObject *rs = (RecvSlotsObject *)slots;
    PyObject *piece = !rs->incremental && rs->recv_view != NULL && key < rs->total
                      && n <= rs->slot_size
                      && buf == (const char *)PyMemoryView_GET_BUFFER(rs->recv_view)->buf
                                + (Py_ssize_t)key * rs->slot_size
                          ? slots_view_c(rs, key, n)
                          : PyMemoryView_FromMemory((char *)buf, n, PyBUF_READ);
    if (piece == NULL)
        return -1;
    PyObject *loan = loan_freelist_n ? loan_freelist[--loan_freelist_n]
                                     : loan_type->tp_alloc(loan_type, 0);
    if (loan == NULL) {
        Py_DECREF(piece);
        return -1;
    }
    field_set(loan, F.s_chunk, Py_NewRef(Py_None));
    field_set(loan, F.s_resident, Py_NewRef(Py_False));
    field_set(loan, F.s_ptr, Py_NewRef(Py_None));
    field_set(loan, F.s_view, piece);           /* the reference moves in */
    if (field_set_ssize(loan, F.s_off, 0) < 0 || field_set_ssize(loan, F.s_fill, n) < 0
            || field_set_ssize(loan, F.s_sent, 0) < 0) {
        Py_DECREF(loan);
        return -1;
    }
    field_set(loan, F.s_jumbo, Py_NewRef(Py_True));
    field_set(loan, F.l_key, Py_NewRef(keyo));
    field_set(loan, F.l_slots, Py_NewRef(slots));
    if (slots_pin_key((RecvSlotsObject *)slots, key) < 0) {
        field_set(loan, F.l_slots, Py_NewRef(Py_None));
        Py_DECREF(loan);
        return -1;
    }
    if (PyList_Append(staged, loan) < 0) {
        field_set(loan, F.l_slots, Py_NewRef(Py_None));
        Py_DECREF(loan);
        PyObject *exc = fetch_exception();
        (void)slots_unpin_key((RecvSlotsObject *)slots, key);
        restore_exception(exc);
        return -1;
    }
    Py_DECREF(loan);
    if (field_set_ssize(out, F.o_pending, to->pending + n) < 0
            || field_set_ssize(out, F.o_loans, to->loans + 1) < 0)
        return -1;
    field_set(out, F.o_cur, Py_NewRef(Py_None));    /* later writes go after these bytes */
    if (field_set_ssize(out, F.o_granted, 0) < 0)
        return -1;
    if (traffic != NULL && (write ? bump(traffic, traffic_type, F.t_lent, s_lent, n)
                                  : bump(traffic, traffic_type, F.t_forwarded, s_forwarded, n)) < 0)
        return -1;
    return protocol ? protocol_staged(self, out) : 1;
}

/* A sequence of one segment in one receive slot (a Protocol's data_received
 * argument, a PipeReader buffer, a level-2 sequence): Connection.forward's
 * common case, and write's of LEND_MIN bytes or more. */
static int
lend_fast(PyObject *self, PyObject *data, int protocol, int write)
{
    LendTo to;
    if (!Py_IS_TYPE(data, seq_type) || !lend_ready(self, protocol, write, &to))
        return 0;
    SeqObject *seq = (SeqObject *)data;
    LeaseObject *lease = (LeaseObject *)seq->slots;
    if (seq->segs == NULL || !PyList_CheckExact(seq->segs) || PyList_GET_SIZE(seq->segs) != 1
            || lease == NULL || !Py_IS_TYPE((PyObject *)lease, &SlotLeaseType)
            || lease->keys == NULL || !PyList_CheckExact(lease->keys)
            || PyList_GET_SIZE(lease->keys) != 1)
        return 0;
    PyObject *keyo = PyList_GET_ITEM(lease->keys, 0);
    if (item_type != NULL && Py_IS_TYPE(keyo, item_type))
        keyo = FIELD(keyo, F.it_key);           /* an input pipe's lease holds RingItems */
    if (keyo == NULL || !PyLong_CheckExact(keyo))
        return 0;
    unsigned long key = PyLong_AsUnsignedLong(keyo);
    if (key == (unsigned long)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    Py_ssize_t start, stop;
    if (seq_check_alive(seq) < 0 || seq_bounds(seq, &start, &stop) < 0)
        return -1;
    PyObject *view = PyList_GET_ITEM(seq->segs, 0);
    PyObject *region = ((RecvSlotsObject *)to.slots)->recv_view;
    Py_buffer *b = plain_buffer(view, 0);
    if (b == NULL || region == NULL || !PyMemoryView_Check(region)
            || ((PyMemoryViewObject *)view)->mbuf != ((PyMemoryViewObject *)region)->mbuf
            || start < 0 || start > stop || stop > b->len)
        return 0;                               /* not this reactor's slot memory */
    return lend_stage(self, &to, keyo, key, (const char *)b->buf + start, stop - start,
                      protocol, write);
}

/* write(view) of LEND_MIN bytes or more: a view inside one receive slot of
 * this reactor (level 1's RingItem.view, a slice of one) is lent like a
 * sequence; its slot is found from the address. */
static int
lend_view(PyObject *self, PyObject *view, Py_buffer *b, int protocol)
{
    LendTo to;
    if (!lend_ready(self, protocol, 1, &to))
        return 0;
    RecvSlotsObject *slots = (RecvSlotsObject *)to.slots;
    PyObject *region = slots->recv_view;
    if (region == NULL || !PyMemoryView_Check(region)
            || ((PyMemoryViewObject *)view)->mbuf != ((PyMemoryViewObject *)region)->mbuf
            || slots->slot_size <= 0)
        return 0;
    Py_buffer *whole = PyMemoryView_GET_BUFFER(region);
    Py_ssize_t at = (const char *)b->buf - (const char *)whole->buf;
    if (at < 0 || at > whole->len - b->len)
        return 0;
    Py_ssize_t bid = at / slots->slot_size;
    if ((bid + 1) * slots->slot_size < at + b->len || bid >= (Py_ssize_t)slots->total)
        return 0;                               /* spans two slots: copied */
    PyObject *keyo = PyLong_FromSsize_t(bid);
    if (keyo == NULL)
        return -1;
    int r = lend_stage(self, &to, keyo, (unsigned long)bid, (const char *)b->buf, b->len,
                       protocol, 1);
    Py_DECREF(keyo);
    return r;
}

static PyObject *
forward_entry(PyObject *self, PyObject *seq, int protocol, PyObject *ref)
{
    int r = lend_fast(self, seq, protocol, 0);
    if (r < 0)
        return NULL;
    if (r > 0)
        Py_RETURN_NONE;
    return ref_call(ref, self, &seq, 1);
}

static PyObject *
pc_forward(PyObject *self, PyObject *seq)
{
    return forward_entry(self, seq, 1, ref_forward);
}

static PyObject *
c_forward(PyObject *self, PyObject *seq)
{
    return forward_entry(self, seq, 0, ref_c_forward);
}

/* Connection._kick_send */
static PyObject *
c_kick_send(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *out = FIELD(self, F.out);
    if (out == NULL || !Py_IS_TYPE(out, out_type))
        return ref_call(ref_c_kick_send, self, NULL, 0);
    if (kick_send(self, out) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* -- flush() without a coroutine
 *
 * Most flushes need no wait (flush() is asyncio's drain(): it waits only above
 * the pause mark), yet `async def flush` costs a coroutine object and a frame
 * per call.  The C flush starts the send and returns `done_coro`: a coroutine
 * that is finished before it starts.  It is stateless, so one instance serves
 * every call: each send() ends it at once with None, as a fresh coroutine
 * whose body returns at once would.  It has __await__, send, throw and close,
 * so asyncio.iscoroutine() (collections.abc.Coroutine's check) accepts it and
 * create_task() runs it.  Every flush that may wait takes the Python method,
 * decided before anything changes.
 */

typedef struct {
    PyObject_HEAD
} DoneObject;

static PyObject *
done_await(PyObject *self)
{
    return Py_NewRef(self);
}

static PySendResult
done_am_send(PyObject *Py_UNUSED(self), PyObject *Py_UNUSED(arg), PyObject **result)
{
    *result = Py_NewRef(Py_None);
    return PYGEN_RETURN;
}

static PyObject *
done_iternext(PyObject *Py_UNUSED(self))
{
    return NULL;                    /* StopIteration with None, without an object */
}

static PyObject *
done_send(PyObject *Py_UNUSED(self), PyObject *Py_UNUSED(arg))
{
    PyErr_SetNone(PyExc_StopIteration);
    return NULL;
}

/* throw(exc) / throw(type[, value[, tb]]): raised as is, as by a coroutine
 * that has not started. */
static PyObject *
done_throw(PyObject *Py_UNUSED(self), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 3) {
        PyErr_Format(PyExc_TypeError, "throw expected 1 to 3 arguments, got %zd", nargs);
        return NULL;
    }
    PyObject *typ = args[0], *val = nargs > 1 ? args[1] : Py_None;
    PyObject *tb = nargs > 2 ? args[2] : Py_None;
    if (tb != Py_None && !PyTraceBack_Check(tb)) {
        PyErr_SetString(PyExc_TypeError, "throw() third argument must be a traceback object");
        return NULL;
    }
    if (PyExceptionInstance_Check(typ)) {
        if (val != Py_None) {
            PyErr_SetString(PyExc_TypeError, "instance exception may not have a separate value");
            return NULL;
        }
        PyErr_SetObject((PyObject *)Py_TYPE(typ), typ);
    } else if (PyExceptionClass_Check(typ)) {
        PyErr_SetObject(typ, val);
    } else {
        PyErr_Format(PyExc_TypeError, "exceptions must be classes or instances deriving from "
                     "BaseException, not %s", Py_TYPE(typ)->tp_name);
        return NULL;
    }
    if (tb != Py_None) {
        PyObject *exc = fetch_exception();
        if (exc != NULL) {
            (void)PyException_SetTraceback(exc, tb);
            restore_exception(exc);
        }
    }
    return NULL;
}

static PyObject *
done_close(PyObject *Py_UNUSED(self), PyObject *Py_UNUSED(ignored))
{
    Py_RETURN_NONE;
}

static PyMethodDef done_methods[] = {
    {"send", (PyCFunction)done_send, METH_O, "Ends at once: StopIteration (None)."},
    {"throw", (PyCFunction)(void (*)(void))done_throw, METH_FASTCALL,
     "Raises the exception, as a coroutine that has not started would."},
    {"close", (PyCFunction)done_close, METH_NOARGS, "Nothing to close."},
    {NULL, NULL, 0, NULL},
};

static PyAsyncMethods done_as_async = {
    .am_await = done_await,
    .am_send = done_am_send,
};

static PyTypeObject DoneType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "zerg._speedups.FinishedCoroutine",
    .tp_basicsize = sizeof(DoneObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "What Connection.flush() returns when it need not wait: a coroutine that "
              "is finished before it starts (one shared instance).",
    .tp_as_async = &done_as_async,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = done_iternext,
    .tp_methods = done_methods,
};

static PyObject *done_coro;         /* the one FinishedCoroutine */

/* Connection.flush: start the send; the finished coroutine unless it must
 * wait (above the pause mark, after a refused write, over the memory budget)
 * or fail (a send error, closed, another thread): then the Python method. */
static PyObject *
c_flush(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *owner = FIELD(self, F.owner), *out = FIELD(self, F.out);
    Py_ssize_t state, pending, pause_at, loans, pin_limit;
    if (!Py_IS_TYPE(self, base_type) || owner == NULL || !PyLong_CheckExact(owner)
            || field_ssize(self, F.state, &state) || state != 0
            || out == NULL || !Py_IS_TYPE(out, out_type) || FIELD(out, F.o_exc) != Py_None
            || FIELD(out, F.o_refused) != Py_False || FIELD(out, F.o_over_budget) != Py_False
            || field_ssize(out, F.o_pending, &pending)
            || field_ssize(out, F.o_pause_at, &pause_at) || pending > pause_at
            || field_ssize(out, F.o_loans, &loans) || field_ssize(out, F.o_pin_limit, &pin_limit)
            || loans >= pin_limit)
        return ref_call(ref_c_flush, self, NULL, 0);
    if (!on_owner_thread(owner))    /* the reference raises the right error */
        return ref_call(ref_c_flush, self, NULL, 0);
    if (pending && kick_send(self, out) < 0)
        return NULL;
    return Py_NewRef(done_coro);
}

/* The only staged segment went out whole and is accounted for: wake flush
 * waiters, count the bytes, finish a closing connection, resume a Protocol's
 * writing -- what OutputPipe.on_sent and Connection.on_send do next.  0 or -1. */
static int
after_sent_whole(PyObject *self, PyObject *out, long res, int protocol)
{
    PyObject *fw = FIELD(out, F.o_flush_w), *dw = FIELD(out, F.o_drain_w);
    if (((fw != NULL && fw != Py_None) || (dw != NULL && dw != Py_None))
            && call_method(out, s_wake_flushers, Py_None, NULL) < 0)
        return -1;
    PyObject *traffic = FIELD(self, F.traffic);
    if (traffic != NULL && bump(traffic, traffic_type, F.t_bytes_out, s_bytes_out, res) < 0)
        return -1;
    Py_ssize_t state;
    if (field_ssize(self, F.state, &state) == 0 && state == 1
            && call_method(self, s_maybe_finish, NULL, NULL) < 0)
        return -1;
    if (protocol && FIELD(self, F.writing_paused) == Py_True
            && call_method(self, s_maybe_resume_writing, NULL, NULL) < 0)
        return -1;
    return 0;
}

/* The send of a forwarded slot (a LoanSegment, the only segment staged) went
 * out whole: account for it and unpin the slot.  1 done, 0 take the
 * reference, -1.  Decided before anything changes. */
static int
on_loan_sent(PyObject *self, PyObject *out, PyObject *seg, long res, int protocol)
{
    PyObject *staged = FIELD(out, F.o_staged), *slots = FIELD(seg, F.l_slots);
    PyObject *keyo = FIELD(seg, F.l_key);
    Py_ssize_t fill, sent, pending, bytes_out, loans;
    if (res <= 0 || field_ssize(seg, F.s_fill, &fill) || field_ssize(seg, F.s_sent, &sent)
            || fill - sent != res || field_ssize(out, F.o_pending, &pending)
            || field_ssize(out, F.o_loans, &loans) || loans <= 0
            || field_ssize(out, F.o_bytes_out, &bytes_out) || FIELD(out, F.o_exc) != Py_None
            || staged == NULL || !PyList_CheckExact(staged) || PyList_GET_SIZE(staged) != 1
            || PyList_GET_ITEM(staged, 0) != seg || slots == NULL
            || !Py_IS_TYPE(slots, &RecvSlotsType) || keyo == NULL || !PyLong_CheckExact(keyo))
        return 0;
    unsigned long key = PyLong_AsUnsignedLong(keyo);
    if (key == (unsigned long)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    Py_INCREF(seg);
    Py_INCREF(slots);
    int rc = -1;
    if (field_set_ssize(out, F.o_pending, pending - res) < 0
            || field_set_ssize(out, F.o_bytes_out, bytes_out + res) < 0
            || field_set_ssize(out, F.o_loans, loans - 1) < 0)
        goto done;
    field_set(out, F.o_sending, Py_NewRef(Py_None));
    if (list_drop_front(staged, 1) < 0)
        goto done;
    /* LoanSegment.done(); its view, if nothing else can see it, is the
     * slot's next unseen view (slots_keep_view decides, and drops it else). */
    PyObject *view = FIELD(seg, F.s_view);
    FIELD(seg, F.s_view) = Py_NewRef(Py_None);
    field_set(seg, F.l_slots, Py_NewRef(Py_None));
    if (view != NULL)
        slots_keep_view((RecvSlotsObject *)slots, key, view);
    if (slots_unpin_key((RecvSlotsObject *)slots, key) < 0)
        goto done;
    rc = after_sent_whole(self, out, res, protocol) < 0 ? -1 : 1;
done:
    Py_DECREF(slots);
    if (rc == 1)
        loan_recycle(seg);
    else
        Py_DECREF(seg);
    return rc;
}

/* Connection.on_send (protocol: ProtocolConnection's, which then resumes a
 * Protocol's writing).  The common case is the only segment going out whole
 * (OutputPipe.on_sent's first branch).  1 done, 0 take the reference, -1. */
static int
on_send_fast(PyObject *self, long res, int protocol)
{
    PyObject *out = FIELD(self, F.out);
    if (out == NULL || !Py_IS_TYPE(out, out_type))
        return 0;
    PyObject *seg = FIELD(out, F.o_sending), *staged = FIELD(out, F.o_staged);
    if (seg != NULL && loan_type != NULL && Py_IS_TYPE(seg, loan_type))
        return on_loan_sent(self, out, seg, res, protocol);
    PyObject *pool = FIELD(out, F.o_pool);
    PyObject *freelist = pool != NULL && Py_IS_TYPE(pool, pool_type) ? FIELD(pool, F.p_free)
                                                                       : NULL;
    PyObject *waiters = pool != NULL && Py_IS_TYPE(pool, pool_type)
                            ? FIELD(pool, F.p_room_waiters) : NULL;
    Py_ssize_t fill, sent, granted, pending, bytes_out;
    if (res <= 0 || seg == NULL || !Py_IS_TYPE(seg, seg_type) || seg != FIELD(out, F.o_cur)
            || field_ssize(seg, F.s_fill, &fill) || field_ssize(seg, F.s_sent, &sent)
            || fill - sent != res || FIELD(seg, F.s_jumbo) != Py_False
            || field_ssize(out, F.o_granted, &granted) || granted != 0
            || field_ssize(out, F.o_pending, &pending)
            || field_ssize(out, F.o_bytes_out, &bytes_out)
            || FIELD(out, F.o_exc) != Py_None
            || staged == NULL || !PyList_CheckExact(staged) || PyList_GET_SIZE(staged) != 1
            || freelist == NULL || !PyList_CheckExact(freelist)
            || waiters == NULL || !PyList_CheckExact(waiters) || PyList_GET_SIZE(waiters) != 0)
        return 0;
    Py_INCREF(seg);
    if (field_set_ssize(out, F.o_pending, pending - res) < 0
            || field_set_ssize(out, F.o_bytes_out, bytes_out + res) < 0)
        goto fail;
    field_set(out, F.o_sending, Py_NewRef(Py_None));
    field_set(out, F.o_cur, Py_NewRef(Py_None));
    if (list_drop_front(staged, 1) < 0)
        goto fail;
    /* SlabPool.release */
    if (field_set_ssize(seg, F.s_fill, 0) < 0 || field_set_ssize(seg, F.s_sent, 0) < 0
            || PyList_Append(freelist, seg) < 0)
        goto fail;
    Py_DECREF(seg);
    return after_sent_whole(self, out, res, protocol) < 0 ? -1 : 1;
fail:
    Py_DECREF(seg);
    return -1;
}

/* on_send(res): the fast path, else the reference ref. */
static PyObject *
on_send_entry(PyObject *self, PyObject *arg, int protocol, PyObject *ref)
{
    long res = PyLong_CheckExact(arg) ? PyLong_AsLong(arg) : -1;
    if (res == -1 && PyErr_Occurred())
        PyErr_Clear();
    int r = res == -1 ? 0 : on_send_fast(self, res, protocol);
    if (r < 0)
        return NULL;
    if (r == 0)
        return ref_call(ref, self, &arg, 1);
    Py_RETURN_NONE;
}

/* The same from the dispatcher, with res a C integer: its int object is
 * made only for the reference. */
static PyObject *
on_send_res(PyObject *self, long res, int protocol, PyObject *ref)
{
    int r = on_send_fast(self, res, protocol);
    if (r < 0)
        return NULL;
    if (r > 0)
        Py_RETURN_NONE;
    PyObject *arg = PyLong_FromLong(res);
    if (arg == NULL)
        return NULL;
    PyObject *out = ref_call(ref, self, &arg, 1);
    Py_DECREF(arg);
    return out;
}

PyObject *
pc_on_send(PyObject *self, PyObject *arg)
{
    return on_send_entry(self, arg, 1, ref_on_send);
}

PyObject *
c_on_send(PyObject *self, PyObject *arg)
{
    return on_send_entry(self, arg, 0, ref_c_on_send);
}

PyObject *
pc_on_send_res(PyObject *self, long res)
{
    return on_send_res(self, res, 1, ref_on_send);
}

PyObject *
c_on_send_res(PyObject *self, long res)
{
    return on_send_res(self, res, 0, ref_c_on_send);
}

/* host.now, the reactor's clock, set before each harvest (Reactor._on_select)
 * and read by every receive: while the dispatcher harvests, the value read
 * first is kept for the rest of that harvest (wake_harvest_gen() names it). */
static struct { const void *host; unsigned gen; PyObject *now; } now_cache;

static PyObject *
host_now(PyObject *host)
{
    unsigned gen = wake_harvest_gen();
    if (gen != 0 && now_cache.gen == gen && now_cache.host == (const void *)host)
        return Py_NewRef(now_cache.now);
    PyObject *now = PyObject_GetAttr(host, s_now);
    if (now != NULL && gen != 0) {
        PyObject *old = now_cache.now;
        now_cache.now = Py_NewRef(now);
        now_cache.host = host;
        now_cache.gen = gen;
        Py_XDECREF(old);
    }
    return now;
}

/* ---------------------------------------------------------- the receiving */

static int
give_back(PyObject *slots, PyObject *key)
{
    if (Py_IS_TYPE(slots, &RecvSlotsType)) {
        unsigned long k = PyLong_AsUnsignedLong(key);
        if (k == (unsigned long)-1 && PyErr_Occurred())
            return -1;
        return slots_give_back_key((RecvSlotsObject *)slots, k);
    }
    int done = plain_slots_give_back(slots, key);
    if (done)
        return done < 0 ? -1 : 0;
    return call_method(slots, s_give_back, key, NULL);
}

/* ProtocolConnection._deliver for a fresh one-slot sequence (k: key as a C
 * integer when the slots are a RecvSlots, else -1). */
static int
deliver(PyObject *self, SeqObject *seq, LeaseObject *lease, PyObject *key, unsigned long k)
{
    PyObject *dr = FIELD(self, F.data_received);
    if (dr == NULL) {
        PyErr_SetString(PyExc_AttributeError, "_data_received");
        return -1;
    }
    field_set(self, F.buf, Py_NewRef((PyObject *)seq));
    PyObject *stack[3] = {NULL, self, (PyObject *)seq};
    PyObject *consumed = PyObject_Vectorcall(dr, stack + 1, 2 | PY_VECTORCALL_ARGUMENTS_OFFSET,
                                             NULL);
    if (consumed == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_Exception))
            return -1;              /* KeyboardInterrupt, SystemExit: up */
        PyObject *exc = fetch_exception();
        if (exc == NULL)
            return -1;
        int rc = call_method(self, s_failed, exc, NULL);
        Py_DECREF(exc);
        return rc;
    }
    Py_ssize_t state, start, stop, held_from = -1;
    int rc = 0;
    if (field_ssize(self, F.state, &state) || state != 0)
        goto done;                  /* closed inside the callback: slots went back */
    if (seq_bounds(seq, &start, &stop) < 0) {
        rc = -1;
        goto done;
    }
    int all = consumed == Py_None;
    if (!all && PyLong_CheckExact(consumed)) {
        Py_ssize_t c = PyLong_AsSsize_t(consumed);
        if (c == -1 && PyErr_Occurred())
            PyErr_Clear();
        else
            all = c == stop - start;
    }
    if (Py_IS_TYPE((PyObject *)lease, &SlotLeaseType))
        held_from = lease->held_from;
    PyObject *host = FIELD(self, F.host), *slots = FIELD(self, F.slots), *inp = FIELD(self, F.in);
    /* inp: None until the connection needs an input pipe (then not paused) */
    if (!all || held_from != 0 || host == NULL || slots == NULL || inp == NULL
            || (inp != Py_None && !Py_IS_TYPE(inp, in_type))) {
        PyErr_Clear();
        PyObject *args[5] = {self, (PyObject *)seq, (PyObject *)lease, key, consumed};
        PyObject *r = PyObject_VectorcallMethod(s_settle, args, 5, NULL);
        rc = r == NULL ? -1 : 0;
        Py_XDECREF(r);
        goto done;
    }
    PyObject *now = host_now(host);
    PyObject *zero = PyLong_FromLong(0);
    if (now == NULL || zero == NULL) {
        Py_XDECREF(now);
        Py_XDECREF(zero);
        rc = -1;
        goto done;
    }
    field_set(self, F.last_rx, now);
    field_set(self, F.buf, Py_NewRef(Py_None));
    field_set(self, F.unread, zero);
    /* The delivered view, unless the Protocol kept it, serves the slot's
     * next delivery (slots_keep_view checks that nothing else can see it). */
    PyObject *seen = PyList_CheckExact(seq->segs) && PyList_GET_SIZE(seq->segs) == 1
                     ? Py_NewRef(PyList_GET_ITEM(seq->segs, 0)) : NULL;
    int ring = k != (unsigned long)-1 && Py_IS_TYPE(slots, &RecvSlotsType);
    if (seq_drop_single(seq) < 0
            || (ring ? slots_give_back_key((RecvSlotsObject *)slots, k)
                     : give_back(slots, key)) < 0) {
        Py_XDECREF(seen);
        rc = -1;
        goto done;
    }
    if (seen != NULL) {
        if (ring)
            slots_keep_view((RecvSlotsObject *)slots, k, seen);
        else
            Py_DECREF(seen);
    }
    if (inp != Py_None && FIELD(inp, F.i_paused) == Py_True)
        rc = call_method(self, s_maybe_resume_protocol, NULL, NULL);
done:
    Py_DECREF(consumed);
    return rc;
}

/*
 * One spent sequence kept for the next message.  After data_received
 * consumed everything, the fresh one-slot sequence and its lease are usually
 * referenced by nothing else (refcount 1: ours).  Then they, their three
 * lists and the bounds are re-filled for the next message instead of being
 * freed and made again -- the reuse CPython's zip and enumerate do with
 * their result tuple.  Anything that could still see the objects (another
 * reference to any of them, weak references) keeps them out of the cache.
 */
static SeqObject *spare_seq;

static void
keep_spare(SeqObject *seq, LeaseObject *lease)
{
    if (spare_seq != NULL || Py_REFCNT(seq) != 1 || Py_REFCNT(lease) != 2
            || (PyObject *)lease != seq->slots || Py_TYPE(seq) != seq_type
            || Py_TYPE(seq)->tp_weaklistoffset != 0 || Py_TYPE(seq)->tp_dictoffset != 0
            || !Py_IS_TYPE((PyObject *)lease, &SlotLeaseType)
            || seq->segs == NULL || !PyList_CheckExact(seq->segs)
            || Py_REFCNT(seq->segs) != 1 || PyList_GET_SIZE(seq->segs) != 1
            || seq->offs == NULL || !PyList_CheckExact(seq->offs)
            || Py_REFCNT(seq->offs) != 1 || PyList_GET_SIZE(seq->offs) != 2
            || lease->keys == NULL || !PyList_CheckExact(lease->keys)
            || Py_REFCNT(lease->keys) != 1 || PyList_GET_SIZE(lease->keys) != 1
            || seq->owns != Py_True)
        return;
    /* Hold nothing of the connection while spare (its give_back holds the
     * host's slots: a reactor closed meanwhile would be kept alive). */
    Py_XSETREF(lease->give_back, Py_NewRef(Py_None));
    spare_seq = (SeqObject *)Py_NewRef((PyObject *)seq);
}

/* The spare sequence re-filled for view (its n bytes) and key; 0, 1 when
 * there is none (make one), -1 on error. */
static int
reuse_spare(PyObject *view, PyObject *key, PyObject *give, SeqObject **seq_out,
            LeaseObject **lease_out)
{
    SeqObject *seq = spare_seq;
    if (seq == NULL)
        return 1;
    Py_ssize_t n = PyObject_Length(view);
    if (n < 0)
        return -1;
    spare_seq = NULL;
    LeaseObject *lease = (LeaseObject *)seq->slots;
    PyObject *zero = PyLong_FromLong(0), *end = PyLong_FromSsize_t(n);
    if (zero == NULL || end == NULL) {
        Py_XDECREF(zero);
        Py_XDECREF(end);
        Py_DECREF(seq);
        return -1;
    }
    lease->next = 0;
    lease->held_from = 0;
    Py_XSETREF(lease->give_back, Py_NewRef(give));
    /* PyList_SetItem steals the new item and drops the old; it cannot fail
     * on these exact lists of the checked sizes (keep_spare). */
    (void)PyList_SetItem(lease->keys, 0, Py_NewRef(key));
    (void)PyList_SetItem(seq->segs, 0, Py_NewRef(view));
    (void)PyList_SetItem(seq->offs, 0, Py_NewRef(zero));
    (void)PyList_SetItem(seq->offs, 1, Py_NewRef(end));
    Py_DECREF(zero);
    Py_DECREF(end);
    seq->start = 0;
    seq->stop = n;
    *seq_out = seq;
    *lease_out = (LeaseObject *)Py_NewRef((PyObject *)lease);
    return 0;
}

/* ProtocolConnection.on_recv */
/* on_recv(key, n) through the reference ref, key and n as objects (pn: n's
 * int object, or NULL to make one). */
static PyObject *
recv_ref(PyObject *ref, PyObject *self, PyObject *key, Py_ssize_t n, PyObject *pn)
{
    PyObject *made = pn == NULL ? PyLong_FromSsize_t(n) : NULL;
    if (pn == NULL && made == NULL)
        return NULL;
    PyObject *args[2] = {key, pn != NULL ? pn : made};
    PyObject *r = ref_call(ref, self, args, 2);
    Py_XDECREF(made);
    return r;
}

/* ProtocolConnection.on_recv(key, n): key also as the C integer k (the
 * dispatcher has both; the Python entry converts). */
static PyObject *
pc_recv(PyObject *self, PyObject *key, unsigned long k, Py_ssize_t n, PyObject *pn)
{
    PyObject *inp = FIELD(self, F.in), *slots = FIELD(self, F.slots);
    PyObject *give = FIELD(self, F.give_back);
    Py_ssize_t state, bytes_in;
    if (field_ssize(self, F.state, &state) || state != 0
            || inp == NULL || (inp != Py_None && (!Py_IS_TYPE(inp, in_type)
                                                  || FIELD(inp, F.i_discarding) != Py_False))
            || FIELD(self, F.reading_paused) != Py_False || FIELD(self, F.buf) != Py_None
            || slots == NULL || give == NULL || field_ssize(self, F.bytes_in, &bytes_in))
        return recv_ref(ref_on_recv, self, key, n, pn);
    if (field_set_ssize(self, F.bytes_in, bytes_in + n) < 0)
        return NULL;
    PyObject *view;
    int ring = Py_IS_TYPE(slots, &RecvSlotsType);
    if (ring) {
        view = slots_view_c((RecvSlotsObject *)slots, k, n);
    } else if (plain_slots_view(slots, key, n, &view) == 0) {   /* 1 or -1: done */
        PyObject *num = pn != NULL ? Py_NewRef(pn) : PyLong_FromSsize_t(n);
        if (num == NULL)
            return NULL;
        PyObject *stack[3] = {slots, key, num};
        view = PyObject_VectorcallMethod(s_view, stack, 3, NULL);
        Py_DECREF(num);
    }
    if (view == NULL)
        return NULL;
    SeqObject *seq;
    LeaseObject *lease;
    int rc = reuse_spare(view, key, give, &seq, &lease);
    if (rc > 0)
        rc = seq_make_single(view, key, give, &seq, &lease);
    Py_DECREF(view);
    if (rc < 0)
        return NULL;
    rc = deliver(self, seq, lease, key, ring ? k : (unsigned long)-1);
    if (rc == 0)
        keep_spare(seq, lease);
    Py_DECREF(seq);
    Py_DECREF(lease);
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

PyObject *
pc_on_recv(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyLong_CheckExact(args[0]) || !PyLong_CheckExact(args[1]))
        return ref_call(ref_on_recv, self, args, nargs);
    Py_ssize_t n = PyLong_AsSsize_t(args[1]);
    unsigned long k = PyLong_AsUnsignedLong(args[0]);
    if ((n == -1 || k == (unsigned long)-1) && PyErr_Occurred())
        return NULL;
    return pc_recv(self, args[0], k, n, args[1]);
}

PyObject *
pc_on_recv_key(PyObject *self, PyObject *key, unsigned long k, Py_ssize_t n)
{
    return pc_recv(self, key, k, n, NULL);
}

/* ------------------------------------------------- the receiving, levels 1-3 */

/* An int attribute of an object (PipeOptions is a frozen dataclass). */
static int
attr_ssize(PyObject *o, PyObject *name, Py_ssize_t *out)
{
    PyObject *v = PyObject_GetAttr(o, name);
    if (v == NULL)
        return -1;
    *out = PyLong_AsSsize_t(v);
    Py_DECREF(v);
    return (*out == -1 && PyErr_Occurred()) ? -1 : 0;
}

static int drop_item(PyObject *inp, PyObject *item);
static int over_mark(PyObject *inp, PyObject *slots);

/* inp._drop_tokens, the give-back of every lease on its slots (a new
 * reference): bound once, on first use, and kept in inp._give until
 * release_all() drops it (an idle connection never makes it). */
static PyObject *
pipe_give(PyObject *inp)
{
    PyObject *give = FIELD(inp, F.i_give);
    if (give != NULL && give != Py_None)
        return Py_NewRef(give);
    give = PyObject_GetAttr(inp, s_drop_tokens);
    if (give != NULL)
        field_set(inp, F.i_give, Py_NewRef(give));
    return give;
}

/* The ints of a pipe's PipeOptions the receive path reads per message.  The
 * class is a frozen dataclass with slots, usually one object shared by every
 * connection of a reactor: the values of the last one seen are kept, with a
 * reference to it (so its identity cannot be reused).  Any other kind of
 * options object is read each time. */
typedef struct { Py_ssize_t max_read, max_held, chunk; } OptInts;
static struct { PyObject *opts; OptInts v; } opt_cache;
static PyObject *opts_type;         /* zerg._config.PipeOptions, on first use */
static int opts_type_missing;

static int
opt_ints(PyObject *opts, OptInts *out)
{
    if (opts == opt_cache.opts) {
        *out = opt_cache.v;
        return 0;
    }
    if (attr_ssize(opts, s_max_read_buffer, &out->max_read) < 0
            || attr_ssize(opts, s_max_held_slots, &out->max_held) < 0
            || attr_ssize(opts, s_read_chunk_items, &out->chunk) < 0)
        return -1;
    if (opts_type == NULL && !opts_type_missing) {
        PyObject *m = PyImport_ImportModule("zerg._config");
        opts_type = m == NULL ? NULL : PyObject_GetAttrString(m, "PipeOptions");
        Py_XDECREF(m);
        if (opts_type == NULL || !PyType_Check(opts_type)) {
            PyErr_Clear();
            Py_CLEAR(opts_type);
            opts_type_missing = 1;
        }
    }
    if (opts_type != NULL && Py_IS_TYPE(opts, (PyTypeObject *)opts_type)) {
        PyObject *old = opt_cache.opts;
        opt_cache.opts = Py_NewRef(opts);
        opt_cache.v = *out;
        Py_XDECREF(old);
    }
    return 0;
}

/* InputPipe.held, a list in no order whose items know their index
 * (RingItem._held_at): InputPipe._hold and _unhold.
 *
 * held_at: item's index in held (an exact list), or -1 when it is not there. */
static Py_ssize_t
held_at(PyObject *held, PyObject *item)
{
    Py_ssize_t at;
    if (field_ssize(item, F.it_held_at, &at) || at < 0 || at >= PyList_GET_SIZE(held)
            || PyList_GET_ITEM(held, at) != item)
        return -1;
    return at;
}

/* held.append(item), its index kept in item.  0 or -1. */
static int
hold(PyObject *held, PyObject *item)
{
    if (field_set_ssize(item, F.it_held_at, PyList_GET_SIZE(held)) < 0)
        return -1;
    return PyList_Append(held, item);
}

/* item out of held (unless it is not there): the last item moves into its
 * place.  0 or -1. */
static int
unhold(PyObject *held, PyObject *item)
{
    Py_ssize_t at = held_at(held, item), end = PyList_GET_SIZE(held) - 1;
    if (at < 0)
        return 0;
    PyObject *last = PyList_GET_ITEM(held, end);
    if (last != item) {
        if (field_set_ssize(last, F.it_held_at, at) < 0)
            return -1;
        PyList_SET_ITEM(held, at, last);    /* the list's reference to last moves */
    }
    PyList_SET_ITEM(held, end, NULL);
    Py_SET_SIZE(held, end);
    /* The list's reference to item is ours now (the caller holds one too). */
    int rc = field_set_ssize(item, F.it_held_at, -1);
    Py_DECREF(item);
    return rc;
}

/* RingItems given back through return_ring, kept for the next receives.
 *
 * Why: level 1 makes one RingItem per message and drops it once the handler
 * lets go of it; making one (a GC allocation) and destroying it (the slot
 * class's dealloc) cost more than filling its six fields again.
 * What: return_ring puts the item it gave back here (the pool holds a
 * reference; the oldest entry is dropped when the pool is full); on_recv
 * takes an entry that nothing else refers to any more (reference count 1:
 * the handler has let go of it) and refills every field.  An item something
 * still refers to -- a user who kept it, a test checking its view is dead --
 * is never reused, so nobody can see an item come back to life. */
#define ITEM_POOL_MAX 8
static PyObject *item_pool[ITEM_POOL_MAX];
static int item_pool_next;

/* Keep item (borrowed; exact item_type, given back) for reuse. */
static void
item_retire(PyObject *item)
{
    PyObject *old = item_pool[item_pool_next];
    item_pool[item_pool_next] = Py_NewRef(item);
    item_pool_next = (item_pool_next + 1) % ITEM_POOL_MAX;
    Py_XDECREF(old);        /* after the store, as field_set does */
}

/* A RingItem to fill: a pooled one nothing else holds, or a new one. */
static PyObject *
item_new(void)
{
    for (int i = 0; i < ITEM_POOL_MAX; i++) {
        PyObject *it = item_pool[i];
        if (it != NULL && Py_REFCNT(it) == 1) {
            item_pool[i] = NULL;
            return it;              /* the pool's reference is the caller's */
        }
    }
    return item_type->tp_alloc(item_type, 0);
}

/* Connection.on_recv with InputPipe.push: a RingItem for the slot, held,
 * queued, and the waiting read woken. */
PyObject *
c_on_recv(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *inp = FIELD(self, F.in), *host = FIELD(self, F.host);
    Py_ssize_t state, bytes_in, tail, unread;
    if (nargs != 2 || !PyLong_CheckExact(args[0]) || !PyLong_CheckExact(args[1])
            || field_ssize(self, F.state, &state) || state != 0 || host == NULL
            || field_ssize(self, F.bytes_in, &bytes_in)
            || inp == NULL || !Py_IS_TYPE(inp, in_type)
            || FIELD(inp, F.i_paused) != Py_False || FIELD(inp, F.i_discarding) != Py_False
            || FIELD(inp, F.i_plain) != Py_True || FIELD(inp, F.i_slots) == NULL
            || FIELD(inp, F.i_held) == NULL || !PyList_CheckExact(FIELD(inp, F.i_held))
            || FIELD(inp, F.i_items) == NULL || !PyList_CheckExact(FIELD(inp, F.i_items))
            || FIELD(inp, F.i_opts) == NULL || FIELD(inp, F.i_loop) == NULL
            || field_ssize(inp, F.i_tail, &tail) || field_ssize(inp, F.i_unread, &unread))
        return ref_call(ref_c_on_recv, self, args, nargs);
    PyObject *key = args[0];
    Py_ssize_t n = PyLong_AsSsize_t(args[1]);
    unsigned long k = PyLong_AsUnsignedLong(key);
    if ((n == -1 || k == (unsigned long)-1) && PyErr_Occurred())
        return NULL;
    PyObject *now = host_now(host);
    if (now == NULL)
        return NULL;
    if (field_set_ssize(self, F.bytes_in, bytes_in + n) < 0) {
        Py_DECREF(now);
        return NULL;
    }
    field_set(self, F.last_rx, now);
    /* InputPipe.push */
    PyObject *slots = FIELD(inp, F.i_slots), *view;
    if (Py_IS_TYPE(slots, &RecvSlotsType)) {
        view = slots_view_c((RecvSlotsObject *)slots, k, n);
    } else if (plain_slots_view(slots, key, n, &view) == 0) {
        /* a stand-in (the sans-IO tests) */
        PyObject *stack[3] = {slots, key, args[1]};
        view = PyObject_VectorcallMethod(s_view, stack, 3, NULL);
    }
    if (view == NULL)
        return NULL;
    PyObject *item = item_new();
    if (item == NULL) {
        Py_DECREF(view);
        return NULL;
    }
    field_set(item, F.it_bid, Py_NewRef(key));      /* keys are slots here */
    field_set(item, F.it_length, Py_NewRef(args[1]));
    field_set(item, F.it_view, view);
    field_set(item, F.it_key, Py_NewRef(key));
    field_set(item, F.it_live, Py_NewRef(Py_True));
    int rc = hold(FIELD(inp, F.i_held), item);
    if (rc == 0)
        rc = PyList_Append(FIELD(inp, F.i_items), item);
    Py_DECREF(item);
    if (rc < 0 || field_set_ssize(inp, F.i_tail, tail + 1) < 0
            || field_set_ssize(inp, F.i_unread, unread + n) < 0)
        return NULL;
    OptInts lim;
    if (opt_ints(FIELD(inp, F.i_opts), &lim) < 0)
        return NULL;
    if ((unread + n > lim.max_read || PyList_GET_SIZE(FIELD(inp, F.i_held)) > lim.max_held)
            && call_method(self, s_pause, NULL, NULL) < 0)
        return NULL;
    /* The waiting read is woken last: its task may run right here (wake.c),
     * once this connection's accounting is whole. */
    PyObject *w = FIELD(inp, F.i_waiter);
    if (w != NULL && w != Py_None) {
        Py_INCREF(w);
        int rc = wake_read(w);
        Py_DECREF(w);
        if (rc < 0)
            return NULL;
    }
    Py_RETURN_NONE;
}

/* Connection.try_get_ring with InputPipe.take. */
static PyObject *
c_try_get_ring(PyObject *self, PyObject *snapshot)
{
    PyObject *inp = FIELD(self, F.in), *items, *slots;
    Py_ssize_t head, pos, upto;
    if (inp == NULL || !Py_IS_TYPE(inp, in_type) || !PyTuple_Check(snapshot)
            || PyTuple_GET_SIZE(snapshot) != 2 || !PyLong_CheckExact(PyTuple_GET_ITEM(snapshot, 0))
            || (items = FIELD(inp, F.i_items)) == NULL || !PyList_CheckExact(items)
            || (slots = FIELD(inp, F.i_slots)) == NULL
            || field_ssize(inp, F.i_head, &head) || field_ssize(inp, F.i_ipos, &pos))
        return ref_call(ref_c_try_get_ring, self, &snapshot, 1);
    upto = PyLong_AsSsize_t(PyTuple_GET_ITEM(snapshot, 0));
    if (upto == -1 && PyErr_Occurred())
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(items);
    if (head >= upto || pos >= n || pos < 0)
        Py_RETURN_NONE;
    if (!Py_IS_TYPE(PyList_GET_ITEM(items, pos), item_type))
        return ref_call(ref_c_try_get_ring, self, &snapshot, 1);
    PyObject *item = Py_NewRef(PyList_GET_ITEM(items, pos));
    pos++;
    if (pos == n) {
        if (list_drop_front(items, n) < 0)     /* drained: start over */
            goto fail;
        pos = 0;
    }
    if (field_set_ssize(inp, F.i_ipos, pos) < 0 || field_set_ssize(inp, F.i_head, head + 1) < 0)
        goto fail;
    if (FIELD(item, F.it_key) != NULL && FIELD(item, F.it_key) != Py_None) {
        int over = over_mark(inp, slots);
        if (over < 0 || (over && call_method(inp, s_move_off, item, NULL) < 0))
            goto fail;      /* the ring is nearly all held: hand out a copy */
    }
    return item;
fail:
    Py_DECREF(item);
    return NULL;
}

/* Connection.return_ring with InputPipe.give_back_item. */
static PyObject *
c_return_ring(PyObject *self, PyObject *item)
{
    PyObject *owner = FIELD(self, F.owner), *inp = FIELD(self, F.in), *held, *key, *view;
    Py_ssize_t unread, length;     /* checked to be ints here; drop_item uses them */
    if (owner == NULL || !PyLong_CheckExact(owner) || PyLong_AsUnsignedLong(owner)
                != PyThread_get_thread_ident()
            || inp == NULL || !Py_IS_TYPE(inp, in_type) || !Py_IS_TYPE(item, item_type)
            || FIELD(item, F.it_live) != Py_True
            || (key = FIELD(item, F.it_key)) == NULL || !PyLong_CheckExact(key)
            || (view = FIELD(item, F.it_view)) == NULL || !PyMemoryView_Check(view)
            || (held = FIELD(inp, F.i_held)) == NULL || !PyList_CheckExact(held)
            || FIELD(inp, F.i_slots) == NULL
            || field_ssize(inp, F.i_unread, &unread) || field_ssize(item, F.it_length, &length)) {
        PyErr_Clear();              /* a bad owner int: the reference raises its error */
        return ref_call(ref_c_return_ring, self, &item, 1);
    }
    if (held_at(held, item) < 0)    /* not this pipe's, or given back: the reference says */
        return ref_call(ref_c_return_ring, self, &item, 1);
    if (drop_item(inp, item) < 0)       /* InputPipe.give_back_item's drop */
        return NULL;
    item_retire(item);
    if (FIELD(inp, F.i_paused) == Py_True && call_method(self, s_maybe_resume, NULL, NULL) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* Connection.reset_read: nothing to do unless a read() is waiting (the
 * reference raises that error).  A method call per level-1 batch costs a
 * Python frame otherwise. */
static PyObject *
c_reset_read(PyObject *self, PyObject *Py_UNUSED(unused))
{
    PyObject *inp = FIELD(self, F.in);
    if (inp == Py_None)
        Py_RETURN_NONE;
    if (inp == NULL || !Py_IS_TYPE(inp, in_type) || FIELD(inp, F.i_waiter) != Py_None)
        return ref_call(ref_c_reset_read, self, NULL, 0);
    Py_RETURN_NONE;
}

/* ---------------------------------------------------- PipeReader's side */

/* The ring-nearly-held check of take/_pull: 1 over the hand-out mark, 0 not,
 * -1 on error. */
static int
over_mark(PyObject *inp, PyObject *slots)
{
    Py_ssize_t mark, v;
    if (field_ssize(inp, F.i_mark, &mark)) {
        PyErr_SetString(PyExc_AttributeError, "_hand_out_mark");
        return -1;
    }
    if (Py_IS_TYPE(slots, &RecvSlotsType))
        return ((RecvSlotsObject *)slots)->out > (long long)mark;
    if (attr_ssize(slots, s_out, &v) < 0)
        return -1;
    return v > mark;
}

/* InputPipe._pull's common case -- one fresh item, nothing kept from before:
 * a one-segment owning sequence.  1 pulled, 0 nothing waiting, -1 error;
 * anything else goes to the Python _pull. */
static int
pull(PyObject *inp)
{
    Py_ssize_t head, tail, pos;
    PyObject *items = FIELD(inp, F.i_items), *slots = FIELD(inp, F.i_slots);
    if (field_ssize(inp, F.i_head, &head) || field_ssize(inp, F.i_tail, &tail)
            || field_ssize(inp, F.i_ipos, &pos) || items == NULL || !PyList_CheckExact(items)
            || slots == NULL)
        goto reference;
    if (head >= tail)
        return 0;
    if (FIELD(inp, F.i_buffer) != Py_None || PyList_GET_SIZE(items) != pos + 1
            || !Py_IS_TYPE(PyList_GET_ITEM(items, pos), item_type))
        goto reference;
    PyObject *item = PyList_GET_ITEM(items, pos);
    PyObject *key = FIELD(item, F.it_key), *view = FIELD(item, F.it_view);
    if (key == NULL || view == NULL)
        goto reference;
    if (key != Py_None) {
        int over = over_mark(inp, slots);
        if (over < 0)
            return -1;
        if (over)
            goto reference;         /* the ring is nearly held: the reference copies */
    }
    PyObject *give = pipe_give(inp);
    if (give == NULL)
        return -1;
    SeqObject *seq;
    LeaseObject *lease;
    Py_INCREF(item);
    int rc = seq_make_single(view, item, give, &seq, &lease);
    Py_DECREF(give);
    if (rc < 0) {
        Py_DECREF(item);
        return -1;
    }
    Py_DECREF(lease);
    rc = list_drop_front(items, PyList_GET_SIZE(items));
    Py_DECREF(item);
    if (rc < 0 || field_set_ssize(inp, F.i_ipos, 0) < 0
            || field_set_ssize(inp, F.i_head, tail) < 0) {
        Py_DECREF(seq);
        return -1;
    }
    field_set(inp, F.i_buffer, (PyObject *)seq);
    field_set(inp, F.i_movable, Py_NewRef(Py_True));
    return 1;
reference:;
    PyObject *r = PyObject_CallMethodNoArgs(inp, s_pull);
    if (r == NULL)
        return -1;
    int got = PyObject_IsTrue(r);
    Py_DECREF(r);
    return got;
}

static PyObject *member_tuple_new(PyTypeObject *tp, Py_ssize_t nitems);

/* InputPipe.try_read(closed) */
static PyObject *
in_try_read(PyObject *inp, PyObject *arg)
{
    Py_ssize_t handed, head, tail;
    if (FIELD(inp, F.i_completed) != Py_False || FIELD(inp, F.i_cancel) != Py_False
            || field_ssize(inp, F.i_handed, &handed) || handed >= 0
            || FIELD(inp, F.i_ended) == NULL || FIELD(inp, F.i_buffer) == NULL)
        return ref_call(ref_i_try_read, inp, &arg, 1);
    int closed = PyObject_IsTrue(arg);
    if (closed < 0)
        return NULL;
    if (!closed) {
        closed = PyObject_IsTrue(FIELD(inp, F.i_ended));
        if (closed < 0)
            return NULL;
    }
    int fresh = pull(inp);
    if (fresh < 0)
        return NULL;
    PyObject *buf = FIELD(inp, F.i_buffer);
    int ready = fresh;
    if (!ready && buf != NULL && buf != Py_None && FIELD(inp, F.i_examined_all) != Py_True) {
        Py_ssize_t len = PyObject_Length(buf);
        if (len < 0)
            return NULL;
        ready = len > 0;
    }
    if (!ready && !closed)
        Py_RETURN_NONE;
    field_set(inp, F.i_examined_all, Py_NewRef(Py_False));
    /* _result(False, closed) */
    PyObject *view;
    if (buf != NULL && buf != Py_None) {
        if (!PyObject_TypeCheck(buf, &SequenceCoreType))
            return ref_call(ref_i_try_read, inp, &arg, 1);   /* not reached in practice */
        view = seq_window((SeqObject *)buf);
        if (view == NULL)
            return NULL;
    } else {
        view = Py_NewRef(empty_seq);
    }
    Py_ssize_t n = PyObject_Length(view);
    if (n < 0 || field_set_ssize(inp, F.i_handed, n) < 0
            || field_ssize(inp, F.i_head, &head) || field_ssize(inp, F.i_tail, &tail)) {
        Py_DECREF(view);
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_AttributeError, "head/tail");
        return NULL;
    }
    PyObject *done = closed && head >= tail ? Py_True : Py_False;
    /* ReadResult(view, done, False): a NamedTuple is a tuple subclass with no
     * fields of its own; this is tuple.__new__(ReadResult, ...) done in place.
     * Every field is filled, so the class's padded tp_alloc (member_tuple_alloc,
     * for shorter tuples made elsewhere) has nothing to add. */
    PyObject *res = member_tuple_new(result_type, 3);
    if (res == NULL) {
        Py_DECREF(view);
        return NULL;
    }
    PyTuple_SET_ITEM(res, 0, view);
    PyTuple_SET_ITEM(res, 1, Py_NewRef(done));
    PyTuple_SET_ITEM(res, 2, Py_NewRef(Py_False));
    return res;
}

/* InputPipe.arm_waiter(): the future a waiting read awaits, a ReadWaiter
 * (readwaiter.c) where the reference makes an asyncio Future. */
static PyObject *
in_arm_waiter(PyObject *inp, PyObject *Py_UNUSED(ignored))
{
    PyObject *loop = FIELD(inp, F.i_loop);
    if (FIELD(inp, F.i_waiter) != Py_None || loop == NULL)
        return ref_call(ref_i_arm_waiter, inp, NULL, 0);    /* raises what is wrong */
    PyObject *fut = waiter_new(loop);
    if (fut == NULL)
        return NULL;
    field_set(inp, F.i_waiter, Py_NewRef(fut));
    if (FIELD(inp, F.i_paused) == Py_True && call_method(inp, s_relieve, NULL, NULL) < 0) {
        Py_DECREF(fut);
        return NULL;
    }
    return fut;
}

/* -- PipeReader.read() without a Python coroutine
 *
 * `await reader.read()` is PipeInput.read, an `async def`: a coroutine object
 * and a frame per read, resumed through Python when the bytes come.  The C
 * read returns a ReadCoro, a coroutine in C that runs the same steps as that
 * method (the reference, kept in the class):
 *
 *   START        backlog (the last read was cut for fairness): clear it and
 *                yield once (asyncio.sleep(0)), -> AFTER_SLEEP
 *   AFTER_SLEEP  try_read(closed); a result ends it
 *   ARM          paused: conn._maybe_resume(); arm the waiter and yield its
 *                future (marked _asyncio_future_blocking, as Future.__await__
 *                does), -> WAITING
 *   WAITING      resumed: waiter = None, the future's result (raises what it
 *                holds), try_read(closed or discarding); a result ends it,
 *                else ARM again
 *
 * throw() and close() while WAITING clear the waiter first, as the method's
 * `finally` does; so does deallocation of an unfinished one.  It has
 * __await__, send, throw and close (am_send for the interpreter), so asyncio
 * takes it for a coroutine (create_task, wait_for).
 */

enum { RD_START, RD_AFTER_SLEEP, RD_WAITING, RD_DONE };

typedef struct {
    PyObject_HEAD
    PyObject *pipe;             /* the PipeInput, or the Connection (ring) */
    PyObject *fut;              /* the future awaited (WAITING), else NULL */
    int state;
    int ring;                   /* Connection.read (level 1), not PipeInput.read */
} ReadCoroObject;

static PyTypeObject *pi_type;       /* zerg._connection.PipeInput (bind_reads) */
static PyTypeObject *snap_type;     /* zerg.RingSnapshot (bind_reads) */
static int fields_as_members(PyTypeObject *tp);
static Py_ssize_t pi_conn, pi_in;
static PyObject *ref_pi_read, *ref_pi_advance_to, *ref_c_read;

/* Level 1's snapshot, as Connection.read makes it: items waiting (at most a
 * chunk of them; the rest wait for the next read, after a fairness yield),
 * or the end; NULL without an error when it must wait (!after_wait), or a
 * new reference, or NULL with an error. */
static PyObject *
ring_snapshot(PyObject *conn, PyObject *inp, int after_wait)
{
    Py_ssize_t head, tail, state, chunk;
    int closed;
    if (field_ssize(inp, F.i_head, &head) || field_ssize(inp, F.i_tail, &tail)
            || field_ssize(conn, F.state, &state)) {
        PyErr_SetString(PyExc_SystemError, "zerg: InputPipe.head/tail or _state not an int");
        return NULL;
    }
    if (head < tail) {
        PyObject *opts = FIELD(inp, F.i_opts);
        OptInts lim;
        if (opts == NULL) {
            PyErr_SetString(PyExc_SystemError, "zerg: InputPipe._opts is unset");
            return NULL;
        }
        if (opt_ints(opts, &lim) < 0)
            return NULL;
        chunk = lim.chunk;
        if (tail - head > chunk) {
            tail = head + chunk;
            field_set(inp, F.i_backlog, Py_NewRef(Py_True));
        }
        closed = 0;
    } else {
        closed = FIELD(inp, F.i_ended) == NULL ? -1 : PyObject_IsTrue(FIELD(inp, F.i_ended));
        if (closed == 0)
            closed = state != 0;
        if (closed == 0)
            closed = FIELD(conn, F.stopping) == NULL ? -1
                     : PyObject_IsTrue(FIELD(conn, F.stopping));
        if (closed < 0) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_SystemError, "zerg: a connection field is unset");
            return NULL;
        }
        if (!closed && !after_wait)
            return NULL;                /* wait */
    }
    PyObject *t = PyLong_FromSsize_t(tail);
    if (t == NULL)
        return NULL;
    PyObject *snap = member_tuple_new(snap_type, 2);     /* both fields: no padding */
    if (snap == NULL) {
        Py_DECREF(t);
        return NULL;
    }
    PyTuple_SET_ITEM(snap, 0, t);
    PyTuple_SET_ITEM(snap, 1, Py_NewRef(closed ? Py_True : Py_False));
    return snap;
}

/* try_read's flag: conn._state != OPEN or conn._stopping [or inp.discarding]. */
static PyObject *
read_try(PyObject *conn, PyObject *inp, int after_wait)
{
    Py_ssize_t state;
    if (field_ssize(conn, F.state, &state)) {
        PyErr_SetString(PyExc_SystemError, "zerg: Connection._state is not an int");
        return NULL;
    }
    int closed = state != 0;
    if (!closed && after_wait) {
        closed = FIELD(inp, F.i_discarding) == NULL ? -1
                 : PyObject_IsTrue(FIELD(inp, F.i_discarding));
    }
    if (closed == 0)
        closed = FIELD(conn, F.stopping) == NULL ? -1 : PyObject_IsTrue(FIELD(conn, F.stopping));
    if (closed < 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_SystemError, "zerg: a connection field is unset");
        return NULL;
    }
    return in_try_read(inp, closed ? Py_True : Py_False);
}

/* The waiter is done with: inp.waiter = None (the method's `finally`). */
static void
read_unarm(ReadCoroObject *self)
{
    PyObject *inp = FIELD(self->pipe, self->ring ? F.in : pi_in);
    if (inp != NULL && Py_IS_TYPE(inp, in_type))
        field_set(inp, F.i_waiter, Py_NewRef(Py_None));
    Py_CLEAR(self->fut);
}

static PySendResult
read_step(ReadCoroObject *self, PyObject *arg, PyObject **presult)
{
    PyObject *conn = self->ring ? self->pipe : FIELD(self->pipe, pi_conn);
    PyObject *inp = FIELD(self->pipe, self->ring ? F.in : pi_in), *res;
    PySendResult ret = PYGEN_ERROR;
    *presult = NULL;
    if (self->state == RD_DONE) {
        PyErr_SetString(PyExc_RuntimeError, "cannot reuse already awaited coroutine");
        return PYGEN_ERROR;
    }
    if (self->state == RD_START && arg != Py_None) {
        PyErr_SetString(PyExc_TypeError, "can't send non-None value to a just-started coroutine");
        return PYGEN_ERROR;
    }
    if (conn == NULL || inp == NULL || !Py_IS_TYPE(inp, in_type)) {
        PyErr_SetString(PyExc_SystemError, "zerg: the PipeInput lost its connection");
        self->state = RD_DONE;
        return PYGEN_ERROR;
    }
    Py_INCREF(conn);                /* Python code runs below (_maybe_resume, ...) */
    Py_INCREF(inp);
    int after_wait = 0;
    if (self->state == RD_START) {
        int backlog = FIELD(inp, F.i_backlog) == NULL ? -1
                      : PyObject_IsTrue(FIELD(inp, F.i_backlog));
        if (backlog < 0)
            goto fail;
        if (backlog) {
            field_set(inp, F.i_backlog, Py_NewRef(Py_False));
            self->state = RD_AFTER_SLEEP;
            *presult = Py_NewRef(Py_None);      /* a bare yield: asyncio.sleep(0) */
            ret = PYGEN_NEXT;
            goto out;
        }
    } else if (self->state == RD_WAITING) {
        PyObject *fut = Py_NewRef(self->fut);
        read_unarm(self);
        PyObject *r = waiter_check(fut) ? waiter_result(fut)
                                        : PyObject_CallMethodNoArgs(fut, s_result);
        Py_DECREF(fut);
        if (r == NULL)
            goto fail;
        Py_DECREF(r);
        after_wait = 1;
    }
    for (;;) {
        if (self->ring) {           /* level 1: one wait at most, then a snapshot */
            res = ring_snapshot(conn, inp, after_wait);
            if (res == NULL && PyErr_Occurred())
                goto fail;
            if (res == NULL)
                res = Py_NewRef(Py_None);
        } else {
            res = read_try(conn, inp, after_wait);
        }
        if (res == NULL)
            goto fail;
        if (res != Py_None) {
            self->state = RD_DONE;
            *presult = res;
            ret = PYGEN_RETURN;
            goto out;
        }
        Py_DECREF(res);
        if (after_wait)             /* woken with nothing new (a wake-up): wait again */
            after_wait = 0;
        int paused = FIELD(inp, F.i_paused) == NULL ? -1 : PyObject_IsTrue(FIELD(inp, F.i_paused));
        if (paused < 0 || (paused && call_method(conn, s_maybe_resume, NULL, NULL) < 0))
            goto fail;
        PyObject *fut = in_arm_waiter(inp, NULL);
        if (fut == NULL)
            goto fail;
        if (waiter_check(fut)) {
            waiter_block(fut);
        } else if (PyObject_SetAttr(fut, s_blocking, Py_True) < 0) {
            field_set(inp, F.i_waiter, Py_NewRef(Py_None));
            Py_DECREF(fut);
            goto fail;
        }
        self->fut = Py_NewRef(fut);
        self->state = RD_WAITING;
        *presult = fut;
        ret = PYGEN_NEXT;
        goto out;
    }
fail:
    self->state = RD_DONE;
    ret = PYGEN_ERROR;
out:
    Py_DECREF(conn);
    Py_DECREF(inp);
    return ret;
}

static PySendResult
read_am_send(PyObject *self, PyObject *arg, PyObject **presult)
{
    return read_step((ReadCoroObject *)self, arg, presult);
}

/* The result as StopIteration(value) (a tuple value must not become args). */
static PyObject *
read_finish(PySendResult r, PyObject *value)
{
    if (r == PYGEN_NEXT)
        return value;
    if (r == PYGEN_RETURN) {
        PyObject *stop = PyObject_CallOneArg(PyExc_StopIteration, value);
        Py_DECREF(value);
        if (stop != NULL) {
            PyErr_SetObject(PyExc_StopIteration, stop);
            Py_DECREF(stop);
        }
    }
    return NULL;
}

static PyObject *
read_iternext(PyObject *self)
{
    PyObject *value;
    PySendResult r = read_step((ReadCoroObject *)self, Py_None, &value);
    return read_finish(r, value);
}

static PyObject *
read_send(PyObject *self, PyObject *arg)
{
    PyObject *value;
    PySendResult r = read_step((ReadCoroObject *)self, arg, &value);
    return read_finish(r, value);
}

static PyObject *
read_throw(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    ReadCoroObject *self = (ReadCoroObject *)op;
    if (self->state == RD_WAITING)
        read_unarm(self);
    self->state = RD_DONE;
    return done_throw(op, args, nargs);
}

static PyObject *
read_close(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    ReadCoroObject *self = (ReadCoroObject *)op;
    if (self->state == RD_WAITING)
        read_unarm(self);
    self->state = RD_DONE;
    Py_RETURN_NONE;
}

static int
read_traverse(ReadCoroObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->pipe);
    Py_VISIT(self->fut);
    return 0;
}

static int
read_clear(ReadCoroObject *self)
{
    Py_CLEAR(self->fut);
    Py_CLEAR(self->pipe);
    return 0;
}

/* Finished read coroutines kept for the next reads (a read per message), as
 * CPython keeps freelists of its small objects: at most a few, cleared of
 * every reference, untracked, and given a fresh header when taken. */
#define READ_FREELIST_MAX 16
static ReadCoroObject *read_freelist[READ_FREELIST_MAX];
static int read_freelist_n;

static void
read_dealloc(ReadCoroObject *self)
{
    PyObject_GC_UnTrack(self);
    if (self->state == RD_WAITING && self->pipe != NULL) {
        PyObject *exc = fetch_exception();      /* as close() would, at any time */
        read_unarm(self);
        if (exc != NULL)
            restore_exception(exc);
    }
    read_clear(self);
    if (read_freelist_n < READ_FREELIST_MAX) {
        read_freelist[read_freelist_n++] = self;
        return;
    }
    PyObject_GC_Del(self);
}

static PyMethodDef read_methods[] = {
    {"send", (PyCFunction)read_send, METH_O, "Resume the read (None)."},
    {"throw", (PyCFunction)(void (*)(void))read_throw, METH_FASTCALL,
     "Raise the exception where the read waits (its waiter is cleared first)."},
    {"close", (PyCFunction)read_close, METH_NOARGS, "Abandon the read; its waiter is cleared."},
    {NULL, NULL, 0, NULL},
};

static PyAsyncMethods read_as_async = {
    .am_await = done_await,         /* returns self */
    .am_send = read_am_send,
};

static PyTypeObject ReadCoroType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "zerg._speedups.ReadCoroutine",
    .tp_basicsize = sizeof(ReadCoroObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "What PipeReader.read() and Connection.read() return with the C extension: "
              "PipeInput.read and Connection.read as coroutines in C.",
    .tp_dealloc = (destructor)read_dealloc,
    .tp_traverse = (traverseproc)read_traverse,
    .tp_clear = (inquiry)read_clear,
    .tp_as_async = &read_as_async,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = read_iternext,
    .tp_methods = read_methods,
};

/* A read coroutine, not started, of a PipeInput (ring 0) or a Connection. */
static PyObject *
read_coro_new(PyObject *owner, int ring)
{
    ReadCoroObject *rc;
    if (read_freelist_n > 0) {
        rc = read_freelist[--read_freelist_n];
        (void)PyObject_Init((PyObject *)rc, &ReadCoroType);
    } else {
        rc = PyObject_GC_New(ReadCoroObject, &ReadCoroType);
        if (rc == NULL)
            return NULL;
    }
    rc->pipe = Py_NewRef(owner);
    rc->fut = NULL;
    rc->state = RD_START;
    rc->ring = ring;
    PyObject_GC_Track(rc);
    return (PyObject *)rc;
}

/* PipeInput.read */
static PyObject *
pi_read(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *conn = FIELD(self, pi_conn), *inp = FIELD(self, pi_in);
    /* The connection may be a subclass (a TLS layer): the coroutine reads only
     * base fields and calls _maybe_resume by name. */
    if (pi_type == NULL || !PyObject_TypeCheck(self, pi_type) || conn == NULL
            || !PyObject_TypeCheck(conn, base_type) || inp == NULL || !Py_IS_TYPE(inp, in_type))
        return ref_call(ref_pi_read, self, NULL, 0);
    return read_coro_new(self, 0);
}

static PyObject *in_advance_to(PyObject *inp, PyObject *const *args, Py_ssize_t nargs);

/* PipeInput.advance_to(consumed, examined=None): InputPipe's, without the
 * Python frame in between (keywords and odd calls take the reference). */
static PyObject *
pi_advance_to(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *inp = pi_type != NULL && PyObject_TypeCheck(self, pi_type) ? FIELD(self, pi_in)
                                                                        : NULL;
    if (kwnames != NULL || nargs < 1 || nargs > 2 || inp == NULL || !Py_IS_TYPE(inp, in_type)) {
        PyObject *stack[8];
        Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
        if (nargs + nkw > 7) {
            PyErr_SetString(PyExc_TypeError, "advance_to() takes at most 2 arguments");
            return NULL;
        }
        stack[0] = self;
        for (Py_ssize_t i = 0; i < nargs + nkw; i++)
            stack[i + 1] = args[i];
        return PyObject_Vectorcall(ref_pi_advance_to, stack, (size_t)nargs + 1, kwnames);
    }
    return in_advance_to(inp, args, nargs);
}

/* Connection.read (level 1) */
static PyObject *
c_read(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *inp = FIELD(self, F.in);
    if (snap_type == NULL || !Py_IS_TYPE(self, base_type) || inp == NULL
            || !Py_IS_TYPE(inp, in_type))
        return ref_call(ref_c_read, self, NULL, 0);
    return read_coro_new(self, 1);
}

static PyMethodDef pi_methods[] = {
    {"read", (PyCFunction)pi_read, METH_NOARGS,
     "Every unconsumed byte; waits only when all of it was examined (C fast path)."},
    {"advance_to", (PyCFunction)(void (*)(void))pi_advance_to, METH_FASTCALL | METH_KEYWORDS,
     "Consume ``consumed`` bytes of the last buffer; ``examined`` were looked at (C fast "
     "path)."},
    {NULL, NULL, 0, NULL},
};
static PyObject **pi_refs[] = {&ref_pi_read, &ref_pi_advance_to};
static PyMethodDef read_c_methods[] = {
    {"read", (PyCFunction)c_read, METH_NOARGS,
     "Wait until received slots are waiting or the stream ended (C fast path)."},
    {NULL, NULL, 0, NULL},
};
static PyObject **read_c_refs[] = {&ref_c_read};

/* bind_reads(PipeInput, RingSnapshot): after bind_connection, PipeInput.read
 * and Connection.read in C. */
static PyObject *
sp_bind_reads(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyTypeObject *cls, *snap;
    if (!PyArg_ParseTuple(args, "O!O!:bind_reads", &PyType_Type, &cls, &PyType_Type, &snap))
        return NULL;
    if (pi_type != NULL) {
        if (cls != pi_type || snap != snap_type) {
            PyErr_SetString(PyExc_RuntimeError, "bind_reads: already bound to other classes");
            return NULL;
        }
        Py_RETURN_NONE;
    }
    if (base_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "bind_reads: bind_connection() first");
        return NULL;
    }
    if (!PyType_IsSubtype(snap, &PyTuple_Type) || snap->tp_basicsize != PyTuple_Type.tp_basicsize) {
        PyErr_SetString(PyExc_TypeError, "bind_reads: RingSnapshot must be a NamedTuple");
        return NULL;
    }
    if (fields_as_members(snap) < 0)
        return NULL;
    if (slot_offset(cls, "_conn", &pi_conn) < 0 || slot_offset(cls, "_in", &pi_in) < 0
            || install_methods(cls, pi_methods, pi_refs, N_METHODS(pi_methods)) < 0)
        return NULL;
    if (install_methods(base_type, read_c_methods, read_c_refs, N_METHODS(read_c_methods)) < 0) {
        PyObject *exc = fetch_exception();      /* all or nothing */
        if (PyObject_SetAttrString((PyObject *)cls, "read", ref_pi_read) < 0
                || PyObject_SetAttrString((PyObject *)cls, "advance_to", ref_pi_advance_to) < 0)
            PyErr_Clear();
        Py_CLEAR(ref_pi_read);
        Py_CLEAR(ref_pi_advance_to);
        if (exc != NULL)
            restore_exception(exc);
        return NULL;
    }
    pi_type = (PyTypeObject *)Py_NewRef((PyObject *)cls);
    snap_type = (PyTypeObject *)Py_NewRef((PyObject *)snap);
    Py_RETURN_NONE;
}

/* ------------------------------------------- NamedTuple fields as members
 *
 * Why: a handler reads snap.is_closed per message (ReadResult.buffer and
 * .is_completed per PipeReader read).  A NamedTuple's field is a
 * _tuplegetter, a data descriptor the 3.11 interpreter cannot specialise
 * its attribute load for: every read went the generic way (a type lookup,
 * the descriptor call), about 190 instructions.
 * What: the classes the fast path makes (RingSnapshot, ReadResult) get, in
 * place of each field's _tuplegetter, a read-only T_OBJECT_EX member at the
 * field's item -- the way CPython's own struct sequences expose theirs --
 * which the interpreter loads as a slot (LOAD_ATTR_SLOT).  The tuple stays
 * a tuple; only `x.field = v` words its refusal differently.  A tuple of the
 * class made with fewer items (tuple.__new__(cls, ())) would have the member
 * read past its end, so the class allocates room for every field, zeroed:
 * a missing item is NULL and reads as AttributeError.
 * The member definitions and the names and docs they point to live as long
 * as the process, like the classes. */
#define MEMBER_TUPLE_MAX 4

/* The classes changed, with their field counts, and the freed instances
 * each keeps for its next ones.
 *
 * Why: level 1 makes a RingSnapshot per read and level 3 a ReadResult, and
 * drops it a read later: an allocation and a free of a GC object each
 * time.  tupledealloc hands a tuple subclass's memory to the class's
 * tp_free (after subtype_dealloc cleared what a NamedTuple has: nothing but
 * the items, its __slots__ being empty), so the class's tp_free keeps the
 * block and member_tuple_new takes it back, initialized as
 * PyType_GenericAlloc would.  A block is kept only while it holds at least
 * the class's n items, so it has room for any instance of the class: a
 * shorter tuple's block is padded to n, but an instance whose __class__
 * was changed to this class from another of the same layout may come
 * from a smaller block (with these classes, 2 and 3 items, GenericAlloc's
 * spare item covers it; the check does not rely on that). */
#define MEMBER_TUPLE_FREE 32
static struct {
    PyTypeObject *tp;
    Py_ssize_t n;
    PyObject *free[MEMBER_TUPLE_FREE];
    int nfree;
} member_tuples[MEMBER_TUPLE_MAX];

static void
member_tuple_free(void *op)
{
    PyObject *o = (PyObject *)op;
    for (int i = 0; i < MEMBER_TUPLE_MAX; i++) {
        if (member_tuples[i].tp == Py_TYPE(o)) {
            if (Py_SIZE(o) >= member_tuples[i].n && member_tuples[i].nfree < MEMBER_TUPLE_FREE) {
                member_tuples[i].free[member_tuples[i].nfree++] = o;
                return;
            }
            break;
        }
    }
    PyObject_GC_Del(op);
}

/* An instance of one of the classes with nitems <= its n items, from its
 * freelist when there is one, else PyType_GenericAlloc's; items NULL. */
static PyObject *
member_tuple_new(PyTypeObject *tp, Py_ssize_t nitems)
{
    for (int i = 0; i < MEMBER_TUPLE_MAX; i++) {
        if (member_tuples[i].tp == tp && member_tuples[i].nfree > 0
                && nitems <= member_tuples[i].n) {
            PyObject *o = member_tuples[i].free[--member_tuples[i].nfree];
            memset(((PyTupleObject *)o)->ob_item, 0, (size_t)nitems * sizeof(PyObject *));
            PyObject_InitVar((PyVarObject *)o, tp, nitems);
            PyObject_GC_Track(o);
            return o;
        }
    }
    return PyType_GenericAlloc(tp, nitems);
}

static PyObject *
member_tuple_alloc(PyTypeObject *tp, Py_ssize_t nitems)
{
    Py_ssize_t need = MEMBER_TUPLE_MAX;     /* a subclass's: its base's fields */
    for (PyTypeObject *t = tp; t != NULL && need == MEMBER_TUPLE_MAX; t = t->tp_base)
        for (int i = 0; i < MEMBER_TUPLE_MAX; i++)
            if (member_tuples[i].tp == t)
                need = member_tuples[i].n;
    if (nitems >= need)
        return PyType_GenericAlloc(tp, nitems);
    PyObject *o = PyType_GenericAlloc(tp, need);
    if (o != NULL)
        Py_SET_SIZE(o, nitems);
    return o;
}

static int
fields_as_members(PyTypeObject *tp)
{
    int slot = 0;
    while (slot < MEMBER_TUPLE_MAX && member_tuples[slot].tp != NULL && member_tuples[slot].tp != tp)
        slot++;
    if (slot < MEMBER_TUPLE_MAX && member_tuples[slot].tp == tp)
        return 0;                   /* done already */
    if (slot == MEMBER_TUPLE_MAX) {
        PyErr_SetString(PyExc_RuntimeError, "fields_as_members: too many classes");
        return -1;
    }
    if (!PyType_IsSubtype(tp, &PyTuple_Type) || tp->tp_basicsize != PyTuple_Type.tp_basicsize
            || tp->tp_itemsize != PyTuple_Type.tp_itemsize || !(tp->tp_flags & Py_TPFLAGS_HEAPTYPE)) {
        PyErr_Format(PyExc_TypeError, "%s must be a NamedTuple", tp->tp_name);
        return -1;
    }
    PyObject *fields = PyObject_GetAttrString((PyObject *)tp, "_fields");
    if (fields == NULL)
        return -1;
    Py_ssize_t n = PyTuple_Check(fields) ? PyTuple_GET_SIZE(fields) : -1;
    if (n < 1 || n > MEMBER_TUPLE_MAX) {
        Py_DECREF(fields);
        PyErr_Format(PyExc_TypeError, "%s must be a NamedTuple of 1 to %d fields", tp->tp_name,
                     MEMBER_TUPLE_MAX);
        return -1;
    }
    PyMemberDef *defs = PyMem_Calloc((size_t)n, sizeof(PyMemberDef));
    PyObject *descrs[MEMBER_TUPLE_MAX] = {NULL}, *keep = PyList_New(0);
    Py_ssize_t i;
    if (defs == NULL || keep == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    for (i = 0; i < n; i++) {
        PyObject *name = PyTuple_GET_ITEM(fields, i), *doc;
        const char *cname = PyUnicode_Check(name) ? PyUnicode_AsUTF8(name) : NULL;
        if (cname == NULL) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_TypeError, "a NamedTuple field name is not a str");
            goto fail;
        }
        PyObject *old = PyDict_GetItemWithError(tp->tp_dict, name);     /* borrowed */
        if (old == NULL) {
            if (!PyErr_Occurred())
                PyErr_Format(PyExc_TypeError, "%s has no descriptor for %R", tp->tp_name, name);
            goto fail;
        }
        /* keep[2i] the old descriptor (a rollback), keep[2i + 1] its doc */
        if (PyList_Append(keep, old) < 0)
            goto fail;
        doc = PyObject_GetAttrString(old, "__doc__");
        if (doc == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_AttributeError))
                goto fail;
            PyErr_Clear();
            doc = Py_NewRef(Py_None);
        }
        if (PyList_Append(keep, doc) < 0) {
            Py_DECREF(doc);
            goto fail;
        }
        defs[i].name = cname;
        defs[i].type = T_OBJECT_EX;
        defs[i].offset = (Py_ssize_t)(offsetof(PyTupleObject, ob_item) + (size_t)i * sizeof(PyObject *));
        defs[i].flags = READONLY;
        defs[i].doc = PyUnicode_Check(doc) ? PyUnicode_AsUTF8(doc) : NULL;
        Py_DECREF(doc);             /* keep holds it */
        if (PyErr_Occurred())
            goto fail;
        descrs[i] = PyDescr_NewMember(tp, &defs[i]);
        if (descrs[i] == NULL)
            goto fail;
    }
    for (i = 0; i < n; i++) {       /* all made: now change the class */
        if (PyObject_SetAttr((PyObject *)tp, PyTuple_GET_ITEM(fields, i), descrs[i]) < 0) {
            PyObject *exc = fetch_exception();
            while (i-- > 0)         /* put the _tuplegetters back: all or nothing */
                (void)PyObject_SetAttr((PyObject *)tp, PyTuple_GET_ITEM(fields, i),
                                       PyList_GET_ITEM(keep, 2 * i));
            PyErr_Clear();
            if (exc != NULL)
                restore_exception(exc);
            goto fail;
        }
    }
    member_tuples[slot].tp = (PyTypeObject *)Py_NewRef((PyObject *)tp);
    member_tuples[slot].n = n;
    member_tuples[slot].nfree = 0;
    tp->tp_alloc = member_tuple_alloc;
    tp->tp_free = member_tuple_free;
    for (i = 0; i < n; i++)
        Py_DECREF(descrs[i]);
    /* kept for ever: defs (the descriptors point to it), the names (fields)
     * and docs (keep) it points into */
    return 0;
fail:
    for (i = 0; i < MEMBER_TUPLE_MAX; i++)
        Py_XDECREF(descrs[i]);
    Py_XDECREF(keep);
    Py_DECREF(fields);
    PyMem_Free(defs);
    return -1;
}

/* memoryview.release, called without a lookup by name (connfast_init). */
static PyObject *mv_release;
/* A released memoryview: a dropped item's view when its own serves again. */
static PyObject *dead_view;

/* InputPipe._drop(item): the application is done with item; its view dies
 * and its slot goes back (unless it was moved off the ring).  0 or -1.
 *
 * When only the item refers to its view (no variable, no buffer export), the
 * item gets dead_view instead -- released like its own would be, so using
 * the item afterwards raises the same -- and its own view, which nothing can
 * reach any more, serves the slot's next message (slots_keep_view, which
 * drops it when it cannot): a level 1-3 message then makes no view. */
static int
drop_item(PyObject *inp, PyObject *item)
{
    PyObject *key = FIELD(item, F.it_key), *view = FIELD(item, F.it_view);
    PyObject *held = FIELD(inp, F.i_held), *slots = FIELD(inp, F.i_slots);
    Py_ssize_t unread, length;
    if (FIELD(item, F.it_live) != Py_True)
        return 0;
    if (key == NULL || view == NULL || held == NULL || !PyList_CheckExact(held)
            || slots == NULL || field_ssize(inp, F.i_unread, &unread)
            || field_ssize(item, F.it_length, &length)) {
        PyErr_SetString(PyExc_SystemError, "zerg: a ring item or input pipe is malformed");
        return -1;
    }
    Py_INCREF(item);
    Py_INCREF(key);
    Py_INCREF(view);
    int rc = 0;
    field_set(item, F.it_live, Py_NewRef(Py_False));
    unsigned long k = (unsigned long)-1;
    int unseen = dead_view != NULL && PyMemoryView_Check(view) && Py_REFCNT(view) == 2
                 && ((PyMemoryViewObject *)view)->exports == 0
                 && Py_IS_TYPE(slots, &RecvSlotsType) && PyLong_CheckExact(key)
                 && (k = PyLong_AsUnsignedLong(key)) != (unsigned long)-1;
    if (!unseen && PyErr_Occurred())
        PyErr_Clear();      /* not a slot number: the view is released as usual */
    if (unseen) {
        field_set(item, F.it_view, Py_NewRef(dead_view));   /* ours is the last reference */
    } else {
        PyObject *r = mv_release != NULL && PyMemoryView_Check(view)
                      ? PyObject_Vectorcall(mv_release, &view, 1, NULL)
                      : PyObject_CallMethodNoArgs(view, s_release);
        if (r != NULL)
            Py_DECREF(r);
        else if (PyErr_ExceptionMatches(PyExc_BufferError))
            PyErr_Clear();      /* someone holds an export of it; the slot still goes back */
        else
            rc = -1;
    }
    if (rc == 0 && key != Py_None) {
        rc = unhold(held, item);
        if (rc == 0)
            rc = give_back(slots, key);
    }
    if (rc >= 0)
        rc = field_set_ssize(inp, F.i_unread, unread - length);
    if (unseen)
        slots_keep_view((RecvSlotsObject *)slots, k, view);    /* takes our reference */
    else
        Py_DECREF(view);
    Py_DECREF(key);
    Py_DECREF(item);
    return rc < 0 ? -1 : 0;
}

/* InputPipe.advance_to(consumed, examined=None): the common case is a read
 * buffer of one fresh slot consumed whole (BufferSequence.advance, then the
 * lease's _drop_tokens, done here). */
static PyObject *
in_advance_to(PyObject *inp, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t handed, consumed, examined, start, stop, unread, length;
    PyObject *buf = FIELD(inp, F.i_buffer), *held = FIELD(inp, F.i_held);
    PyObject *slots = FIELD(inp, F.i_slots);
    if (nargs < 1 || nargs > 2 || !PyLong_CheckExact(args[0])
            || (nargs == 2 && args[1] != Py_None && !PyLong_CheckExact(args[1]))
            || field_ssize(inp, F.i_handed, &handed) || handed < 0
            || buf == NULL || !Py_IS_TYPE(buf, seq_type) || held == NULL
            || !PyList_CheckExact(held) || slots == NULL
            || field_ssize(inp, F.i_unread, &unread))
        return ref_call(ref_i_advance_to, inp, args, nargs);
    consumed = PyLong_AsSsize_t(args[0]);
    examined = nargs == 2 && args[1] != Py_None ? PyLong_AsSsize_t(args[1]) : consumed;
    if ((consumed == -1 || examined == -1) && PyErr_Occurred()) {
        PyErr_Clear();
        return ref_call(ref_i_advance_to, inp, args, nargs);
    }
    SeqObject *seq = (SeqObject *)buf;
    LeaseObject *lease = (LeaseObject *)seq->slots;
    if (consumed != handed || examined != handed || consumed == 0
            || seq->owns != Py_True || seq->segs == NULL || !PyList_CheckExact(seq->segs)
            || PyList_GET_SIZE(seq->segs) != 1 || seq->offs == NULL
            || !PyList_CheckExact(seq->offs) || PyList_GET_SIZE(seq->offs) != 2
            || lease == NULL || !Py_IS_TYPE((PyObject *)lease, &SlotLeaseType)
            || lease->next != 0 || lease->held_from != 0
            || lease->keys == NULL || !PyList_CheckExact(lease->keys)
            || PyList_GET_SIZE(lease->keys) != 1
            || !Py_IS_TYPE(PyList_GET_ITEM(lease->keys, 0), item_type)
            || seq_bounds(seq, &start, &stop) < 0 || start != 0 || stop != consumed) {
        PyErr_Clear();
        return ref_call(ref_i_advance_to, inp, args, nargs);
    }
    PyObject *item = PyList_GET_ITEM(lease->keys, 0);
    if (FIELD(item, F.it_live) != Py_True || FIELD(item, F.it_key) == NULL
            || FIELD(item, F.it_view) == NULL || field_ssize(item, F.it_length, &length))
        return ref_call(ref_i_advance_to, inp, args, nargs);
    /* BufferSequence.advance(consumed): everything, so the one slot goes. */
    Py_ssize_t end = PyLong_AsSsize_t(PyList_GET_ITEM(seq->offs, 1));
    if (end == -1 && PyErr_Occurred())
        return NULL;
    Py_INCREF(item);
    seq->start = seq->stop;
    (void)PyList_SetItem(seq->segs, 0, Py_NewRef(empty_view));
    lease->next = 1;
    lease->held_from = end;
    int rc = drop_item(inp, item);
    Py_DECREF(item);
    if (rc < 0)
        return NULL;
    /* the buffer is empty: the next read starts afresh */
    field_set(inp, F.i_buffer, Py_NewRef(Py_None));
    field_set(inp, F.i_examined_all, Py_NewRef(Py_True));
    return field_set_ssize(inp, F.i_handed, -1) < 0 ? NULL : Py_NewRef(Py_None);
}

/* ------------------------------------------------------------- level 2 */

/* lease.give_back(keys): InputPipe._drop_tokens done here when that is what
 * it is (every key a RingItem), else called.  0 or -1. */
static int
lease_give_back(PyObject *give, PyObject *keys)
{
    if (give != NULL && PyMethod_Check(give) && PyMethod_GET_FUNCTION(give) == fn_drop_tokens
            && Py_IS_TYPE(PyMethod_GET_SELF(give), in_type) && PyList_CheckExact(keys)) {
        Py_ssize_t n = PyList_GET_SIZE(keys), i;
        for (i = 0; i < n && Py_IS_TYPE(PyList_GET_ITEM(keys, i), item_type); i++)
            ;
        if (i == n) {
            PyObject *inp = Py_NewRef(PyMethod_GET_SELF(give));
            int rc = 0;
            Py_INCREF(keys);
            for (i = 0; i < PyList_GET_SIZE(keys) && rc == 0; i++)
                rc = drop_item(inp, PyList_GET_ITEM(keys, i));
            Py_DECREF(keys);
            Py_DECREF(inp);
            return rc;
        }
    }
    if (give == NULL) {
        PyErr_SetString(PyExc_AttributeError, "give_back");
        return -1;
    }
    return call_ok(PyObject_CallOneArg(give, keys));
}

/* Hand keys (a new list, stolen) to the lease's give_back. 0 or -1. */
static int
give_keys(LeaseObject *lease, PyObject *keys)
{
    PyObject *give = Py_XNewRef(lease->give_back);     /* it may replace itself */
    int rc = lease_give_back(give, keys);
    Py_XDECREF(give);
    Py_DECREF(keys);
    return rc;
}

/* An owning sequence whose fields are what the C code expects. */
static int
plain_owner(SeqObject *seq)
{
    LeaseObject *lease = (LeaseObject *)seq->slots;
    return seq->owns == Py_True && seq->segs != NULL && PyList_CheckExact(seq->segs)
        && seq->offs != NULL && PyList_CheckExact(seq->offs)
        && PyList_GET_SIZE(seq->offs) == PyList_GET_SIZE(seq->segs) + 1
        && lease != NULL && Py_IS_TYPE((PyObject *)lease, &SlotLeaseType)
        && lease->keys != NULL && PyList_CheckExact(lease->keys)
        && PyList_GET_SIZE(lease->keys) == PyList_GET_SIZE(seq->segs);
}

/* BufferSequence.advance(n) */
static PyObject *
seq_advance(PyObject *self, PyObject *arg)
{
    SeqObject *seq = (SeqObject *)self;
    Py_ssize_t start, stop, n, first, last, nsegs, off;
    if (!PyLong_CheckExact(arg) || !plain_owner(seq) || seq_bounds(seq, &start, &stop) < 0
            || seq_check_alive(seq) < 0 || (n = PyLong_AsSsize_t(arg)) < 0 || n > stop - start
            || (first = ((LeaseObject *)seq->slots)->next) < 0) {
        PyErr_Clear();              /* the reference raises what is wrong */
        return ref_call(ref_seq_advance, self, &arg, 1);
    }
    LeaseObject *lease = (LeaseObject *)seq->slots;
    Py_ssize_t consumed = start + n;
    seq->start = consumed;
    nsegs = PyList_GET_SIZE(seq->segs);
    last = first;
    while (last < nsegs) {
        off = PyLong_AsSsize_t(PyList_GET_ITEM(seq->offs, last + 1));
        if (off == -1 && PyErr_Occurred())
            return NULL;
        if (off > consumed)
            break;
        if (PyList_SetItem(seq->segs, last, Py_NewRef(empty_view)) < 0)
            return NULL;
        last++;
    }
    if (last > first) {
        Py_ssize_t held = PyLong_AsSsize_t(PyList_GET_ITEM(seq->offs, last));
        if (held == -1 && PyErr_Occurred())
            return NULL;
        PyObject *keys = PyList_GetSlice(lease->keys, first, last);
        if (keys == NULL)
            return NULL;
        lease->next = last;
        lease->held_from = held;
        if (give_keys(lease, keys) < 0)
            return NULL;
    }
    Py_RETURN_NONE;
}

/* BufferSequence.release() */
static PyObject *
seq_release(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    SeqObject *seq = (SeqObject *)self;
    if (!plain_owner(seq))
        return ref_call(ref_seq_release, self, NULL, 0);
    LeaseObject *lease = (LeaseObject *)seq->slots;
    Py_ssize_t first = lease->next;
    if (lease->held_from == RELEASED)
        Py_RETURN_NONE;                         /* released already */
    /* retire(seq) */
    Py_ssize_t nsegs = PyList_GET_SIZE(seq->segs);
    if (first > nsegs)
        first = nsegs;
    PyObject *keys = PyList_GetSlice(lease->keys, first, nsegs);
    if (keys == NULL)
        return NULL;
    lease->next = nsegs;
    lease->held_from = RELEASED;
    for (Py_ssize_t i = first; i < nsegs; i++) {
        if (PyList_SetItem(seq->segs, i, Py_NewRef(empty_view)) < 0) {
            Py_DECREF(keys);
            return NULL;
        }
    }
    if (PyList_GET_SIZE(keys) == 0) {
        Py_DECREF(keys);
        Py_RETURN_NONE;
    }
    return give_keys(lease, keys) < 0 ? NULL : Py_NewRef(Py_None);
}

/* BufferSequence.__iter__: the window's bytes as fresh memoryviews, one per
 * segment it touches (BufferSequence._pieces(start, stop, fresh=True)). */
static PyObject *
seq_iter(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    SeqObject *seq = (SeqObject *)self;
    Py_ssize_t a, b, nsegs, k;
    if (seq->segs == NULL || !PyList_CheckExact(seq->segs) || seq->offs == NULL
            || !PyList_CheckExact(seq->offs)
            || PyList_GET_SIZE(seq->offs) != PyList_GET_SIZE(seq->segs) + 1
            || seq_bounds(seq, &a, &b) < 0 || seq_check_alive(seq) < 0) {
        PyErr_Clear();              /* the reference raises what is wrong */
        return ref_call(ref_seq_iter, self, NULL, 0);
    }
    PyObject *pieces = PyList_New(0);
    if (pieces == NULL)
        return NULL;
    nsegs = PyList_GET_SIZE(seq->segs);
    for (k = 0; k < nsegs && a < b; k++) {
        Py_ssize_t s = PyLong_AsSsize_t(PyList_GET_ITEM(seq->offs, k));
        Py_ssize_t e = PyLong_AsSsize_t(PyList_GET_ITEM(seq->offs, k + 1));
        if ((s == -1 || e == -1) && PyErr_Occurred())
            goto fail;
        if (e <= a || e == s)
            continue;               /* before the window, or an empty segment */
        Py_ssize_t lo = a - s, hi = (b < e ? b : e) - s;
        PyObject *piece = PySequence_GetSlice(PyList_GET_ITEM(seq->segs, k), lo, hi);
        if (piece == NULL || PyList_Append(pieces, piece) < 0) {
            Py_XDECREF(piece);
            goto fail;
        }
        Py_DECREF(piece);
        a = e;
    }
    PyObject *it = PyObject_GetIter(pieces);
    Py_DECREF(pieces);
    return it;
fail:
    Py_DECREF(pieces);
    return NULL;
}

/* Connection.get_sequence with InputPipe.sequence: the snapshot's items as
 * one owning sequence. */
static PyObject *
c_get_sequence(PyObject *self, PyObject *snapshot)
{
    PyObject *owner = FIELD(self, F.owner), *inp = FIELD(self, F.in), *items, *slots;
    Py_ssize_t head, pos, upto, count, i;
    if (owner == NULL || !PyLong_CheckExact(owner)
            || PyLong_AsUnsignedLong(owner) != PyThread_get_thread_ident()
            || inp == NULL || !Py_IS_TYPE(inp, in_type) || !PyTuple_Check(snapshot)
            || PyTuple_GET_SIZE(snapshot) != 2 || !PyLong_CheckExact(PyTuple_GET_ITEM(snapshot, 0))
            || (items = FIELD(inp, F.i_items)) == NULL || !PyList_CheckExact(items)
            || (slots = FIELD(inp, F.i_slots)) == NULL
            || field_ssize(inp, F.i_head, &head) || field_ssize(inp, F.i_ipos, &pos)
            || (upto = PyLong_AsSsize_t(PyTuple_GET_ITEM(snapshot, 0))) < 0) {
        PyErr_Clear();
        return ref_call(ref_c_get_sequence, self, &snapshot, 1);
    }
    Py_ssize_t n = PyList_GET_SIZE(items);
    count = upto - head < n - pos ? upto - head : n - pos;
    if (count <= 0 || pos < 0)
        return ref_call(ref_c_get_sequence, self, &snapshot, 1);
    int over = over_mark(inp, slots);
    if (over != 0) {
        if (over < 0)
            return NULL;
        return ref_call(ref_c_get_sequence, self, &snapshot, 1);    /* copies */
    }
    for (i = pos; i < pos + count; i++) {
        PyObject *item = PyList_GET_ITEM(items, i);
        Py_buffer *b;
        if (!Py_IS_TYPE(item, item_type) || FIELD(item, F.it_view) == NULL
                || (b = plain_buffer(FIELD(item, F.it_view), 0)) == NULL || !b->readonly
                || b->ndim != 1 || (b->format != NULL && strcmp(b->format, "B") != 0))
            return ref_call(ref_c_get_sequence, self, &snapshot, 1);
    }
    PyObject *segs = small_list(count), *offs = small_list(count + 1);
    PyObject *keys = small_list(count);
    PyObject *give = pipe_give(inp);
    SeqObject *seq = NULL;
    LeaseObject *lease = NULL;
    PyObject *zero = PyLong_FromLong(0);
    if (segs == NULL || offs == NULL || keys == NULL || give == NULL || zero == NULL)
        goto fail;
    list_put(offs, 0, Py_NewRef(zero));
    for (i = 0; i < count; i++)
        list_put(keys, i, Py_NewRef(PyList_GET_ITEM(items, pos + i)));
    Py_ssize_t total = 0;
    for (i = 0; i < count; i++) {
        /* The item's own view, as level 3's one-segment buffer takes it
         * (leased_single): checked above to be what _readonly_bytes_view
         * would make of it (read-only, 'B', 1-D, C-contiguous), and nobody
         * else sees the item.  A segment's view leaves the sequence before
         * its slot goes back (advance, release), so the give-back finds the
         * view unshared and the slot keeps it for its next message
         * (slots_keep_view): no view per message. */
        PyObject *mv = Py_NewRef(FIELD(PyList_GET_ITEM(keys, i), F.it_view));
        list_put(segs, i, mv);
        total += PyMemoryView_GET_BUFFER(mv)->len;
        PyObject *o = PyLong_FromSsize_t(total);
        if (o == NULL)
            goto fail;
        list_put(offs, i + 1, o);
    }
    if (seq_new_owning(segs, offs, keys, give, &seq, &lease) < 0)
        goto fail;
    /* take() for each: the items leave the queue */
    if (pos + count == n) {
        if (list_drop_front(items, n) < 0 || field_set_ssize(inp, F.i_ipos, 0) < 0)
            goto fail;
    } else if (field_set_ssize(inp, F.i_ipos, pos + count) < 0) {
        goto fail;
    }
    if (field_set_ssize(inp, F.i_head, head + count) < 0)
        goto fail;
    field_set(inp, F.i_buffer, Py_NewRef((PyObject *)seq));
    field_set(inp, F.i_movable, Py_NewRef(Py_False));   /* the caller holds it */
    Py_DECREF(segs);
    Py_DECREF(offs);
    Py_DECREF(keys);
    Py_DECREF(give);
    Py_DECREF(zero);
    Py_DECREF(lease);
    return (PyObject *)seq;
fail:
    Py_XDECREF(segs);
    Py_XDECREF(offs);
    Py_XDECREF(keys);
    Py_XDECREF(give);
    Py_XDECREF(zero);
    Py_XDECREF(lease);
    Py_XDECREF(seq);
    return NULL;
}

int
connfast_owns_base(PyObject *sink)
{
    return base_type != NULL && Py_TYPE(sink) == base_type;
}

int
connfast_owns(PyObject *sink)
{
    return conn_type != NULL && Py_TYPE(sink) == conn_type;
}

/* ---------------------------------------------------------------- binding */

static PyMethodDef pc_methods[] = {
    {"on_recv", (PyCFunction)(void (*)(void))pc_on_recv, METH_FASTCALL,
     "Hand the bytes to the Protocol, straight from dispatch (C fast path)."},
    {"write", (PyCFunction)(void (*)(void))pc_write, METH_FASTCALL,
     "Stage data for sending; one copy into the pool (C fast path)."},
    {"send_pending", (PyCFunction)pc_send_pending, METH_NOARGS,
     "Start the send of what was written this iteration (C fast path)."},
    {"on_send", (PyCFunction)pc_on_send, METH_O, "A send completed (C fast path)."},
    {"forward", (PyCFunction)pc_forward, METH_O,
     "Stage seq's bytes for sending from their receive slots (C fast path)."},
    {NULL, NULL, 0, NULL},
};

static PyMethodDef c_methods[] = {
    {"write", (PyCFunction)(void (*)(void))c_write, METH_FASTCALL,
     "Stage data for sending; one copy into the pool (C fast path)."},
    {"_kick_send", (PyCFunction)c_kick_send, METH_NOARGS,
     "Put the first unsent segment in flight (C fast path)."},
    {"on_send", (PyCFunction)c_on_send, METH_O, "A send completed (C fast path)."},
    {"on_recv", (PyCFunction)(void (*)(void))c_on_recv, METH_FASTCALL,
     "n bytes arrived in slot key (C fast path)."},
    {"try_get_ring", (PyCFunction)c_try_get_ring, METH_O,
     "Next item up to snapshot.tail, or None when the batch is drained (C fast path)."},
    {"return_ring", (PyCFunction)c_return_ring, METH_O,
     "Give item's slot back to the kernel; its view dies now (C fast path)."},
    {"get_sequence", (PyCFunction)c_get_sequence, METH_O,
     "Drain the items of snapshot into one owning BufferSequence (C fast path)."},
    {"flush", (PyCFunction)c_flush, METH_NOARGS,
     "Send everything staged; a finished coroutine unless it must wait (C fast path)."},
    {"forward", (PyCFunction)c_forward, METH_O,
     "Stage seq's bytes for sending from their receive slots (C fast path)."},
    {"reset_read", (PyCFunction)c_reset_read, METH_NOARGS,
     "End a read cycle: check no read() is waiting (C fast path)."},
    {NULL, NULL, 0, NULL},
};

static PyMethodDef seq_methods[] = {
    {"advance", (PyCFunction)seq_advance, METH_O,
     "Consume n bytes from the front; fully consumed slots go back (C fast path)."},
    {"release", (PyCFunction)seq_release, METH_NOARGS,
     "Give every slot still held back (C fast path)."},
    {"__iter__", (PyCFunction)seq_iter, METH_NOARGS,
     "The bytes as fresh memoryviews, one per segment (C fast path)."},
    {NULL, NULL, 0, NULL},
};

static PyMethodDef in_methods[] = {
    {"try_read", (PyCFunction)in_try_read, METH_O,
     "Like read but never waits: None when it would have to (C fast path)."},
    {"advance_to", (PyCFunction)(void (*)(void))in_advance_to, METH_FASTCALL,
     "Consume bytes of the last buffer (C fast path)."},
    {"arm_waiter", (PyCFunction)in_arm_waiter, METH_NOARGS,
     "The future a read waits on (C fast path)."},
    {NULL, NULL, 0, NULL},
};

static PyObject **pc_refs[] = {&ref_on_recv, &ref_write, &ref_send_pending, &ref_on_send,
                               &ref_forward};
static PyObject **in_refs[] = {&ref_i_try_read, &ref_i_advance_to, &ref_i_arm_waiter};
_Static_assert(sizeof(in_refs) / sizeof(in_refs[0]) == N_METHODS(in_methods),
               "one reference slot per InputPipe method");
static PyObject **c_refs[] = {&ref_c_write, &ref_c_kick_send, &ref_c_on_send, &ref_c_on_recv,
                              &ref_c_try_get_ring, &ref_c_return_ring, &ref_c_get_sequence,
                              &ref_c_flush, &ref_c_forward, &ref_c_reset_read};
static PyObject **seq_refs[] = {&ref_seq_advance, &ref_seq_release, &ref_seq_iter};
_Static_assert(sizeof(seq_refs) / sizeof(seq_refs[0]) == N_METHODS(seq_methods),
               "one reference slot per BufferSequence method");
_Static_assert(sizeof(pc_refs) / sizeof(pc_refs[0]) == N_METHODS(pc_methods),
               "one reference slot per ProtocolConnection method");
_Static_assert(sizeof(c_refs) / sizeof(c_refs[0]) == N_METHODS(c_methods),
               "one reference slot per Connection method");

int
install_methods(PyTypeObject *cls, PyMethodDef *defs, PyObject **refs_out[], int n)
{
    PyObject *refs[12] = {NULL}, *descrs[12] = {NULL};
    int i;
    if (n > 12) {
        PyErr_SetString(PyExc_SystemError, "install_methods: at most 12 methods");
        return -1;
    }
    for (i = 0; i < n; i++) {
        refs[i] = PyObject_GetAttrString((PyObject *)cls, defs[i].ml_name);
        if (refs[i] == NULL)
            goto fail;
        if (!PyFunction_Check(refs[i])) {
            PyErr_Format(PyExc_TypeError, "%s.%s is not a Python function (bound twice?)",
                         cls->tp_name, defs[i].ml_name);
            goto fail;
        }
        descrs[i] = PyDescr_NewMethod(cls, &defs[i]);
        if (descrs[i] == NULL)
            goto fail;
    }
    for (i = 0; i < n; i++) {
        if (PyObject_SetAttrString((PyObject *)cls, defs[i].ml_name, descrs[i]) < 0) {
            for (int j = 0; j < i; j++)       /* put the reference back */
                (void)PyObject_SetAttrString((PyObject *)cls, defs[j].ml_name, refs[j]);
            goto fail;
        }
    }
    for (i = 0; i < n; i++) {
        *refs_out[i] = refs[i];
        Py_DECREF(descrs[i]);
    }
    return 0;
fail:
    for (i = 0; i < n; i++) {
        Py_XDECREF(refs[i]);
        Py_XDECREF(descrs[i]);
    }
    return -1;
}

/* Put the C getter def in cls in place of the property of the same name,
 * keeping the property in *ref_out.  0, or -1 with an error (nothing changed). */
int
install_getter(PyTypeObject *cls, PyGetSetDef *def, PyObject **ref_out)
{
    PyObject *prop = PyDict_GetItemString(cls->tp_dict, def->name);     /* borrowed */
    if (prop == NULL || !PyObject_TypeCheck(prop, &PyProperty_Type)) {
        PyErr_Format(PyExc_TypeError, "%s.%s is not a property (bound twice?)",
                     cls->tp_name, def->name);
        return -1;
    }
    Py_INCREF(prop);
    PyObject *descr = PyDescr_NewGetSet(cls, def);
    if (descr == NULL || PyObject_SetAttrString((PyObject *)cls, def->name, descr) < 0) {
        Py_XDECREF(descr);
        Py_DECREF(prop);
        return -1;
    }
    Py_DECREF(descr);
    *ref_out = prop;
    return 0;
}

/* prop.__get__(self): a property's reference getter. */
PyObject *
call_getter(PyObject *prop, PyObject *self)
{
    return Py_TYPE(prop)->tp_descr_get(prop, self, (PyObject *)Py_TYPE(self));
}

static PyObject *ref_pending_write_bytes;   /* Connection.pending_write_bytes, the property */

int
conn_pending_bytes(PyObject *conn, Py_ssize_t *pending)
{
    PyObject *out = out_type == NULL ? NULL : FIELD(conn, F.out);
    if (out == Py_None) {           /* no output pipe yet (a Protocol connection) */
        *pending = 0;
        return 0;
    }
    if (out == NULL || !Py_IS_TYPE(out, out_type))
        return 1;
    return field_ssize(out, F.o_pending, pending);
}

/* Connection.pending_write_bytes (read by handlers per request, for
 * back-pressure: a property's frame each time in Python). */
static PyObject *
c_pending_write_bytes(PyObject *self, void *Py_UNUSED(closure))
{
    Py_ssize_t pending;
    if (conn_pending_bytes(self, &pending))
        return call_getter(ref_pending_write_bytes, self);
    return PyLong_FromSsize_t(pending);
}

static PyGetSetDef c_getset[] = {
    {"pending_write_bytes", c_pending_write_bytes, NULL,
     "Bytes staged or in flight, not yet taken by the kernel (C fast path).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

struct field_spec { int cls; const char *name; Py_ssize_t *off; };

static const struct field_spec field_specs[] = {
    {0, "_state", &F.state}, {0, "_in_pipe", &F.in}, {0, "_out_pipe", &F.out}, {0, "_buf", &F.buf},
    {0, "_reading_paused", &F.reading_paused}, {0, "_slots", &F.slots},
    {0, "_give_back", &F.give_back}, {0, "_data_received", &F.data_received},
    {0, "_host", &F.host}, {0, "_last_rx", &F.last_rx}, {0, "_unread", &F.unread},
    {0, "bytes_in", &F.bytes_in}, {0, "_owner", &F.owner}, {0, "_dirty", &F.dirty},
    {0, "_want_send", &F.want_send}, {0, "_writing_paused", &F.writing_paused},
    {0, "_sub", &F.sub}, {0, "fd", &F.fd}, {0, "id", &F.id},
    {0, "_traffic", &F.traffic}, {0, "_send", &F.send},
    {1, "pending", &F.o_pending}, {1, "max_write_buffer", &F.o_max},
    {1, "pause_at", &F.o_pause_at}, {1, "_budget", &F.o_budget}, {1, "_cur", &F.o_cur},
    {1, "_staged", &F.o_staged}, {1, "_granted", &F.o_granted}, {1, "_pool", &F.o_pool},
    {1, "write_exc", &F.o_exc}, {1, "sending", &F.o_sending},
    {1, "bytes_out", &F.o_bytes_out}, {1, "_flush_waiters", &F.o_flush_w},
    {1, "_drain_waiters", &F.o_drain_w}, {1, "refused", &F.o_refused},
    {1, "over_budget", &F.o_over_budget}, {1, "eof", &F.o_eof}, {1, "loans", &F.o_loans},
    {1, "pin_limit", &F.o_pin_limit}, {2, "chunk", &F.s_chunk},
    {4, "forwarded", &F.t_forwarded}, {4, "lent", &F.t_lent},
    {2, "view", &F.s_view}, {2, "fill", &F.s_fill}, {2, "sent", &F.s_sent},
    {2, "jumbo", &F.s_jumbo}, {2, "resident", &F.s_resident}, {2, "ptr", &F.s_ptr},
    {2, "off", &F.s_off},
    {3, "_free", &F.p_free}, {3, "_room_waiters", &F.p_room_waiters},
    {4, "sends", &F.t_sends}, {4, "bytes_out", &F.t_bytes_out},
    {5, "discarding", &F.i_discarding}, {5, "paused", &F.i_paused},
    {6, "_ring", &F.r_ring}, {6, "address", &F.r_address},
    {7, "closed", &F.g_closed},
    {5, "_slots", &F.i_slots}, {5, "_plain", &F.i_plain}, {5, "held", &F.i_held},
    {5, "_items", &F.i_items}, {5, "_ipos", &F.i_ipos}, {5, "head", &F.i_head},
    {5, "tail", &F.i_tail}, {5, "unread", &F.i_unread}, {5, "waiter", &F.i_waiter},
    {5, "opts", &F.i_opts}, {5, "_hand_out_mark", &F.i_mark},
    {8, "_key", &F.it_key}, {8, "_live", &F.it_live}, {8, "buffer_id", &F.it_bid},
    {8, "length", &F.it_length}, {8, "view", &F.it_view}, {8, "_held_at", &F.it_held_at},
    {5, "completed", &F.i_completed}, {5, "_handed", &F.i_handed}, {5, "_cancel", &F.i_cancel},
    {5, "ended", &F.i_ended}, {5, "buffer", &F.i_buffer}, {5, "buffer_movable", &F.i_movable},
    {5, "_examined_all", &F.i_examined_all}, {5, "_loop", &F.i_loop}, {5, "_give", &F.i_give},
    {0, "_stopping", &F.stopping}, {5, "backlog", &F.i_backlog},
};

int
slot_offset(PyTypeObject *tp, const char *name, Py_ssize_t *off)
{
    PyObject *d = PyObject_GetAttrString((PyObject *)tp, name);
    if (d == NULL)
        return -1;
    if (counter_offset(d, off)) {
        *off |= SSIZE_FIELD;
        Py_DECREF(d);
        return 0;
    }
    if (!Py_IS_TYPE(d, &PyMemberDescr_Type)
            || ((PyMemberDescrObject *)d)->d_member->type != T_OBJECT_EX
            || (((PyMemberDescrObject *)d)->d_member->flags & READONLY)) {
        PyErr_Format(PyExc_TypeError, "%s.%s is not a __slots__ field",
                     tp->tp_name, name);
        Py_DECREF(d);
        return -1;
    }
    *off = ((PyMemberDescrObject *)d)->d_member->offset;
    Py_DECREF(d);
    return 0;
}

/* bind_connection(Connection, ProtocolConnection, OutputPipe, WriteSegment,
 * SlabPool, Traffic, InputPipe, RingSubmitter, Ring, RingItem, ReadResult,
 * empty_sequence): learn the field offsets
 * and put the C methods in the two connection classes, keeping the Python
 * ones as the reference paths.  Once per process; later calls with the same
 * classes change nothing. */
static PyObject *
sp_bind_connection(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyTypeObject *base, *cls[9], *result;
    PyObject *empty;
    if (!PyArg_ParseTuple(args, "O!O!O!O!O!O!O!O!O!O!O!O:bind_connection", &PyType_Type, &base,
                          &PyType_Type, &cls[0], &PyType_Type, &cls[1], &PyType_Type, &cls[2],
                          &PyType_Type, &cls[3], &PyType_Type, &cls[4], &PyType_Type, &cls[5],
                          &PyType_Type, &cls[6], &PyType_Type, &cls[7], &PyType_Type, &cls[8],
                          &PyType_Type, &result, &empty))
        return NULL;
    if (!PyType_IsSubtype(result, &PyTuple_Type) || result->tp_basicsize != PyTuple_Type.tp_basicsize
            || !Py_IS_TYPE(empty, seq_type)) {
        PyErr_SetString(PyExc_TypeError, "bind_connection: ReadResult must be a NamedTuple "
                                         "and the empty sequence a BufferSequence");
        return NULL;
    }
    if (conn_type != NULL) {
        if (cls[0] != conn_type) {
            PyErr_SetString(PyExc_RuntimeError, "bind_connection: already bound to another class");
            return NULL;
        }
        Py_RETURN_NONE;
    }
    if (seq_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "bind_connection: bind_sequence() first");
        return NULL;
    }
    if (!PyType_IsSubtype(cls[0], base)) {
        PyErr_SetString(PyExc_TypeError, "bind_connection: the Protocol class must derive "
                                         "from the connection class");
        return NULL;
    }
    for (size_t i = 0; i < sizeof(field_specs) / sizeof(field_specs[0]); i++) {
        if (slot_offset(cls[field_specs[i].cls], field_specs[i].name, field_specs[i].off) < 0)
            return NULL;
    }
    if (fields_as_members(result) < 0)
        return NULL;
    fn_drop_tokens = PyObject_GetAttrString((PyObject *)cls[5], "_drop_tokens");
    if (fn_drop_tokens == NULL || !PyFunction_Check(fn_drop_tokens)) {
        if (fn_drop_tokens != NULL)
            PyErr_SetString(PyExc_TypeError, "InputPipe._drop_tokens is not a function");
        Py_CLEAR(fn_drop_tokens);
        return NULL;
    }
    struct {
        PyTypeObject *cls;
        PyMethodDef *defs;
        PyObject ***refs;
        int n;
    } groups[] = {
        {cls[0], pc_methods, pc_refs, N_METHODS(pc_methods)},
        {base, c_methods, c_refs, N_METHODS(c_methods)},
        {cls[5], in_methods, in_refs, N_METHODS(in_methods)},
        {seq_type, seq_methods, seq_refs, N_METHODS(seq_methods)},
    };
    int ngroups = (int)(sizeof(groups) / sizeof(groups[0]));
    if (install_getter(base, &c_getset[0], &ref_pending_write_bytes) < 0) {
        Py_CLEAR(fn_drop_tokens);
        return NULL;
    }
    for (int g = 0; g < ngroups; g++) {
        if (install_methods(groups[g].cls, groups[g].defs, groups[g].refs, groups[g].n) == 0)
            continue;
        PyObject *exc = fetch_exception();
        while (g-- > 0) {           /* all or nothing: put the references back */
            for (int i = 0; i < groups[g].n; i++) {
                (void)PyObject_SetAttrString((PyObject *)groups[g].cls, groups[g].defs[i].ml_name,
                                             *groups[g].refs[i]);
                Py_CLEAR(*groups[g].refs[i]);
            }
        }
        (void)PyObject_SetAttrString((PyObject *)base, c_getset[0].name,
                                     ref_pending_write_bytes);
        Py_CLEAR(ref_pending_write_bytes);
        Py_CLEAR(fn_drop_tokens);
        if (exc != NULL)
            restore_exception(exc);
        return NULL;
    }
    result_type = (PyTypeObject *)Py_NewRef((PyObject *)result);
    empty_seq = Py_NewRef(empty);
    PyTypeObject **types[9] = {&conn_type, &out_type, &seg_type, &pool_type, &traffic_type,
                               &in_type, &sub_type, &ring_type, &item_type};
    for (int i = 0; i < 9; i++)
        *types[i] = (PyTypeObject *)Py_NewRef((PyObject *)cls[i]);
    base_type = (PyTypeObject *)Py_NewRef((PyObject *)base);
    Py_RETURN_NONE;
}

/* connection_reference(cls_name, name): the Python method a C one replaced. */
static PyObject *
sp_connection_reference(PyObject *Py_UNUSED(module), PyObject *args)
{
    const char *which, *name;
    if (!PyArg_ParseTuple(args, "ss:connection_reference", &which, &name))
        return NULL;
    PyMethodDef *defs = c_methods;
    PyObject ***refs = c_refs;
    if (strcmp(which, "ProtocolConnection") == 0) {
        defs = pc_methods;
        refs = pc_refs;
    } else if (strcmp(which, "InputPipe") == 0) {
        defs = in_methods;
        refs = in_refs;
    } else if (strcmp(which, "BufferSequence") == 0) {
        defs = seq_methods;
        refs = seq_refs;
    } else if (strcmp(which, "PipeInput") == 0) {
        defs = pi_methods;
        refs = pi_refs;
    } else if (strcmp(name, "read") == 0) {     /* Connection.read */
        defs = read_c_methods;
        refs = read_c_refs;
    }
    for (int i = 0; defs[i].ml_name != NULL; i++) {
        if (strcmp(defs[i].ml_name, name) == 0 && *refs[i] != NULL)
            return Py_NewRef(*refs[i]);
    }
    if (strcmp(which, "Connection") == 0 && strcmp(name, "pending_write_bytes") == 0
            && ref_pending_write_bytes != NULL)
        return Py_NewRef(ref_pending_write_bytes);
    PyErr_Format(PyExc_KeyError, "%s.%s", which, name);
    return NULL;
}

/* bind_forward(LoanSegment): Connection.forward's C path stages these (after
 * bind_connection; the class must derive from WriteSegment). */
static PyObject *
sp_bind_forward(PyObject *Py_UNUSED(module), PyObject *cls)
{
    if (seg_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "bind_forward: bind_connection() first");
        return NULL;
    }
    if (!PyType_Check(cls) || !PyType_IsSubtype((PyTypeObject *)cls, seg_type)) {
        PyErr_SetString(PyExc_TypeError, "bind_forward: LoanSegment must derive from "
                                         "WriteSegment");
        return NULL;
    }
    if (loan_type != NULL)
        Py_RETURN_NONE;
    PyTypeObject *tp = (PyTypeObject *)cls;
    if (slot_offset(tp, "key", &F.l_key) < 0 || slot_offset(tp, "slots", &F.l_slots) < 0)
        return NULL;
    loan_type = (PyTypeObject *)Py_NewRef(cls);
    Py_RETURN_NONE;
}

static PyMethodDef connfast_functions[] = {
    {"bind_forward", (PyCFunction)sp_bind_forward, METH_O,
     "bind_forward(LoanSegment): Connection.forward's C path (after bind_connection)."},
    {"bind_connection", (PyCFunction)sp_bind_connection, METH_VARARGS,
     "bind_connection(Connection, ProtocolConnection, OutputPipe, WriteSegment, SlabPool, "
     "Traffic, InputPipe, RingSubmitter, Ring, RingItem, ReadResult, empty_sequence): put "
     "the C fast path in the connection classes and InputPipe."},
    {"bind_reads", (PyCFunction)sp_bind_reads, METH_VARARGS,
     "bind_reads(PipeInput, RingSnapshot): PipeInput.read and Connection.read in C "
     "(after bind_connection)."},
    {"connection_reference", (PyCFunction)sp_connection_reference, METH_VARARGS,
     "connection_reference(class_name, name): the Python method the C one replaced."},
    {NULL, NULL, 0, NULL},
};

int
connfast_init(PyObject *module)
{
    const InternName names[] = {
        {&s_failed, "_failed"}, {&s_settle, "_settle"}, {&s_pause_writing, "_pause_writing"},
        {&s_maybe_resume_writing, "_maybe_resume_writing"},
        {&s_maybe_resume_protocol, "_maybe_resume_protocol"},
        {&s_maybe_finish, "_maybe_finish"},
        {&s_new_segment, "_new_segment"}, {&s_wake_flushers, "_wake_flushers"},
        {&s_check, "check"}, {&s_now, "now"}, {&s_view, "view"}, {&s_give_back, "give_back"},
        {&s_send_what, "send"}, {&s_sends, "sends"}, {&s_bytes_out, "bytes_out"},
        {&s_pause, "_pause"},
        {&s_maybe_resume, "_maybe_resume"}, {&s_move_off, "_move_off"},
        {&s_release, "release"}, {&s_max_read_buffer, "max_read_buffer"},
        {&s_max_held_slots, "max_held_slots"}, {&s_out, "out"},
        {&s_drop_tokens, "_drop_tokens"}, {&s_pull, "_pull"},
        {&s_relieve, "relieve"},
        {&s_forwarded, "forwarded"}, {&s_lent, "lent"}, {&s_result, "result"},
        {&s_blocking, "_asyncio_future_blocking"},
        {&s_read_chunk_items, "read_chunk_items"},
    };
    if (INTERN_ALL(names) < 0)
        return -1;
    /* The method descriptor itself (got through the type: a builtin type's
     * tp_dict is not to be read directly since 3.12). */
    mv_release = PyObject_GetAttr((PyObject *)&PyMemoryView_Type, s_release);
    if (mv_release == NULL)
        return -1;
    if (!PyObject_TypeCheck(mv_release, &PyMethodDescr_Type)) {
        PyErr_SetString(PyExc_TypeError, "memoryview.release is not a method descriptor");
        Py_CLEAR(mv_release);
        return -1;
    }
    dead_view = PyMemoryView_FromMemory((char *)"", 0, PyBUF_READ);
    PyObject *r = dead_view == NULL ? NULL : PyObject_Vectorcall(mv_release, &dead_view, 1, NULL);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    if (PyType_Ready(&DoneType) < 0 || PyType_Ready(&ReadCoroType) < 0)
        return -1;
    done_coro = (PyObject *)PyObject_New(DoneObject, &DoneType);
    if (done_coro == NULL)
        return -1;
    if (PyModule_AddIntConstant(module, "LEND_MIN", LEND_MIN) < 0)
        return -1;
    if (PyModule_AddObjectRef(module, "finished_coroutine", done_coro) < 0)
        return -1;
    return PyModule_AddFunctions(module, connfast_functions);
}
