/*
 * speedups.h -- what the parts of zerg._speedups share (not a public API).
 *
 * speedups.c holds the receive slots, the dispatcher and the BufferSequence
 * core; connfast.c the connection fast path, which works on those objects;
 * seqfast.c the sequence's reading methods and the chain access they share
 * with readerfast.c, the C SequenceReader.
 * Everything here has hidden visibility (-fvisibility=hidden): nothing
 * leaves the module.
 */
#ifndef ZERG_SPEEDUPS_H
#define ZERG_SPEEDUPS_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "uringshim.h"

#define OFFSET_SHIFT 16
#define SLOT_MASK ((1u << OFFSET_SHIFT) - 1)

/* Ops, as zerg._ring.Op. */
enum { OP_ACCEPT = 1, OP_RECV = 2, OP_SEND = 3, OP_CANCEL = 4, OP_POLL = 5,
       OP_POLL_REMOVE = 6, OP_MSG = 7, OP_CONNECT = 8 };

typedef struct {
    PyObject_HEAD
    zu_ring *ring;
    PyObject *recv_view;        /* read-only memoryview of the receive region */
    PyObject *owner;            /* the Ring object: keeps the zu_ring alive */
    Py_ssize_t slot_size;
    unsigned total;
    int incremental;
    long long out;              /* slots the application holds (some part of) */
    long long bytes_in;
    long long shared_cqes;
    unsigned short *returns;    /* slot ids waiting for the next flush */
    unsigned nreturns;
    unsigned *off;              /* incremental: next offset the kernel fills */
    unsigned *parts;            /* incremental: parts the application holds */
    unsigned char *done;        /* incremental: the kernel moved on */
    PyObject *parked;           /* list of sinks waiting for slots */
    int relief;
    unsigned *pins;             /* per slot: sends reading it (forward); made on first pin */
    unsigned *deferred;         /* per slot: give-backs waiting for the last unpin */
    unsigned npinned;           /* slots with pins */
    PyObject **slot_views;      /* per slot: a memoryview of all of it, made on first use;
                                 * then, at [b * total + slot] for b in 1..BANKS-1, its
                                 * spares (slots_keep_view) */
} RecvSlotsObject;
/* A slot's whole view and its spares: views of it given back unseen for the
 * next taker -- a message's view (the receive path), and the view of the
 * loan that sent those bytes on (connfast.c, on_loan_sent): an echo or a
 * relay of large messages circulates both. */
#define SLOT_VIEW_BANKS 3

typedef struct {
    PyObject_HEAD
    PyObject *segs;                 /* list of read-only 'B' memoryviews */
    PyObject *offs;                 /* list of int: offs[i] = chain offset of segs[i] */
    Py_ssize_t start, stop;         /* the window, in chain coordinates */
    PyObject *slots;                /* the Lease, or None */
    PyObject *owns;                 /* bool */
} SeqObject;

typedef struct {
    PyObject_HEAD
    PyObject *keys;
    PyObject *give_back;
    Py_ssize_t next;                /* the first segment still held */
    Py_ssize_t held_from;           /* chain offset of that segment; RELEASED once all went */
} LeaseObject;

extern PyTypeObject RecvSlotsType;
extern PyTypeObject SequenceCoreType;
extern PyTypeObject SlotLeaseType;
extern PyTypeObject *seq_type;      /* zerg.BufferSequence (bind_sequence) */
extern PyObject *empty_view;        /* the shared empty memoryview of _buffers */
extern PyObject *int_released;      /* sys.maxsize: held_from once all went back */
#define RELEASED PY_SSIZE_T_MAX     /* the same, as the C lease keeps it */

/* receive slots */
PyObject *slots_view_c(RecvSlotsObject *self, unsigned long key, Py_ssize_t n);
int slots_give_back_key(RecvSlotsObject *self, unsigned long key);
/* A delivered view of slot key that nothing else can see any more (one
 * reference, ours, stolen; no exports, weak references or cached hash; not
 * released): kept for the slot's next view of the same length, so a
 * Protocol's echo allocates no view per message.  Otherwise dropped. */
void slots_keep_view(RecvSlotsObject *self, unsigned long key, PyObject *view);
int slots_pin_key(RecvSlotsObject *self, unsigned long key);
int slots_unpin_key(RecvSlotsObject *self, unsigned long key);

/* BufferSequence */
int seq_bounds(SeqObject *self, Py_ssize_t *a, Py_ssize_t *b);
int seq_check_alive(SeqObject *self);
/* The owning sequence over segs (offs: their chain offsets, one more than
 * segs; keys: where each lives) and its lease: 0 and two new references, or
 * -1 with an exception.  The lists are shared, not copied. */
int seq_new_owning(PyObject *segs, PyObject *offs, PyObject *keys, PyObject *give_back,
                   SeqObject **seq, LeaseObject **lease);
int seq_make_single(PyObject *view, PyObject *key, PyObject *give_back, SeqObject **seq,
                    LeaseObject **lease);
int seq_drop_single(SeqObject *self);
/* A list of n items, each None (lists of 1 or 2 items come from a pool
 * that sequences and leases refill when they die: speedups.c); fill it
 * with list_put. */
PyObject *small_list(Py_ssize_t n);
/* Py_CLEAR(*slot), keeping a list of 1 or 2 items nothing else holds for
 * small_list. */
void small_list_drop(PyObject **slot);
/* l[i] = obj for an exact list (obj stolen; the old item dropped). */
static inline void
list_put(PyObject *l, Py_ssize_t i, PyObject *obj)
{
    Py_SETREF(((PyListObject *)l)->ob_item[i], obj);
}
/* A new, empty instance of the bound BufferSequence class (from the
 * freelist when there is one; speedups.c). */
SeqObject *seq_alloc(void);
/* seq[:] sharing seq's chain and lease, not owning (no validity check). */
PyObject *seq_window(SeqObject *src);

/* ------------------------------------------------- chain access (seqfast.c)
 *
 * A sequence's window read straight from its fields: the segments' bytes by
 * pointer, no Python object per segment.  Every accessor checks what it
 * reads -- exact lists and ints, a live, contiguous, 1-byte-item memoryview
 * whose length is what the offsets say -- and answers CHAIN_ODD (no
 * exception set) when something is not in that shape, so no byte outside a
 * buffer is ever read.  Callers then take a slow path (the Python reference)
 * or raise.  The references in a Chain are borrowed: use one only while no
 * Python code can run (no calls out, no allocation of GC objects).
 */
typedef struct {
    PyObject *segs, *offs;      /* borrowed: exact lists, len(offs) == len(segs) + 1 */
    Py_ssize_t nsegs;
    Py_ssize_t start, stop;     /* the window, chain coordinates */
} Chain;

enum { CHAIN_ERR = -1, CHAIN_OK = 0, CHAIN_ODD = 1 };

static inline int
chain_load(SeqObject *seq, Chain *c)
{
    PyObject *segs = seq->segs, *offs = seq->offs;
    if (segs == NULL || offs == NULL || !PyList_CheckExact(segs) || !PyList_CheckExact(offs)
            || PyList_GET_SIZE(offs) != PyList_GET_SIZE(segs) + 1)
        return CHAIN_ODD;
    c->start = seq->start;
    c->stop = seq->stop;
    if (c->start < 0 || c->stop < c->start)
        return CHAIN_ODD;
    c->segs = segs;
    c->offs = offs;
    c->nsegs = PyList_GET_SIZE(segs);
    return CHAIN_OK;
}

/* offs[k] (0 <= k <= nsegs) as a C integer: CHAIN_OK or CHAIN_ODD. */
static inline int
chain_off(const Chain *c, Py_ssize_t k, Py_ssize_t *v)
{
    PyObject *o = PyList_GET_ITEM(c->offs, k);
    if (!PyLong_CheckExact(o))
        return CHAIN_ODD;
    *v = PyLong_AsSsize_t(o);
    if (*v == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        return CHAIN_ODD;
    }
    return CHAIN_OK;
}

/* The segment holding chain offset pos, as BufferSequence._locate
 * (bisect_right(offs, pos) - 1; 0 for a one-segment chain). */
static inline int
chain_locate(const Chain *c, Py_ssize_t pos, Py_ssize_t *k)
{
    if (c->nsegs == 1) {
        *k = 0;
        return CHAIN_OK;
    }
    Py_ssize_t lo = 0, hi = c->nsegs + 1, v;
    while (lo < hi) {
        Py_ssize_t mid = lo + (hi - lo) / 2;
        if (chain_off(c, mid, &v) != CHAIN_OK)
            return CHAIN_ODD;
        if (pos < v)
            hi = mid;
        else
            lo = mid + 1;
    }
    *k = lo - 1;
    return (*k >= 0 && *k < c->nsegs) ? CHAIN_OK : CHAIN_ODD;
}

/* Segment k (0 <= k < nsegs): its bytes p, and where it starts and ends in
 * the chain (s, e).  CHAIN_ODD unless it is a live, C-contiguous memoryview
 * of e - s one-byte items. */
static inline int
chain_seg(const Chain *c, Py_ssize_t k, const char **p, Py_ssize_t *s, Py_ssize_t *e)
{
    if (k < 0 || k >= c->nsegs || chain_off(c, k, s) != CHAIN_OK
            || chain_off(c, k + 1, e) != CHAIN_OK || *e < *s)
        return CHAIN_ODD;
    PyObject *mv = PyList_GET_ITEM(c->segs, k);
    if (!PyMemoryView_Check(mv))
        return CHAIN_ODD;
    PyMemoryViewObject *m = (PyMemoryViewObject *)mv;
    if ((m->flags & _Py_MEMORYVIEW_RELEASED) || (m->mbuf->flags & _Py_MANAGED_BUFFER_RELEASED))
        return CHAIN_ODD;
    Py_buffer *b = &m->view;
    if (b->len != *e - *s || b->ndim != 1 || b->itemsize != 1 || b->suboffsets != NULL
            || (b->strides != NULL && b->strides[0] != 1))
        return CHAIN_ODD;
    *p = (const char *)b->buf;
    return CHAIN_OK;
}

/* Chain range [a, b) (a < b) when it lies in one segment: *p, its first
 * byte, and CHAIN_OK; CHAIN_ODD when it spans segments or the chain is odd
 * (the caller then copies it with chain_copy, which tells the two apart). */
static inline int
chain_span(const Chain *c, Py_ssize_t a, Py_ssize_t b, const char **p)
{
    Py_ssize_t k, s, e;
    if (chain_locate(c, a, &k) != CHAIN_OK || chain_seg(c, k, p, &s, &e) != CHAIN_OK
            || a < s || b > e)
        return CHAIN_ODD;
    *p += a - s;
    return CHAIN_OK;
}

/* Chain range [a, b) of c (start <= a <= b <= stop): */
/* the lowest offset >= a where needle (m >= 1 bytes) lies wholly in [a, b), or -1; */
int chain_find(const Chain *c, const char *needle, Py_ssize_t m, Py_ssize_t a, Py_ssize_t b,
               Py_ssize_t *at);
/* copied to dst (b - a bytes); */
int chain_copy(const Chain *c, char *dst, Py_ssize_t a, Py_ssize_t b);
/* compared with p (b - a bytes): *eq is 1 when equal. */
int chain_equal(const Chain *c, Py_ssize_t a, Py_ssize_t b, const char *p, int *eq);
/* ... each CHAIN_OK, CHAIN_ODD, or CHAIN_ERR with an exception (memory). */

/* seq[a - start : b - start] for chain offsets start <= a <= b <= stop: a new
 * non-owning BufferSequence sharing seq's chain and lease (no check). */
PyObject *seq_slice(SeqObject *seq, Py_ssize_t a, Py_ssize_t b);
/* A bytes object with chain range [a, b); NULL with an exception, or NULL
 * without one when the chain is odd. */
PyObject *chain_bytes(const Chain *c, Py_ssize_t a, Py_ssize_t b);

/* The methods SequenceCore carries in C (seqfast.c); bind_sequence puts them
 * in the BufferSequence class in place of the Python ones. */
extern PyMethodDef seqfast_methods[];
extern PyGetSetDef seqfast_getset[];
PyObject *seqfast_subscript(PyObject *self, PyObject *key);
int seqfast_contains(PyObject *self, PyObject *sub);
int seqfast_bind(PyTypeObject *cls);
int seqfast_init(PyObject *module);

/* the C SequenceReader (readerfast.c) */
int readerfast_init(PyObject *module);
/* For parsers in C on a zerg.SequenceReader (httpfast.c): the live chain of
 * reader obj and its position (0), 1 when obj is no C SequenceReader (no
 * exception), or -1 with an exception; then, after reading, its new
 * position and how far the read looked (offsets in the sequence). */
int reader_chain(PyObject *obj, Chain *c, Py_ssize_t *pos);
void reader_moved(PyObject *obj, Py_ssize_t pos, Py_ssize_t examined);
/* sr.try_read_exact(n) of C reader obj (the caller checked its type): 0 with
 * the zero-copy slice in *out and the reader past it; 1 when fewer than n
 * bytes remain (the reader examined to the end, its position unchanged);
 * -1 with an exception. */
int reader_take(PyObject *obj, Py_ssize_t n, PyObject **out);
/* A chain helper's answer (CHAIN_OK/ODD/ERR) as the reader reports it: 0, or
 * -1 with an exception (ValueError for an odd chain). */
int chain_ok(int rc);
int httpfast_init(PyObject *module);
/* the TLS layer fast path (tlsfast.c) */
int tlsfast_init(PyObject *module);
/* zerg._tls.PlainSlots's view(key, n) and give_back(key) (the decrypted
 * bytes a TLS connection's plain side receives): 1 done (*view a new
 * reference), -1 with an error, 0 when slots is no bound PlainSlots or the
 * case is not the common one (call the method). */
int plain_slots_view(PyObject *slots, PyObject *key, Py_ssize_t n, PyObject **view);
int plain_slots_give_back(PyObject *slots, PyObject *key);

/* The exception being raised, normalized, with its traceback; the error
 * indicator is cleared.  NULL if none. */
PyObject *fetch_exception(void);

/* A module's interned attribute names: *slot = the interned string s. */
typedef struct {
    PyObject **slot;
    const char *s;
} InternName;
/* Intern names[0..n): 0, or -1 with an exception. */
int intern_names(const InternName *names, size_t n);
#define INTERN_ALL(names) intern_names((names), sizeof(names) / sizeof((names)[0]))
/* Raise exc again (a reference from fetch_exception, stolen). */
void restore_exception(PyObject *exc);

/* Fields of Python classes with __slots__, by offset (connfast.c). */
#define FIELD(o, off) (*(PyObject **)((char *)(o) + (off)))

/* slot_offset's mark on the offset of an int field kept as a C Py_ssize_t
 * (a field of a counters() base, counters.c): field_ssize and
 * field_set_ssize read and write it in place; FIELD and field_set must not
 * be used on it. */
#define SSIZE_FIELD ((Py_ssize_t)1 << 40)
#define SSIZE_AT(o, off) (*(Py_ssize_t *)((char *)(o) + ((off) & ~SSIZE_FIELD)))

/* An int field as a C integer: 0, or 1 when it is unset or not a plain int
 * that fits (the caller takes the reference path).  Never raises. */
static inline int
field_ssize(PyObject *o, Py_ssize_t off, Py_ssize_t *out)
{
    if (off & SSIZE_FIELD) {
        *out = SSIZE_AT(o, off);
        return 0;
    }
    PyObject *v = FIELD(o, off);
    if (v == NULL || !PyLong_CheckExact(v))
        return 1;
    *out = PyLong_AsSsize_t(v);
    if (*out == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        return 1;
    }
    return 0;
}

/* Store v (a new reference, stolen) in a field, dropping the old value
 * after the store (its destructor may run code that reads the field). */
static inline void
field_set(PyObject *o, Py_ssize_t off, PyObject *v)
{
    PyObject *old = FIELD(o, off);
    FIELD(o, off) = v;
    Py_XDECREF(old);
}

/* The offset of tp's writable __slots__ field name (or, marked with
 * SSIZE_FIELD, of its counters() int field); -1 with TypeError if it is
 * neither. */
int slot_offset(PyTypeObject *tp, const char *name, Py_ssize_t *off);

/* Put the C methods defs[0..n) in cls, keeping the Python functions they
 * replace (the class's, or inherited) in *refs_out[i].  All or nothing. */
int install_methods(PyTypeObject *cls, PyMethodDef *defs, PyObject **refs_out[], int n);
/* The methods of a NULL-terminated PyMethodDef table. */
#define N_METHODS(defs) ((int)(sizeof(defs) / sizeof((defs)[0])) - 1)
/* func(self, *args): a reference method, for the cases a C one leaves it
 * (connfast.c; at most 3 arguments besides self). */
PyObject *ref_call(PyObject *func, PyObject *self, PyObject *const *args, Py_ssize_t nargs);
/* The same with keywords and any number of arguments (vectorcall layout). */
PyObject *ref_call_kw(PyObject *func, PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                      PyObject *kwnames);

/* 0 for a call's result (dropped), -1 for NULL. */
static inline int
call_ok(PyObject *r)
{
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

/* self.<name>(a, b) (a, b or both NULL: fewer arguments) for the rare paths,
 * the result dropped; 0 or -1. */
static inline int
call_method(PyObject *self, PyObject *name, PyObject *a, PyObject *b)
{
    PyObject *stack[3] = {self, a, b};
    size_t n = a == NULL ? 1 : (b == NULL ? 2 : 3);
    return call_ok(PyObject_VectorcallMethod(name, stack, n, NULL));
}
/* 1 when the caller runs on the thread `owner` (an int) names; 0 otherwise,
 * or when it cannot tell (never an error). */
int on_owner_thread(PyObject *owner);
/* Connection.pending_write_bytes of a bound connection class's instance
 * (connfast.c): 0 with *pending, or 1 when the reference must tell. */
int conn_pending_bytes(PyObject *conn, Py_ssize_t *pending);
/* Put the C getter def in cls in place of its property of that name, keeping
 * the property in *ref_out; call_getter(prop, self) is the property's get. */
int install_getter(PyTypeObject *cls, PyGetSetDef *def, PyObject **ref_out);
PyObject *call_getter(PyObject *prop, PyObject *self);

/* the loop fast path (loopfast.c) */
int loopfast_init(PyObject *module);
/* 1 when loop is a bound ReactorLoop neither closed nor in debug mode (a
 * callback may run without call_soon's checks), 0 otherwise, -1 on error. */
int loop_runs_plain(PyObject *loop);

/* the future of a waiting read (readwaiter.c) */
int waiter_init(PyObject *module);
/* A pending ReadWaiter of loop (a new reference), or NULL with an error. */
PyObject *waiter_new(PyObject *loop);
int waiter_check(PyObject *o);
/* Finish it with None, unless it is done: its callbacks are queued, the
 * first given to wake_task when in_place.  0, or -1 with an error. */
int waiter_finish(PyObject *waiter, int in_place);
/* waiter._asyncio_future_blocking = True (it is yielded to a task). */
void waiter_block(PyObject *waiter);
/* waiter.result(): None, or NULL with the error (cancelled, not ready). */
PyObject *waiter_result(PyObject *waiter);
/* 1 when waiter is a ReadWaiter finished with a result (not cancelled). */
int waiter_done_ok(PyObject *waiter);
/* A ConnTask's wait on waiter, yielded to it by its coroutine: when waiter
 * is a pending ReadWaiter of loop, blocking, with no callbacks, it keeps task
 * (and ctx) as its one callback, to be woken with wake_conntask; 1.  Else 0
 * (nothing changed: the task waits through asyncio's protocol). */
int waiter_park(PyObject *waiter, PyObject *task, PyObject *ctx, PyObject *loop);

/* ConnTask's step in C (conntask.c) */
int conntask_init(PyObject *module);
/* task._wakeup(fut): a new reference (None), or NULL with an error. */
PyObject *conntask_wakeup(PyObject *task, PyObject *fut);
/* task._wakeup bound, for call_soon: a new reference, or NULL. */
PyObject *conntask_bound_wakeup(PyObject *task);
/* 1 when o is a bound ConnTask. */
int conntask_check(PyObject *o);

/* a read's task resumed in place (wake.c) */
int wake_init(PyObject *module);
int counters_init(PyObject *module);

/* The reactor's connections by id (conntable.c). */
int conntable_init(PyObject *module);
int conntable_check(PyObject *o);
/* The object of id key in a ConnTable (borrowed), or NULL; never raises. */
PyObject *conntable_get(PyObject *table, unsigned long long key);
/* UringSelector.select's common case (selectfast.c). */
int selectfast_init(PyObject *module);
/* 1 with *off when descr is a counters() field's descriptor, else 0. */
int counter_offset(PyObject *descr, Py_ssize_t *off);
/* The receive path finished a read's waiter: its task runs now when the
 * dispatcher harvests and it may (see wake.c), else it is queued.  A
 * ReadWaiter, or any future (set_result(None) unless done).  0, or -1. */
int wake_read(PyObject *waiter);
/* A done callback of a read's waiter, cb(arg) in ctx: run now when it is a
 * task's wake-up and it may (see wake.c), else loop.call_soon(cb, arg,
 * context=ctx).  0, or -1 with an error. */
int wake_task(PyObject *loop, PyObject *cb, PyObject *arg, PyObject *ctx);
/* A ReadWaiter's waiting ConnTask, woken with arg (the waiter) in ctx: run
 * now when in_place and it may (as wake_task), else its _wakeup queued with
 * loop.call_soon.  0, or -1 with an error. */
int wake_conntask(PyObject *loop, PyObject *task, PyObject *arg, PyObject *ctx, int in_place);
/* asyncio's _current_tasks dict (borrowed), or NULL where it has none: then
 * wake_call_task_hook calls asyncio's _enter_task (leave 0) or _leave_task. */
PyObject *wake_current_tasks(void);
int wake_call_task_hook(int leave, PyObject *loop, PyObject *task);
/* loop.call_soon(cb, arg, context=ctx): 0, or -1 with an error. */
int wake_queue(PyObject *loop, PyObject *cb, PyObject *arg, PyObject *ctx);
/* The dispatcher's harvest: begin returns what end restores. */
int wake_inline_begin(void);
void wake_inline_end(int prev);
/* The harvest under way on this thread, numbered (never 0), or 0 outside
 * one: a value read during a harvest stays valid while this is the same. */
unsigned wake_harvest_gen(void);

/* the connection fast path (connfast.c) */
int connfast_init(PyObject *module);
/* True when sink is exactly the bound ProtocolConnection class: the
 * dispatcher then calls its C methods without looking them up. */
int connfast_owns(PyObject *sink);
/* The same for exactly the bound Connection class (levels 1-3). */
int connfast_owns_base(PyObject *sink);
PyObject *c_on_recv(PyObject *self, PyObject *const *args, Py_ssize_t nargs);
PyObject *c_on_send(PyObject *self, PyObject *arg);
PyObject *pc_on_recv(PyObject *self, PyObject *const *args, Py_ssize_t nargs);
PyObject *pc_on_send(PyObject *self, PyObject *arg);
/* The dispatcher's entries: the same with the C integers of a completion
 * (key also as its int object, which the sequence's lease keeps). */
PyObject *pc_on_recv_key(PyObject *self, PyObject *key, unsigned long k, Py_ssize_t n);
PyObject *pc_on_send_res(PyObject *self, long res);
PyObject *c_on_send_res(PyObject *self, long res);
PyObject *pc_send_pending(PyObject *self, PyObject *unused);
/* del lst[:n], keeping the list's storage when that empties it. */
int list_drop_front(PyObject *list, Py_ssize_t n);

#endif
